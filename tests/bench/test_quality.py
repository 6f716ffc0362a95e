"""``python -m bench.quality`` finds a config's problems before any PyLate install or training."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _run(*arguments: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "bench.quality", *arguments]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=300, check=False)


def test_without_a_dataset_it_says_what_to_set():
    completed = _run("--set", "quality.dataset=null")
    assert completed.returncode == 1
    assert "quality.dataset is not set" in completed.stderr


def test_a_zero_shot_config_names_the_config_that_trains_its_model(tmp_path: Path, shared_data: Path):
    params = tmp_path / "params.yaml"
    params.write_text((REPO / "params.yaml").read_text())
    (tmp_path / "configs").mkdir()
    for name in ("scifact", "arguana"):
        text = (REPO / "configs" / f"{name}.yaml").read_text()
        (tmp_path / "configs" / f"{name}.yaml").write_text(text)
    completed = _run(
        *("--params", str(params), "--config", str(tmp_path / "configs" / "arguana.yaml")),
        *("--set", f"quality.dataset={shared_data / 'arguana'}", "--set", f"prepare.data={shared_data}"),
    )
    assert completed.returncode == 1, completed.stderr
    assert "no trained PyLate model" in completed.stderr
    # The configs are not the checkout's, so no make target: the module's own command, with the config
    # that trains the model.
    assert "python -m bench.quality --params" in completed.stderr and "scifact.yaml" in completed.stderr


def test_the_peer_row_is_saved_as_the_quality_stage_saves_a_system(tmp_path: Path, monkeypatch):
    """With PyLate's side stubbed (it needs its own venv), a zero-shot run writes the ``pylate`` record and
    the model's training curve through ``save_system_result``, with the training settings in its details."""
    import argparse
    import json

    from bench.quality import peer

    beir = tmp_path / "toy"
    (beir / "qrels").mkdir(parents=True)
    corpus = [{"_id": f"d{i}", "title": "", "text": f"document {i}"} for i in range(3)]
    (beir / "corpus.jsonl").write_text("".join(json.dumps(row) + "\n" for row in corpus))
    (beir / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "document 1"}) + "\n")
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    trained = tmp_path / "models" / "toy-pylate"
    trained.mkdir(parents=True)
    (trained / "training_settings.json").write_text(json.dumps({"loss": "contrastive", "seed": 7}))
    (trained / "training_summary.json").write_text(json.dumps({"steps": 3}))
    (trained / "training_loss.json").write_text(
        json.dumps([{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0}])
    )
    result = {"retrieval": {"documents": 3, "queries": 1}, "versions": {"pylate": "1.6.0"}}
    seen = {}

    def run_peer(params, data, peer_model, train_job, timeout):
        seen.update(model=peer_model, train_job=train_job, queries=dict(data.queries))
        return result, {"q1": {"d1": 2.0, "d0": 1.0}}

    monkeypatch.setattr(peer, "run_peer", run_peer)
    settings = {
        "quality.dataset": str(beir),
        "quality.model": str(tmp_path / "models" / "toy"),
        "quality.output": str(tmp_path / "out"),
        "quality.name": "toy",
    }
    args = argparse.Namespace(
        params=str(REPO / "params.yaml"),
        config=None,
        set=[f"{k}={v}" for k, v in settings.items()],
        timeout=None,
    )
    record = peer.orchestrate(args)
    assert seen == {"model": trained, "train_job": None, "queries": {"q1": "document 1"}}
    assert record["metrics"]["ndcg@10"] == 1.0 and record["system"] == "pylate"
    details = record["details"]
    assert details["zero_shot"] and not details["trained_now"] and details["pylate_version"] == "1.6.0"
    assert (details["loss"], details["steps"], details["documents"]) == ("contrastive", 3, 3)
    runs = tmp_path / "out" / "runs" / "toy"
    assert json.loads((runs / "pylate.plaid.json").read_text())["metrics"]["ndcg@10"] == 1.0
    assert json.loads((runs / "pylate.training_loss.json").read_text())[-1] == {"step": 2, "loss": 1.0}

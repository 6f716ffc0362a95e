"""DVC experiments as tables: ``dvc exp show --json`` parsed, quality metrics, snapshots, the README block."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from pipeline import cli
from pipeline.ops import experiments as exps
from pipeline.project.errors import PipelineError

REPO = Path(__file__).resolve().parents[2]


def _entry(rev: str, name: str | None, steps: int, quality: dict | None) -> dict:
    """One commit or experiment as ``dvc exp show --json`` (DVC 3) writes it."""
    metrics = {"metrics/eval.json": {"data": {"NanoBEIR_mean_MaxSim_ndcg@10": 0.5 + steps / 100}}}
    if quality is not None:
        metrics["metrics/quality.json"] = {"data": quality}
    return {
        "rev": rev,
        "name": name,
        "data": {
            "rev": rev,
            "params": {"params.yaml": {"data": {"train": {"max_steps": steps, "seed": 42}}}},
            "metrics": metrics,
            "deps": {},
            "outs": {},
        },
    }


def _show() -> list[dict]:
    scores = {"dataset": "scifact", "colbert-tuned": {"plaid": {"ndcg@10": 0.6865, "mrr@10": 0.65}}}
    longer = {"plaid": {"ndcg@10": 0.7}}
    head = _entry("a" * 40, "main", 3, None)
    head["experiments"] = [
        {"revs": [_entry("b" * 40, "sci-58", 58, scores)]},
        {"revs": [_entry("c" * 40, "sci-116", 116, {**scores, "colbert-tuned": longer})]},
    ]
    return [{"rev": "workspace", "name": None, "data": {}}, head]


def test_quality_scores_of_real_data_runs_are_shown_beside_the_benchmarks() -> None:
    rows = exps.parse_show(_show())
    assert [row.name for row in rows] == ["main", "sci-58", "sci-116"]
    assert rows[1].metrics["quality.colbert-tuned.plaid.ndcg@10"] == 0.6865
    metrics = exps.default_metrics(rows, "eval.NanoBEIR_mean_MaxSim_ndcg@10")
    assert metrics == [
        "eval.NanoBEIR_mean_MaxSim_ndcg@10",
        "quality.dataset",
        "quality.colbert-tuned.plaid.ndcg@10",
    ]
    table = exps.experiment_table(rows, metrics).splitlines()
    assert table[0] == (
        "| experiment | rev | train.max_steps | eval.NanoBEIR_mean_MaxSim_ndcg@10 | quality.dataset"
        " | quality.colbert-tuned.plaid.ndcg@10 |"
    )
    assert table[3] == "| sci-58 | bbbbbbb | 58 | 1.0800 | scifact | 0.6865 |"
    assert table[2] == "| main | aaaaaaa | 3 | 0.5300 | - | - |"  # no quality run on the committed head


def test_only_the_named_experiments_in_that_order_and_an_unknown_name_says_which_exist() -> None:
    rows = exps.parse_show(_show())
    assert [row.name for row in exps.select(rows, ["sci-116", "sci-58"])] == ["sci-116", "sci-58"]
    with pytest.raises(PipelineError, match=r"no experiment named \['sci-1'\].*'sci-116', 'sci-58'"):
        exps.select(rows, ["sci-1"])


def test_a_snapshot_round_trips_and_a_malformed_one_names_the_file_and_entry(tmp_path: Path) -> None:
    rows = exps.parse_show(_show())
    path = tmp_path / "experiments.json"
    exps.save_snapshot(rows, path)
    assert exps.load_snapshot(path) == rows
    path.write_text(json.dumps([{"name": "x", "rev": "1", "params": {}}]))
    with pytest.raises(PipelineError, match=r"experiments.json: entry 0 is not an experiment row"):
        exps.load_snapshot(path)
    path.write_text("{")
    with pytest.raises(PipelineError, match=r"experiments.json: cannot read the experiments snapshot"):
        exps.load_snapshot(path)


def test_save_adds_to_a_snapshot_and_replaces_an_experiment_of_the_same_name(tmp_path: Path, capsys) -> None:
    # One snapshot for experiments run in different workspaces (a clean clone per real-data run).
    source, saved = tmp_path / "shown.json", tmp_path / "experiments.json"
    rows = exps.parse_show(_show())
    exps.save_snapshot(rows, source)

    def save(name: str) -> None:
        arguments = ["experiments", "--params", str(REPO / "params.yaml"), "--snapshot", str(source)]
        assert cli.main([*arguments, "--experiment", name, "--save", str(saved)]) == 0

    save("sci-58")
    save("sci-116")
    assert [row.name for row in exps.load_snapshot(saved)] == ["sci-58", "sci-116"]
    # sci-58 run again (another rev): its row is replaced, sci-116's kept
    exps.save_snapshot([dataclasses.replace(row, rev="fffffff") for row in rows], source)
    save("sci-58")
    assert [(row.name, row.rev) for row in exps.load_snapshot(saved)] == [
        ("sci-116", exps.select(rows, ["sci-116"])[0].rev),
        ("sci-58", "fffffff"),
    ]
    capsys.readouterr()


def test_the_cli_renders_a_snapshot_into_the_readme_between_the_markers(tmp_path: Path, capsys) -> None:
    snapshot = tmp_path / "experiments.json"
    exps.save_snapshot(exps.parse_show(_show()), snapshot)
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{exps.README_BEGIN}\nstale\n{exps.README_END}\nafter\n")
    params = REPO / "params.yaml"
    code = cli.main(
        [
            *("experiments", "--params", str(params), "--snapshot", str(snapshot), "--readme", str(readme)),
            *("--experiment", "sci-58", "--experiment", "sci-116"),
        ]
    )
    printed = capsys.readouterr().out.strip()
    assert code == 0 and printed.splitlines()[2].startswith("| sci-58 |")
    assert readme.read_text() == f"before\n{exps.README_BEGIN}\n{printed}\n{exps.README_END}\nafter\n"


def test_set_arguments_let_a_later_set_replace_a_configs_key(capsys) -> None:
    code = cli.main(
        [
            *("experiments", "--set-arguments", str(REPO / "configs" / "scifact.yaml")),
            *("--set", "quality.output=reports/experiments/scifact", "--set", "train.epochs=2"),
        ]
    )
    arguments = capsys.readouterr().out.split()
    assert code == 0
    assert arguments.count("quality.output=reports/experiments/scifact") == 1
    assert not any(a.startswith("quality.output=reports/beir") for a in arguments)
    assert arguments.count("train.epochs=2") == 1 and "train.epochs=1" not in arguments


def test_set_arguments_lay_a_later_config_over_an_earlier_one(capsys) -> None:
    # ArguAna's zero-shot experiment: SciFact's training under ArguAna's scoring (`make exp-arguana`).
    configs = [str(REPO / "configs" / name) for name in ("scifact.yaml", "arguana.yaml")]
    assert cli.main(["experiments", "--set-arguments", *configs]) == 0
    arguments = capsys.readouterr().out.split()
    assert "prepare.beir.folder=../shared/data/scifact" in arguments  # from scifact.yaml only
    assert "quality.dataset=../shared/data/arguana" in arguments  # arguana.yaml's, not scifact's
    assert not any(a.startswith("quality.dataset=") and "scifact" in a for a in arguments)


def test_the_docs_experiments_table_is_what_the_cli_prints_from_the_snapshot(capsys) -> None:
    """docs/versions.md renders ``reports/experiments.json`` while the site builds (docs/hooks.py): exactly
    what ``colbert-pipeline experiments --snapshot`` prints, every run with its full-test-set score."""
    snapshot = REPO / "reports" / "experiments.json"
    arguments = ["experiments", "--params", str(REPO / "params.yaml"), "--snapshot", str(snapshot)]
    assert cli.main(arguments) == 0
    printed = capsys.readouterr().out.strip()
    assert _docs_hooks().render_experiments() == printed
    assert "<!-- render: experiments -->" in (REPO / "docs" / "versions.md").read_text(encoding="utf-8")
    rows = exps.load_snapshot(snapshot)
    lines = printed.splitlines()
    assert rows and len(lines) == 2 + len(rows)
    for row, line in zip(rows, lines[2:], strict=True):  # each real-data run shows its full-test-set score
        score = row.metrics["quality.colbert-tuned.plaid.ndcg@10"]
        assert line.startswith(f"| {row.name} |") and line.endswith(f"| {score:.4f} |")


def _docs_hooks():
    """docs/hooks.py (the docs site's MkDocs hooks), loaded by path as MkDocs loads it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("docs_hooks", REPO / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _quality_arguments(snapshot: Path) -> list[str]:
    """``colbert-pipeline experiments --quality`` from a snapshot, with the repository's params."""
    return ["experiments", "--params", str(REPO / "params.yaml"), "--snapshot", str(snapshot), "--quality"]


def test_the_quality_table_comes_from_the_experiments_plus_rows_scored_outside_dvc(
    tmp_path: Path, capsys
) -> None:
    """``--quality``: one row per experiment, system and retrieval (from DVC's metrics), PyLate's rows added
    from its result records, each compared with its dataset's dense row; an experiment without quality
    scores adds nothing, and none at all is an error."""
    from pipeline.project.report import save_result

    dense = {"ndcg@10": 0.6451, "mrr@10": 0.6047, "recall@100": 0.925, "queries": 300}
    tuned = {"ndcg@10": 0.6865, "mrr@10": 0.6551, "recall@100": 0.916, "queries": 300}
    head = _entry("a" * 40, "main", 3, None)
    head["experiments"] = [
        {
            "revs": [
                _entry(
                    "b" * 40,
                    "sci",
                    58,
                    {"dataset": "scifact", "dense": {"cosine": dense}, "colbert-tuned": {"plaid": tuned}},
                )
            ]
        },
    ]
    snapshot = tmp_path / "experiments.json"
    exps.save_snapshot(exps.parse_show([head]), snapshot)
    peer = tmp_path / "peer"
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1}}
    save_result(
        peer / "scifact",
        dataset="scifact",
        system="pylate",
        retrieval="plaid",
        run={"q1": {"d1": 2.0, "d2": 1.0}, "q2": {"d1": 2.0, "d2": 1.0}},
        qrels=qrels,
    )
    readme = tmp_path / "README.md"
    readme.write_text(f"{exps.QUALITY_BEGIN}\nstale\n{exps.QUALITY_END}\n")
    arguments = _quality_arguments(snapshot)
    assert cli.main([*arguments, "--results", str(peer), "--readme", str(readme)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert (
        lines[2]
        == "| scifact | MiniLM-L6 dense bi-encoder (cosine) | cosine | 300 | 0.6451 | 0.6047 | 0.9250 |  |"
    )
    assert lines[3].startswith("| scifact | fine-tuned ColBERT (this pipeline) | plaid | 300 | 0.6865 |")
    assert lines[3].endswith("| +0.0414 |")
    # PyLate ranked d1 first for both queries: q1 right (1.0), q2's document second (1/log2(3)).
    pylate = (1.0 + 1 / math.log2(3)) / 2
    assert (
        lines[4].startswith("| scifact | fine-tuned ColBERT (PyLate 1.6") and f"| {pylate:.4f} |" in lines[4]
    )
    assert readme.read_text() == "\n".join([exps.QUALITY_BEGIN, *lines, exps.QUALITY_END]) + "\n"
    only_eval = tmp_path / "none.json"
    exps.save_snapshot([exps.parse_show([head])[0]], only_eval)
    assert cli.main(_quality_arguments(only_eval)) == 2  # an input error, named on stderr
    assert "none of these experiments ran the quality stage" in capsys.readouterr().err


def test_the_docs_quality_table_is_the_committed_experiments_and_peer_rows(capsys) -> None:
    """docs/benchmarks.md renders the quality table while the site builds: exactly what ``colbert-pipeline
    experiments --quality`` prints from ``reports/quality-experiments.json`` (saved from ``dvc exp show``) and
    PyLate's records (``bench/records/peer/runs``); every experiment's tuned nDCG@10 is in it."""
    snapshot = REPO / "reports" / "quality-experiments.json"
    arguments = _quality_arguments(snapshot)
    arguments += ["--results", str(REPO / "bench" / "records" / "peer" / "runs")]
    assert cli.main(arguments) == 0
    printed = capsys.readouterr().out
    assert _docs_hooks().render_quality() == printed.strip()
    assert "<!-- render: quality -->" in (REPO / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    for row in exps.load_snapshot(snapshot):
        dataset = row.metrics["quality.dataset"]
        score = row.metrics["quality.colbert-tuned.plaid.ndcg@10"]
        assert f"| {dataset} | fine-tuned ColBERT (this pipeline) | plaid |" in printed
        assert f"| {score:.4f} |" in printed
    assert "fine-tuned ColBERT (PyLate 1.6" in printed

"""Run scoring (against hand-computed trec_eval measures), TREC run files, the quality report and stage."""

from __future__ import annotations

import doctest
import json
import math
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.project import report, runs
from pipeline.project.config import ConfigError, Params
from pipeline.project.params_file import load_params
from pipeline.project.report import save_result, save_training_loss, write_report
from pipeline.project.runs import evaluate_run, read_trec_run, write_trec_run

REPO = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- independent reference
def reference_ndcg10(ranking: list[str], judged: dict[str, int]) -> float:
    """nDCG@10 as trec_eval defines it: linear gains, log2(rank + 1) discounts, ideal from all judgements."""
    dcg = sum(judged.get(doc, 0) / math.log2(rank + 2) for rank, doc in enumerate(ranking[:10]))
    ideal = sorted((g for g in judged.values() if g > 0), reverse=True)[:10]
    idcg = sum(gain / math.log2(rank + 2) for rank, gain in enumerate(ideal))
    return dcg / idcg


def reference_rr10(ranking: list[str], judged: dict[str, int]) -> float:
    for rank, doc in enumerate(ranking[:10], start=1):
        if judged.get(doc, 0) > 0:
            return 1 / rank
    return 0.0


def reference_recall(ranking: list[str], judged: dict[str, int], k: int) -> float:
    relevant = {doc for doc, grade in judged.items() if grade > 0}
    return len(relevant & set(ranking[:k])) / len(relevant)


def ranked(found: dict[str, float]) -> list[str]:
    return [doc for doc, _ in sorted(found.items(), key=lambda item: (-item[1], item[0]))]


# --------------------------------------------------------------------------- evaluate_run
def test_hand_computed_case():
    qrels = {"q1": {"d1": 1, "d2": 2, "d9": 0}, "q2": {"d5": 1}, "q3": {"d7": 1}}
    run = {
        # q1: relevant at ranks 2 (grade 1) and 3 (grade 2); d9 is judged non-relevant
        "q1": {"d9": 3.0, "d1": 2.0, "d2": 1.0},
        # q2: its only relevant document is 11th: outside MRR@10 and nDCG@10, inside recall@100
        "q2": {f"x{i:02d}": 100.0 - i for i in range(10)} | {"d5": 1.0},
        # q3 has no answer at all: it counts as zero, not as missing
    }
    scores = evaluate_run(run, qrels)
    ndcg_q1 = (1 / math.log2(3) + 2 / math.log2(4)) / (2 / math.log2(2) + 1 / math.log2(3))
    assert scores["queries"] == 3
    assert scores["ndcg@10"] == pytest.approx(ndcg_q1 / 3)
    assert scores["mrr@10"] == pytest.approx(0.5 / 3)
    assert scores["recall@100"] == pytest.approx(2 / 3)
    assert scores["recall_curve"][1] == 0.0
    assert scores["recall_curve"][3] == pytest.approx(1 / 3)  # q1 fully recalled by rank 3


def test_identical_ids_are_ignored_by_default():
    # ArguAna's case: the query is itself a corpus document and would trivially rank first.
    qrels = {"a1": {"a2": 1}}
    run = {"a1": {"a1": 9.0, "a2": 5.0}}
    assert evaluate_run(run, qrels)["mrr@10"] == 1.0
    assert evaluate_run(run, qrels, ignore_identical_ids=False)["mrr@10"] == 0.5


def test_random_runs_match_the_reference_formulas():
    rng = random.Random(7)
    docs = [f"d{i}" for i in range(60)]
    qrels = {
        f"q{q}": {doc: rng.choice([0, 1, 1, 2]) for doc in rng.sample(docs, rng.randint(1, 8))}
        for q in range(25)
    }
    qrels = {q: judged for q, judged in qrels.items() if any(g > 0 for g in judged.values())}
    run = {q: {doc: rng.random() for doc in rng.sample(docs, 40)} for q in qrels}
    scores = evaluate_run(run, qrels)
    order = {q: ranked(found) for q, found in run.items()}
    n = len(qrels)
    assert scores["ndcg@10"] == pytest.approx(sum(reference_ndcg10(order[q], qrels[q]) for q in qrels) / n)
    assert scores["mrr@10"] == pytest.approx(sum(reference_rr10(order[q], qrels[q]) for q in qrels) / n)
    for k in (1, 5, 20, 100):
        expected = sum(reference_recall(order[q], qrels[q], k) for q in qrels) / n
        assert scores["recall_curve"][k] == pytest.approx(expected), k


@pytest.mark.parametrize(
    ("run", "qrels", "message"),
    [
        ({"q": {"d": 1.0}}, {}, "qrels is empty"),
        ({"q": {"d": float("nan")}}, {"q": {"d": 1}}, r"run\['q'\]\['d'\]"),
        ({"q": {"d": 1.0}}, {"q": {"d": "yes"}}, r"qrels\['q'\]\['d'\]"),
        ({"q": {"d": 1.0}}, {"q": {"d": 0}}, "no query with a relevant document"),
    ],
)
def test_bad_runs_and_qrels_name_the_entry(run, qrels, message):
    with pytest.raises(ValueError, match=message):
        evaluate_run(run, qrels)


def test_trec_run_round_trip_and_errors(tmp_path):
    run = {"q1": {"d1": 2.5, "d2": 1.0}, "q2": {"d3": -0.25}}
    for name in ("run.trec", "run.trec.gz"):
        write_trec_run(tmp_path / name, run, tag="test")
        assert read_trec_run(tmp_path / name) == run
    first = (tmp_path / "run.trec").read_text().splitlines()[0]
    assert first == "q1 Q0 d1 1 2.500000 test"
    (tmp_path / "bad.trec").write_text("q1 Q0 d1 1 2.5 test\nq1 Q0 d2 2 high test\n")
    with pytest.raises(ValueError, match=r"bad.trec:2: score 'high'"):
        read_trec_run(tmp_path / "bad.trec")
    with pytest.raises(ValueError, match="spaces"):
        write_trec_run(tmp_path / "x.trec", {"q 1": {"d": 1.0}}, tag="t")


# --------------------------------------------------------------------------- report
def _table_rows(markdown: str) -> dict[tuple[str, str, str], list[str]]:
    rows = {}
    for line in markdown.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) == 8 and re.fullmatch(r"\d+", cells[3]):
            rows[(cells[0], cells[1], cells[2])] = cells[3:]
    return rows


def test_report_numbers_match_an_independent_computation(tmp_path):
    rng = random.Random(3)
    docs = [f"d{i}" for i in range(150)]
    out = tmp_path / "reports"
    expected = {}
    for dataset in ("alpha", "beta"):
        qrels = {
            f"{dataset}-q{i}": {rng.choice(docs): rng.choice([1, 2]) for _ in range(3)} for i in range(12)
        }
        for system, retrieval in (
            ("dense", "cosine"),
            ("colbert-tuned", "plaid"),
            ("colbert-tuned", "exact"),
        ):
            run = {q: {doc: rng.random() for doc in rng.sample(docs, 120)} for q in qrels}
            save_result(
                out / "runs" / dataset,
                dataset=dataset,
                system=system,
                retrieval=retrieval,
                run=run,
                qrels=qrels,
            )
            order = {q: ranked(found)[:100] for q, found in run.items()}
            expected[(dataset, report.SYSTEMS[system], retrieval)] = (
                sum(reference_ndcg10(order[q], qrels[q]) for q in qrels) / len(qrels),
                sum(reference_rr10(order[q], qrels[q]) for q in qrels) / len(qrels),
                sum(reference_recall(order[q], qrels[q], 100) for q in qrels) / len(qrels),
            )
    curve = [{"step": i, "loss": 3.0 - 0.1 * i} for i in range(1, 9)]
    save_training_loss(out / "runs" / "alpha", "colbert-tuned", curve)
    # beta scored alpha's model zero-shot: the same curve, which the plot must draw once, not twice
    save_training_loss(out / "runs" / "beta", "colbert-tuned", curve)
    save_training_loss(out / "runs" / "beta", "pylate", [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0}])

    written = write_report(out)

    markdown = (out / "quality.md").read_text()
    rows = _table_rows(markdown)
    assert set(rows) == set(expected)
    for key, (ndcg, mrr, recall) in expected.items():
        queries, shown_ndcg, shown_mrr, shown_recall, delta = rows[key]
        assert queries == "12"
        assert float(shown_ndcg) == pytest.approx(ndcg, abs=5e-5), key
        assert float(shown_mrr) == pytest.approx(mrr, abs=5e-5), key
        assert float(shown_recall) == pytest.approx(recall, abs=5e-5), key
        dense = expected[(key[0], report.SYSTEMS["dense"], "cosine")][0]
        assert delta == ("" if key[2] == "cosine" else f"{ndcg - dense:+.4f}")
    for plot in written["plots"]:
        assert Path(plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bars = json.loads((out / "plots" / "ndcg.json").read_text())
    # one bar per (dataset, system): the ColBERT bar is its PLAID index, not exact search
    assert {(b["dataset"], b["system"], b["retrieval"]) for b in bars} == {
        (d, s, r) for d in ("alpha", "beta") for s, r in (("dense", "cosine"), ("colbert-tuned", "plaid"))
    }
    loss = json.loads((out / "plots" / "loss.json").read_text())
    steps: dict[str, list[int]] = {}
    for point in loss:
        steps.setdefault(point["run"], []).append(point["step"])
    assert steps == {"alpha / beta: colbert-tuned": list(range(1, 9)), "beta: pylate": [1, 2]}
    assert "plots/loss.png" in markdown and "plots/ndcg.png" in markdown


def test_report_refuses_an_empty_or_foreign_runs_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no results to report"):
        write_report(tmp_path)
    (tmp_path / "runs" / "x").mkdir(parents=True)
    (tmp_path / "runs" / "x" / "oops.json").write_text('{"dataset": "x"}')
    with pytest.raises(ValueError, match=r"oops.json: not a result record"):
        write_report(tmp_path)


def test_result_names_cannot_leave_their_folder(tmp_path):
    for bad in ("../x", "a/b", "a.b", ""):
        with pytest.raises(ValueError, match="names a file"):
            save_result(tmp_path, dataset="d", system=bad, retrieval="exact", run={}, qrels={"q": {"d": 1}})
    assert list(tmp_path.iterdir()) == []


def test_module_examples_run():
    for module in (runs, report):
        failures, _ = doctest.testmod(module)
        assert failures == 0, module.__name__


# --------------------------------------------------------------------------- config overlays
def test_overlay_is_laid_over_params_and_overrides_win(tmp_path):
    (tmp_path / "params.yaml").write_text("train:\n  epochs: 2\n  seed: 5\n")
    (tmp_path / "overlay.yaml").write_text("train:\n  epochs: 4\nquality:\n  name: toy\n")
    params = load_params(tmp_path / "params.yaml", {"train.seed": 9}, overlays=[tmp_path / "overlay.yaml"])
    assert (params.train.epochs, params.train.seed, params.quality.name) == (4, 9, "toy")
    assert params.prepare == Params().prepare


def test_overlay_errors_name_the_overlay(tmp_path):
    (tmp_path / "overlay.yaml").write_text("quality:\n  sistems: [dense]\n")
    with pytest.raises(ConfigError, match=r"overlay.yaml: quality.sistems: unknown key"):
        load_params(tmp_path / "params.yaml", overlays=[tmp_path / "overlay.yaml"])
    with pytest.raises(ConfigError, match=r"missing\.yaml: overlay file not found"):
        load_params(tmp_path / "params.yaml", overlays=[tmp_path / "missing.yaml"])
    (tmp_path / "overlay.yaml").write_text("quality:\n  dataset: no/such/folder\n")
    with pytest.raises(ConfigError, match=r"quality\.dataset: path 'no/such/folder' does not exist"):
        load_params(tmp_path / "params.yaml", overlays=[tmp_path / "overlay.yaml"])


@pytest.mark.parametrize("name", ["scifact", "nfcorpus", "arguana"])
def test_shipped_configs_are_valid(name, shared_data):
    params = load_params(REPO / "params.yaml", overlays=[REPO / "configs" / f"{name}.yaml"])
    assert params.quality.name == name and params.quality.output == "reports/beir"


# --------------------------------------------------------------------------- the quality stage
TOPICS = ["volcano eruptions", "honeybee colonies", "glacier melting", "jazz improvisation", "tax policy"]


def tiny_beir(folder: Path) -> dict[str, dict[str, int]]:
    """Five topics, four documents each; each query asks about one topic (two relevant documents)."""
    (folder / "qrels").mkdir(parents=True)
    corpus, queries, qrels = [], [], {}
    for t, topic in enumerate(TOPICS):
        for j in range(4):
            corpus.append(
                {"_id": f"doc{t}-{j}", "title": "", "text": f"Notes {j} on {topic}: facts and figures."}
            )
        queries.append({"_id": f"q{t}", "text": f"What is known about {topic}?"})
        qrels[f"q{t}"] = {f"doc{t}-0": 1, f"doc{t}-1": 2}
    (folder / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus))
    (folder / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in queries))
    lines = ["query-id\tcorpus-id\tscore"] + [
        f"{q}\t{d}\t{s}" for q, ds in qrels.items() for d, s in ds.items()
    ]
    (folder / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")
    return qrels


@pytest.mark.slow
def test_quality_stage_scores_every_system_and_the_report_reads_them(tmp_path, saved_colbert):
    from pipeline.stages import quality
    from pipeline.stages import report as report_stage

    qrels = tiny_beir(tmp_path / "tiny")
    overrides = {
        "quality.dataset": str(tmp_path / "tiny"),
        "quality.model": str(saved_colbert),
        "quality.device": "cpu",
        "quality.output": str(tmp_path / "reports"),
        "quality.query_length": 40,
        "index.device": "cpu",
    }
    params = load_params(tmp_path / "params.yaml", overrides)
    outputs = quality.run(params, tmp_path)

    folder = tmp_path / "reports" / "runs" / "tiny"
    names = sorted(p.name for p in folder.glob("*.json"))
    assert names == [
        "colbert-base.exact.json",
        "colbert-base.plaid.json",
        "colbert-tuned.exact.json",
        "colbert-tuned.plaid.json",
        "dense.cosine.json",
    ]
    for name in names:
        record = json.loads((folder / name).read_text())
        run = read_trec_run(folder / record["run_file"])
        assert sorted(run) == sorted(qrels)
        # exact search ranks the whole corpus (20 documents); PLAID only what its probed centroids hold
        depth = {len(found) for found in run.values()}
        assert depth == {20} if record["retrieval"] != "plaid" else min(depth) >= 5, (name, depth)
        assert record["metrics"]["ndcg@10"] == pytest.approx(evaluate_run(run, qrels)["ndcg@10"])
        assert record["details"]["documents"] == 20
        # quality.query_length overrides every ColBERT's own (32); the dense bi-encoder has none
        assert record["details"].get("query_length") == (None if record["system"] == "dense" else 40)
    dense = json.loads((folder / "dense.cosine.json").read_text())["metrics"]
    # the topics are far apart: a bi-encoder that gets ids right finds both relevant notes in its top 5
    # (among four near-identical notes, so their order, and nDCG above its floor of ~0.52, is chance)
    assert dense["recall_curve"]["5"] == 1.0 and dense["ndcg@10"] > 0.5
    plaid = read_trec_run(folder / "colbert-tuned.plaid.trec.gz")
    exact = read_trec_run(folder / "colbert-tuned.exact.trec.gz")
    # the index answers what exact MaxSim answers, up to its 4-bit residuals swapping near-ties
    overlap = [len(set(ranked(plaid[q])[:5]) & set(ranked(exact[q])[:5])) / 5 for q in qrels]
    assert sum(overlap) / len(overlap) >= 0.8, overlap
    assert outputs["dataset"] == "tiny" and "dense.cosine" in outputs
    # the DVC metric `dvc exp show` lists: every row's scores, as the records hold them
    scores = json.loads((tmp_path / "metrics" / "quality.json").read_text())
    assert sorted(scores) == ["colbert-base", "colbert-tuned", "dataset", "dense"]
    assert scores["dataset"] == "tiny" and set(scores["colbert-base"]) == {"plaid", "exact"}
    dense_run = read_trec_run(folder / "dense.cosine.trec.gz")
    assert scores["dense"]["cosine"]["ndcg@10"] == pytest.approx(evaluate_run(dense_run, qrels)["ndcg@10"])
    assert scores["dense"]["cosine"]["queries"] == len(qrels)  # a table rendered from it needs the count
    assert set(scores["colbert-tuned"]) == {"plaid", "exact"}

    written = report_stage.run(params, tmp_path)
    markdown = Path(written["markdown"]).read_text()
    assert len(_table_rows(markdown)) == 5 and written["datasets"] == ["tiny"]


def test_quality_stage_checks_the_model_before_loading_anything(tmp_path):
    from pipeline.stages import quality

    tiny_beir(tmp_path / "tiny")
    params = load_params(
        tmp_path / "params.yaml",
        {"quality.dataset": str(tmp_path / "tiny"), "quality.model": str(tmp_path / "nothing-here")},
    )
    with pytest.raises(FileNotFoundError, match="nothing-here is not a saved model"):
        quality.run(params, tmp_path)
    assert not (tmp_path / "reports").exists()


def test_cli_report_without_results_is_one_line_and_exit_2(tmp_path):
    result = subprocess.run(
        # no --params: the implicit params.yaml may be absent (a named one must exist)
        [sys.executable, "-m", "pipeline", "report"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 2
    assert "no results yet (run `colbert-pipeline quality` first)" in result.stderr
    assert "Traceback" not in result.stderr

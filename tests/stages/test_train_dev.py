"""The train stage's dev split (evaluated during training, logged to MLflow, the best checkpoint kept) and its
console output (a loss line now and then, while MLflow still gets every step)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from datasets import Dataset
from mlflow.tracking import MlflowClient

from pipeline.data.dev_split import split_dev
from pipeline.project.config import ConfigError
from pipeline.project.layout import DEV_LOSS_FILE
from pipeline.project.params_file import load_params
from pipeline.stages import train
from pipeline.training import trainer as training

TOPICS = ["protein folding", "river deltas", "jazz harmony", "glacier retreat", "tax policy", "bird song"]


def _write_prepared(project: Path) -> Path:
    """A prepared triplet folder as ``prepare`` writes it: 6 queries with 2 positives each."""
    rows = [
        {
            "query": f"what is known about {topic}?",
            "positive": f"A study of {topic}, part {part}: findings on {topic} and its causes.",
            "negative": f"An unrelated note on {TOPICS[(i + 1) % len(TOPICS)]} and other things.",
        }
        for i, topic in enumerate(TOPICS)
        for part in (1, 2)
    ]
    folder = project / "data" / "prepared" / "train"
    folder.mkdir(parents=True)
    Dataset.from_list(rows).save_to_disk(str(folder / "dataset"))
    (folder / "format.json").write_text(json.dumps({"kind": "triplets", "columns": sorted(rows[0])}))
    return folder


def _params(project: Path, **overrides):
    base = {
        "train.batch_size": 4,
        "train.device": "cpu",
        "train.dev_fraction": 0.34,
        "train.eval_steps": 1,
    }
    return load_params(project / "params.yaml", {**base, **overrides})


def test_dev_split_holds_out_whole_queries(tmp_path):
    dataset = Dataset.load_from_disk(str(_write_prepared(tmp_path) / "dataset"))
    rest, dev = split_dev(dataset, fraction=0.34, seed=42, kind="triplets")
    assert len(set(dev["query"])) == 2 and len(dev) == 4
    assert not set(rest["query"]) & set(dev["query"])
    assert len(rest) + len(dev) == len(dataset)


def test_dev_loss_is_logged_per_eval_step_and_the_best_checkpoint_is_the_saved_model(tmp_path):
    _write_prepared(tmp_path)
    params = _params(tmp_path, **{"train.max_steps": 3, "train.learning_rate": 3e-4})
    result = train.run(params, tmp_path)
    model_dir = Path(result["model"])
    curve = json.loads((model_dir / DEV_LOSS_FILE).read_text())
    assert [point["step"] for point in curve] == [1, 2, 3]
    best = min(curve, key=lambda point: point["eval_loss"])
    assert result["best_step"] == best["step"]
    assert result["best_eval_loss"] == best["eval_loss"]
    history = MlflowClient().get_metric_history(result["mlflow_run_id"], "eval_loss")
    assert sorted(m.step for m in history) == [1, 2, 3]
    # The saved model is the best checkpoint's: its dev loss, measured afresh, is the best one.
    from pipeline import models

    saved = models.ColBERT(model_name_or_path=str(model_dir), device="cpu")
    dataset, kind = train.load_training_set(tmp_path / "data" / "prepared" / "train", params.train)
    trainer = training.build_trainer(
        params.train, saved, training.build_loss(saved, params.train, kind), dataset, kind, tmp_path / "eval"
    )
    assert abs(trainer.evaluate()["eval_loss"] - best["eval_loss"]) < 1e-4


def test_early_stopping_ends_training_when_the_dev_loss_stops_improving(tmp_path):
    _write_prepared(tmp_path)
    # A learning rate far below float32 resolution leaves the weights as they are: the dev loss cannot
    # improve after the first evaluation, so a patience of 1 stops at step 2 of 6.
    params = _params(
        tmp_path,
        **{"train.max_steps": 6, "train.learning_rate": 1e-30, "train.early_stopping_patience": 1},
    )
    result = train.run(params, tmp_path)
    assert result["steps"] == 2
    assert result["best_step"] == 1


def test_early_stopping_without_a_dev_split_is_a_config_error(tmp_path):
    try:
        load_params(tmp_path / "params.yaml", {"train.early_stopping_patience": 2})
    except ConfigError as error:
        assert "dev_fraction" in str(error)
    else:  # pragma: no cover - the assertion below reports it
        raise AssertionError("early_stopping_patience without train.dev_fraction was accepted")


def test_a_training_prints_a_loss_line_every_tenth_of_its_steps_and_logs_each_step_to_mlflow(tmp_path, capfd):
    _write_prepared(tmp_path)
    params = load_params(
        tmp_path / "params.yaml", {"train.batch_size": 4, "train.device": "cpu", "train.max_steps": 20}
    )
    result = train.run(params, tmp_path)
    output = capfd.readouterr()
    printed = re.findall(r"\{'loss': ", output.out + output.err)
    # Steps 1, 3, 5, ... 19 and the last: 11 lines for 20 steps (transformers' own bar printed all 20).
    assert 2 <= len(printed) <= 11, (output.out + output.err)[-2000:]
    history = MlflowClient().get_metric_history(result["mlflow_run_id"], "loss")
    assert sorted(metric.step for metric in history) == list(range(1, 21))

"""``train.query_length``: the model trains with it and keeps it for scoring."""

from __future__ import annotations

import json

from datasets import Dataset

from pipeline import models
from pipeline.project.params_file import load_params
from pipeline.stages import train


def test_train_query_length_is_the_saved_models_query_length(tmp_path):
    folder = tmp_path / "data" / "prepared" / "train"
    folder.mkdir(parents=True)
    rows = [
        {"query": f"a long argument number {i} " * 20, "positive": f"a reply {i}", "negative": f"noise {i}"}
        for i in range(4)
    ]
    Dataset.from_list(rows).save_to_disk(str(folder / "dataset"))
    (folder / "format.json").write_text(json.dumps({"kind": "triplets", "columns": sorted(rows[0])}))
    overrides = {"train.max_steps": 1, "train.batch_size": 2, "train.device": "cpu", "train.query_length": 64}
    result = train.run(load_params(tmp_path / "params.yaml", overrides), tmp_path)
    model = models.ColBERT(model_name_or_path=result["model"], device="cpu")
    assert model.query_length == 64
    assert model.tokenize(["a long argument " * 40], is_query=True)["input_ids"].shape[1] == 64

"""params.yaml validation: every error names the key, before any stage runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.project.config import ConfigError, Params
from pipeline.project.params_file import load_params, parse_override, read_params_file, write_params

REPO = Path(__file__).resolve().parents[1]


def test_committed_params_yaml_is_valid_and_equals_the_schema_defaults():
    # The file documents every key; the schema's defaults must say the same thing.
    assert load_params(REPO / "params.yaml") == Params()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"train": {"epoch": 1}}, r"params.yaml: train.epoch: unknown key"),
        ({"trian": {}}, r"params.yaml: trian: unknown key"),
        ({"train": {"epochs": "two"}}, r"params.yaml: train.epochs: Input should be a valid integer"),
        ({"train": {"learning_rate": -1}}, r"train.learning_rate: Input should be greater than 0"),
        (
            {"prepare": {"source": "csv"}},
            r"prepare.source: Input should be 'sample', 'triplets', 'kd' or 'beir'",
        ),
        ({"prepare": {"source": "kd"}}, r"prepare.kd.scores is not set"),
        ({"index": {"name": "../escape"}}, r"index.name: String should match pattern"),
        # PLAID packs residuals in 1, 2, 4 or 8 bits: 3 must fail here, before any MLflow run opens
        ({"index": {"nbits": 3}}, r"index.nbits: Input should be 1, 2, 4 or 8"),
        # shards of the index's encoding: at least one (the corpus whole)
        ({"index": {"shards": 0}}, r"index.shards: Input should be greater than or equal to 1"),
    ],
)
def test_bad_params_name_the_key(raw, message):
    with pytest.raises(ConfigError, match=message):
        Params.model_validate(raw)


def test_missing_input_path_names_the_key(tmp_path):
    params_file = tmp_path / "params.yaml"
    params_file.write_text("prepare:\n  source: beir\n  beir:\n    folder: data/nowhere\n")
    with pytest.raises(ConfigError, match=r"prepare.beir.folder: path 'data/nowhere' does not exist"):
        load_params(params_file)


def test_overrides_are_validated_like_the_file(tmp_path):
    params = load_params(tmp_path / "params.yaml", {"train.epochs": 3, "register.margin": 0.01})
    assert params.train.epochs == 3 and params.register.margin == 0.01
    with pytest.raises(ConfigError, match=r"train\.epochs"):
        load_params(tmp_path / "params.yaml", {"train.epochs": 0})
    assert parse_override("prepare.sample.n_train_entities=8") == ("prepare.sample.n_train_entities", 8)
    with pytest.raises(ConfigError, match=r"section\.key=value"):
        parse_override("train.epochs")


def test_write_params_round_trips(tmp_path):
    params = load_params(tmp_path / "none.yaml", {"train.max_steps": 5})
    write_params(params, tmp_path / "params.yaml")
    assert load_params(tmp_path / "params.yaml") == params
    assert read_params_file(tmp_path / "params.yaml")["train"]["max_steps"] == 5


def test_malformed_yaml_names_the_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match=r"params.yaml: not valid YAML"):
        load_params(path)

"""The CLI's user errors: exit status 2 and one line that names the file, key or value and what would do.

Most cases call :func:`pipeline.cli.main` in this process (fast); one runs ``python -m pipeline`` as a user
does, to see the real exit status and the whole of stderr.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import cli
from pipeline.cli import stages as stage_commands
from pipeline.project.config import Params
from pipeline.project.layout import REPORT_STAGES, STAGE_PARAMS, STAGES, Layout
from tests.dvc_yaml import dvc_stages, entry_path

REPO = Path(__file__).resolve().parents[1]


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``colbert-pipeline <argv>`` in this process: exit status, stdout, stderr."""
    try:
        code = cli.main(argv)
    except SystemExit as exit_:  # argparse's usage errors and --help leave through SystemExit
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def user_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The one line a user error prints (asserting exit status 2 and nothing else on stderr)."""
    code, _, err = run_cli(argv, capsys)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project folder as the working directory (no params.yaml: all defaults)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("COLBERT_PIPELINE_RESULT_FILE", raising=False)
    return tmp_path


# -- a missing file -------------------------------------------------------------------------------------
def test_a_missing_params_file_named_on_the_command_line_fails(project: Path, capsys) -> None:
    line = user_error(["validate", "--params", "missing.yaml"], capsys)
    assert line == "colbert-pipeline validate: error: --params missing.yaml: file not found"
    # A stage too, before it does any work.
    assert "--params nowhere/params.yaml: file not found" in user_error(
        ["prepare", "--params", "nowhere/params.yaml"], capsys
    )
    assert not (project / "data").exists()


def test_without_the_flag_an_absent_params_yaml_means_the_defaults(project: Path, capsys) -> None:
    code, out, err = run_cli(["validate"], capsys)
    assert code == 0, err
    assert json.loads(out) == Params().model_dump(mode="json")


def test_a_missing_or_folder_config_overlay_fails_naming_it(project: Path, capsys) -> None:
    line = user_error(["validate", "--config", "configs/nope.yaml"], capsys)
    assert line.endswith("--config configs/nope.yaml: file not found")
    (project / "configs").mkdir()
    assert user_error(["validate", "--config", "configs"], capsys).endswith(
        "--config configs: is a folder, not a file"
    )


# -- where a bad value came from ------------------------------------------------------------------------
def test_a_bad_set_value_is_reported_as_the_set(project: Path, capsys) -> None:
    (project / "params.yaml").write_text("train:\n  epochs: 2\n")
    line = user_error(["validate", "--set", "train.epochs=two"], capsys)
    prefix = "colbert-pipeline validate: error: --set train.epochs: Input should be a valid integer"
    assert line.startswith(prefix)
    assert "(got 'two')" in line
    assert "params.yaml" not in line


def test_a_bad_config_value_names_the_config_file(project: Path, capsys) -> None:
    (project / "params.yaml").write_text("train:\n  epochs: 2\n")
    (project / "scifact.yaml").write_text("train:\n  learning_rate: -1\n")
    line = user_error(["validate", "--config", "scifact.yaml"], capsys)
    assert "scifact.yaml: train.learning_rate: Input should be greater than 0 (got -1)" in line
    assert "params.yaml" not in line


def test_a_bad_params_yaml_value_names_params_yaml(project: Path, capsys) -> None:
    (project / "params.yaml").write_text("train:\n  epochs: two\n")
    line = user_error(["validate"], capsys)
    assert "error: params.yaml: train.epochs: Input should be a valid integer" in line
    # Overridden by a later source, the bad value is gone: no error.
    assert run_cli(["validate", "--set", "train.epochs=3"], capsys)[0] == 0


def test_each_error_names_its_own_source(project: Path, capsys) -> None:
    (project / "params.yaml").write_text("train:\n  epochs: two\n")
    (project / "overlay.yaml").write_text("index:\n  nbits: 3\n")
    line = user_error(["validate", "--config", "overlay.yaml", "--set", "register.margin=-1"], capsys)
    assert "params.yaml: train.epochs:" in line
    assert "overlay.yaml: index.nbits: Input should be 1, 2, 4 or 8 (got 3)" in line
    assert "--set register.margin: Input should be greater than or equal to 0 (got -1)" in line


def test_a_missing_input_path_names_the_set_that_gave_it(project: Path, capsys) -> None:
    argv = ["validate", "--set", "prepare.source=beir", "--set", "prepare.beir.folder=data/nowhere"]
    line = user_error(argv, capsys)
    assert "--set prepare.beir.folder: path 'data/nowhere' does not exist" in line


# -- unknown keys ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("setting", "suggestion"),
    [
        ("train.epoch=2", "--set train.epoch: unknown key; did you mean train.epochs?"),
        ("prepare.beir.foldr=x", "--set prepare.beir.foldr: unknown key; did you mean prepare.beir.folder?"),
        ("trian.epochs=2", "--set trian.epochs: unknown key; did you mean train"),
    ],
)
def test_an_unknown_key_suggests_the_closest(project: Path, capsys, setting: str, suggestion: str) -> None:
    assert suggestion in user_error(["validate", "--set", setting], capsys)


def test_an_unknown_key_with_nothing_close_lists_the_section(project: Path, capsys) -> None:
    line = user_error(["validate", "--set", "evaluate.zzz=1"], capsys)
    assert line.endswith("--set evaluate.zzz: unknown key; evaluate takes batch_size, device")


def test_an_unknown_key_in_params_yaml_suggests_too(project: Path, capsys) -> None:
    (project / "params.yaml").write_text("train:\n  learning_rat: 0.1\n")
    line = user_error(["validate"], capsys)
    assert "params.yaml: train.learning_rat: unknown key; did you mean train.learning_rate?" in line


# -- no pydantic prefixes -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (["prepare.source=kd"], "--set prepare.source: source is 'kd' but prepare.kd.scores is not set"),
        (
            ["train.early_stopping_patience=2"],
            "early_stopping_patience needs a dev split: set train.dev_fraction > 0",
        ),
        (["index.backend=onnx", "index.precision=bf16"], "precision: bf16 needs backend 'torch'"),
    ],
)
def test_no_value_error_prefix(project: Path, capsys, settings: list[str], message: str) -> None:
    line = user_error(["validate", *(f"--set={setting}" for setting in settings)], capsys)
    assert message in line
    assert "Value error" not in line and "Assertion failed" not in line


# -- usage errors ---------------------------------------------------------------------------------------
def test_a_usage_error_is_one_line_too(project: Path, capsys) -> None:
    line = user_error(["train", "--epochs", "2"], capsys)
    assert line == (
        "colbert-pipeline train: error: unrecognized arguments: --epochs 2 "
        "(see colbert-pipeline train --help)"
    )
    assert "invalid choice: 'trian'" in user_error(["trian"], capsys)
    assert "--set: expected one argument" in user_error(["validate", "--set"], capsys)


def test_the_real_process_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "train", "--set", "train.epoch=2"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "colbert-pipeline train: error: --set train.epoch: unknown key; did you mean train.epochs?"
    ]
    assert not (tmp_path / "models").exists()


# -- stage help -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("stage", [*STAGES, *REPORT_STAGES])
def test_each_stage_help_says_what_it_reads_and_writes(stage: str, capsys) -> None:
    code, out, _ = run_cli([stage, "--help"], capsys)
    assert code == 0
    layout = Layout(Params(), Path.cwd())
    reads, writes = layout.stage_files(stage)
    text = " ".join(out.split())  # argparse may wrap
    assert f"The {stage} stage: " in text and f"run the {stage} stage" not in text
    purpose = text.split(f"The {stage} stage: ", 1)[1].split(" options:", 1)[0]
    assert len(purpose) > 20, purpose  # the stage module's docstring, not a placeholder
    reads_line = re.search(r"^reads: +(.*)$", out, re.MULTILINE)
    writes_line = re.search(r"^writes: +(.*)$", out, re.MULTILINE)
    assert reads_line and writes_line, out
    for path in reads:
        assert layout.relative(path) in reads_line[1].split(", ")
    for path in writes:
        assert layout.relative(path) in writes_line[1].removesuffix(" and an MLflow run").split(", ")
    for key in STAGE_PARAMS[stage]:
        assert key in out
    # The top-level help lists the same purpose.
    assert stage_commands.stage_help(stage)[0] in " ".join(run_cli(["--help"], capsys)[1].split())


def _entries(spec: dict, *fields: str) -> set[str]:
    return {entry_path(entry) for field in fields for entry in spec.get(field) or []}


@pytest.mark.parametrize("stage", sorted(dvc_stages()))
def test_stage_help_agrees_with_dvc_yaml(stage: str) -> None:
    """What --help lists is what dvc.yaml declares (code aside): the help cannot drift from the pipeline."""
    spec = dvc_stages()[stage]
    layout = Layout(Params(), REPO)
    reads, writes = ({layout.relative(path) for path in paths} for paths in layout.stage_files(stage))
    deps = {dep for dep in _entries(spec, "deps") if not dep.startswith("pipeline/")}
    produced = _entries(spec, "outs", "metrics", "plots")

    def covered(path: str, listed: set[str]) -> bool:  # a listed folder covers the files in it
        return any(path == item or path.startswith(f"{item}/") for item in listed)

    assert deps == reads
    assert all(covered(path, writes) for path in produced), (produced, writes)
    assert all(any(covered(path, {item}) for path in produced) for item in writes), (produced, writes)
    assert set(STAGE_PARAMS[stage]) == {str(param) for param in spec.get("params") or []}


# -- summary --------------------------------------------------------------------------------------------
def test_summary_prints_commands_a_user_types(project: Path, capsys, monkeypatch) -> None:
    (project / ".dvc").mkdir()
    (project / ".dvc" / "config").write_text(
        "[core]\n    no_scm = True\n    remote = storage\n['remote \"storage\"']\n    url = /srv/dvc-store\n"
    )
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///mlruns.db")
    code, out, err = run_cli(["summary"], capsys)
    assert code == 0, err
    assert "outputs:  dvc push  (to DVC remote 'storage': /srv/dvc-store)" in out
    assert "MLflow:   mlflow ui --backend-store-uri " in out
    assert not re.search(r"\S*/bin/(dvc|mlflow|colbert-pipeline)\b", out), out


def test_summary_says_how_to_activate_the_venv_only_when_needed(project: Path, capsys, monkeypatch) -> None:
    scripts = Path(sys.executable).parent
    if not (scripts / "activate").is_file():
        pytest.skip("the tests do not run in a virtual environment")
    monkeypatch.setenv("PATH", os.pathsep.join([str(scripts), os.environ.get("PATH", "")]))
    assert stage_commands.activation_hint(project) is None
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    hint = stage_commands.activation_hint(project)
    assert hint == f"run them in this environment: source {scripts / 'activate'}"

"""The docs' training example (docs/training.md, once the README's "Train" section) runs as written, in a
temporary folder, and trains the model."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

PAGE = Path(__file__).resolve().parents[2] / "docs" / "training.md"


def train_block() -> str:
    """The first python block of the page, before its first section."""
    text = PAGE.read_text(encoding="utf-8").split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert blocks, "docs/training.md has no python block before its first section"
    return blocks[0]


@pytest.mark.slow
def test_readme_train_block_runs_and_saves_a_trained_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the block writes relative folders
    namespace: dict = {}
    exec(compile(train_block(), str(PAGE), "exec"), namespace)

    trainer, model = namespace["trainer"], namespace["model"]
    assert trainer.state.global_step == 1
    assert trainer.state.log_history[-1]["train_loss"] > 0
    saved = tmp_path / "custom-colbert-model"
    assert (saved / "config_sentence_transformers.json").is_file()

    from pipeline import models

    reloaded = models.ColBERT(model_name_or_path=str(saved), device="cpu")
    text = ["which animal barks?"]
    assert torch.allclose(
        torch.as_tensor(reloaded.encode(text, is_query=True)[0]),
        torch.as_tensor(model.encode(text, is_query=True)[0]),
        atol=1e-5,
    )

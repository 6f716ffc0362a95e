"""ColBERT models: sentence-transformers' ``MultiVectorEncoder`` with PyLate's defaults and keyword names.

The ``ColBERT`` class: its constructor, PyLate's attributes and ``encode`` signature. Where a model comes
from is :mod:`~pipeline.models.checkpoints`', PyLate's settings :mod:`~pipeline.models.settings`', the
``encode`` loop :mod:`~pipeline.models.encoding`'.

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

import os
from pathlib import Path
from typing import Any

import torch
from sentence_transformers import MultiVectorEncoder
from sentence_transformers.base.modules.transformer import Transformer

from pipeline.models.checkpoints import (
    ModelNotFoundError,
    check_reachable,
    hub_offline,
    is_colbert_checkpoint,
    is_pylate_config,
    resolve_model_name,
    saved_model_config,
    unreachable_message,
)
from pipeline.models.encoding import EncodeOptions, encode_texts
from pipeline.models.precision import check_precision, in_encode_precision
from pipeline.models.settings import (
    COLBERT_DEFAULTS,
    apply_colbert_settings,
    explicit_settings,
    mask_module,
    pylate_config,
)


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
        encode_precision: How :meth:`encode` runs (not a PyLate argument; a plain attribute, not saved with
            the model). ``"auto"`` (the default): bfloat16 autocast on a CPU with native bfloat16 (AVX512-BF16
            or AMX), where it encodes 1.6x to 2.5x as fast as float32, and float32 elsewhere (GPUs
            included); ``"fp32"``: float32, PyLate's behaviour exactly; ``"bf16"``: autocast wherever it
            runs. Embeddings come back as float32 either way (see :mod:`pipeline.models.precision`).
        **kwargs: Passed to :class:`sentence_transformers.MultiVectorEncoder` (``model_kwargs``, ...).

    For a ColBERT checkpoint the saved settings are kept; only the arguments given explicitly override them.
    :func:`pipeline.models.backends.load_model` sets ``encode_precision`` from ``index.precision``.

    Example:
        >>> from pipeline import models
        >>> model = models.ColBERT(model_name_or_path="sentence-transformers/all-MiniLM-L6-v2", device="cpu")
        >>> model.tokenize(["hello"], is_query=True)["input_ids"].shape
        torch.Size([1, 32])
    """

    #: Not PyLate's: ``auto``, ``fp32`` or ``bf16`` (a plain attribute, not saved with the model).
    encode_precision: str = "auto"

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
        encode_precision: str = "auto",
        **kwargs: Any,
    ) -> None:
        check_precision(encode_precision, key="encode_precision")
        name = resolve_model_name(model_name_or_path) if kwargs.get("modules") is None else None
        explicit = explicit_settings(
            {
                "embedding_size": embedding_size,
                "query_prefix": query_prefix,
                "document_prefix": document_prefix,
                "query_length": query_length,
                "document_length": document_length,
                "do_query_expansion": do_query_expansion,
                "attend_to_expansion_tokens": attend_to_expansion_tokens,
                "skiplist_words": skiplist_words,
            }
        )

        is_new = True
        if name is not None:
            check_reachable(name)
            is_new = not is_colbert_checkpoint(saved_model_config(name))
            kwargs.setdefault("local_files_only", hub_offline())
        try:
            super().__init__(name, device=device, **kwargs)
        except (OSError, ValueError) as error:
            if name is None or Path(name).is_dir():
                raise
            raise ModelNotFoundError(unreachable_message(name, error)) from None

        settings = {**COLBERT_DEFAULTS, **explicit} if is_new else explicit
        if settings:
            apply_colbert_settings(self, settings, new_model=is_new)
        self.encode_precision = encode_precision

    # ------------------------------------------------------------------ PyLate 1.x checkpoints
    # PyLate 1.x writes no ``model_type``; sentence-transformers would then treat the folder as a
    # bi-encoder to convert. Its ``query_prefix`` marker identifies it, so route it as a ColBERT save.
    def _get_model_type(self, model_name_or_path: str, *args: Any, **kwargs: Any) -> str:
        model_type = super()._get_model_type(model_name_or_path, *args, **kwargs)
        if model_type == "SentenceTransformer" and is_pylate_config(saved_model_config(model_name_or_path)):
            return "MultiVectorEncoder"
        return model_type

    def _parse_model_config(self, model_config: dict[str, Any]) -> None:
        if is_pylate_config(model_config):
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
        mask = mask_module(self)
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
        config.update(pylate_config(self))
        return config

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

    @in_encode_precision
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
        # EncodeOptions' fields are named as encode's parameters: the signature stays PyLate's, spelt out.
        options = EncodeOptions.from_arguments(locals())
        return encode_texts(self, super().encode, sentences, output_value, options, kwargs)

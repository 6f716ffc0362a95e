"""``ColBERT.encode``'s loop: PyLate's ``encode`` arguments, carried out by sentence-transformers' ``encode``.

Texts come as one text, a list of texts, or a list of lists of texts (encoded as one flat list, then split
back into the groups). ``pool_factor`` becomes sentence-transformers' hierarchical token pooling;
``padding=True`` and ``output_value=None`` take :mod:`pipeline.models.token_outputs`' path.

Example:
    >>> EncodeOptions(is_query=False).role, EncodeOptions(convert_to_tensor=True).to_numpy
    ('document', False)
    >>> [a.dtype for a in as_numpy([torch.ones(2, 3, dtype=torch.bfloat16)])]
    [dtype('float32')]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from pipeline.models.token_outputs import convert, encode_token_outputs, pad_outputs

#: sentence-transformers' own ``encode`` bound to the model (``super().encode`` in ``ColBERT``).
BaseEncode = Callable[..., Any]


#: The options sentence-transformers' ``encode`` takes under the same name and meaning.
_PASSED_ON = ("prompt_name", "prompt", "batch_size", "show_progress_bar", "device", "normalize_embeddings")


@dataclasses.dataclass(frozen=True)
class EncodeOptions:
    """``ColBERT.encode``'s arguments besides the texts, ``output_value`` and the extra keywords."""

    prompt_name: str | None = None
    prompt: str | None = None
    batch_size: int = 32
    show_progress_bar: bool | None = None
    convert_to_numpy: bool | None = None
    convert_to_tensor: bool = False
    device: str | torch.device | None = None
    normalize_embeddings: bool = False
    is_query: bool = True
    padding: bool = False
    pool_factor: int = 1
    protected_tokens: int = 1

    @classmethod
    def from_arguments(cls, arguments: dict[str, Any]) -> EncodeOptions:
        """The options among ``ColBERT.encode``'s arguments (its ``locals()``), found by their names."""
        return cls(**{field.name: arguments[field.name] for field in dataclasses.fields(cls)})

    @property
    def role(self) -> str:
        """sentence-transformers' task for the texts: ``query`` or ``document``."""
        return "query" if self.is_query else "document"

    @property
    def to_numpy(self) -> bool:
        """Whether to return numpy arrays: PyLate's default, unless tensors are asked for."""
        return not self.convert_to_tensor if self.convert_to_numpy is None else self.convert_to_numpy

    def token_pooling(self) -> Any:
        """``pool_factor`` as sentence-transformers' pooling (documents only); ``None`` when there is none."""
        if self.pool_factor <= 1 or self.is_query:
            return None
        from sentence_transformers.multi_vector_encoder.modules.token_pooling import HierarchicalTokenPooling

        # PyLate does not re-normalise pooled tokens.
        return HierarchicalTokenPooling(
            self.pool_factor,
            num_protected_tokens=self.protected_tokens,
            normalize_embeddings=False,
            tasks=["document"],
        )

    def passed_on(self) -> dict[str, Any]:
        """The keywords sentence-transformers' ``encode`` takes as they are."""
        return {name: getattr(self, name) for name in _PASSED_ON}


def encode_texts(
    model: Any,
    base_encode: BaseEncode,
    sentences: Any,
    output_value: str | None,
    options: EncodeOptions,
    extra: dict[str, Any],
) -> Any:
    """What ``ColBERT.encode`` returns (see it); ``extra`` holds its other keywords."""
    if "inputs" in extra or "task" in extra:
        # A call from sentence-transformers itself (its evaluators, its trainer): passed on as it is,
        # output_value included (its own raw-dict mode).
        inputs = extra.pop("inputs", sentences)
        return base_encode(
            inputs,
            convert_to_numpy=bool(options.convert_to_numpy),
            output_value=output_value,
            **options.passed_on(),
            **extra,
        )
    _check_arguments(sentences, output_value, options)
    if options.prompt_name is None and options.prompt is None and options.role in model.prompts:
        options = dataclasses.replace(options, prompt_name=options.role)
    nested = _is_nested(sentences)
    if output_value is None or options.padding:
        if nested:
            return [
                _token_outputs(model, base_encode, list(group), output_value, options) for group in sentences
            ]
        return _token_outputs(model, base_encode, sentences, output_value, options)
    pooling = options.token_pooling()
    if pooling is not None:
        extra["token_pooling"] = pooling
    flat = [text for group in sentences for text in group] if nested else sentences
    embeddings = base_encode(
        flat, convert_to_numpy=options.to_numpy, task=options.role, **options.passed_on(), **extra
    )
    return _split_into_groups(embeddings, sentences) if nested else embeddings


def _check_arguments(sentences: Any, output_value: str | None, options: EncodeOptions) -> None:
    if sentences is None:
        raise ValueError("encode() needs `sentences`: a text, a list of texts or a list of lists of texts")
    if output_value not in ("token_embeddings", None):
        raise ValueError(f"output_value must be 'token_embeddings' or None, got {output_value!r}")
    if output_value is None and options.pool_factor > 1:
        raise ValueError(
            "output_value=None is not compatible with pool_factor > 1: pooling merges tokens, so token "
            "ids and masks would no longer line up with the embeddings"
        )


def _is_nested(sentences: Any) -> bool:
    """A non-empty list of lists of texts, whose nesting the output keeps."""
    if not isinstance(sentences, Sequence) or isinstance(sentences, str) or len(sentences) == 0:
        return False
    return all(_is_text_list(item) for item in sentences)


def _is_text_list(item: Any) -> bool:
    return isinstance(item, list | tuple) and all(isinstance(text, str) for text in item)


def _split_into_groups(embeddings: Any, groups: Sequence[Sequence[str]]) -> list[Any]:
    grouped, start = [], 0
    for group in groups:
        grouped.append(embeddings[start : start + len(group)])
        start += len(group)
    return grouped


def _token_outputs(
    model: Any, base_encode: BaseEncode, sentences: Any, output_value: str | None, options: EncodeOptions
) -> Any:
    """``encode`` with PyLate's ``padding=True`` or ``output_value=None`` (see ``token_outputs``)."""
    single = isinstance(sentences, str)
    texts = [sentences] if single else list(sentences)
    if output_value is None:
        outputs = encode_token_outputs(
            model,
            texts,
            task=options.role,
            prompt=model._resolve_prompt(options.prompt, options.prompt_name),
            batch_size=options.batch_size,
            show_progress_bar=bool(options.show_progress_bar),
            device=options.device,
            normalize_embeddings=options.normalize_embeddings,
        )
    else:
        embeddings = base_encode(
            texts,
            convert_to_numpy=False,
            task=options.role,
            token_pooling=options.token_pooling(),
            **options.passed_on(),
        )
        outputs = {"token_embeddings": [e.cpu() for e in embeddings]}
    if options.padding:
        outputs = pad_outputs(outputs, model.tokenizer.pad_token_id)
    outputs = {key: convert(values, to_numpy=options.to_numpy) for key, values in outputs.items()}
    if output_value is not None:
        return outputs["token_embeddings"][0] if single else outputs["token_embeddings"]
    return {key: values[0] for key, values in outputs.items()} if single else outputs


def as_numpy(embeddings: Any) -> list[np.ndarray]:
    """Per-text embeddings (tensors, bfloat16 ones included, or arrays) as a list of float32 numpy arrays."""
    return [
        np.asarray(e.detach().cpu().float() if isinstance(e, torch.Tensor) else e, dtype=np.float32)
        for e in embeddings
    ]

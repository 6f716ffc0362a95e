"""Dropout with cheaper random masks for CPU training: the same Bernoulli(p) masks, drawn faster.

Why: on a CPU, dropout is the largest cost of a long-document training step after the matrix products.
torch draws every mask with ``bernoulli_`` into a float tensor, and attention dropout also takes SDPA off
its fused CPU kernel onto its math path. Measured on one SciFact batch (16 triplets, 180-token documents,
forward + backward, this project's 2-core CPU; ``python -m bench.train.step --documents long
--document-rows 16``, with and without ``--dropout 0``): 3.0 s per step with MiniLM's dropout, 2.5 s
with none. Here a mask is 32-bit words from numpy's PCG64 compared with ``p * 2**32``: per element the
same Bernoulli(p) (to within 2**-33), drawn several times faster, and seeded from torch's default
generator, so ``torch.manual_seed`` (the trainer's ``seed``) still makes a run repeatable. The draws
differ from torch's own, so a run is not bit-identical to one with ``torch.nn.Dropout``.

:func:`use_cheap_dropout` puts it into a transformers model in place: its ``nn.Dropout`` modules become
:class:`MaskDropout`, and its attention becomes :func:`attention`, which is SDPA except where a CPU
training step applies attention dropout without autocast. Neither changes what is saved: a dropout
module holds no weights, and transformers does not write the attention implementation to ``config.json``.

Example:
    >>> import torch
    >>> _ = torch.manual_seed(0)
    >>> mask = drop_mask((1000, 1000), 0.1)
    >>> mask.dtype, round(mask.float().mean().item(), 2)
    (torch.bool, 0.1)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

ATTENTION = "sdpa_pcg_dropout"
"""The name :func:`use_cheap_dropout` registers :func:`attention` under with transformers."""


def drop_mask(shape: tuple[int, ...] | torch.Size, p: float) -> torch.Tensor:
    """A boolean tensor of ``shape``, each element True (dropped) with probability ``p``, 0 < p < 1.

    The PCG64 stream is seeded from torch's default CPU generator, which the draw advances.

    Example:
        >>> _ = torch.manual_seed(3)
        >>> first = drop_mask((4, 5), 0.5)
        >>> _ = torch.manual_seed(3)
        >>> bool((drop_mask((4, 5), 0.5) == first).all())
        True
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"dropout probability must be between 0 and 1 (exclusive), got {p}")
    seed = int(torch.randint(0, 2**62, ()).item())
    count = int(np.prod(shape, dtype=np.int64))
    words = np.random.PCG64(seed).random_raw((count + 1) // 2).view(np.uint32)[:count]
    return torch.from_numpy(words < np.uint32(round(p * 2**32))).view(tuple(shape))


class MaskDropout(torch.nn.Dropout):
    """``torch.nn.Dropout`` whose mask comes from :func:`drop_mask` in CPU training (else torch's own).

    Example:
        >>> layer = MaskDropout(0.5).train()
        >>> out = layer(torch.ones(400, 500))
        >>> sorted(out.unique().tolist()), round((out == 0).float().mean().item(), 2)
        ([0.0, 2.0], 0.5)
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self.training or not 0.0 < self.p < 1.0 or input.device.type != "cpu":
            return super().forward(input)
        # masked_fill returns a new tensor, so scaling it in place never touches the input.
        return input.masked_fill(drop_mask(input.shape, self.p), 0.0).mul_(1.0 / (1.0 - self.p))


class _DropoutAttention(torch.autograd.Function):
    """softmax(q kᵀ · scale + mask) with dropout, times v: the math SDPA runs, with a cheaper mask.

    Saves the softmax and the boolean mask for backward (what SDPA's math path keeps, with a bool in
    place of a float mask), and folds dropout's 1 / (1 - p) into the small output and its gradient.
    """

    @staticmethod
    def forward(
        ctx: Any,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        masked: torch.Tensor | None,
        p: float,
        scale: float,
    ) -> torch.Tensor:
        scores = torch.matmul(query * scale, key.transpose(-1, -2))
        if masked is not None:  # True where a key must not be attended to (padding)
            scores.masked_fill_(masked, torch.finfo(scores.dtype).min)
        probs = torch.softmax(scores, dim=-1)
        del scores
        dropped = drop_mask(probs.shape, p)
        output = torch.matmul(probs.masked_fill(dropped, 0.0), value).mul_(1.0 / (1.0 - p))
        ctx.save_for_backward(query, key, value, probs, dropped)
        ctx.p, ctx.scale = p, scale
        return output

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        query, key, value, probs, dropped = ctx.saved_tensors
        grad = grad * (1.0 / (1.0 - ctx.p))
        grad_value = torch.matmul(probs.masked_fill(dropped, 0.0).transpose(-1, -2), grad)
        grad_probs = torch.matmul(grad, value.transpose(-1, -2)).masked_fill_(dropped, 0.0)
        grad_scores = torch._softmax_backward_data(grad_probs, probs, -1, probs.dtype)
        del grad_probs
        grad_query = torch.matmul(grad_scores, key).mul_(ctx.scale)
        grad_key = torch.matmul(grad_scores.transpose(-1, -2), query).mul_(ctx.scale)
        return grad_query, grad_key, grad_value, None, None, None


def attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' attention-function contract: SDPA, except with dropout in CPU training (see module).

    ``query``/``key``/``value`` are (batch, heads, tokens, head size); ``attention_mask`` is SDPA's
    (boolean, True = attend, or None); returns (batch, tokens, heads, head size) as SDPA does.
    """
    if (
        not 0.0 < dropout < 1.0
        or query.device.type != "cpu"
        or torch.is_autocast_enabled("cpu")
        or getattr(module, "is_causal", False)
        or getattr(module, "num_key_value_groups", 1) > 1
        or (attention_mask is not None and attention_mask.dtype != torch.bool)
        or kwargs.get("output_attentions")
    ):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    masked = None if attention_mask is None else ~attention_mask
    output = _DropoutAttention.apply(query, key, value, masked, dropout, scale)
    return output.transpose(1, 2).contiguous(), None


def use_cheap_dropout(model: torch.nn.Module) -> int:
    """Swap a model's dropout for :class:`MaskDropout` and its SDPA attention for :func:`attention`.

    In place; returns how many dropout modules were swapped. Models whose attention is not SDPA (eager,
    flash) keep it; their dropout modules are swapped all the same.

    Example:
        >>> block = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.1))
        >>> use_cheap_dropout(block), type(block[1]).__name__, block[1].p
        (1, 'MaskDropout', 0.1)
    """
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.Dropout:
                setattr(parent, name, MaskDropout(child.p, inplace=child.inplace))
                swapped += 1
    for part in model.modules():
        if isinstance(part, PreTrainedModel) and part.config._attn_implementation == "sdpa":
            # The mask builder is looked up by the same name; without it transformers passes no padding mask.
            AttentionInterface.register(ATTENTION, attention)
            AttentionMaskInterface.register(ATTENTION, sdpa_mask)
            part.set_attn_implementation(ATTENTION)
    return swapped

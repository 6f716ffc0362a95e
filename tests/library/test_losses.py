"""Losses: PyLate names and defaults, cached == plain contrastive, learning on a toy set, bad input."""

from __future__ import annotations

import copy

import pytest
import torch
from sentence_transformers.base.trainer import BaseTrainer

from pipeline import losses, utils
from pipeline.training import checkpointing

ANIMALS = [
    ("Which animal barks?", "Dogs bark at strangers.", "Cats purr when content."),
    ("Which animal purrs?", "Cats purr when content.", "Horses gallop across fields."),
    ("Which animal gallops?", "Horses gallop across fields.", "Bees make honey in hives."),
    ("Which insect makes honey?", "Bees make honey in hives.", "Owls hunt at night."),
    ("Which bird hunts at night?", "Owls hunt at night.", "Frogs croak near ponds."),
    ("Which animal croaks?", "Frogs croak near ponds.", "Dolphins whistle underwater."),
]


@pytest.fixture(scope="module")
def model(colbert_model):
    """A private copy: these tests train it, and the session model is shared with other test files."""
    copied = copy.deepcopy(colbert_model)
    copied.transformer.document_length = 32  # short toy documents; keeps the tests fast
    return copied


def features(model, rows: list[dict]) -> tuple[list[dict], torch.Tensor | None]:
    """What the trainer hands a loss: the collated batch split into per-column features."""
    batch = utils.ColBERTCollator(tokenize_fn=model.tokenize)(rows)
    return BaseTrainer.collect_features(None, batch)  # type: ignore[arg-type]


def train_steps(model, loss, sentence_features, labels, steps: int) -> list[float]:
    """A few optimizer steps on one batch, clipped as the trainer clips (max_grad_norm=1)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5)
    values = []
    for _ in range(steps):
        optimizer.zero_grad()
        value = loss(sentence_features, labels)
        value.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        values.append(value.item())
    return values


def loss_and_gradient(model, loss, sentence_features, labels, parameter=None) -> tuple[float, torch.Tensor]:
    """One loss value and its gradient on ``parameter`` (default: the first layer's query weight)."""
    if parameter is None:
        parameter = model.transformer.auto_model.encoder.layer[0].attention.self.query.weight
    model.zero_grad()
    value = loss(sentence_features, labels)
    value.backward()
    gradient = parameter.grad.detach().clone()
    model.zero_grad()
    return value.item(), gradient


def triplets(n: int = 6) -> list[dict]:
    return [{"query": q, "positive": p, "negative": n_} for q, p, n_ in ANIMALS[:n]]


def test_pylate_names_map_temperature_to_scale(model) -> None:
    assert losses.DEFAULT_TEMPERATURE == 1.0 and losses.RECOMMENDED_TEMPERATURE == 0.02
    assert losses.Contrastive(model=model).scale == pytest.approx(1.0)
    assert losses.Contrastive(model=model, temperature=0.02).scale == pytest.approx(50.0)
    cached = losses.CachedContrastive(model=model, mini_batch_size=4, temperature=0.05)
    assert cached.scale == pytest.approx(20.0) and cached.mini_batch_size == 4
    assert losses.Contrastive(model=model, gather_across_devices=True).gather_across_devices
    with pytest.raises(ValueError, match="temperature"):
        losses.Contrastive(model=model, temperature=0)
    with pytest.raises(ValueError, match="mini_batch_size"):
        losses.CachedContrastive(model=model, mini_batch_size=0)


def test_cached_contrastive_equals_contrastive_loss_and_gradients(model) -> None:
    """GradCache must be an exact re-arrangement: same loss, same gradients (dropout off)."""
    model.eval()
    sentence_features, _ = features(model, triplets())
    parameter = model.transformer.auto_model.encoder.layer[-1].output.dense.weight
    plain = losses.Contrastive(model=model, temperature=0.05)
    plain_loss, plain_grad = loss_and_gradient(model, plain, sentence_features, None, parameter)
    cached = losses.CachedContrastive(model=model, mini_batch_size=2, temperature=0.05)
    cached_loss, cached_grad = loss_and_gradient(model, cached, sentence_features, None, parameter)
    model.train()

    assert plain_loss > 0
    assert cached_loss == pytest.approx(plain_loss, rel=1e-4, abs=1e-5)
    # Chunked forwards pad differently, so float rounding differs slightly; the direction must not.
    assert (cached_grad - plain_grad).norm() <= 1e-2 * plain_grad.norm()
    assert plain_grad.abs().sum() > 0


def test_the_train_stage_embeds_documents_a_column_at_a_time_on_cpu_with_the_same_loss(model) -> None:
    """The stage's CPU setting (``document_forward_rows``) re-arranges the forwards, not the loss."""
    from pipeline.project.config import TrainParams
    from pipeline.training.trainer import build_loss

    model.eval()
    sentence_features, _ = features(model, triplets())
    staged = build_loss(model, TrainParams(batch_size=2, temperature=0.05), "triplets")
    assert staged.mini_batch_size == 2  # 6 rows per document column: forwards of 2 rows, not one of 12
    parameter = model.transformer.auto_model.encoder.layer[-1].output.dense.weight
    results = [
        loss_and_gradient(model, loss, sentence_features, None, parameter)
        # The merged forward: every document row at once (the library's default on an accelerator).
        for loss in (losses.Contrastive(model=model, temperature=0.05, mini_batch_size=12), staged)
    ]
    model.train()
    (merged_loss, merged_grad), (staged_loss, staged_grad) = results
    assert staged_loss == pytest.approx(merged_loss, rel=1e-5, abs=1e-6)
    # Chunks are padded to their own longest row, so float rounding differs a little; the direction must not.
    assert (staged_grad - merged_grad).norm() <= 1e-2 * merged_grad.norm()
    assert merged_grad.abs().sum() > 0


def test_contrastive_on_cpu_embeds_a_column_per_forward_with_the_merged_loss_and_gradients(
    colbert_model, shared_data
) -> None:
    """On a real batch (16 SciFact triplets, 180-token abstracts), the default ``Contrastive`` on CPU runs
    one document column per forward (PyLate's shapes, :func:`pipeline.losses.document_rows`), and its loss
    and gradients are the merged forward's (what it computed before) up to float rounding: loss within
    1e-5 relative, the gradient over every parameter within 1e-4 relative (L2 norm of the difference)."""
    from bench.train.data import fixed_batch

    model = copy.deepcopy(colbert_model)
    model.eval()  # no dropout: both computations see the same network
    sentence_features, _ = features(model, fixed_batch("long"))
    widths: list[tuple[int, int]] = []
    hook = model[0].register_forward_pre_hook(
        lambda _, args: widths.append(tuple(args[0]["input_ids"].shape))
    )
    results = []
    for loss in (losses.Contrastive(model=model), losses.Contrastive(model=model, mini_batch_size=32)):
        model.zero_grad()
        value = loss(sentence_features, None)
        value.backward()
        results.append(
            (value.item(), torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
        )
    hook.remove()
    (default_loss, default_grad), (merged_loss, merged_grad) = results
    # Default: the queries, then each document column on its own; merged: queries, then all 32 rows at once.
    assert widths == [(16, 32), (16, 180), (16, 180), (16, 32), (32, 180)]
    assert losses.Contrastive(model=model).mini_batch_size is None  # the user's None is what stays saved
    assert default_loss == pytest.approx(merged_loss, rel=1e-5)
    assert (default_grad - merged_grad).norm() <= 1e-4 * merged_grad.norm()
    assert merged_grad.norm() > 0


def test_multiple_negative_columns_are_all_scored(model) -> None:
    """negative_1, negative_2 (and a 'negatives' list) add candidates; the loss grows with harder choices."""
    model.eval()
    loss = losses.Contrastive(model=model)
    rows_one = [{"query": q, "positive": p, "negative_1": n} for q, p, n in ANIMALS]
    rows_two = [{**row, "negative_2": ANIMALS[(i + 2) % 6][1]} for i, row in enumerate(rows_one)]
    rows_list = [
        {"query": r["query"], "positive": r["positive"], "negatives": [r["negative_1"], r["negative_2"]]}
        for r in rows_two
    ]
    with torch.no_grad():
        one, _ = features(model, rows_one)
        two, _ = features(model, rows_two)
        listed, _ = features(model, rows_list)
        assert len(one) == 3 and len(two) == 4 and len(listed) == 4
        value_one, value_two, value_list = loss(one).item(), loss(two).item(), loss(listed).item()
    model.train()
    # More candidates in the softmax can only lower the positive's probability.
    assert value_two > value_one
    assert value_list == pytest.approx(value_two, rel=1e-5)


def test_contrastive_loss_decreases_on_a_learnable_toy_set(model) -> None:
    trained = copy.deepcopy(model)
    trained.eval()  # deterministic steps: dropout off
    # The default temperature (1.0): MaxSim sums 32 query-token cosines, so the logits are already spread.
    loss = losses.Contrastive(model=trained)
    sentence_features, _ = features(trained, triplets(4))
    values = train_steps(trained, loss, sentence_features, None, steps=3)
    with torch.no_grad():
        values.append(loss(sentence_features).item())
    assert values[-1] < 0.8 * values[0], values


def test_distillation_pulls_the_student_towards_the_teacher(model) -> None:
    trained = copy.deepcopy(model)
    trained.eval()
    rows = [
        {"query": q, "documents": [p, n, ANIMALS[(i + 3) % 6][1]], "scores": [9.0, 1.0, 0.5]}
        for i, (q, p, n) in enumerate(ANIMALS[:4])
    ]
    sentence_features, labels = features(trained, rows)
    assert labels is not None and tuple(labels.shape) == (4, 3)
    loss = losses.Distillation(model=trained, temperature=0.1)
    values = train_steps(trained, loss, sentence_features, labels, steps=3)
    assert values[-1] < values[0], values
    with pytest.raises(ValueError, match="teacher's scores"):
        loss(sentence_features, None)


def test_contrastive_needs_a_positive_column(model) -> None:
    sentence_features, _ = features(model, triplets(2))
    with pytest.raises(ValueError, match="at least a positive column"):
        losses.Contrastive(model=model)(sentence_features[:1])
    with pytest.raises(ValueError, match="at least a positive column"):
        losses.CachedContrastive(model=model)(sentence_features[:1])


def kd_batch(model) -> tuple[list[dict], torch.Tensor]:
    """Four queries with four documents each, the documents at the model's length (as KD passages are)."""

    def long(text: str) -> str:
        return " ".join([text] * 4)

    rows = [
        {
            "query": q,
            "documents": [long(p), long(n), long(ANIMALS[(i + 3) % 6][1]), long(ANIMALS[(i + 4) % 6][2])],
            "scores": [9.0, 1.0, 3.0, 0.5],
        }
        for i, (q, p, n) in enumerate(ANIMALS[:4])
    ]
    sentence_features, labels = features(model, rows)
    assert labels is not None
    return sentence_features, labels


def test_distillation_over_budget_embeds_documents_in_checkpointed_groups_with_the_same_loss(model) -> None:
    """A step whose documents would not fit is embedded in groups under checkpoints: same loss and gradients
    (dropout off), and far fewer activations kept for the backward."""
    sentence_features, labels = kd_batch(model)
    one_column = checkpointing.document_groups(model, sentence_features[1:2], budget=2**40)
    assert one_column is None  # fits: the library's own path, untouched
    tiny = 2**16  # bytes: below one column, so one column per group
    groups = checkpointing.document_groups(model, sentence_features[1:], budget=tiny)
    assert groups is not None and [len(group) for group in groups] == [1, 1, 1, 1]
    with torch.no_grad():  # no backward to bound
        without_gradients = checkpointing.document_groups(model, sentence_features[1:], budget=tiny)
    assert without_gradients is None

    def saved_bytes(loss) -> tuple[float, torch.Tensor, int]:
        kept = [0]

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            kept[0] += tensor.numel() * tensor.element_size()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            value, gradient = loss_and_gradient(model, loss, sentence_features, labels)
        return value, gradient, kept[0]

    model.eval()
    try:
        whole_loss, whole_grad, whole_kept = saved_bytes(
            losses.Distillation(model=model, activation_budget=None)
        )
        grouped_loss, grouped_grad, grouped_kept = saved_bytes(
            losses.Distillation(model=model, activation_budget=tiny)
        )
    finally:
        model.train()
    assert grouped_loss == pytest.approx(whole_loss, rel=1e-5, abs=1e-6)
    assert (grouped_grad - whole_grad).norm() <= 1e-3 * whole_grad.norm() and whole_grad.abs().sum() > 0
    # The documents' activations are re-computed in backward, not kept: the query's and the embeddings remain.
    assert grouped_kept < 0.4 * whole_kept, (grouped_kept, whole_kept)


def test_checkpointed_groups_recompute_with_the_same_dropout(model, monkeypatch) -> None:
    """In train mode the re-computed forward must draw the dropout masks of the first one (RNG restored):
    the gradients equal those of the same groups embedded without checkpoints."""
    sentence_features, labels = kd_batch(model)
    loss = losses.Distillation(model=model, activation_budget=2**16)
    model.train()
    torch.manual_seed(7)
    checkpointed = loss_and_gradient(model, loss, sentence_features, labels)
    monkeypatch.setattr(checkpointing, "checkpoint", lambda function, *args, use_reentrant: function(*args))
    torch.manual_seed(7)
    kept = loss_and_gradient(model, loss, sentence_features, labels)
    torch.manual_seed(8)
    other_masks = loss_and_gradient(model, loss, sentence_features, labels)
    assert checkpointed[0] == pytest.approx(kept[0], rel=1e-6)
    assert torch.allclose(checkpointed[1], kept[1], rtol=1e-4, atol=1e-7)
    assert not torch.allclose(other_masks[1], kept[1], rtol=1e-4, atol=1e-7)  # dropout is really on


@pytest.mark.parametrize("budget", [0, -5, 1.5, True, "all"])
def test_distillation_refuses_a_budget_that_is_not_bytes(model, budget) -> None:
    with pytest.raises(ValueError, match="activation_budget"):
        losses.Distillation(model=model, activation_budget=budget)

"""Contrastive losses across processes: two gloo processes on the CPU, each holding half of a global batch,
against one process holding all of it (issue 37's multi-GPU training path, checked without GPUs).

What is compared, with the model wrapped in DDP as transformers' trainer wraps it under ``torchrun``:

- the loss: the mean of the two processes' losses against the one-process loss on the concatenated batch;
- the gradients: every parameter's gradient after DDP's backward (which averages over the processes)
  against the one-process gradient, on both processes.

Tolerance, with the encoder in float64: gradients ``rtol=1e-7, atol=1e-10`` (measured: at most 4.1e-12 apart
per element, 3.6e-11 of the gradient's norm; its largest element is 0.074), the loss ``rel=1e-6``
(sentence-transformers' MaxSim returns float32 scores, so the loss itself is float32 arithmetic; measured:
equal). The two runs do the same arithmetic in a different order (forwards of 2 rows instead of 4, gradients
summed by gloo), so they agree to rounding, not bit for bit. With the encoder in float32 that rounding alone
is large: one process computing the same batch in forwards of 1 row instead of 4 moves the gradient by
2.6e-4 of its norm (3.6e-5 per element at most), a tolerance loose enough to hide a small bug; in float64
the same change moves it by 6e-13. A missing gather changes the loss from 0.523 to 0.347 and the gradient
by 96% of its norm (checked below, so the test fails if gathering silently stops happening).
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
import torch

from pipeline import losses, utils

TOLERANCE = {"rtol": 1e-7, "atol": 1e-10}
LOSS_TOLERANCE = 1e-6
WORLD_SIZE = 2
#: The workers load a model and run three losses; minutes would mean a hang in a collective.
TIMEOUT_SECONDS = 420
ROWS = [
    ("Which animal barks?", "Dogs bark at strangers.", "Cats purr when content."),
    ("Which animal purrs?", "Cats purr when content.", "Horses gallop across fields."),
    ("Which animal gallops?", "Horses gallop across fields.", "Bees make honey in hives."),
    ("Which insect makes honey?", "Bees make honey in hives.", "Owls hunt at night and sleep by day."),
]


def tiny_model():
    """The offline MiniLM cut to two layers, in float64, dropout off (eval mode) and the word embeddings
    frozen: the same model in every process (seeded projection), small enough for three processes."""
    from pipeline import models

    torch.manual_seed(0)
    model = models.ColBERT(device="cpu", query_length=16, document_length=24)
    encoder = model.transformer.auto_model
    encoder.encoder.layer = encoder.encoder.layer[:2]
    encoder.config.num_hidden_layers = 2
    # A 30k x 384 gradient per run would dwarf the rest: the layers and the projection carry the check.
    encoder.embeddings.word_embeddings.weight.requires_grad_(False)
    return model.to(torch.float64).eval()


def batch_features(model, rows) -> list[dict]:
    """The per-column features a trainer hands a loss, padded to the global batch's longest text, so that
    each process's half is a slice of the one-process batch."""
    from sentence_transformers.base.trainer import BaseTrainer

    collated = utils.ColBERTCollator(tokenize_fn=model.tokenize)(
        [{"query": q, "positive": p, "negative": n} for q, p, n in rows]
    )
    features, _ = BaseTrainer.collect_features(None, collated)  # type: ignore[arg-type]
    return features


def rows_slice(features: list[dict], start: int, stop: int) -> list[dict]:
    return [
        {
            key: value[start:stop] if isinstance(value, torch.Tensor) else value
            for key, value in column.items()
        }
        for column in features
    ]


def flat_gradient(model) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad and p.grad is not None])


def one_step(model, loss, features) -> tuple[float, torch.Tensor]:
    model.zero_grad()
    value = loss(features, None)
    value.backward()
    return value.item(), flat_gradient(model)


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    """One process: its half of the batch through each loss under DDP, its results written to ``out_dir``."""
    import torch.distributed as dist
    from safetensors.torch import save_file
    from torch.nn.parallel import DistributedDataParallel

    from pipeline.ops.runner import _set_parent_death_signal

    _set_parent_death_signal(signal.SIGKILL)  # never outlive the test process
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    try:
        model = tiny_model()
        features = batch_features(model, ROWS)
        half = len(ROWS) // WORLD_SIZE
        local = rows_slice(features, rank * half, (rank + 1) * half)
        # As transformers' trainer wraps a sentence-transformers model: buffer broadcasts off (a broadcast at
        # the documents' forward would overwrite buffers the queries' backward still needs) and unused
        # parameters found (BERT's pooler never reaches a ColBERT loss).
        wrapped = DistributedDataParallel(model, broadcast_buffers=False, find_unused_parameters=True)
        results, gradients = {}, {}
        kinds = {
            "gathered": losses.Contrastive(model, temperature=0.05, gather_across_devices=True),
            "local": losses.Contrastive(model, temperature=0.05, gather_across_devices=False),
            "cached": losses.CachedContrastive(model, 1, temperature=0.05, gather_across_devices=True),
        }
        for name, loss in kinds.items():
            loss.model = wrapped  # what sentence-transformers' trainer does once the model is wrapped
            value, gradients[name] = one_step(model, loss, local)
            mean = torch.tensor([value], dtype=torch.float64)
            dist.all_reduce(mean)
            results[name] = float(mean) / WORLD_SIZE
        # Uneven batches: every process gets the same clear error instead of a hang or misplaced positives.
        uneven = rows_slice(features, 0, 1 + rank)
        try:
            kinds["gathered"](uneven, None)
            results["uneven"] = "no error"
        except ValueError as error:
            results["uneven"] = str(error)
        save_file(gradients, str(Path(out_dir) / f"grad-{rank}.safetensors"))
        (Path(out_dir) / f"result-{rank}.json").write_text(json.dumps(results))
    finally:
        dist.destroy_process_group()


def run_workers(tmp_path: Path) -> None:
    """Two spawned processes, joined under a deadline; on a timeout both are killed before the test fails."""
    import torch.multiprocessing as mp

    context = mp.start_processes(
        _worker,
        args=(str(tmp_path / "init"), str(tmp_path)),
        nprocs=WORLD_SIZE,
        join=False,
        daemon=True,
        start_method="spawn",
    )
    deadline = time.monotonic() + TIMEOUT_SECONDS
    try:
        # join returns when any process ends (raising if it failed), True once all have ended.
        while not context.join(timeout=max(deadline - time.monotonic(), 0)):
            if time.monotonic() >= deadline:
                pytest.fail(f"the {WORLD_SIZE} gloo processes did not finish in {TIMEOUT_SECONDS} s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
            process.join(5)


@pytest.fixture(scope="module")
def two_processes(module_tmp_path: Path) -> tuple[list[dict], list[dict[str, torch.Tensor]]]:
    from safetensors.torch import load_file

    run_workers(module_tmp_path)
    results = [json.loads((module_tmp_path / f"result-{r}.json").read_text()) for r in range(WORLD_SIZE)]
    grads = [load_file(str(module_tmp_path / f"grad-{r}.safetensors")) for r in range(WORLD_SIZE)]
    return results, grads


@pytest.fixture(scope="module")
def one_process() -> tuple[float, torch.Tensor]:
    model = tiny_model()
    loss = losses.Contrastive(model, temperature=0.05)
    return one_step(model, loss, batch_features(model, ROWS))


@pytest.mark.slow  # two spawned processes: minutes on a busy 2-core machine
def test_gathered_loss_and_gradients_equal_one_process_on_the_global_batch(
    two_processes, one_process
) -> None:
    results, grads = two_processes
    loss, gradient = one_process
    for rank in range(WORLD_SIZE):
        assert results[rank]["gathered"] == pytest.approx(loss, rel=LOSS_TOLERANCE)
        torch.testing.assert_close(grads[rank]["gathered"], gradient, **TOLERANCE)


@pytest.mark.slow  # two spawned processes: minutes on a busy 2-core machine
def test_cached_contrastive_gathers_the_same_way(two_processes, one_process) -> None:
    results, grads = two_processes
    loss, gradient = one_process
    assert results[0]["cached"] == pytest.approx(loss, rel=LOSS_TOLERANCE)
    for rank in range(WORLD_SIZE):
        torch.testing.assert_close(grads[rank]["cached"], gradient, **TOLERANCE)


@pytest.mark.slow  # two spawned processes: minutes on a busy 2-core machine
def test_without_gathering_the_loss_differs(two_processes, one_process) -> None:
    """Each process alone sees half the negatives: the loss drops visibly, so a gather that silently stopped
    happening would fail the test above."""
    results, grads = two_processes
    loss, gradient = one_process
    assert loss - results[0]["local"] > 0.05
    assert not torch.allclose(grads[0]["local"], gradient, **TOLERANCE)


@pytest.mark.slow  # two spawned processes: minutes on a busy 2-core machine
def test_uneven_batches_fail_clearly_on_every_process(two_processes) -> None:
    results, _ = two_processes
    for rank in range(WORLD_SIZE):
        assert "same batch size on every process" in results[rank]["uneven"]
        assert "from 1 to 2" in results[rank]["uneven"]


@pytest.mark.parametrize(
    ("setting", "world_size", "gathers"),
    [("auto", "1", False), ("auto", "2", True), (False, "2", False), (True, "1", True)],
)
def test_the_stage_gathers_by_default_under_several_processes(
    colbert_model, monkeypatch, setting, world_size, gathers
) -> None:
    """``train.gather_across_devices``: torchrun's WORLD_SIZE decides ``auto`` (both contrastive losses)."""
    from pipeline.project.config import TrainParams
    from pipeline.training.trainer import build_loss

    monkeypatch.setenv("WORLD_SIZE", world_size)
    for name in ("contrastive", "cached_contrastive"):
        config = TrainParams(loss=name, gather_across_devices=setting)
        assert build_loss(colbert_model, config, "triplets").gather_across_devices is gathers


def test_only_rank_zero_writes(monkeypatch, tmp_path) -> None:
    """Under torchrun the other ranks neither report the stage's result nor remove rank 0's checkpoints."""
    from pipeline.cli.stages import _writes_results
    from pipeline.stages.train import _checkpoint_to_resume

    stale = tmp_path / "checkpoints"
    (stale / "checkpoint-5").mkdir(parents=True)
    (stale / "params.sha").write_text("old")
    monkeypatch.setenv("RANK", "1")
    assert not _writes_results()
    assert _checkpoint_to_resume(stale, "new", remove_stale=False) is None and stale.is_dir()
    monkeypatch.setenv("RANK", "0")
    assert _writes_results()
    assert _checkpoint_to_resume(stale, "new") is None and not stale.exists()

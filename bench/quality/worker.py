"""PyLate's side of the quality comparison: train (when the job asks), index, retrieve, write a TREC run.

Runs in PyLate's own venv (``bench/.peer-venv``), because PyLate pins a sentence-transformers older than
ours: it imports PyLate, datasets and sentence-transformers only, never ``pipeline``. Started by
:mod:`bench.quality.peer` as ``python -m bench.quality.worker --job FILE --result FILE``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import die_with_parent, folder_bytes, setup_logging, write_record

logger = logging.getLogger("bench.quality")

SETTINGS_FILE = "training_settings.json"
LOSS_FILE = "training_loss.json"
SUMMARY_FILE = "training_summary.json"


def _read_id_texts(path: str) -> tuple[list[str], list[str]]:
    ids, texts = [], []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            ids.append(row["id"])
            texts.append(row["text"])
    return ids, texts


def _training_arguments(settings: dict[str, Any], checkpoints: Path) -> Any:
    """The trainer arguments of ``pipeline/stages/train.py``'s run, for PyLate's sentence-transformers."""
    import torch
    from sentence_transformers import SentenceTransformerTrainingArguments

    return SentenceTransformerTrainingArguments(
        output_dir=str(checkpoints),
        num_train_epochs=settings["epochs"],
        max_steps=settings["max_steps"] or -1,
        per_device_train_batch_size=settings["batch_size"],
        learning_rate=settings["learning_rate"],
        # transformers 5.x deprecates warmup_ratio: a float below 1 in warmup_steps is the ratio.
        warmup_steps=settings["warmup_ratio"],
        seed=settings["seed"],
        # A one-off benchmark run is not resumed, so checkpoints would only cost time and disk.
        save_strategy="no",
        logging_steps=1,
        report_to="none",
        batch_sampler=settings.get("batch_sampler", "batch_sampler"),
        use_cpu=settings["device"] == "cpu" or not torch.cuda.is_available(),
        **settings["precision_flags"],
    )


def _replace(output: Path, staging: Path) -> None:
    """Put the ``staging`` folder where ``output`` is, in renames (the old one, if any, removed after)."""
    old = output.with_name(f".{output.name}.old-{os.getpid()}") if output.exists() else None
    if old is not None:
        os.replace(output, old)
    os.replace(staging, output)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def worker_train(spec: dict[str, Any]) -> None:
    """Fine-tune with PyLate and the stage's trainer arguments; the model appears whole or not at all."""
    from datasets import load_from_disk
    from pylate import losses, models, utils
    from sentence_transformers import SentenceTransformerTrainer
    from transformers import set_seed

    settings, output = spec["settings"], Path(spec["output"])
    dataset = load_from_disk(spec["dataset"])
    # Seeded before the model is built, as ours is: the new projection layer's init comes from it.
    set_seed(settings["seed"])
    model = models.ColBERT(model_name_or_path=spec["base_model_path"], device=settings["device"])
    temperature = settings["temperature"]
    if settings["loss"] == "contrastive":
        loss = losses.Contrastive(model=model, temperature=temperature)
    else:
        mini = settings["mini_batch_size"]
        loss = losses.CachedContrastive(model=model, mini_batch_size=mini, temperature=temperature)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.tmp-"))
    # mkdtemp makes a 0700 folder; the model should get the permissions any new folder would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)
    checkpoints = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.trainer-"))
    try:
        trainer = SentenceTransformerTrainer(
            model=model,
            args=_training_arguments(settings, checkpoints),
            train_dataset=dataset,
            loss=loss,
            data_collator=utils.ColBERTCollator(model.tokenize),
        )
        started = time.perf_counter()
        result = trainer.train()
        seconds = time.perf_counter() - started
        log = trainer.state.log_history
        steps = [
            {"step": int(e["step"]), "loss": float(e["loss"])} for e in log if "loss" in e and "step" in e
        ]
        model.save_pretrained(str(staging))
        summary = {
            "steps": int(result.global_step),
            "train_loss": float(result.training_loss),
            "train_seconds": round(seconds, 2),
            "rows": len(dataset),
        }
        write_record(staging / LOSS_FILE, steps, sort_keys=True)
        write_record(staging / SUMMARY_FILE, summary, sort_keys=True)
        # Written last: its presence marks a complete model that a later run may reuse.
        write_record(staging / SETTINGS_FILE, settings, sort_keys=True)
        _replace(output, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(checkpoints, ignore_errors=True)
    logger.info("trained %d steps in %.1f s; saved to %s", summary["steps"], seconds, output)


def worker_retrieve(spec: dict[str, Any]) -> dict[str, Any]:
    """Encode the corpus and queries, index with PyLate's PLAID, retrieve, and write a TREC run."""
    from pylate import indexes, models, retrieve

    # query_length None keeps the model's own, as our quality stage does.
    model = models.ColBERT(
        model_name_or_path=spec["model"], device=spec["device"], query_length=spec["query_length"]
    )
    document_ids, document_texts = _read_id_texts(spec["documents"])
    query_ids, query_texts = _read_id_texts(spec["queries"])
    batch_size = spec["batch_size"]
    timings = {}
    started = time.perf_counter()
    documents = model.encode(document_texts, is_query=False, batch_size=batch_size, show_progress_bar=True)
    timings["encode_documents_seconds"] = round(time.perf_counter() - started, 2)
    started = time.perf_counter()
    queries = model.encode(query_texts, is_query=True, batch_size=batch_size, show_progress_bar=True)
    timings["encode_queries_seconds"] = round(time.perf_counter() - started, 2)
    folder = Path(tempfile.mkdtemp(dir=spec["scratch"], prefix="plaid-"))
    index = indexes.PLAID(
        index_folder=str(folder), index_name="index", override=True, device=spec["device"], **spec["index"]
    )
    started = time.perf_counter()
    index.add_documents(documents_ids=document_ids, documents_embeddings=documents)
    timings["index_build_seconds"] = round(time.perf_counter() - started, 2)
    started = time.perf_counter()
    hits = retrieve.ColBERT(index=index).retrieve(queries_embeddings=queries, k=spec["k"])
    timings["search_seconds"] = round(time.perf_counter() - started, 2)
    lines = [
        f"{query_id} Q0 {hit['id']} {rank} {float(hit['score'])!r} {spec['tag']}\n"
        for query_id, found in zip(query_ids, hits, strict=True)
        for rank, hit in enumerate(found, start=1)
    ]
    Path(spec["run"]).write_bytes(gzip.compress("".join(lines).encode("utf-8")))
    return {
        "documents": len(document_ids),
        "queries": len(query_ids),
        "query_length": model.query_length,
        "document_tokens": int(sum(len(d) for d in documents)),
        **timings,
        "index_mib": round(folder_bytes(folder) / 2**20, 2),
    }


def main() -> None:
    """Run one job file: train when asked, then retrieve; the result goes to ``--result``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", required=True)
    parser.add_argument("--result", required=True)
    args = parser.parse_args()
    setup_logging()
    die_with_parent()
    import pylate
    import sentence_transformers
    import transformers

    job = json.loads(Path(args.job).read_text(encoding="utf-8"))
    if job.get("train"):
        worker_train(job["train"])
    result = {
        "retrieval": worker_retrieve(job["retrieve"]),
        "versions": {
            "pylate": pylate.__version__,
            "sentence_transformers": sentence_transformers.__version__,
            "transformers": transformers.__version__,
        },
    }
    write_record(args.result, result)


if __name__ == "__main__":
    main()

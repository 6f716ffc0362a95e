"""Train PyLate 1.6 on our training data with our settings, and score it on a full BEIR test set.

This is the report's ``pylate`` row: the peer library fine-tunes the same base model on the same prepared
triplets (``<prepare.output>/train/dataset``) with the same trainer settings as ``colbert-pipeline train``
(``train`` section), then encodes the whole corpus of ``quality.dataset`` into PyLate's own PLAID index and
retrieves the top 100 documents for every judged query of ``quality.split``. Documents and queries are
read here by :func:`pipeline.data.beir.load_beir` and handed to PyLate as they are, so both systems see
identical texts and ids. The result goes to ``<quality.output>/runs/<name>/pylate.plaid.{json,trec.gz}``
(and ``pylate.training_loss.json``), where ``colbert-pipeline report`` picks it up.

The trained model is ``<model>-pylate``, beside our model (``quality.model``, else ``train.output``). It is
reused while its ``training_settings.json`` matches the current settings and data; a config that sets
``quality.model`` (zero-shot, e.g. ArguAna scored with the SciFact-trained model) never trains, it needs
the ``-pylate`` folder to exist.

The file runs twice: as the orchestrator in the project's venv, and as a ``--worker`` in PyLate's own venv
(``bench/.peer-venv``, installed on first use by ``bench/index_bench.py``'s ``ensure_peer_venv``), because
PyLate pins a sentence-transformers older than ours. The worker imports neither ``pipeline`` nor anything
beyond PyLate's own stack.

Usage:
    .venv/bin/python bench/quality_peer.py --config configs/scifact.yaml
    .venv/bin/python bench/quality_peer.py --config configs/arguana.yaml    # zero-shot: reuses the model
    .venv/bin/python bench/quality_peer.py --config configs/scifact.yaml --set train.max_steps=20
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.project.config import Params

logger = logging.getLogger("quality_peer")

REPO = Path(__file__).resolve().parents[1]
SYSTEM = "pylate"
RETRIEVAL = "plaid"
#: Hits kept per query: recall@100 is the report's deepest cut-off.
TOP_K = 100
LOSSES = ("contrastive", "cached_contrastive")
SETTINGS_FILE = "training_settings.json"
LOSS_FILE = "training_loss.json"
SUMMARY_FILE = "training_summary.json"


class PeerError(RuntimeError):
    """A configuration or input problem found before any expensive work."""


# ---------------------------------------------------------------------------------------------- worker
# Runs inside bench/.peer-venv: PyLate, datasets and sentence-transformers only, never `pipeline`.


def _read_id_texts(path: str) -> tuple[list[str], list[str]]:
    ids, texts = [], []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            ids.append(row["id"])
            texts.append(row["text"])
    return ids, texts


def _write_json_atomic(path: Path, data: Any) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(temp, path)


def worker_train(spec: dict[str, Any]) -> None:
    """Fine-tune with PyLate and the trainer arguments of ``pipeline/stages/train.py``; save atomically."""
    import torch
    from datasets import load_from_disk
    from pylate import losses, models, utils
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from transformers import set_seed

    settings = spec["settings"]
    output = Path(spec["output"])
    dataset = load_from_disk(spec["dataset"])
    # Seeded before the model is built, as ours is: the new projection layer's init comes from it.
    set_seed(settings["seed"])
    model = models.ColBERT(model_name_or_path=spec["base_model_path"], device=settings["device"])
    if settings["loss"] == "contrastive":
        loss = losses.Contrastive(model=model, temperature=settings["temperature"])
    else:
        loss = losses.CachedContrastive(
            model=model, mini_batch_size=settings["mini_batch_size"], temperature=settings["temperature"]
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.tmp-"))
    # mkdtemp makes a 0700 folder; the model should get the permissions any new folder would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)
    checkpoints = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.trainer-"))
    try:
        args = SentenceTransformerTrainingArguments(
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
        trainer = SentenceTransformerTrainer(
            model=model,
            args=args,
            train_dataset=dataset,
            loss=loss,
            data_collator=utils.ColBERTCollator(model.tokenize),
        )
        started = time.perf_counter()
        result = trainer.train()
        seconds = time.perf_counter() - started
        steps = [
            {"step": int(entry["step"]), "loss": float(entry["loss"])}
            for entry in trainer.state.log_history
            if "loss" in entry and "step" in entry
        ]
        model.save_pretrained(str(staging))
        summary = {
            "steps": int(result.global_step),
            "train_loss": float(result.training_loss),
            "train_seconds": round(seconds, 2),
            "rows": len(dataset),
        }
        _write_json_atomic(staging / LOSS_FILE, steps)
        _write_json_atomic(staging / SUMMARY_FILE, summary)
        # Written last: its presence marks a complete model that a later run may reuse.
        _write_json_atomic(staging / SETTINGS_FILE, settings)
        old = output.with_name(f".{output.name}.old-{os.getpid()}") if output.exists() else None
        if old is not None:
            os.replace(output, old)
        os.replace(staging, output)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
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

    started = time.perf_counter()
    documents = model.encode(document_texts, is_query=False, batch_size=batch_size, show_progress_bar=True)
    encode_documents = time.perf_counter() - started
    started = time.perf_counter()
    queries = model.encode(query_texts, is_query=True, batch_size=batch_size, show_progress_bar=True)
    encode_queries = time.perf_counter() - started

    folder = Path(tempfile.mkdtemp(dir=spec["scratch"], prefix="plaid-"))
    index = indexes.PLAID(
        index_folder=str(folder), index_name="index", override=True, device=spec["device"], **spec["index"]
    )
    started = time.perf_counter()
    index.add_documents(documents_ids=document_ids, documents_embeddings=documents)
    build = time.perf_counter() - started
    index_bytes = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    started = time.perf_counter()
    hits = retrieve.ColBERT(index=index).retrieve(queries_embeddings=queries, k=spec["k"])
    search = time.perf_counter() - started

    lines = []
    for query_id, found in zip(query_ids, hits, strict=True):
        for rank, hit in enumerate(found, start=1):
            lines.append(f"{query_id} Q0 {hit['id']} {rank} {float(hit['score'])!r} {spec['tag']}\n")
    Path(spec["run"]).write_bytes(gzip.compress("".join(lines).encode("utf-8")))
    return {
        "documents": len(document_ids),
        "queries": len(query_ids),
        "query_length": model.query_length,
        "document_tokens": int(sum(len(d) for d in documents)),
        "encode_documents_seconds": round(encode_documents, 2),
        "encode_queries_seconds": round(encode_queries, 2),
        "index_build_seconds": round(build, 2),
        "search_seconds": round(search, 2),
        "index_mib": round(index_bytes / 2**20, 2),
    }


def worker(job_path: str) -> None:
    """Run one job file: train when asked, then retrieve; the result goes to the job's ``result`` path."""
    import pylate
    import sentence_transformers
    import transformers

    job = json.loads(Path(job_path).read_text(encoding="utf-8"))
    if job.get("train"):
        worker_train(job["train"])
    retrieval = worker_retrieve(job["retrieve"])
    result = {
        "retrieval": retrieval,
        "versions": {
            "pylate": pylate.__version__,
            "sentence_transformers": sentence_transformers.__version__,
            "transformers": transformers.__version__,
        },
    }
    _write_json_atomic(Path(job["result"]), result)


# ---------------------------------------------------------------------------------------------- orchestrator
def _index_bench() -> ModuleType:
    """``bench/index_bench.py`` as a module (``bench`` is not a package), for its peer-venv installer."""
    spec = importlib.util.spec_from_file_location("index_bench", REPO / "bench" / "index_bench.py")
    if spec is None or spec.loader is None:  # pragma: no cover - the file is part of the checkout
        raise PeerError("bench/index_bench.py not found beside this file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check_report_name(name: str) -> str:
    # report.save_result makes the name a file name (no dots); failing here saves a training run.
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]*", name):
        raise PeerError(f"dataset name {name!r} must be letters, digits, '-' or '_': set quality.name")
    return name


def _data_digest(folder: Path) -> str:
    """sha256 over the dataset's files, so retraining follows the data and not its timestamps."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.name == "state.json":
            continue  # holds a fingerprint that changes on every save of the same rows
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _shown(path: Path, base: Path) -> str:
    """``path`` relative to ``base`` when it lies inside it, else absolute (never ``../../``)."""
    path = path.resolve()
    return str(path.relative_to(base.resolve())) if path.is_relative_to(base.resolve()) else str(path)


def _train_command(command: str, config: str) -> str:
    """How to train with ``config``: its ``make quality-<name>`` target when the Makefile has one."""
    makefile = REPO / "Makefile"
    stem = Path(config).stem
    target = f"quality-{stem}"
    in_configs = Path(config).resolve().parent == REPO / "configs"
    if (
        in_configs
        and makefile.is_file()
        and re.search(rf"^[^#:\n]*\b{re.escape(target)}\b[^:\n]*:", makefile.read_text(), re.M)
    ):
        return f"`make {target}` (or `{command} --config {config}`)"
    return f"`{command} --config {config}`"


def _configs_that_train(model_root: Path, configs: list[Path], params_path: Path) -> list[str]:
    """Overlay files beside ``configs`` that train ``model_root`` (to name in an error)."""
    from pipeline.project.config import resolve_path
    from pipeline.project.params_file import load_params

    base = params_path.resolve().parent
    found = []
    for folder in sorted({c.resolve().parent for c in configs}):
        for candidate in sorted(folder.glob("*.y*ml")):
            try:
                params = load_params(params_path, overlays=[candidate], check_paths=False)
            except Exception:  # a broken neighbour must not hide the real error
                continue
            if not params.quality.model and resolve_path(params.train.output, base) == model_root:
                found.append(_shown(candidate, Path.cwd()))
    return found


def training_settings(params: Params, base: Path) -> tuple[dict[str, Any], Path]:
    """What the PyLate model is trained with (its identity for reuse), and the training dataset folder."""
    from pipeline.project.config import resolve_path
    from pipeline.training.trainer import precision_flags

    train = params.train
    if train.loss not in LOSSES:
        raise PeerError(
            f"train.loss is {train.loss!r}: this comparison mirrors only {', '.join(LOSSES)} "
            "(PyLate's distillation takes a different data layout)"
        )
    train_dir = resolve_path(params.prepare.output, base) / "train"
    dataset = train_dir / "dataset"
    if not dataset.is_dir():
        raise PeerError(
            f"{dataset}: no prepared training set "
            "(run `colbert-pipeline prepare` with the same --params and --config)"
        )
    format_file = train_dir / "format.json"
    if format_file.is_file():
        kind = json.loads(format_file.read_text(encoding="utf-8")).get("kind")
        if kind != "triplets":
            raise PeerError(
                f"{train_dir}: prepared data is {kind!r}, not triplets: PyLate cannot train on it"
            )
    settings: dict[str, Any] = {
        "peer": _index_bench().PEER_REQUIREMENT,
        "base_model": train.base_model,
        "loss": train.loss,
        "temperature": train.temperature,
        "batch_size": train.batch_size,
        "learning_rate": train.learning_rate,
        "epochs": train.epochs,
        "max_steps": train.max_steps,
        "warmup_ratio": train.warmup_ratio,
        "seed": train.seed,
        "precision": train.precision,
        # Resolved here, with the same rule as our train stage, so "auto" means the same on both sides.
        "precision_flags": precision_flags(train.precision, train.device),
        "device": train.device,
        "train_data": f"{params.prepare.output}/train/dataset",
        "train_data_sha256": _data_digest(dataset),
    }
    if train.loss == "cached_contrastive":
        settings["mini_batch_size"] = train.mini_batch_size
    # The batch sampler our train stage resolves from train.batch_sampler on this data (auto: no query twice
    # in a batch where queries repeat), by name: PyLate's sentence-transformers takes the same names.
    from datasets import load_from_disk

    from pipeline.training.samplers import choose_batch_sampler

    settings["batch_sampler"] = choose_batch_sampler(
        train.batch_sampler, load_from_disk(str(dataset)), "triplets"
    ).value
    return settings, dataset


def _read_optional_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def run_worker(python: Path, job: Path, timeout: float | None) -> None:
    """Run the worker in the peer venv; its output streams to our stderr so progress stays visible."""
    env = _index_bench().worker_env(peer=True)
    command = [str(python), str(Path(__file__).resolve()), "--worker", str(job)]
    logger.info("running %s", " ".join(command))
    completed = subprocess.run(command, env=env, stdout=sys.stderr, timeout=timeout, check=False)
    if completed.returncode != 0:
        raise PeerError(f"the PyLate worker failed (exit {completed.returncode}); its log is above")


def orchestrate(args: argparse.Namespace) -> dict[str, Any]:
    """Check inputs, train or reuse the PyLate model, retrieve, and save the scored result."""
    from pipeline.data.beir import load_beir
    from pipeline.project.config import resolve_path
    from pipeline.project.params_file import load_params, parse_override
    from pipeline.project.report import save_result, save_training_loss
    from pipeline.project.runs import read_trec_run

    overrides = dict(parse_override(text) for text in args.set or [])
    configs = [Path(c) for c in args.config or []]
    params = load_params(args.params, overrides, overlays=configs)
    base = Path(args.params).resolve().parent
    quality = params.quality
    if not quality.dataset:
        raise PeerError("quality.dataset is not set: this script scores a BEIR folder's full test set")
    beir_folder = resolve_path(quality.dataset, base)
    name = _check_report_name(quality.name or beir_folder.name)

    model_root = resolve_path(quality.model or params.train.output, base)
    peer_model = model_root.with_name(f"{model_root.name}-pylate")
    train_job: dict[str, Any] | None = None
    if quality.model:
        if not (peer_model / SETTINGS_FILE).is_file():
            trainers = _configs_that_train(model_root, configs, Path(args.params))
            command = ".venv/bin/python bench/quality_peer.py"
            if Path(args.params).resolve() != Path("params.yaml").resolve():
                command += f" --params {args.params}"
            how = (
                " or ".join(_train_command(command, c) for c in trainers)
                if trainers
                else f"`{command}` with a config whose train.output is {quality.model!r}"
            )
            raise PeerError(
                f"{peer_model}: no trained PyLate model. quality.model is set ({quality.model!r}), so this "
                f"config scores a model trained elsewhere and does not train; train it first with {how}"
            )
        logger.info("zero-shot: scoring %s (quality.model is set; not training)", peer_model)
    else:
        settings, dataset = training_settings(params, base)
        existing = _read_optional_json(peer_model / SETTINGS_FILE)
        if existing == json.loads(json.dumps(settings)):
            logger.info("reusing %s: trained with the current settings and data", peer_model)
        else:
            if peer_model.exists():
                logger.info("%s was trained with other settings or data: retraining", peer_model)
            # Imported only here: it loads torch and sentence-transformers, slow for a config check.
            from pipeline.models import resolve_model_name

            train_job = {
                "settings": settings,
                "dataset": str(dataset),
                "base_model_path": resolve_model_name(params.train.base_model),
                "output": str(peer_model),
            }

    # Read (and so validate) the test set before anything expensive; both systems get these exact texts.
    data = load_beir(beir_folder, quality.split, on_missing="skip", name=name)
    python = _index_bench().ensure_peer_venv()

    work = Path(tempfile.mkdtemp(prefix="quality-peer-"))
    try:
        for file_name, table in (("documents.jsonl", data.corpus), ("queries.jsonl", data.queries)):
            with (work / file_name).open("w", encoding="utf-8") as handle:
                for item_id, text in table.items():
                    handle.write(json.dumps({"id": item_id, "text": text}, ensure_ascii=False) + "\n")
        index = params.index
        job = {
            "train": train_job,
            "retrieve": {
                "model": str(peer_model),
                "documents": str(work / "documents.jsonl"),
                "queries": str(work / "queries.jsonl"),
                "batch_size": quality.batch_size,
                "device": quality.device,
                "query_length": quality.query_length,
                "k": TOP_K,
                # Our index settings, so the two PLAID indexes differ by implementation only.
                "index": {"nbits": index.nbits, "kmeans_niters": index.kmeans_niters, "seed": index.seed},
                "scratch": str(work),
                "run": str(work / "run.trec.gz"),
                "tag": f"{SYSTEM}.{RETRIEVAL}",
            },
            "result": str(work / "result.json"),
        }
        (work / "job.json").write_text(json.dumps(job, indent=2), encoding="utf-8")
        run_worker(python, work / "job.json", args.timeout)
        result = json.loads((work / "result.json").read_text(encoding="utf-8"))
        run = read_trec_run(work / "run.trec.gz")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    trained_with = _read_optional_json(peer_model / SETTINGS_FILE) or {}
    summary = _read_optional_json(peer_model / SUMMARY_FILE) or {}
    retrieval = result["retrieval"]
    details = {
        "model": _shown(peer_model, base),
        "trained_now": train_job is not None,
        "zero_shot": bool(quality.model),
        **{f"{key}_version": value for key, value in result["versions"].items()},
        "trained_on": trained_with.get("train_data"),
        "base_model": trained_with.get("base_model"),
        "loss": trained_with.get("loss"),
        "batch_size": trained_with.get("batch_size"),
        "learning_rate": trained_with.get("learning_rate"),
        "temperature": trained_with.get("temperature"),
        "epochs": trained_with.get("epochs"),
        "max_steps": trained_with.get("max_steps"),
        "warmup_ratio": trained_with.get("warmup_ratio"),
        "seed": trained_with.get("seed"),
        "steps": summary.get("steps"),
        "train_seconds": summary.get("train_seconds"),
        "train_loss": summary.get("train_loss"),
        "encode_batch_size": quality.batch_size,
        "k": TOP_K,
        "split": quality.split,
        **retrieval,
        **job["retrieve"]["index"],
    }
    folder = resolve_path(quality.output, base) / "runs" / name
    record = save_result(
        folder,
        dataset=name,
        system=SYSTEM,
        retrieval=RETRIEVAL,
        run=run,
        qrels=data.qrels,
        ignore_identical_ids=quality.ignore_identical_ids,
        details=details,
    )
    # Zero-shot rows keep the model's curve too, as the quality stage does for ours: both stay comparable.
    steps = _read_optional_json(peer_model / LOSS_FILE)
    if steps:
        save_training_loss(folder, SYSTEM, steps)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="params.yaml", help="params file (default: ./params.yaml)")
    parser.add_argument(
        "--config",
        action="append",
        metavar="FILE",
        help="YAML overlay, e.g. configs/scifact.yaml (repeatable)",
    )
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a param (repeatable)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds the PyLate worker may run")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: a job file
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    if args.worker is not None:
        worker(args.worker)
        return
    from pipeline.data.beir import BeirFormatError
    from pipeline.project.config import ConfigError

    try:
        record = orchestrate(args)
    except (PeerError, ConfigError, BeirFormatError, subprocess.TimeoutExpired) as error:
        logger.error("%s", error)
        sys.exit(1)
    metrics, details = record["metrics"], record["details"]
    print(
        f"{record['dataset']} pylate (plaid): nDCG@10 {metrics['ndcg@10']:.4f}, "
        f"MRR@10 {metrics['mrr@10']:.4f}, recall@100 {metrics['recall@100']:.4f}, "
        f"{metrics['queries']} queries; model {details['model']} "
        f"({'trained now' if details['trained_now'] else 'reused'})"
    )


if __name__ == "__main__":
    main()

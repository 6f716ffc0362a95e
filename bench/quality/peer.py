"""Train PyLate 1.6 on our training data with our settings, and score it on a full BEIR test set.

This is the report's ``pylate`` row: the peer library fine-tunes the same base model on the same prepared
triplets (``<prepare.output>/train/dataset``) with the same trainer settings as ``colbert-pipeline train``
(``train`` section), then encodes the whole corpus of ``quality.dataset`` into PyLate's own PLAID index and
retrieves the top 100 documents for every judged query of ``quality.split``. Documents and queries are
read here by :func:`pipeline.data.beir.load_beir` and handed to PyLate as they are, so both systems see
identical texts and ids. The result goes to ``<quality.output>/runs/<name>/pylate.plaid.{json,trec.gz}``
(and ``pylate.training_loss.json``) through :func:`pipeline.project.report.save_system_result`, as the
quality stage writes ours, where ``colbert-pipeline report`` picks it up; the committed records are
``bench/records/peer/runs/`` (``--set quality.output=bench/records/peer``).

The trained model is ``<model>-pylate``, beside our model (``quality.model``, else ``train.output``). It is
reused while its ``training_settings.json`` matches the current settings and data; a config that sets
``quality.model`` (zero-shot, e.g. ArguAna scored with the SciFact-trained model) never trains, it needs
the ``-pylate`` folder to exist. PyLate trains and retrieves in its own venv (:mod:`bench.quality.worker`).

Usage:
    .venv/bin/python -m bench.quality --config configs/scifact.yaml
    .venv/bin/python -m bench.quality --config configs/arguana.yaml    # zero-shot: reuses the model
    .venv/bin/python -m bench.quality --config configs/scifact.yaml --set train.max_steps=20
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.common import PEER_REQUIREMENT, REPO, WorkerError, ensure_peer_venv, run_worker, setup_logging
from bench.quality.worker import LOSS_FILE, SETTINGS_FILE, SUMMARY_FILE, logger

if TYPE_CHECKING:
    from pipeline.data.beir import BeirData
    from pipeline.project.config import Params

SYSTEM = "pylate"
RETRIEVAL = "plaid"
#: Hits kept per query: recall@100 is the report's deepest cut-off.
TOP_K = 100
LOSSES = ("contrastive", "cached_contrastive")
COMMAND = ".venv/bin/python -m bench.quality"
#: The trained model's settings copied into the result's details.
TRAINED_WITH = ("base_model", "loss", "batch_size", "learning_rate", "temperature", "epochs", "max_steps")


class PeerError(RuntimeError):
    """A configuration or input problem found before any expensive work."""


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


def _optional_json(path: Path) -> Any:
    from pipeline.project.io import read_json

    return read_json(path) if path.is_file() else None


def _train_command(command: str, config: str) -> str:
    """How to train with ``config``: its ``make quality-<name>`` target when the Makefile has one."""
    makefile = REPO / "Makefile"
    target = f"quality-{Path(config).stem}"
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


def _training_set(params: Params, base: Path) -> Path:
    """The prepared triplets PyLate trains on (checked: present, and triplets)."""
    from pipeline.project.config import resolve_path

    if params.train.loss not in LOSSES:
        raise PeerError(
            f"train.loss is {params.train.loss!r}: this comparison mirrors only {', '.join(LOSSES)} "
            "(PyLate's distillation takes a different data layout)"
        )
    train_dir = resolve_path(params.prepare.output, base) / "train"
    dataset = train_dir / "dataset"
    if not dataset.is_dir():
        raise PeerError(
            f"{dataset}: no prepared training set "
            "(run `colbert-pipeline prepare` with the same --params and --config)"
        )
    prepared = _optional_json(train_dir / "format.json")
    if prepared is not None and prepared.get("kind") != "triplets":
        raise PeerError(
            f"{train_dir}: prepared data is {prepared.get('kind')!r}, not triplets: PyLate cannot train on it"
        )
    return dataset


def training_settings(params: Params, base: Path) -> tuple[dict[str, Any], Path]:
    """What the PyLate model is trained with (its identity for reuse), and the training dataset folder."""
    from datasets import load_from_disk

    from pipeline.training.samplers import choose_batch_sampler
    from pipeline.training.trainer import precision_flags

    train = params.train
    dataset = _training_set(params, base)
    settings: dict[str, Any] = {
        "peer": PEER_REQUIREMENT,
        **{key: getattr(train, key) for key in TRAINED_WITH},
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
    sampler = choose_batch_sampler(train.batch_sampler, load_from_disk(str(dataset)), "triplets")
    settings["batch_sampler"] = sampler.value
    return settings, dataset


def plan_model(args: argparse.Namespace, params: Params, base: Path) -> tuple[Path, dict[str, Any] | None]:
    """The PyLate model's folder, and the training job when it must be (re)trained now."""
    from pipeline.project.config import resolve_path

    quality = params.quality
    model_root = resolve_path(quality.model or params.train.output, base)
    peer_model = model_root.with_name(f"{model_root.name}-pylate")
    if quality.model:
        if not (peer_model / SETTINGS_FILE).is_file():
            trainers = _configs_that_train(
                model_root, [Path(c) for c in args.config or []], Path(args.params)
            )
            command = COMMAND
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
        return peer_model, None
    settings, dataset = training_settings(params, base)
    if _optional_json(peer_model / SETTINGS_FILE) == json.loads(json.dumps(settings)):
        logger.info("reusing %s: trained with the current settings and data", peer_model)
        return peer_model, None
    if peer_model.exists():
        logger.info("%s was trained with other settings or data: retraining", peer_model)
    # Imported only here: it loads torch and sentence-transformers, slow for a config check.
    from pipeline.models import resolve_model_name

    base_model = resolve_model_name(params.train.base_model)
    job = {"settings": settings, "dataset": str(dataset), "base_model_path": base_model}
    return peer_model, {**job, "output": str(peer_model)}


def retrieve_job(params: Params, peer_model: Path, work: Path) -> dict[str, Any]:
    """What PyLate retrieves with: our quality and index settings (the two PLAID indexes differ by
    implementation only), the texts written to ``work``."""
    quality, index = params.quality, params.index
    return {
        "model": str(peer_model),
        "documents": str(work / "documents.jsonl"),
        "queries": str(work / "queries.jsonl"),
        "batch_size": quality.batch_size,
        "device": quality.device,
        "query_length": quality.query_length,
        "k": TOP_K,
        "index": {"nbits": index.nbits, "kmeans_niters": index.kmeans_niters, "seed": index.seed},
        "scratch": str(work),
        "run": str(work / "run.trec.gz"),
        "tag": f"{SYSTEM}.{RETRIEVAL}",
    }


def run_peer(
    params: Params, data: BeirData, peer_model: Path, train_job: dict[str, Any] | None, timeout: float | None
) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
    """Train (when ``train_job`` is given) and retrieve in PyLate's venv: its result and the run it
    retrieved."""
    from pipeline.project.runs import read_trec_run

    python = ensure_peer_venv()
    work = Path(tempfile.mkdtemp(prefix="quality-peer-"))
    try:
        for file_name, table in (("documents.jsonl", data.corpus), ("queries.jsonl", data.queries)):
            with (work / file_name).open("w", encoding="utf-8") as handle:
                for item_id, text in table.items():
                    handle.write(json.dumps({"id": item_id, "text": text}, ensure_ascii=False) + "\n")
        job = {"train": train_job, "retrieve": retrieve_job(params, peer_model, work)}
        (work / "job.json").write_text(json.dumps(job, indent=2), encoding="utf-8")
        arguments = ["--job", str(work / "job.json")]
        result = run_worker(
            python, "bench.quality.worker", arguments, peer=True, timeout=timeout, stream=True
        )
        return result, read_trec_run(work / "run.trec.gz")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def details(params: Params, peer_model: Path, base: Path, result: dict[str, Any], trained_now: bool) -> dict:
    """How the PyLate row was obtained: versions, training settings and summary, retrieval timings."""
    quality, index = params.quality, params.index
    trained_with = _optional_json(peer_model / SETTINGS_FILE) or {}
    summary = _optional_json(peer_model / SUMMARY_FILE) or {}
    return {
        "model": _shown(peer_model, base),
        "trained_now": trained_now,
        "zero_shot": bool(quality.model),
        **{f"{key}_version": value for key, value in result["versions"].items()},
        "trained_on": trained_with.get("train_data"),
        **{key: trained_with.get(key) for key in (*TRAINED_WITH, "warmup_ratio", "seed")},
        **{key: summary.get(key) for key in ("steps", "train_seconds", "train_loss")},
        "encode_batch_size": quality.batch_size,
        "k": TOP_K,
        "split": quality.split,
        **result["retrieval"],
        "nbits": index.nbits,
        "kmeans_niters": index.kmeans_niters,
        "seed": index.seed,
    }


def orchestrate(args: argparse.Namespace) -> dict[str, Any]:
    """Check inputs, train or reuse the PyLate model, retrieve, and save the scored result."""
    from pipeline.cli.common import load, project_of
    from pipeline.data.beir import load_beir
    from pipeline.project.config import resolve_path
    from pipeline.project.report import save_system_result

    params, base = load(args), project_of(args)
    quality = params.quality
    if not quality.dataset:
        raise PeerError("quality.dataset is not set: this benchmark scores a BEIR folder's full test set")
    beir_folder = resolve_path(quality.dataset, base)
    name = _check_report_name(quality.name or beir_folder.name)
    peer_model, train_job = plan_model(args, params, base)
    # Read (and so validate) the test set before anything expensive; both systems get these exact texts.
    data = load_beir(beir_folder, quality.split, on_missing="skip", name=name)
    result, run = run_peer(params, data, peer_model, train_job, args.timeout)
    records = save_system_result(
        resolve_path(quality.output, base) / "runs" / name,
        dataset=name,
        system=SYSTEM,
        runs={RETRIEVAL: (run, details(params, peer_model, base, result, train_job is not None))},
        qrels=data.qrels,
        ignore_identical_ids=quality.ignore_identical_ids,
        # Zero-shot rows keep the model's curve too, as the quality stage does for ours.
        training_loss=_optional_json(peer_model / LOSS_FILE),
    )
    return records[RETRIEVAL]


def main() -> None:
    from pipeline.cli.common import add_params_arguments

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_params_arguments(parser)
    parser.add_argument("--timeout", type=float, default=None, help="seconds the PyLate worker may run")
    args = parser.parse_args()
    setup_logging()
    from pipeline.data.beir import BeirFormatError
    from pipeline.project.config import ConfigError

    try:
        record = orchestrate(args)
    except (PeerError, ConfigError, BeirFormatError, WorkerError, subprocess.TimeoutExpired) as error:
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

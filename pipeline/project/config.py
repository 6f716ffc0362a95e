"""The ``params.yaml`` schema: every key typed and checked before any stage does work.

The schema: a section class per stage. Reading the file, overlays and ``--set`` overrides are
:mod:`pipeline.project.params_file`.

Each stage reads only its own section, so DVC re-runs only the stages whose section changed. Unknown keys,
wrong types and missing input paths are errors that name the key (``train.learning_rate``), never a
traceback from deep inside a stage.

Example:
    >>> from pipeline.project.config import Params
    >>> params = Params.model_validate({"train": {"epochs": 2}})
    >>> params.train.epochs, params.prepare.source
    (2, 'sample')
    >>> Params.model_validate({"train": {"epochs": "two"}})  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    pipeline.project.config.ConfigError: params.yaml: train.epochs: Input should be a valid integer
    >>> Params.model_validate({"train": {"epoch": 2}})
    Traceback (most recent call last):
    pipeline.project.config.ConfigError: params.yaml: train.epoch: unknown key; did you mean train.epochs?
"""

from __future__ import annotations

import difflib
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.project.errors import InputError

DEFAULT_PARAMS_FILE = "params.yaml"
#: Where the value at a dotted key came from, for error messages: ``params.yaml``, ``configs/scifact.yaml`` or
#: ``--set train.epochs`` (:func:`pipeline.project.params_file.load_params` tracks it per key).
Origin = Callable[[str], str]


class ConfigError(InputError):
    """A ``params.yaml`` (or override) problem, naming the file and the key."""


class Section(BaseModel):
    """Base of every section: unknown keys are errors, values are checked on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SampleSource(Section):
    """The project's own generated sample (the offline default)."""

    n_train_entities: int = Field(40, ge=4, description="entities whose facts become training triplets")
    n_eval_entities: int = Field(20, ge=2, description="held-out entities whose questions are evaluated")
    n_distractors: int = Field(50, ge=0, description="extra documents that answer nothing, for the corpus")
    negatives_per_query: int = Field(2, ge=1, le=4, description="hard negatives: the entity's other facts")


class TripletsSource(Section):
    """Local JSONL / Parquet / CSV, or a Hub dataset id, with ``query, positive, negative[_i]`` columns."""

    path: str | None = Field(None, description="local file, or a Hugging Face dataset id (needs internet)")
    split: str = Field("train", description="the split read from a Hub dataset (a local file is one split)")
    eval_fraction: float = Field(0.1, gt=0, lt=1, description="queries held out for the triplet evaluator")


class KDSource(Section):
    """Knowledge distillation: ``query_id, document_ids, scores`` rows joined to queries/documents tables."""

    scores: str | None = Field(None, description="JSONL/Parquet of query_id, document_ids, scores")
    queries: str | None = Field(None, description="JSONL/Parquet of query_id, text")
    documents: str | None = Field(None, description="JSONL[.gz]/Parquet of document_id, text")
    eval_fraction: float = Field(0.1, gt=0, lt=1, description="queries held out as the benchmark")


class BeirSource(Section):
    """A local BEIR folder: training triplets with mined hard negatives, and a held-out Nano benchmark."""

    folder: str | None = Field(None, description="corpus.jsonl[.gz], queries.jsonl[.gz], qrels/<split>.tsv")
    train_split: str = Field("train", description="qrels split the training triplets come from")
    eval_split: str = Field("test", description="qrels split the held-out benchmark is sampled from")
    negatives_per_query: int = Field(1, ge=1, description="hard negatives mined by the base model")
    max_train_queries: int | None = Field(
        None, ge=1, description="use only the first N training queries; None: all"
    )
    max_positives_per_query: int | None = Field(
        None,
        ge=1,
        description="keep at most this many judged documents per training query (a seeded sample): "
        "more queries per epoch where queries have many (NFCorpus: ~40)",
    )
    mining_model: str = Field("sentence-transformers/all-MiniLM-L6-v2", description="dense model for mining")
    mining_corpus: int | None = Field(
        None, ge=10, description="cap the mining corpus (positives always kept)"
    )


class PrepareParams(Section):
    """``prepare``: where training data comes from and how the held-out benchmark is built."""

    source: Literal["sample", "triplets", "kd", "beir"] = Field(
        "sample", description="where training data comes from: the offline sample or your files"
    )
    seed: int = Field(42, description="seeds the sample, the held-out split and the benchmark's sampling")
    on_bad_rows: Literal["error", "drop"] = Field("error", description="drop: skip and count in stats.json")
    eval_queries: int = Field(50, ge=1, description="queries in the held-out Nano benchmark")
    eval_documents: int = Field(2000, ge=10, description="documents in the held-out Nano benchmark corpus")
    sample: SampleSource = SampleSource()
    triplets: TripletsSource = TripletsSource()
    kd: KDSource = KDSource()
    beir: BeirSource = BeirSource()
    data: str = Field(
        "inputs",
        min_length=1,
        description="file or folder holding every local input (sources, index.corpus, quality.dataset): "
        "a DVC dependency of prepare, index and quality, so a changed byte re-runs them",
    )
    output: str = Field("data/prepared", description="folder of the prepared train/ and eval/ data")

    @model_validator(mode="after")
    def _source_has_its_inputs(self) -> PrepareParams:
        required = {
            "triplets": [("triplets.path", self.triplets.path)],
            "kd": [
                ("kd.scores", self.kd.scores),
                ("kd.queries", self.kd.queries),
                ("kd.documents", self.kd.documents),
            ],
            "beir": [("beir.folder", self.beir.folder)],
        }
        for key, value in required.get(self.source, []):
            if not value:
                raise ValueError(f"source is {self.source!r} but prepare.{key} is not set")
        return self


class TrainParams(Section):
    """``train``: the fine-tuning run."""

    base_model: str = Field("sentence-transformers/all-MiniLM-L6-v2", description="local folder or Hub id")
    loss: Literal["contrastive", "cached_contrastive", "distillation"] = Field(
        "contrastive",
        description="contrastive: in-batch and hard negatives; cached_contrastive: the same with GradCache "
        "(memory bounded by mini_batch_size); distillation: KD rows (prepare.source kd)",
    )
    temperature: float = Field(
        1.0, gt=0, description="contrastive softmax temperature (PyLate suggests trying 0.02)"
    )
    mini_batch_size: int = Field(8, ge=1, description="GradCache chunk for cached_contrastive")
    n_ways: int = Field(32, ge=2, description="distillation: documents per query (first kept, rest sampled)")
    batch_size: int = Field(16, ge=1, description="training rows per step")
    learning_rate: float = Field(3e-5, gt=0, description="AdamW's peak learning rate")
    epochs: int = Field(1, ge=1, description="passes over the training rows (unless max_steps stops first)")
    max_steps: int | None = Field(None, ge=1, description="stop after this many steps (overrides epochs)")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="share of the steps the learning rate warms up")
    seed: int = Field(42, description="seeds shuffling, dropout and the projection's initialisation")
    precision: Literal["auto", "fp32", "fp16", "bf16"] = Field(
        "auto", description="auto: bf16/fp16 on GPU, bf16 on a CPU with native bfloat16, else fp32"
    )
    save_steps: int = Field(100, ge=1, description="checkpoint every N steps (resume after a crash)")
    device: str | None = Field(None, description="cpu, cuda, ... (None: auto)")
    output: str = Field("models/colbert", description="folder the trained model is saved to")
    query_length: int | None = Field(
        None, ge=1, description="query tokens in training (long queries: ArguAna); None: the model's (32)"
    )
    batch_sampler: Literal["auto", "no_duplicates", "default"] = Field(
        "auto", description="no_duplicates: a query at most once per batch; auto: when a query repeats"
    )
    dev_fraction: float = Field(
        0.0, ge=0, lt=1, description="training queries held out to evaluate during training; 0: off"
    )
    eval_steps: int = Field(50, ge=1, description="with a dev split: evaluate (and checkpoint) every N steps")
    early_stopping_patience: int | None = Field(
        None, ge=1, description="with a dev split: stop after N evaluations without a better dev loss"
    )
    gather_across_devices: Literal["auto"] | bool = Field(
        "auto",
        description="under torchrun: score each query against every process's documents (contrastive "
        "losses); auto: on with several processes. batch_size is per process",
    )

    @model_validator(mode="after")
    def _early_stopping_needs_dev(self) -> TrainParams:
        if self.early_stopping_patience is not None and self.dev_fraction == 0:
            raise ValueError("early_stopping_patience needs a dev split: set train.dev_fraction > 0")
        return self


class EvaluateParams(Section):
    """``evaluate`` and ``baseline``: NanoBEIR-style evaluation on the held-out benchmark."""

    batch_size: int = Field(32, ge=1, description="texts encoded per batch")
    device: str | None = Field(None, description="cpu, cuda, ... (None: auto)")


class IndexParams(Section):
    """``index``: encode a corpus with the trained model and build its PLAID index."""

    name: str = Field("sample", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="folder under indexes/")
    corpus: str | None = Field(
        None,
        description="BEIR folder or corpus JSONL (inside index.data, or prepare.data); None: the prepared "
        "eval corpus",
    )
    data: str = Field(
        "corpus",
        description="the folder dvc.yaml watches for the index stage alone: a corpus kept here re-runs only "
        "index and register when it changes (one in prepare.data re-runs prepare too)",
    )
    update: Literal["auto", "rebuild"] = Field(
        "auto",
        description="auto: when only the corpus changed (same model, same index settings), update the "
        "previous index in place; rebuild: always build from nothing",
    )
    update_max_churn: float = Field(
        0.2,
        ge=0,
        le=1,
        description="an update touching more than this share of the previous corpus (added + removed + "
        "changed) rebuilds instead",
    )
    chunk_size: int = Field(2000, ge=1, description="documents encoded and added per chunk (bounds memory)")
    shards: int = Field(
        1,
        ge=1,
        description="encode the corpus in this many contiguous shards, then build the index from them: one "
        "task each in the DAG's stateless mode (`colbert-pipeline task index --shard I/N`); 1: no shards",
    )
    batch_size: int = Field(32, ge=1, description="texts encoded per batch")
    nbits: Literal[1, 2, 4, 8] = Field(4, description="bits per residual dimension (what PLAID accepts)")
    kmeans_niters: int = Field(4, ge=1, description="k-means iterations that train PLAID's centroids")
    n_centroids: int | None = Field(
        None, ge=1, description="PLAID centroids; None: fast-plaid's rule (2^floor(log2(16 sqrt(tokens))))"
    )
    seed: int = Field(42, description="seeds PLAID's k-means sample")
    device: str | None = Field(None, description="cpu, cuda, ... (None: CUDA when there is one)")
    folder: str = Field("indexes", description="folder the index folders live in")
    recall_target: float = Field(
        0.95, gt=0, le=1, description="recall@10 vs exact MaxSim that the stored search settings must reach"
    )
    probe_queries: int = Field(100, ge=1, description="queries the search settings are tuned on")
    backend: Literal["torch", "onnx", "openvino"] = Field(
        "torch", description="encoder backend (onnx/openvino need sentence-transformers' extras)"
    )
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="encoding precision of documents and queries (index, tuning, the served model); "
        "auto: bf16 autocast on a CPU with native bfloat16, else fp32",
    )

    def plaid_options(self) -> dict[str, Any]:
        """The ``PLAID(...)`` keyword arguments these params set (folder, name and device aside)."""
        return {
            "nbits": self.nbits,
            "kmeans_niters": self.kmeans_niters,
            "n_centroids": self.n_centroids,
            "seed": self.seed,
            # The stage writes the float16 store itself and tunes its search (index.recall_target): the
            # library's default store and re-scoring would only write it twice.
            "rerank": 0,
        }

    @model_validator(mode="after")
    def _bf16_needs_torch(self) -> IndexParams:
        if self.precision == "bf16" and self.backend != "torch":
            raise ValueError(f"precision: bf16 needs backend 'torch' ({self.backend!r} runs its own graph)")
        return self


class RegisterParams(Section):
    """``register``: the MLflow registry model and the promotion rule."""

    model_name: str = Field(
        "colbert-pipeline",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="the registered model each run adds a version to",
    )
    metric: str = Field(
        "NanoBEIR_mean_MaxSim_ndcg@10", description="the key of metrics/eval.json that decides promotion"
    )
    margin: float = Field(
        0.0, ge=0, description="promote only when the metric beats the champion by this much"
    )
    k: int = Field(10, ge=1, description="hits returned by the served model")
    max_latency_ratio: float | None = Field(
        1.2,
        gt=0,
        description="promote only when the challenger's single-query p95 through its index is at most this "
        "times the champion's (both timed in one process, same queries, interleaved); null: no latency check",
    )
    latency_queries: int = Field(20, ge=1, description="benchmark queries timed for the latency check")
    latency_repeats: int = Field(5, ge=1, description="passes over them; the check compares the medians")


class QualityParams(Section):
    """``quality``: score systems on a full BEIR test set, through PLAID and exact search (see the report)."""

    dataset: str | None = Field(
        None, description="BEIR folder scored in full; None: the prepared benchmark (prepare.output/eval)"
    )
    split: str = Field("test", description="qrels split of quality.dataset")
    name: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="the report's name for the dataset"
    )
    model: str | None = Field(None, description="the fine-tuned model scored; None: train.output")
    systems: list[Literal["dense", "colbert-base", "colbert-tuned"]] = Field(
        default_factory=lambda: ["dense", "colbert-base", "colbert-tuned"],
        min_length=1,
        description="dense: the base model's cosine; colbert-base: the base as an untrained ColBERT",
    )
    exact: bool = Field(True, description="also score ColBERT systems by exact MaxSim over all documents")
    query_length: int | None = Field(
        None, ge=1, description="ColBERT query length (tokens) when scoring; None: each model's own"
    )
    ignore_identical_ids: bool = Field(True, description="drop a hit whose id is the query's (BEIR's rule)")
    batch_size: int = Field(32, ge=1, description="texts encoded per batch")
    device: str | None = Field(None, description="cpu, cuda, ... (None: auto)")
    output: str = Field("reports", description="runs go to <output>/runs/<name>/, the report to <output>/")


class TrackingParams(Section):
    """MLflow tracking; ``MLFLOW_TRACKING_URI`` in the environment wins over ``tracking_uri``."""

    tracking_uri: str | None = Field(None, description="default: sqlite:///<project>/mlruns.db")
    experiment: str = Field("colbert-pipeline", description="the MLflow experiment the stages log to")
    retries: int = Field(3, ge=0, description="attempts against a tracking server that is down")
    request_timeout: float = Field(30.0, gt=0, description="seconds one MLflow HTTP request may take")
    system_metrics: bool = Field(
        True, description="sample CPU, memory, disk, network and GPU use into the train and index runs"
    )
    system_metrics_interval: float = Field(10.0, gt=0, description="seconds between system metric samples")


# ``register`` is a stage name; pydantic only warns that ABCMeta.register (unused here) is shadowed.
warnings.filterwarnings("ignore", message='Field name "register"', category=UserWarning)


class Params(Section):
    """The whole ``params.yaml``."""

    prepare: PrepareParams = PrepareParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    index: IndexParams = IndexParams()
    register: RegisterParams = RegisterParams()
    quality: QualityParams = QualityParams()
    tracking: TrackingParams = TrackingParams()

    @field_validator("*", mode="before")
    @classmethod
    def _none_is_default(cls, value: Any) -> Any:
        # An empty section in YAML (``train:``) parses as None: treat it as "all defaults".
        return {} if value is None else value

    @classmethod
    def model_validate(  # type: ignore[override]
        cls, obj: Any, *args: Any, source: str | Origin = DEFAULT_PARAMS_FILE, **kwargs: Any
    ) -> Params:
        """Validate ``obj``; a :class:`ConfigError` names each bad key and where its value came from."""
        try:
            return super().model_validate(obj, *args, **kwargs)
        except ValidationError as error:
            raise ConfigError(_describe(error, source, cls)) from None


def _describe(error: ValidationError, source: str | Origin, schema: type[BaseModel]) -> str:
    """One line (the CLI prints it as is): ``<where the value came from>: <key>: <what is wrong>``, joined."""
    problems = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "<root>"
        problems.append(f"{origin_label(source, key)}: {_problem(item, schema)}")
    return "; ".join(problems)


def origin_label(source: str | Origin, key: str) -> str:
    """``params.yaml: train.epochs`` or ``--set train.epochs``: where ``key``'s value came from, and the key.

    Example:
        >>> origin_label("configs/a.yaml", "train.seed"), origin_label(lambda k: f"--set {k}", "train.seed")
        ('configs/a.yaml: train.seed', '--set train.seed')
    """
    where = source(key) if callable(source) else source
    # ``--set prepare.source`` names the key already, or the one inside it that a section's rule is about.
    named = where.rpartition(" ")[2] if " " in where else ""
    return where if named == key or named.startswith(f"{key}.") else f"{where}: {key}"


def _problem(item: Any, schema: type[BaseModel]) -> str:
    if item["type"] == "extra_forbidden":
        return _unknown_key([str(part) for part in item["loc"]], schema)
    # A validator's ValueError comes back as "Value error, <its message>": the prefix says nothing to a user.
    message = str(item["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    value = item.get("input")
    if value is None or isinstance(value, str | int | float | bool):  # a scalar: show what was given
        message += f" (got {value!r})"
    return message


def _unknown_key(loc: list[str], schema: type[BaseModel]) -> str:
    """``unknown key; did you mean train.epochs?``: the closest keys of the same section, else all of them."""
    section: type[BaseModel] = schema
    for part in loc[:-1]:
        field = section.model_fields.get(part)
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return "unknown key"
        section = annotation
    prefix = "".join(f"{part}." for part in loc[:-1])
    names = list(section.model_fields)
    close = difflib.get_close_matches(loc[-1], names, n=3)
    if close:
        return f"unknown key; did you mean {' or '.join(prefix + name for name in close)}?"
    return f"unknown key; {prefix.rstrip('.') or 'the top level'} takes {', '.join(names)}"


def resolve_path(value: str | os.PathLike[str], base: Path) -> Path:
    """A configured path, relative to ``base`` (the project folder) unless absolute."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path

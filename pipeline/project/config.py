"""The ``params.yaml`` schema: every key typed and checked before any stage does work.

One cohesive module: the schema (a section class per stage), loading, overlays and overrides of that file.

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
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.project.errors import InputError

DEFAULT_PARAMS_FILE = "params.yaml"


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
    split: str = "train"
    eval_fraction: float = Field(0.1, gt=0, lt=1, description="queries held out for the triplet evaluator")


class KDSource(Section):
    """Knowledge distillation: ``query_id, document_ids, scores`` rows joined to queries/documents tables."""

    scores: str | None = Field(None, description="JSONL/Parquet of query_id, document_ids, scores")
    queries: str | None = Field(None, description="JSONL/Parquet of query_id, text")
    documents: str | None = Field(None, description="JSONL[.gz]/Parquet of document_id, text")
    eval_fraction: float = Field(0.1, gt=0, lt=1)


class BeirSource(Section):
    """A local BEIR folder: training triplets with mined hard negatives, and a held-out Nano benchmark."""

    folder: str | None = Field(None, description="corpus.jsonl[.gz], queries.jsonl[.gz], qrels/<split>.tsv")
    train_split: str = "train"
    eval_split: str = "test"
    negatives_per_query: int = Field(1, ge=1, description="hard negatives mined by the base model")
    max_train_queries: int | None = Field(None, ge=1)
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

    source: Literal["sample", "triplets", "kd", "beir"] = "sample"
    seed: int = 42
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
    output: str = "data/prepared"

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
    loss: Literal["contrastive", "cached_contrastive", "distillation"] = "contrastive"
    temperature: float = Field(
        1.0, gt=0, description="contrastive softmax temperature (PyLate suggests trying 0.02)"
    )
    mini_batch_size: int = Field(8, ge=1, description="GradCache chunk for cached_contrastive")
    n_ways: int = Field(32, ge=2, description="distillation: documents per query (first kept, rest sampled)")
    batch_size: int = Field(16, ge=1)
    learning_rate: float = Field(3e-5, gt=0)
    epochs: int = Field(1, ge=1)
    max_steps: int | None = Field(None, ge=1, description="stop after this many steps (overrides epochs)")
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    seed: int = 42
    precision: Literal["auto", "fp32", "fp16", "bf16"] = Field("auto", description="auto: bf16/fp16 on GPU")
    save_steps: int = Field(100, ge=1, description="checkpoint every N steps (resume after a crash)")
    device: str | None = Field(None, description="cpu, cuda, ... (None: auto)")
    output: str = "models/colbert"
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

    @model_validator(mode="after")
    def _early_stopping_needs_dev(self) -> TrainParams:
        if self.early_stopping_patience is not None and self.dev_fraction == 0:
            raise ValueError("early_stopping_patience needs a dev split: set train.dev_fraction > 0")
        return self


class EvaluateParams(Section):
    """``evaluate`` and ``baseline``: NanoBEIR-style evaluation on the held-out benchmark."""

    batch_size: int = Field(32, ge=1)
    device: str | None = None


class IndexParams(Section):
    """``index``: encode a corpus with the trained model and build its PLAID index."""

    name: str = Field("sample", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="folder under indexes/")
    corpus: str | None = Field(
        None, description="BEIR folder or corpus JSONL; None: the prepared eval corpus"
    )
    chunk_size: int = Field(2000, ge=1, description="documents encoded and added per chunk (bounds memory)")
    batch_size: int = Field(32, ge=1)
    nbits: Literal[1, 2, 4, 8] = Field(4, description="bits per residual dimension (what PLAID accepts)")
    kmeans_niters: int = Field(4, ge=1)
    n_centroids: int | None = Field(
        None, ge=1, description="PLAID centroids; None: fast-plaid's rule (2^floor(log2(16 sqrt(tokens))))"
    )
    seed: int = 42
    device: str | None = None
    folder: str = "indexes"
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
        }

    @model_validator(mode="after")
    def _bf16_needs_torch(self) -> IndexParams:
        if self.precision == "bf16" and self.backend != "torch":
            raise ValueError(f"precision: bf16 needs backend 'torch' ({self.backend!r} runs its own graph)")
        return self


class RegisterParams(Section):
    """``register``: the MLflow registry model and the promotion rule."""

    model_name: str = Field("colbert-pipeline", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    metric: str = "NanoBEIR_mean_MaxSim_ndcg@10"
    margin: float = Field(
        0.0, ge=0, description="promote only when the metric beats the champion by this much"
    )
    k: int = Field(10, ge=1, description="hits returned by the served model")


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
    batch_size: int = Field(32, ge=1)
    device: str | None = None
    output: str = Field("reports", description="runs go to <output>/runs/<name>/, the report to <output>/")


class TrackingParams(Section):
    """MLflow tracking; ``MLFLOW_TRACKING_URI`` in the environment wins over ``tracking_uri``."""

    tracking_uri: str | None = Field(None, description="default: sqlite:///<project>/mlruns.db")
    experiment: str = "colbert-pipeline"
    retries: int = Field(3, ge=0, description="attempts against a tracking server that is down")
    request_timeout: float = Field(30.0, gt=0, description="seconds one MLflow HTTP request may take")


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
    def model_validate(cls, obj: Any, *args: Any, source: str = DEFAULT_PARAMS_FILE, **kwargs: Any) -> Params:  # type: ignore[override]
        try:
            return super().model_validate(obj, *args, **kwargs)
        except ValidationError as error:
            raise ConfigError(_describe(error, source)) from None


def _describe(error: ValidationError, source: str) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "<root>"
        message = "unknown key" if item["type"] == "extra_forbidden" else item["msg"]
        lines.append(f"{source}: {key}: {message}")
    return "\n".join(lines)


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``section.key=value`` (the value is YAML: ``2``, ``true``, ``null``, ``[a, b]``).

    Example:
        >>> parse_override("train.epochs=2")
        ('train.epochs', 2)
    """
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} must look like section.key=value")
    return key.strip(), yaml.safe_load(value)


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested sections as dotted keys, the form ``--set`` and ``dvc exp run -S`` take.

    Example:
        >>> flatten({"train": {"epochs": 1, "sampler": {"seed": 2}}})
        {'train.epochs': 1, 'train.sampler.seed': 2}
    """
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """Return a copy of ``raw`` with dotted-key overrides set (``{"train.epochs": 2}``)."""
    merged = _deep_copy(raw)
    for dotted, value in (overrides or {}).items():
        parts = dotted.split(".")
        node = merged
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {dotted!r}: {part!r} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return merged


def merge_overlay(raw: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """``raw`` with ``overlay``'s values laid over it, section by section (a copy; neither is changed).

    Example:
        >>> merge_overlay({"train": {"epochs": 1, "seed": 1}}, {"train": {"epochs": 3}})
        {'train': {'epochs': 3, 'seed': 1}}
    """
    merged = _deep_copy(raw)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_overlay(merged[key], value)
        else:
            merged[key] = _deep_copy(value) if isinstance(value, dict) else value
    return merged


def _deep_copy(raw: dict[str, Any]) -> dict[str, Any]:
    return {key: _deep_copy(value) if isinstance(value, dict) else value for key, value in raw.items()}


def read_params_file(path: str | os.PathLike[str] = DEFAULT_PARAMS_FILE) -> dict[str, Any]:
    """The raw mapping in a params file; a missing file is an empty mapping (all defaults)."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(raw).__name__}")
    return raw


def load_params(
    path: str | os.PathLike[str] = DEFAULT_PARAMS_FILE,
    overrides: dict[str, Any] | None = None,
    *,
    overlays: list[str | os.PathLike[str]] | None = None,
    check_paths: bool = True,
) -> Params:
    """Read, lay overlays over, override, validate; relative paths are checked against the params' folder.

    Args:
        path: The params file (a missing file means all defaults).
        overrides: Dotted keys set last (``{"train.epochs": 3}``).
        overlays: YAML files with the same sections (``configs/scifact.yaml``), merged in order; a missing
            overlay is an error, unlike a missing params file.
        check_paths: Check that the configured local inputs exist.

    Example:
        >>> load_params("no-such-file.yaml", {"train.epochs": 3}).train.epochs
        3
    """
    raw = read_params_file(path)
    sources = [str(path)]
    for overlay in overlays or []:
        if not Path(overlay).is_file():
            raise ConfigError(f"{overlay}: overlay file not found")
        raw = merge_overlay(raw, read_params_file(overlay))
        sources.append(str(overlay))
    raw = apply_overrides(raw, overrides)
    source = " + ".join(sources)
    params = Params.model_validate(raw, source=source)
    if check_paths:
        check_input_paths(params, base=Path(path).resolve().parent, source=source)
    return params


def check_input_paths(params: Params, base: Path, source: str = DEFAULT_PARAMS_FILE) -> None:
    """Every local input the configured source needs must exist; Hub ids are left to the loaders."""
    for key, value, must_be_local in _input_paths(params):
        if value is None:
            continue
        resolved = resolve_path(value, base)
        if resolved.exists():
            continue
        if must_be_local or _looks_local(value):
            raise ConfigError(f"{source}: {key}: path {value!r} does not exist (looked at {resolved})")


def _input_paths(params: Params) -> list[tuple[str, str | None, bool]]:
    # (key, configured value, must be a local path rather than a Hub id) for every input the params read
    prepare = params.prepare
    checks: list[tuple[str, str | None, bool]] = []
    if prepare.source == "triplets":
        checks.append(("prepare.triplets.path", prepare.triplets.path, False))
    elif prepare.source == "kd":
        checks += [
            ("prepare.kd.scores", prepare.kd.scores, True),
            ("prepare.kd.queries", prepare.kd.queries, True),
            ("prepare.kd.documents", prepare.kd.documents, True),
        ]
    elif prepare.source == "beir":
        checks.append(("prepare.beir.folder", prepare.beir.folder, True))
    if params.index.corpus:
        checks.append(("index.corpus", params.index.corpus, True))
    if params.quality.dataset:
        checks.append(("quality.dataset", params.quality.dataset, True))
    return checks


def untracked_inputs(params: Params, base: Path) -> list[tuple[str, Path]]:
    """The configured local inputs outside ``prepare.data``: ``(key, path)`` pairs DVC would not watch.

    dvc.yaml can only name fixed keys as dependencies, so every input must sit in the one path it names.

    Example:
        >>> params = Params.model_validate({"index": {"corpus": "/elsewhere/corpus.jsonl"}})
        >>> untracked_inputs(params, Path("/project"))
        [('index.corpus', PosixPath('/elsewhere/corpus.jsonl'))]
    """
    root = resolve_path(params.prepare.data, base).resolve()
    outside = []
    for key, value, must_be_local in _input_paths(params):
        if value is None or not (must_be_local or _looks_local(value) or resolve_path(value, base).exists()):
            continue  # a Hub dataset id: DVC cannot watch it
        path = resolve_path(value, base).resolve()
        if path != root and root not in path.parents:
            outside.append((key, path))
    return outside


def check_tracked_inputs(params: Params, base: Path, source: str = DEFAULT_PARAMS_FILE) -> None:
    """Under DVC: refuse inputs outside ``prepare.data`` (a change there would silently re-run nothing)."""
    outside = untracked_inputs(params, base)
    if outside:
        listed = ", ".join(f"{key} ({path})" for key, path in outside)
        raise ConfigError(
            f"{source}: {listed} outside prepare.data ({params.prepare.data}), the path dvc.yaml watches: "
            "set prepare.data to a folder that holds every input"
        )


def _looks_local(value: str) -> bool:
    return value.startswith((".", "/", "~")) or Path(value).suffix in {
        ".jsonl",
        ".json",
        ".csv",
        ".parquet",
        ".gz",
    }


def resolve_path(value: str | os.PathLike[str], base: Path) -> Path:
    """A configured path, relative to ``base`` (the project folder) unless absolute."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def write_params(params: Params | dict[str, Any], path: str | os.PathLike[str] = DEFAULT_PARAMS_FILE) -> None:
    """Write params atomically (temp file + rename), so a reader never sees half a file."""
    from pipeline.project.io import atomic_write_text

    data = params.model_dump(mode="json") if isinstance(params, Params) else params
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))

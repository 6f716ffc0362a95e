"""Where every artifact lives: one home for the paths and file names that stages read and write.

A stage asks ``Layout(params, project)`` for its inputs and outputs instead of joining folder names itself, so
``data/prepared/eval`` or ``metrics/eval.json`` is spelled once. :data:`STAGE_IO` says which lineage artifacts
each stage reads and writes (the tracking tags ``lineage.<artifact>.md5``); a test checks it against
``dvc.yaml``'s deps and outs, so the two cannot drift.

Example:
    >>> from pathlib import Path
    >>> from pipeline.project.config import Params
    >>> layout = Layout(Params(), Path("/srv/project"))
    >>> str(layout.benchmark), str(layout.eval_metrics)
    ('/srv/project/data/prepared/eval', '/srv/project/metrics/eval.json')
    >>> str(layout.index), layout.relative(layout.model)
    ('/srv/project/indexes/sample', 'models/colbert')
    >>> sorted(layout.artifacts())
    ['data_eval', 'data_train', 'index', 'model']
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pipeline.project.config import Params, resolve_path

#: The pipeline's stages in dependency order (what ``dvc repro`` and the Airflow DAG run).
STAGES: tuple[str, ...] = ("prepare", "baseline", "train", "evaluate", "index", "register")
#: After the pipeline, for people: ``quality`` scores systems on a full test set, ``report`` renders them.
REPORT_STAGES: tuple[str, ...] = ("quality", "report")

#: Lineage artifacts each stage reads (hashed when its run starts) and writes (hashed when it succeeds).
STAGE_IO: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "prepare": ((), ("data_train", "data_eval")),
    "baseline": (("data_eval",), ()),
    "train": (("data_train",), ("model",)),
    "evaluate": (("data_eval", "model"), ()),
    "index": (("model",), ("index",)),
    "register": (("data_train", "data_eval", "model", "index"), ()),
    "quality": (("data_eval", "model"), ()),
    "report": ((), ()),
}

#: What else each stage reads and writes (Layout's property names): its metrics, plots and the local inputs.
#: With :data:`STAGE_IO` it is the whole of a stage's files, what ``colbert-pipeline <stage> --help`` lists; a
#: test checks the union against dvc.yaml's deps, outs, metrics and plots.
STAGE_FILES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "prepare": (("inputs",), ("prepare_stats",)),
    "baseline": ((), ("baseline_metrics",)),
    "train": ((), ()),
    "evaluate": (("baseline_metrics",), ("eval_metrics", "comparison_json", "comparison_png")),
    "index": (("benchmark", "inputs", "index_data"), ("index_metrics",)),
    "register": (("eval_metrics", "index_metrics"), ("registry_decision",)),
    "quality": (("inputs",), ("quality_runs", "quality_metrics")),
    "report": (("quality_runs",), ("quality_report", "quality_plots")),
}
#: The params each stage depends on (dvc.yaml's ``params:``): a change to one of them re-runs the stage.
STAGE_PARAMS: dict[str, tuple[str, ...]] = {
    "prepare": ("prepare",),
    "baseline": ("train.base_model", "train.seed", "evaluate"),
    "train": ("train",),
    "evaluate": ("evaluate",),
    "index": ("index",),
    "register": ("register", "tracking", "index.precision", "index.recall_target", "index.corpus"),
    "quality": (
        "quality",
        "train.base_model",
        "train.seed",
        "index.nbits",
        "index.kmeans_niters",
        "index.n_centroids",
        "index.seed",
    ),
    "report": (),
}

METRICS_DIR = "metrics"
#: Shards of the index's encoding (``index.shards`` > 1): ``index-shards/<index.name>/shard-<i>-of-<n>/``.
#: The folders are git-ignored; in the DAG's stateless mode each one's ``.dvc`` pointer beside it is
#: committed to the run's ref by the task that encoded it.
INDEX_SHARDS_DIR = "index-shards"
#: Set by a stateless index task to the run's id: the index stage then builds from the shards the run's
#: shard tasks pushed, and refuses a stale one instead of encoding it itself.
SHARD_RUN_ENV = "COLBERT_PIPELINE_SHARD_RUN"
#: Written into the model folder by the train stage: the per-step loss, which the quality report plots.
TRAINING_LOSS_FILE = "training_loss.json"
#: Written into the model folder when training used a dev split: the dev loss per evaluation.
DEV_LOSS_FILE = "dev_loss.json"
#: Orchestration state in a workspace (params backups); git-ignored.
STATE_DIR = ".colbert-pipeline"
#: The environment variable naming the file where a stage process writes its result for the orchestrator.
RESULT_FILE_ENV = "COLBERT_PIPELINE_RESULT_FILE"


@dataclasses.dataclass(frozen=True)
class Layout:
    """Every artifact path of a project for one set of params (all absolute)."""

    params: Params
    project: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "project", Path(self.project).resolve())

    # -- prepare --------------------------------------------------------------------------------------
    @property
    def prepared(self) -> Path:
        return resolve_path(self.params.prepare.output, self.project)

    @property
    def train_data(self) -> Path:
        return self.prepared / "train"

    @property
    def benchmark(self) -> Path:
        """The held-out Nano benchmark (``data_eval``): what evaluate, baseline, index and quality read."""
        return self.prepared / "eval"

    @property
    def prepare_stats(self) -> Path:
        return self.prepared / "stats.json"

    @property
    def inputs(self) -> Path:
        """``prepare.data``: the file or folder holding every local input (what DVC watches for them)."""
        return resolve_path(self.params.prepare.data, self.project)

    # -- train ----------------------------------------------------------------------------------------
    @property
    def model(self) -> Path:
        return resolve_path(self.params.train.output, self.project)

    @property
    def checkpoints(self) -> Path:
        return self.model.with_name(self.model.name + "-checkpoints")

    @property
    def training_loss(self) -> Path:
        return self.model / TRAINING_LOSS_FILE

    # -- metrics (git-tracked, small) -----------------------------------------------------------------
    @property
    def metrics(self) -> Path:
        return self.project / METRICS_DIR

    @property
    def baseline_metrics(self) -> Path:
        return self.metrics / "baseline.json"

    @property
    def eval_metrics(self) -> Path:
        return self.metrics / "eval.json"

    @property
    def quality_metrics(self) -> Path:
        return self.metrics / "quality.json"

    @property
    def comparison_json(self) -> Path:
        return self.metrics / "comparison.json"

    @property
    def comparison_png(self) -> Path:
        return self.metrics / "comparison.png"

    @property
    def index_metrics(self) -> Path:
        return self.metrics / "index.json"

    @property
    def registry_decision(self) -> Path:
        return self.metrics / "registry.json"

    # -- index ----------------------------------------------------------------------------------------
    @property
    def index_folder(self) -> Path:
        return resolve_path(self.params.index.folder, self.project)

    @property
    def index(self) -> Path:
        return self.index_folder / self.params.index.name

    @property
    def index_data(self) -> Path:
        """``index.data``: the folder holding the index's corpus, which only the index stage depends on."""
        return resolve_path(self.params.index.data, self.project)

    @property
    def index_shards(self) -> Path:
        """The folder of the index's encoding shards (``index.shards`` > 1)."""
        return self.project / INDEX_SHARDS_DIR / self.params.index.name

    def index_shard(self, shard: int, shards: int) -> Path:
        """Shard ``shard`` (from 0) of ``shards``: ``index-shards/<index.name>/shard-<shard>-of-<shards>``."""
        return self.index_shards / f"shard-{shard}-of-{shards}"

    # -- quality and report ---------------------------------------------------------------------------
    @property
    def quality_output(self) -> Path:
        return resolve_path(self.params.quality.output, self.project)

    @property
    def quality_runs(self) -> Path:
        return self.quality_output / "runs"

    @property
    def quality_report(self) -> Path:
        return self.quality_output / "quality.md"

    @property
    def quality_plots(self) -> Path:
        return self.quality_output / "plots"

    @property
    def quality_model(self) -> Path:
        """The fine-tuned model the quality stage scores: ``quality.model``, else the train stage's output."""
        return resolve_path(self.params.quality.model or self.params.train.output, self.project)

    # -- orchestration state (git-ignored) ------------------------------------------------------------
    @property
    def state(self) -> Path:
        return self.project / STATE_DIR

    # -- lineage --------------------------------------------------------------------------------------
    def artifacts(self) -> dict[str, Path]:
        """The lineage artifacts by name (the keys of :data:`STAGE_IO`'s tuples)."""
        return {
            "data_train": self.train_data,
            "data_eval": self.benchmark,
            "model": self.model,
            "index": self.index,
        }

    def stage_files(self, stage: str) -> tuple[list[Path], list[Path]]:
        """What ``stage`` reads and writes: its lineage artifacts (:data:`STAGE_IO`), then the rest."""
        artifacts = self.artifacts()
        (lineage_reads, lineage_writes), (reads, writes) = STAGE_IO[stage], STAGE_FILES[stage]
        return (
            [*(artifacts[name] for name in lineage_reads), *(getattr(self, name) for name in reads)],
            [*(artifacts[name] for name in lineage_writes), *(getattr(self, name) for name in writes)],
        )

    def relative(self, path: Path) -> str:
        """``path`` relative to the project (as dvc.yaml and dvc.lock spell it), else absolute."""
        try:
            return Path(path).resolve().relative_to(self.project).as_posix()
        except ValueError:
            return str(path)


def parse_shard(text: str, key: str = "--shard") -> tuple[int, int]:
    """``"I/N"`` as ``(I, N)``: shard ``I`` (from 0) of ``N`` (at least 2); anything else names ``key``.

    Example:
        >>> parse_shard("1/4")
        (1, 4)
        >>> parse_shard("4/4")
        Traceback (most recent call last):
        ...
        ValueError: --shard 4/4: I/N needs 0 <= I < N and N >= 2 (shards are numbered from 0)
    """
    head, _, tail = str(text).strip().partition("/")
    try:
        shard, shards = int(head), int(tail)
    except ValueError:
        raise ValueError(f"{key} {text}: expected I/N, e.g. 0/2 (shard I, from 0, of N)") from None
    if not (0 <= shard < shards and shards >= 2):
        raise ValueError(f"{key} {text}: I/N needs 0 <= I < N and N >= 2 (shards are numbered from 0)")
    return shard, shards

"""One stage of one run on any worker: a throwaway checkout of the run's ref, no shared disk.

Why: the DAG's stage tasks share one workspace (and DVC's lock in it), so every worker must mount it and one
run goes at a time. A stateless task needs only what every worker can reach: the git remote, the DVC remote
(object storage) and the MLflow tracking server. ``colbert-pipeline task STAGE --run RUN_ID`` (this module's
:func:`run_task`), started in any clone of the project:

1. makes a workspace of its own in a temporary folder (removed after; the clone is only read);
2. fetches ``refs/colbert-runs/<run id>`` from the git remote. No such ref: this is the run's first task,
   which starts from the clone's HEAD (without a clone: the git remote's ``main``; either way, or
   ``COLBERT_PIPELINE_START_COMMIT``) with the run's ``--set`` Params written into ``params.yaml``. An
   existing ref must hold the same Params and this run's id, and, in the project's image, the image's code;
3. ``dvc pull``s only the outputs of other stages that this stage reads, after checking that the run's
   ``dvc.lock`` records them (else an input error names the output and the stage that should make it);
4. runs the stage (``dvc repro --single-item STAGE``, the ref's code on ``PYTHONPATH``), ``dvc push``es its
   outputs, commits ``params.yaml``, ``dvc.lock`` and the stage's git-tracked metrics on top of the ref and
   pushes the ref. A push that is not a fast-forward (another task of the run moved the ref) is fetched,
   re-applied (this stage's ``dvc.lock`` entry merged onto the new tip) and pushed again, a bounded number of
   times; never forced. A stage that fails pushes nothing: the ref stays as it was.

Unreachable remotes are retried a bounded number of times, then fail as infrastructure errors (exit 3,
worth a retry); refusals and missing inputs are input errors (exit 2). Nothing is pushed to the ref unless
the stage's outputs are in the DVC remote first.

Settings (environment variables; a stateless worker has no other configuration):

- ``COLBERT_PIPELINE_GIT_REMOTE``: the git remote holding run refs, a remote name of the clone or a URL
  (``git://``, ``https://``, ``ssh://``); default ``origin``. Git never prompts: use a credential helper.
- ``COLBERT_PIPELINE_DVC_REMOTE``: the clone's DVC remote holding the run's data; default its default remote,
  with all its options (an S3 ``endpointurl`` included; credentials from the environment or ``--local``).
- ``MLFLOW_TRACKING_URI``: required; a tracking server over HTTP (one that proxies artifacts, so workers
  never read the artifact store's files). An absolute ``sqlite:///`` path works on a single machine.
- ``COLBERT_PIPELINE_DVC_REMOTE_URL`` / ``COLBERT_PIPELINE_DVC_REMOTE_OPTIONS``: the DVC remote by URL and
  options (``endpointurl=... region=...``) instead of the clone's; required without a clone.
- ``COLBERT_PIPELINE_START_COMMIT``: the commit a run's first task starts from (default: the clone's HEAD;
  without a clone, the git remote's ``main``).
- ``COLBERT_PIPELINE_REMOTE_ATTEMPTS`` / ``COLBERT_PIPELINE_REMOTE_BACKOFF_S``: tries per remote operation
  (default 3) and the first pause between them (default 2 s, doubled each time).

Example:
    $ export MLFLOW_TRACKING_URI=http://mlflow.internal:5000
    $ colbert-pipeline task prepare --run nightly-42 --set train.max_steps=200
    $ colbert-pipeline task train --run nightly-42 --set train.max_steps=200   # on another machine
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from pipeline.ops import dvc_remote, git_remote, orchestration, run_shards, task_origin, versioning
from pipeline.ops.git_remote import Retry, git, git_out
from pipeline.ops.task_origin import TaskSettings
from pipeline.project.errors import InfrastructureError, InputError
from pipeline.project.params_file import (
    get_dotted,
    load_params,
    read_params_file,
    write_overrides,
)

logger = logging.getLogger(__name__)

#: The trailer naming the run in every commit a task adds to a run's ref.
RUN_TRAILER = "Colbert-Run-Id"
#: The DVC remote's name inside a task's workspace (the clone's remote, copied with its options).
TASK_REMOTE = "colbert-task"
#: How many times a task re-applies its stage on a ref that others moved before it gives up (retryable).
REAPPLY_LIMIT = 5


class TaskRefused(InputError):
    """The task cannot run as asked: an unknown stage, or a run ref holding other Params or another run."""


class MissingInput(InputError):
    """A stage's input was never made or never pushed by the stage of this run that makes it."""


class RefMoved(InfrastructureError):
    """The run's ref kept moving (or an input of this stage changed on it) while this task ran: retry it."""


@dataclasses.dataclass(frozen=True)
class TaskResult:
    """What a task did: the run's ref and the commit it now points to, and how it got there."""

    stage: str
    run_id: str
    ref: str
    commit: str
    first: bool  # this task created the ref
    skipped: bool  # DVC found the stage up to date (an earlier try of this task had pushed it)
    pulled: list[str]
    reapplied: int  # how often the ref had moved and the stage's record was re-applied on the new tip
    outputs: dict[str, str]
    shard: str | None = None  # "I/N" for a shard of the index's encoding (pipeline.ops.shard_task)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Input:
    """An output of another stage that the task's stage reads; ``cached``: in DVC's cache, else in git."""

    path: str
    producer: str
    cached: bool


@dataclasses.dataclass(frozen=True)
class StageGraph:
    """The task's stage as ``dvc.yaml`` declares it: what it reads from other stages and what it writes."""

    inputs: list[Input]
    outputs: list[tuple[str, bool]]  # (path, cached)
    order: list[str]  # every stage, in dvc.yaml's order


@dataclasses.dataclass
class RunCheckout:
    """A task's workspace on the run's ref: ``base`` is the commit it holds (the ref's tip, or the start
    commit of a ``new`` ref); ``scratch`` is the temporary folder around it."""

    workspace: Path
    scratch: Path
    ref: str
    run_id: str
    base: str
    new: bool


# -- the run's checkout ----------------------------------------------------------------------------------


def open_run(
    settings: TaskSettings, ref: str, run_id: str, overrides: Mapping[str, Any], scratch: Path
) -> RunCheckout:
    """A checkout of the run's ref tip (or, for its first task, the start commit with the run's Params).

    The start commit comes from the clone by ``git fetch`` (git's upload-pack only reads it; borrowing its
    object store instead would let git touch its pack files), or from the git remote where there is no
    clone (:func:`pipeline.ops.task_origin.fetch_start`); then the ref's tip from the git remote: only what
    the workspace lacks travels over the network. In the project's image, a ref holding other code than the
    image's is refused here, before any work (:func:`pipeline.ops.task_origin.check_image_code`).
    """
    workspace = scratch / "workspace"
    workspace.mkdir()
    git_out(workspace, "init", "-q")
    tip = git_remote.remote_tip(settings.git_url, ref, settings.retry, scratch)
    if tip:
        git_remote.fetch(workspace, settings.git_url, f"+{ref}:{ref}", settings.retry)
    base = tip or task_origin.fetch_start(settings, workspace)
    if not tip:
        logger.info("%s is new: the run starts from %s", ref, base[:12])
    task_origin.check_image_code(settings, workspace, base, ref, RUN_TRAILER)
    git_out(workspace, "checkout", "-q", "--detach", base)
    params_path = workspace / "params.yaml"
    if tip:
        check_run(workspace, tip, ref, run_id, overrides)
    elif overrides:
        load_params(params_path, dict(overrides), check_paths=False)  # a bad key or value: refused now
        write_overrides(params_path, dict(overrides))  # in place: the run's ref keeps the file's comments
    load_params(params_path, check_paths=False)
    dvc_remote.configure(workspace, TASK_REMOTE, settings.data_remote, scratch / "dvc-site-cache")
    return RunCheckout(workspace, scratch, ref, run_id, base, new=not tip)


def check_run(workspace: Path, commit: str, ref: str, run_id: str, overrides: Mapping[str, Any]) -> None:
    """Refuse a ref that records another run, or holds Params other than this task's ``--set``."""
    owner = git_out(workspace, "log", "-1", f"--format=%(trailers:key={RUN_TRAILER},valueonly)", commit)
    if owner.strip() and owner.strip() != run_id:
        raise TaskRefused(f"{ref} at {commit[:12]} records run {owner.strip()!r}, not {run_id!r}")
    raw = read_params_file(workspace / "params.yaml")
    differ = []
    for key, value in sorted(overrides.items()):
        present, found = get_dotted(raw, key)
        if (present, found) != (True, value):
            held = f"the ref has {found!r}" if present else "the ref does not set it"
            differ.append(f"{key}: {held}, --set gives {value!r}")
    if differ:
        raise TaskRefused(
            f"run {run_id!r} was started with other Params ({ref} at {commit[:12]}; {'; '.join(differ)}): "
            "a run's Params are fixed by its first task; use a new run id for other Params"
        )


# -- the stage's inputs ----------------------------------------------------------------------------------


def stage_graph(workspace: Path, stage: str) -> StageGraph:
    """Which outputs of other stages ``stage`` reads, and what it writes, from the checkout's dvc.yaml."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    with Repo(str(workspace)) as repo:
        stages = [s for s in repo.index.stages if getattr(s, "name", None)]
        by_name = {s.name: s for s in stages}
        if stage not in by_name:
            raise TaskRefused(f"dvc.yaml has no stage {stage!r} (stages: {', '.join(by_name)})")

        def relative(path: str) -> str:
            return Path(os.path.relpath(path, repo.root_dir)).as_posix()

        made = [(relative(out.fs_path), s.name, bool(out.use_cache)) for s in stages for out in s.outs]
        inputs: list[Input] = []
        for dep in by_name[stage].deps:
            if isinstance(dep, ParamsDependency):
                continue
            path = relative(dep.fs_path)
            inputs += [
                Input(out, producer, cached)
                for out, producer, cached in made
                if producer != stage
                and (path == out or out.startswith(path + "/") or path.startswith(out + "/"))
            ]
        outputs = [(relative(out.fs_path), bool(out.use_cache)) for out in by_name[stage].outs]
    return StageGraph(inputs=inputs, outputs=outputs, order=[s.name for s in stages])


def read_lock(text: str | bytes | None) -> dict[str, Any]:
    """A ``dvc.lock``'s content as a mapping with a ``stages`` mapping (empty when there is none)."""
    data = yaml.safe_load(text) if text else None
    data = data if isinstance(data, dict) else {}
    data.setdefault("schema", "2.0")
    data["stages"] = dict(data.get("stages") or {})
    return data


def _locked_outputs(lock: Mapping[str, Any], stage: str) -> dict[str, Any]:
    entry = lock["stages"].get(stage) or {}
    return {str(out["path"]): out.get("md5") for out in entry.get("outs") or [] if isinstance(out, dict)}


def fetch_inputs(
    workspace: Path, stage: str, run_id: str, graph: StageGraph, retry: Retry, own: bool = True
) -> list[str]:
    """Check that the run's ``dvc.lock`` records every input, then ``dvc pull`` the cached ones.

    Also pulls the stage's own outputs when the ref already records them (an earlier try of this task got
    that far), so that DVC finds the stage up to date instead of running it again; not with ``own`` false
    (a shard task reads the index stage's inputs but makes none of its outputs).
    """
    lock = read_lock((workspace / "dvc.lock").read_bytes() if (workspace / "dvc.lock").exists() else None)
    for item in graph.inputs:
        recorded = item.path in _locked_outputs(lock, item.producer)
        if not recorded or (not item.cached and not (workspace / item.path).exists()):
            raise MissingInput(
                f"stage {stage!r} reads {item.path}, which stage {item.producer!r} makes, and run {run_id!r} "
                f"has no {item.producer!r} output recorded: run `colbert-pipeline task {item.producer} "
                f"--run {run_id}` first"
            )
    pulled = sorted({item.path for item in graph.inputs if item.cached})
    try:
        dvc_remote.pull(workspace, pulled, TASK_REMOTE, retry)
    except dvc_remote.MissingInRemote as error:
        producers = sorted({i.producer for i in graph.inputs if i.cached})
        raise MissingInput(
            f"stage {stage!r} of run {run_id!r}: the DVC remote lacks an output that dvc.lock records "
            f"(made by {', '.join(producers)}; its task did not push it, or pushed it elsewhere): {error}"
        ) from None
    mine = [path for path, cached in graph.outputs if own and cached and path in _locked_outputs(lock, stage)]
    dvc_remote.pull(workspace, mine, TASK_REMOTE, retry, allow_missing=True)
    return pulled


# -- recording the stage on the run's ref ----------------------------------------------------------------


def record_files(workspace: Path, graph: StageGraph) -> dict[str, bytes]:
    """What the ref records of this stage: params, ``dvc.lock``, its git-tracked (uncached) outputs."""
    names = ["params.yaml", "dvc.lock"]
    for path, cached in graph.outputs:
        if cached:
            continue
        found = workspace / path
        names += (
            [p.relative_to(workspace).as_posix() for p in sorted(found.rglob("*")) if p.is_file()]
            if found.is_dir()
            else [path]
        )
    return {name: (workspace / name).read_bytes() for name in names if (workspace / name).is_file()}


def commit_files(
    workspace: Path, base: str, files: Mapping[str, bytes], message: str, scratch: Path, new: bool
) -> str:
    """A commit on ``base`` with ``files`` replaced, through a scratch index; ``base`` when nothing changed
    (and the ref is not ``new``)."""
    env = versioning.identity_env(workspace, {**os.environ, "GIT_INDEX_FILE": str(scratch / "record.index")})
    git_out(workspace, "read-tree", base, env=env)
    blobs = scratch / "blobs"
    blobs.mkdir(exist_ok=True)
    for number, (name, data) in enumerate(sorted(files.items())):
        (blobs / str(number)).write_bytes(data)
        blob = git_out(workspace, "hash-object", "-w", str(blobs / str(number)))
        git_out(workspace, "update-index", "--add", "--cacheinfo", f"100644,{blob},{name}", env=env)
    tree = git_out(workspace, "write-tree", env=env)
    if not new and tree == git_out(workspace, "rev-parse", f"{base}^{{tree}}"):
        return base
    return git_out(workspace, "commit-tree", tree, "-p", base, "-m", message, env=env)


def check_same_params(workspace: Path, tip: str, files: Mapping[str, bytes]) -> None:
    """Refuse to re-apply a record on a tip that holds other Params than the record's ``params.yaml``."""
    shown = git(workspace, "show", f"{tip}:params.yaml")
    if yaml.safe_load(shown.stdout) != yaml.safe_load(files["params.yaml"]):
        raise TaskRefused(f"another task moved the run's ref to {tip[:12]} with other Params")


def reapply(
    workspace: Path, tip: str, stage: str, files: Mapping[str, bytes], order: list[str]
) -> dict[str, bytes]:
    """This stage's record re-applied on ``tip``: its ``dvc.lock`` entry merged into the tip's.

    The tip must hold the same Params, and the inputs this stage used must still be the tip's (a stage of
    the run re-made with other results meanwhile: :class:`RefMoved`, the task's retry runs on the new tip).
    """
    check_same_params(workspace, tip, files)
    theirs = read_lock(git(workspace, "show", f"{tip}:dvc.lock").stdout)
    ours = read_lock(files["dvc.lock"])["stages"][stage]
    for dep in ours.get("deps") or []:
        for other in theirs["stages"]:
            found = _locked_outputs(theirs, other).get(str(dep.get("path")))
            if other != stage and found is not None and found != dep.get("md5"):
                raise RefMoved(f"{dep.get('path')} changed on the run's ref ({tip[:12]}) while {stage} ran")
    theirs["stages"][stage] = ours
    rank = {name: number for number, name in enumerate(order)}
    theirs["stages"] = dict(sorted(theirs["stages"].items(), key=lambda item: rank.get(item[0], len(rank))))
    return {**files, "dvc.lock": yaml.safe_dump(theirs, sort_keys=False).encode()}


def record(
    checkout: RunCheckout,
    settings: TaskSettings,
    stage: str,
    graph: StageGraph,
    message: str,
    files: Mapping[str, bytes] | None = None,
    again: Callable[[str, dict[str, bytes]], dict[str, bytes]] | None = None,
) -> tuple[str, int]:
    """Commit the stage's record on the ref and push it, re-applying it when another task moved the ref.

    ``files`` (default :func:`record_files`) are what is committed, and ``again(tip, files)`` what is
    committed on a tip another task moved the ref to (default :func:`reapply`, the ``dvc.lock`` merge).
    Returns the ref's new commit and how many times the record was re-applied.
    """
    workspace, ref, base, new = checkout.workspace, checkout.ref, checkout.base, checkout.new
    files = dict(files) if files is not None else record_files(workspace, graph)
    again = again or (lambda tip, held: reapply(workspace, tip, stage, held, graph.order))
    for attempt in range(REAPPLY_LIMIT + 1):
        commit = commit_files(workspace, base, files, message, checkout.scratch, new)
        if commit == base and not new:
            logger.info("%s already records this stage: nothing to push", ref)
            return base, attempt
        if git_remote.push(workspace, settings.git_url, commit, ref, settings.retry):
            return commit, attempt
        git_remote.fetch(workspace, settings.git_url, f"+{ref}:{ref}", settings.retry)
        base, new = git_out(workspace, "rev-parse", ref), False
        check_run(workspace, base, ref, checkout.run_id, {})
        files = again(base, files)
    raise RefMoved(f"{ref} moved {REAPPLY_LIMIT + 1} times while this task pushed; not forcing it")


# -- the task --------------------------------------------------------------------------------------------


def run_task(
    stage: str,
    run_id: str,
    overrides: Mapping[str, Any],
    settings: TaskSettings,
    emit: Callable[[str], None] | None = None,
) -> TaskResult:
    """Run one stage of run ``run_id`` in a throwaway checkout of its ref and record it there (see above)."""
    ref = versioning.run_ref_name(run_id)
    with tempfile.TemporaryDirectory(prefix="colbert-task-") as name:
        checkout = open_run(settings, ref, run_id, overrides, Path(name))
        workspace = checkout.workspace
        graph = stage_graph(workspace, stage)
        pulled = fetch_inputs(workspace, stage, run_id, graph, settings.retry)
        shard_env = run_shards.fetch_shards(workspace, stage, run_id, TASK_REMOTE, settings.retry)
        stage_settings = orchestration.Settings(
            workspace=workspace,
            tracking_uri=settings.tracking_uri,
            hf_offline=settings.hf_offline,
            dvc_remote=TASK_REMOTE,
        )
        # The register stage tags its model version with this run's ref and data remote.
        extra_env = {
            versioning.RECORDER_ENV: "task",
            versioning.RUN_REF_ENV: ref,
            versioning.RUN_REMOTE_URL_ENV: settings.data_remote.url,
            **shard_env,
        }
        parent = os.environ.get(orchestration.PARENT_RUN_ENV) or None
        result = orchestration.run_stage(
            stage, stage_settings, parent, settings.tracking_uri, emit=emit, extra_env=extra_env
        )
        if any(cached for _, cached in graph.outputs):
            versioning.push_outputs(
                workspace, [stage], TASK_REMOTE, settings.retry.attempts, settings.retry.backoff_s
            )
        message = f"colbert-pipeline task {stage} of run {run_id}\n\n{RUN_TRAILER}: {run_id}\n"
        commit, reapplied = record(checkout, settings, stage, graph, message)
    logger.info("task %s of run %s: %s -> %s", stage, run_id, ref, commit[:12])
    return TaskResult(
        stage=stage,
        run_id=run_id,
        ref=ref,
        commit=commit,
        first=checkout.new,
        skipped=result.skipped,
        pulled=pulled,
        reapplied=reapplied,
        outputs=result.outputs,
    )

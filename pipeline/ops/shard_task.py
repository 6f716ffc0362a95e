"""One shard of a run's index encoding on any worker: ``colbert-pipeline task index --shard I/N --run RUN``.

Why: encoding is the part of the index stage that grows with the corpus. With ``index.shards`` N above 1
the DAG's stateless mode maps it over N tasks, each on whichever worker takes it, and the index task then
builds from their output (:func:`pipeline.ops.run_shards.fetch_shards`). A shard task, like a stage task
(:mod:`pipeline.ops.stateless`), works in a throwaway checkout of the run's ref:

1. checks that the run's Params say ``index.shards`` N, and ``dvc pull``s the index stage's inputs (the
   model, the corpus) after checking that the run's ``dvc.lock`` records them;
2. pulls the shard if the ref already records it (a retried task), then runs
   ``colbert-pipeline index --shard I/N`` (the ref's code), which encodes the shard's slice of the corpus
   into ``index-shards/<index.name>/shard-I-of-N/`` unless that folder already holds it;
3. ``dvc add``s the folder, ``dvc push``es it, and commits its pointer (``shard-I-of-N.dvc``) to the run's
   ref. A ref that another task moved meanwhile (the other shards, ``evaluate``) is fetched and the pointer
   committed on its new tip: each shard has a file of its own, so nothing needs merging. Never forced.

A stage that fails pushes nothing; unreachable remotes are infrastructure errors (exit 3), refusals input
errors (exit 2), as for a stage task.

Example:
    $ colbert-pipeline task index --shard 0/2 --run nightly-42 --set index.shards=2   # on one worker
    $ colbert-pipeline task index --shard 1/2 --run nightly-42 --set index.shards=2   # on another
    $ colbert-pipeline task index --run nightly-42 --set index.shards=2               # builds from both
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pipeline.ops import dvc_remote, orchestration, run_shards, stateless, versioning
from pipeline.ops.runner import ancestors, run_process
from pipeline.project.errors import kind_of_exit_code
from pipeline.project.layout import RESULT_FILE_ENV
from pipeline.project.params_file import load_params

logger = logging.getLogger(__name__)


def run_shard_task(
    shard: int,
    shards: int,
    run_id: str,
    overrides: Mapping[str, Any],
    settings: stateless.TaskSettings,
    emit: Callable[[str], None] | None = None,
) -> stateless.TaskResult:
    """Encode shard ``shard`` of ``shards`` for run ``run_id``, push it and record it on the run's ref."""
    ref = versioning.run_ref_name(run_id)
    with tempfile.TemporaryDirectory(prefix="colbert-task-") as name:
        checkout = stateless.open_run(settings, ref, run_id, overrides, Path(name))
        workspace = checkout.workspace
        params = load_params(workspace / "params.yaml", check_paths=False)
        if params.index.shards != shards:
            raise stateless.TaskRefused(
                f"--shard {shard}/{shards}: run {run_id!r} has index.shards {params.index.shards} "
                f"({ref}), so its shards are 0/{params.index.shards} to "
                f"{params.index.shards - 1}/{params.index.shards}"
            )
        graph = stateless.stage_graph(workspace, "index")
        pulled = stateless.fetch_inputs(workspace, "index", run_id, graph, settings.retry, own=False)
        folder, pointer = run_shards.folder(params, shard), run_shards.pointer(params, shard)
        if (workspace / pointer).is_file():  # an earlier try recorded it: the encoder keeps what matches
            dvc_remote.pull(workspace, [pointer], stateless.TASK_REMOTE, settings.retry, allow_missing=True)
        result = encode(workspace, f"{shard}/{shards}", settings, emit)
        dvc_add(workspace, folder)
        versioning.push_outputs(
            workspace, [pointer], stateless.TASK_REMOTE, settings.retry.attempts, settings.retry.backoff_s
        )
        files = {name: (workspace / name).read_bytes() for name in ("params.yaml", pointer)}

        def again(tip: str, held: dict[str, bytes]) -> dict[str, bytes]:
            stateless.check_same_params(workspace, tip, held)
            return held  # the pointer is this shard's own file: committed as it is on the new tip

        message = (
            f"colbert-pipeline task index --shard {shard}/{shards} of run {run_id}\n\n"
            f"{stateless.RUN_TRAILER}: {run_id}\n"
        )
        commit, reapplied = stateless.record(checkout, settings, "index", graph, message, files, again)
    logger.info("shard %d/%d of run %s: %s -> %s", shard, shards, run_id, ref, commit[:12])
    summary = result.get("summary") or {}
    return stateless.TaskResult(
        stage="index",
        run_id=run_id,
        ref=ref,
        commit=commit,
        first=checkout.new,
        skipped=bool(summary.get("skipped")),
        pulled=pulled,
        reapplied=reapplied,
        outputs={folder: ""},
        shard=f"{shard}/{shards}",
    )


def encode(
    workspace: Path, shard: str, settings: stateless.TaskSettings, emit: Callable[[str], None] | None
) -> dict[str, Any]:
    """``colbert-pipeline index --shard I/N`` in a supervised child process, the ref's code on its path;
    its result file's content. Raises :class:`orchestration.StageFailed` (with the kind) when it fails."""
    emit = emit or (lambda line: logger.info("[index %s] %s", shard, line))
    owners = ancestors(os.getpid())
    command = [
        orchestration._executable("colbert-pipeline"),
        "index",
        "--shard",
        shard,
        "--params",
        "params.yaml",
    ]
    stage_settings = orchestration.Settings(
        workspace=workspace, tracking_uri=settings.tracking_uri, hf_offline=settings.hf_offline, runner="cli"
    )
    env = orchestration.stage_environment(stage_settings, None, settings.tracking_uri)
    with tempfile.TemporaryDirectory(prefix="colbert-shard-") as scratch:
        env[RESULT_FILE_ENV] = str(Path(scratch) / "result.json")
        process = run_process(command, cwd=workspace, env=env, emit=emit, owners=owners)
        result = orchestration.read_result(Path(env[RESULT_FILE_ENV]))
    if process.returncode != 0 or result is None or not result.get("ok"):
        kind = str((result or {}).get("kind") or kind_of_exit_code(process.returncode))
        message = str((result or {}).get("message") or "\n".join(process.tail[-5:]) or "no output")
        raise orchestration.StageFailed(f"index --shard {shard}", process.returncode, message, kind)
    return result


def dvc_add(workspace: Path, folder: str) -> None:
    """``dvc add folder``: its content into the workspace's DVC cache and its pointer beside it."""
    versioning.run_dvc(workspace, "add", folder, timeout_s=3600)

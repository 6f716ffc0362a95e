"""The shards of a stateless run's index encoding, as its ref records them: where, and fetched for the index.

With ``index.shards`` N above 1, each shard of the corpus is encoded by a task of its own
(``colbert-pipeline task index --shard I/N``, :mod:`pipeline.ops.shard_task`), which pushes the shard's
folder to the DVC remote and commits its DVC pointer, ``index-shards/<index.name>/shard-I-of-N.dvc``, to the
run's ref. The index task then needs all N: :func:`fetch_shards` checks that the ref records each one and
``dvc pull``s them, or raises an input error naming every missing shard and the task that makes it.

Example:
    >>> from pipeline.project.config import Params
    >>> pointer(Params.model_validate({"index": {"shards": 2}}), 1)
    'index-shards/sample/shard-1-of-2.dvc'
"""

from __future__ import annotations

from pathlib import Path

from pipeline.ops import dvc_remote
from pipeline.ops.git_remote import Retry
from pipeline.project.config import Params
from pipeline.project.errors import InputError
from pipeline.project.layout import SHARD_RUN_ENV, Layout
from pipeline.project.params_file import load_params


class ShardNotPushed(InputError):
    """The index task of a sharded run found a shard its ref does not record, or the remote lacks."""


def folder(params: Params, shard: int) -> str:
    """Shard ``shard``'s folder relative to the project (:meth:`Layout.index_shard`)."""
    layout = Layout(params, Path("/project"))
    return layout.relative(layout.index_shard(shard, params.index.shards))


def pointer(params: Params, shard: int) -> str:
    """Shard ``shard``'s DVC pointer relative to the project: what its task commits to the run's ref."""
    return f"{folder(params, shard)}.dvc"


def shard_command(shard: int, shards: int, run_id: str) -> str:
    """The task that makes one shard, for messages."""
    return f"colbert-pipeline task index --shard {shard}/{shards} --run {run_id}"


def fetch_shards(workspace: Path, stage: str, run_id: str, remote: str, retry: Retry) -> dict[str, str]:
    """For a sharded run's index task: pull every shard its ref records; the stage's extra environment.

    Nothing for another stage or an unsharded run. A shard the ref does not record, or the remote lacks, is
    an input error naming it and its task; the stage then builds from the shards only
    (``COLBERT_PIPELINE_SHARD_RUN``: a stale one is refused there, not encoded again).
    """
    if stage != "index":
        return {}
    params = load_params(workspace / "params.yaml", check_paths=False)
    shards = params.index.shards
    if shards == 1:
        return {}
    missing = [shard for shard in range(shards) if not (workspace / pointer(params, shard)).is_file()]
    if missing:
        tasks = "; ".join(f"`{shard_command(shard, shards, run_id)}`" for shard in missing)
        pointers = ", ".join(pointer(params, shard) for shard in missing)
        raise ShardNotPushed(
            f"stage 'index' of run {run_id!r} builds from {shards} shards (index.shards), and the run's ref "
            f"records no shard {', '.join(map(str, missing))} ({pointers}): run {tasks} first"
        )
    try:
        dvc_remote.pull(workspace, [pointer(params, shard) for shard in range(shards)], remote, retry)
    except dvc_remote.MissingInRemote as error:
        tasks = "; ".join(f"`{shard_command(shard, shards, run_id)}`" for shard in range(shards))
        raise ShardNotPushed(
            f"stage 'index' of run {run_id!r}: the DVC remote lacks a shard that the run's ref records (its "
            f"task did not push it, or pushed it elsewhere; the shard tasks are {tasks}): {error}"
        ) from None
    return {SHARD_RUN_ENV: run_id}

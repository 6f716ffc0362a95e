"""The checks around ``make test-docker``'s stateless stage in a container (docker/test-docker.sh).

The script starts moto's S3 server and a ``git daemon`` on 127.0.0.1, runs ``task prepare`` of one run as a
container of the image (no clone, no mount: the settings name the three services), then ``task baseline``
of the same run on the host, in a clone of the served repository. This module gives it the pieces it cannot
say in bash: the tiny run's ``--set`` arguments, the bucket, and what the run's ref must hold afterwards::

    python tests/deploy/container_task.py sets
    python tests/deploy/container_task.py bucket --endpoint http://127.0.0.1:PORT
    python tests/deploy/container_task.py check --git git://127.0.0.1:PORT/project.git --run RUN \
        --start COMMIT --endpoint http://127.0.0.1:PORT --stages prepare baseline

``check`` exits non-zero, naming what differs, unless the ref (fetched into a throwaway bare repository)
holds one commit per stage, in order, each with the run's trailer, on top of ``--start``; its ``dvc.lock``
records exactly those stages; every cached output of ``prepare`` is in the bucket; and a later stage read
the very ``data/prepared/...`` hashes that ``prepare`` recorded.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: tests.remotes, tests.workspace

from tests import remotes
from tests.workspace import DAG_TINY

BUCKET = "runs"
PREFIX = "dvc"


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def sets() -> int:
    """The tiny run's Params as ``--set KEY=VALUE`` words, one a line (as the compose run's)."""
    for key, value in sorted(DAG_TINY.items()):
        print(f"--set\n{key}={value}")
    return 0


def bucket(args: argparse.Namespace) -> int:
    remotes.wait_s3_answers(args.endpoint)
    remotes.make_bucket(args.endpoint, BUCKET)
    return 0


def problems(bare: Path, args: argparse.Namespace) -> list[str]:
    """What the run's ref holds that it should not (empty: as expected)."""
    ref = f"refs/colbert-runs/{args.run}"
    found: list[str] = []
    commits = _git(bare, "rev-list", "--first-parent", f"{args.start}..{ref}").split()
    if len(commits) != len(args.stages) or _git(bare, "rev-parse", f"{ref}~{len(args.stages)}") != args.start:
        found.append(f"{ref} is not {len(args.stages)} commit(s) on top of {args.start}: {commits}")
    for commit, stage in zip(reversed(commits), args.stages, strict=False):
        message = _git(bare, "log", "-1", "--format=%B", commit)
        if f"task {stage} of run {args.run}" not in message or f"Colbert-Run-Id: {args.run}" not in message:
            found.append(f"{commit[:12]} is not the record of task {stage}: {message!r}")
    lock = yaml.safe_load(_git(bare, "show", f"{ref}:dvc.lock"))
    if list(lock["stages"]) != args.stages:
        found.append(f"{ref}:dvc.lock records {list(lock['stages'])}, not {args.stages}")
    made = {out["path"]: out["md5"] for out in lock["stages"].get("prepare", {}).get("outs", [])}
    keys = set(remotes.bucket_keys(args.endpoint, BUCKET, f"{PREFIX}/"))
    for path, md5 in made.items():
        # A directory's listing (.dir) is stored under its own hash; its files are pushed with it.
        if f"{PREFIX}/files/md5/{md5[:2]}/{md5[2:]}" not in keys:
            found.append(f"prepare's {path} ({md5}) is not in s3://{BUCKET}/{PREFIX}")
    for stage in args.stages[1:]:
        read = {d["path"]: d.get("md5") for d in lock["stages"][stage].get("deps", [])}
        shared = {path for path in read if path in made}
        if not shared or any(read[path] != made[path] for path in shared):
            found.append(f"{stage} did not read prepare's outputs as recorded: {read} vs {made}")
    print(
        f"{ref}: {len(commits)} commit(s) on {args.start[:12]}, dvc.lock {list(lock['stages'])}, "
        f"{len(made)} prepare output(s) in the bucket ({len(keys)} objects)"
    )
    return found


def check(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="colbert-check-") as scratch:
        bare = Path(scratch)
        _git(bare, "init", "-q", "--bare")
        ref = f"refs/colbert-runs/{args.run}"
        _git(bare, "fetch", "-q", args.git, f"+{ref}:{ref}", "+refs/heads/main:refs/heads/main")
        found = problems(bare, args)
    for line in found:
        print(f"container task check: {line}", file=sys.stderr)
    return 1 if found else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("phase", choices=["sets", "bucket", "check"])
    parser.add_argument("--endpoint", help="the S3 API's URL")
    parser.add_argument("--git", help="the served repository's URL")
    parser.add_argument("--run", help="the run's id")
    parser.add_argument("--start", help="the commit the run must have started from")
    parser.add_argument(
        "--stages", nargs="+", default=["prepare"], help="the stages the ref records, in order"
    )
    args = parser.parse_args(argv)
    if args.phase == "sets":
        return sets()
    return bucket(args) if args.phase == "bucket" else check(args)


if __name__ == "__main__":
    raise SystemExit(main())

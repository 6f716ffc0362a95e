"""Reproduce a registered model version: check out its run in a new folder, pull, verify, maybe re-run.

A version registered by a DAG run carries ``colbert.run_ref`` / ``colbert.run_commit`` (the commit holding
that run's code, ``params.yaml`` and ``dvc.lock``), ``colbert.dvc_remote`` (where its outputs were pushed) and
``lineage.<artifact>.md5`` (DVC's hashes of its data, model and index). :func:`reproduce` clones the project
at that commit into a new folder, ``dvc pull``s from that remote and compares the artifacts' hashes with
the tags; with ``rerun`` it runs the stages again there and says which outputs come out bit-identical.

Example (how a version is named on the command line):
    >>> parse_reference("champion", "colbert-pipeline"), parse_reference("models:/other/3", "any")
    (('colbert-pipeline', 'alias', 'champion'), ('other', 'version', '3'))
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.ops import dvc_remote, versioning
from pipeline.ops.lineage import LINEAGE_PREFIX, compute_md5, read_dvc_lock
from pipeline.ops.runner import run_process
from pipeline.project.errors import InputError, PipelineError
from pipeline.project.layout import Layout
from pipeline.project.params_file import load_params

logger = logging.getLogger(__name__)

#: The stages whose outputs a version's lineage names (data, model, index): pulled, and re-run by ``rerun``.
LINEAGE_STAGES = versioning.LINEAGE_STAGES
REPRODUCE_REMOTE = "colbert-reproduce"
#: How a clone names the tracking server a version is registered on (the run's, as its team shares it).
TRACKING_HOW = (
    "set MLFLOW_TRACKING_URI (or tracking.tracking_uri in params.yaml) to the tracking server the run used, "
    "e.g. `export MLFLOW_TRACKING_URI=http://mlflow.example:5000`"
)


class ReproduceError(PipelineError):
    """The pulled artifacts do not match the version's lineage hashes."""


@dataclasses.dataclass(frozen=True)
class Check:
    """One artifact: the hash the version was tagged with, the hash found, and the path it was found at."""

    artifact: str
    path: str
    expected: str
    actual: str | None

    @property
    def identical(self) -> bool:
        return self.actual == self.expected


def parse_reference(reference: str, default_name: str) -> tuple[str, str, str]:
    """``(name, "version" | "alias", value)`` from ``3``, ``champion``, ``name@alias``, ``models:/name/3``."""
    text = reference.strip()
    if text.startswith("models:/"):
        text = text[len("models:/") :].replace("/", "@", 1)
    name, at, value = text.rpartition("@")
    if not at:
        name, value = default_name, text
    if not value or not re.fullmatch(r"[A-Za-z0-9_.-]+", value):
        raise InputError(f"model reference {reference!r}: expected a version number or an alias")
    return name, ("version" if value.isdigit() else "alias"), value


def _run(command: Sequence[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 3600) -> str:
    completed = subprocess.run(
        list(command), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if completed.returncode != 0:
        output = (completed.stderr or completed.stdout).strip()[-1500:]
        raise PipelineError(
            f"{' '.join(command[:4])} in {cwd} failed (exit {completed.returncode}): {output}"
        )
    return completed.stdout


def version_tags(
    reference: str, default_name: str, tracking_uri: str | None
) -> tuple[str, str, dict[str, str]]:
    """The model name, version number and tags of the referenced version (from the registry over MLflow)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    name, kind, value = parse_reference(reference, default_name)
    store = (tracking_uri or "").removeprefix("sqlite:///")
    if store != (tracking_uri or "") and store and not Path(store).is_file():
        # Opening it would create an empty store (a stray mlruns.db in a fresh clone) and then report the
        # version as missing: say instead which setting points at the store that has it.
        raise InputError(
            f"no tracking store at {store} (the tracking URI {tracking_uri}): the version was registered "
            f"elsewhere; {TRACKING_HOW}"
        )
    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        found = (
            client.get_model_version(name, value)
            if kind == "version"
            else client.get_model_version_by_alias(name, value)
        )
    except MlflowException as error:
        raise InputError(
            f"model {name!r} {kind} {value!r} is not in the registry at {tracking_uri}: {error.message}; "
            f"if it was registered on another tracking server or store, {TRACKING_HOW}"
        ) from None
    return name, str(found.version), dict(found.tags or {})


def checkout(repo: Path, ref: str, commit: str, dest: Path) -> None:
    """A clean clone of ``repo`` at ``commit`` (fetched through ``ref``) in ``dest`` (new or empty).

    A ref that ``repo`` lacks (a run recorded by a task, or in another clone) is fetched from its git remote:
    ``COLBERT_PIPELINE_GIT_REMOTE`` (a remote name or URL), else ``origin``.
    """
    from pipeline.ops import git_remote

    if dest.exists() and any(dest.iterdir()):
        raise InputError(f"{dest}: the folder to reproduce into must be new or empty")
    dest.parent.mkdir(parents=True, exist_ok=True)
    _run(["git", "clone", "--quiet", "--no-checkout", str(repo), str(dest)], cwd=dest.parent)
    tried = [str(repo)]
    with contextlib.suppress(InputError):
        tried.append(git_remote.resolve_url(repo, os.environ.get(git_remote.GIT_REMOTE_ENV)))
    for source in dict.fromkeys(tried):
        with contextlib.suppress(PipelineError):
            _run(
                ["git", "fetch", "--quiet", source, f"+{ref}:{ref}"],
                cwd=dest,
                env=git_remote.noninteractive_env(),
            )
            break
    else:
        raise InputError(
            f"no git repository of {', '.join(dict.fromkeys(tried))} has {ref}: push it from the clone that "
            f"ran it (`git push origin {ref}`), or name the git remote that has it in "
            f"{git_remote.GIT_REMOTE_ENV} (or as this clone's origin)"
        )
    _run(["git", "checkout", "--quiet", "--detach", commit], cwd=dest)


def pull_lineage(dest: Path, url: str, known: dvc_remote.DataRemote | None) -> None:
    """``dvc pull`` the lineage stages' outputs in ``dest`` from the DVC remote at ``url``.

    ``known`` is the clone's own remote of that URL: its options (an S3 endpoint, keys, a profile) come
    along. Without one, only the bare URL is tried, and a failed pull is an input error that says how to
    configure the remote in the clone (what an S3 server other than AWS, or keys in no environment, need).
    """
    remote = known or dvc_remote.DataRemote(REPRODUCE_REMOTE, {"url": url})
    dvc_remote.configure(dest, REPRODUCE_REMOTE, remote)
    try:
        _run([versioning.dvc_executable(), "pull", "--remote", REPRODUCE_REMOTE, *LINEAGE_STAGES], cwd=dest)
    except PipelineError as error:
        if known is not None:
            raise
        raise InputError(
            f"{error}; this clone has no DVC remote with the URL {url}: add it with `dvc remote add --local "
            f"<name> {url}` and its options (`dvc remote modify --local <name> endpointurl <url>` for an S3 "
            "server other than AWS, keys or a profile), or name another copy of it with --remote"
        ) from None


def verify(dest: Path, tags: dict[str, str]) -> list[Check]:
    """Compare every ``lineage.<artifact>.md5`` tag with DVC's hash of that artifact in ``dest``."""
    layout = Layout(load_params(dest / "params.yaml", check_paths=False), dest)
    paths = layout.artifacts()
    checks = []
    for key, expected in sorted(tags.items()):
        artifact = key[len(LINEAGE_PREFIX) : -len(".md5")] if key.endswith(".md5") else ""
        if key.startswith(LINEAGE_PREFIX) and artifact in paths:
            path = paths[artifact]
            actual = compute_md5(path, dest) if path.exists() else None  # with .dvcignore, as DVC
            checks.append(Check(artifact, layout.relative(path), expected, actual))
    return checks


def rerun(dest: Path, stages: Sequence[str], env: dict[str, str]) -> dict[str, bool]:
    """Run ``stages`` again in ``dest`` (``dvc repro --force``); ``{output: same hash as in dvc.lock}``."""
    recorded = _outputs(read_dvc_lock(dest))
    for stage in stages:
        logger.info("reproduce: re-running %s in %s", stage, dest)
        # Under the supervisor: a stage never outlives this command (Ctrl-C, a killed parent).
        process = run_process(
            [versioning.dvc_executable(), "repro", "--force", "--single-item", stage], cwd=dest, env=env
        )
        if process.returncode != 0:
            tail = "\n".join(process.tail[-5:])
            raise PipelineError(f"re-running {stage} in {dest} failed (exit {process.returncode}): {tail}")
    lock = read_dvc_lock(dest)
    fresh = _outputs({stage: lock.get(stage) for stage in stages})
    return {path: md5 == recorded.get(path) for path, md5 in sorted(fresh.items())}


def _outputs(stages: dict[str, Any]) -> dict[str, str]:
    return {
        str(out["path"]): str(out.get("md5"))
        for entry in stages.values()
        for out in (entry or {}).get("outs") or []
        if isinstance(out, dict) and "path" in out
    }


def reproduce(
    reference: str,
    repo: Path,
    dest: Path,
    *,
    model_name: str,
    tracking_uri: str | None,
    remote_url: str | None = None,
    rerun_stages: Sequence[str] = (),
) -> dict[str, Any]:
    """Check out the version's run in ``dest``, pull its outputs, verify their hashes; optionally re-run.

    Raises :class:`ReproduceError` when a pulled artifact's hash differs from the version's tag (after writing
    nothing but ``dest``); differences after a re-run are reported, not raised: they say which stages are
    not bit-reproducible.
    """
    name, version, tags = version_tags(reference, model_name, tracking_uri)
    missing = [t for t in (versioning.RUN_REF_TAG, versioning.RUN_COMMIT_TAG) if t not in tags]
    if missing:
        raise InputError(
            f"{name} v{version} has no {' or '.join(missing)} tag: it was not registered by a recorded run "
            "(the DAG's record_run task, a stateless task or the register stage tags it)"
        )
    url = remote_url or tags.get(versioning.DVC_REMOTE_TAG)
    if not url or (remote_url is None and tags.get(versioning.DVC_PUSHED_TAG) != "true"):
        raise InputError(
            f"{name} v{version}: its outputs were not pushed to a DVC remote (tags: "
            f"{versioning.DVC_PUSHED_TAG}={tags.get(versioning.DVC_PUSHED_TAG)!r}); pass --remote if they are"
        )
    dest = Path(dest).resolve()
    checkout(Path(repo).resolve(), tags[versioning.RUN_REF_TAG], tags[versioning.RUN_COMMIT_TAG], dest)
    pull_lineage(dest, url, dvc_remote.find_by_url(Path(repo), url))
    checks = verify(dest, tags)
    report: dict[str, Any] = {
        "model": name,
        "version": version,
        "ref": tags[versioning.RUN_REF_TAG],
        "commit": tags[versioning.RUN_COMMIT_TAG],
        "remote": url,
        "folder": str(dest),
        "checks": [{**dataclasses.asdict(c), "identical": c.identical} for c in checks],
    }
    different = [c for c in checks if not c.identical]
    if different or not checks:
        details = "; ".join(f"{c.artifact}: tagged {c.expected}, pulled {c.actual}" for c in different)
        raise ReproduceError(f"{name} v{version} in {dest}: " + (details or "no lineage hashes to verify"))
    if rerun_stages:
        env = {
            **os.environ,
            "PYTHONPATH": str(dest),
            "MLFLOW_TRACKING_URI": f"sqlite:///{dest / 'mlruns.db'}",
        }
        report["rerun"] = rerun(dest, rerun_stages, env)
    return report

"""A sharded index over stateless tasks: two clones encode one shard each, a third builds the index from them.

The clones share only the git daemon and the S3 API (``tests/remotes.py``), as in ``test_stateless.py``. One
run of the project's own stages on the tiny sample with ``index.shards=2``: ``prepare`` and ``train``, the
index task refused before its shards exist, the two shard tasks at once (one of them finds the ref moved by
the other), then the index task. Its index is compared with an unsharded build of the same model and corpus:
the same documents, and recall@10 against exact MaxSim within 0.005.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests import remotes
from tests.ops import test_stateless as base
from tests.workspace import make_workspace

pytestmark = pytest.mark.slow

RUN = "sharded-run"
SETS = ("index.shards=2",)


@pytest.fixture(scope="module")
def servers(module_tmp_path: Path) -> Iterator[dict[str, str]]:
    served = module_tmp_path / "served"
    with remotes.git_daemon(served) as git_url, remotes.s3_server(module_tmp_path / "s3") as endpoint:
        remotes.make_bucket(endpoint, base.BUCKET)
        yield {"git": git_url, "s3": endpoint, "served": str(served)}


def _shard_task(clone: Path, env: dict[str, str], shard: str) -> subprocess.Popen[str]:
    command = [str(base.BIN / "colbert-pipeline"), "task", "index", "--shard", shard, "--run", RUN]
    command += [arg for value in SETS for arg in ("--set", value)]
    return subprocess.Popen(
        command, cwd=clone, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _checkout(url: str, endpoint: str, dest: Path, env: dict[str, str]) -> Path:
    """A clone at the run's ref with its model, benchmark and index pulled from the S3 API."""
    clone = remotes.clone_from(url, dest, env)
    ref = f"refs/colbert-runs/{RUN}"
    base._git(clone, "fetch", "-q", "origin", f"+{ref}:{ref}")
    base._git(clone, "checkout", "-q", "--detach", ref)
    remotes.add_s3_remote(clone, "store", f"s3://{base.BUCKET}/sharded", endpoint)
    pulled = subprocess.run(
        [str(base.BIN / "dvc"), "pull", "models/colbert", "data/prepared/eval", "indexes/sample"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert pulled.returncode == 0, pulled.stderr[-3000:]
    return clone


def test_two_clones_encode_the_shards_and_a_third_builds_the_index(
    module_tmp_path: Path, servers: dict[str, str]
) -> None:
    source = make_workspace(module_tmp_path / "source")  # the tiny sample: 80 documents to index
    remotes.serve_repository(source, Path(servers["served"]), "sharded.git")
    url = f"{servers['git']}/sharded.git"
    root = module_tmp_path / "clones"
    (a, env_a), (b, env_b), (c, env_c) = (
        base.new_clone(root, name, url, servers["s3"], "sharded") for name in "abc"
    )
    before = {name: base.snapshot(clone) for name, clone in (("a", a), ("b", b), ("c", c))}
    for stage in ("prepare", "train"):
        done = base.task(a, env_a, stage, RUN, *SETS)
        assert done.returncode == 0, done.stderr[-3000:]

    # The index task before any shard was pushed: an input error naming each shard's task, nothing run.
    early = base.task(c, env_c, "index", RUN, *SETS)
    assert early.returncode == 2, early.stderr[-3000:]
    assert "records no shard 0, 1" in early.stderr
    assert f"colbert-pipeline task index --shard 1/2 --run {RUN}" in early.stderr

    # Two workers, one shard each, at the same time.
    running = [_shard_task(a, env_a, "0/2"), _shard_task(b, env_b, "1/2")]
    results = []
    for process in running:
        stdout, stderr = process.communicate(timeout=900)
        assert process.returncode == 0, stderr[-3000:]
        results.append(json.loads(stdout))
    assert [r["shard"] for r in results] == ["0/2", "1/2"]
    assert sum(r["reapplied"] for r in results) <= 1  # one may have found the ref moved by the other

    built = base.task(c, env_c, "index", RUN, *SETS)
    assert built.returncode == 0, built.stderr[-3000:]
    assert {name: base.snapshot(clone) for name, clone in (("a", a), ("b", b), ("c", c))} == before

    ref = f"refs/colbert-runs/{RUN}"
    lock = base.remote_lock(a, ref)
    assert list(lock["stages"]) == ["prepare", "train", "index"]
    listed = base._git(a, "ls-tree", "-r", "--name-only", ref, "index-shards").splitlines()
    assert listed == ["index-shards/sample/shard-0-of-2.dvc", "index-shards/sample/shard-1-of-2.dvc"]
    metrics = json.loads(base._git(a, "show", f"{ref}:metrics/index.json"))
    assert metrics["shards"] == {"count": 2, "encoded_here": 0}  # built from the pushed shards only
    # The shards' data went to the S3 API like any output (DVC's content-addressed files).
    pointer = yaml.safe_load(base._git(a, "show", f"{ref}:index-shards/sample/shard-1-of-2.dvc"))
    md5 = pointer["outs"][0]["md5"]
    assert f"sharded/files/md5/{md5[:2]}/{md5[2:]}" in remotes.bucket_keys(servers["s3"], base.BUCKET)

    # The same model and corpus indexed unsharded, beside the pulled sharded index.
    checkout = _checkout(url, servers["s3"], module_tmp_path / "compare", env_c)
    unsharded = subprocess.run(
        [str(base.BIN / "colbert-pipeline"), "index", "--set", "index.shards=1", "--set", "index.name=whole"],
        cwd=checkout,
        env={**env_c, "PYTHONPATH": str(checkout)},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert unsharded.returncode == 0, unsharded.stderr[-3000:]
    assert metrics["documents"] == json.loads((checkout / "metrics" / "index.json").read_text())["documents"]
    assert _compare(checkout) <= 0.005


def _compare(checkout: Path) -> float:
    """The two indexes hold the same documents in the same order; the gap in recall@10 against exact
    MaxSim (PLAID's own search at two settings, the benchmark's queries) between them."""
    from pipeline import indexes, models
    from pipeline.data.benchmark import load_prepared_benchmarks
    from pipeline.indexes.indexing import exact_search, recall_at_k

    model = models.ColBERT(model_name_or_path=str(checkout / "models" / "colbert"), device="cpu")
    benchmarks = load_prepared_benchmarks(checkout / "data" / "prepared" / "eval")
    queries = [text for data in benchmarks.values() for text in data.queries.values()]
    pairs = [pair for data in benchmarks.values() for pair in data.corpus.items()]
    ids = [i for i, _ in pairs]
    encoded = model.encode(queries, is_query=True)
    reference = exact_search(encoded, model.encode([t for _, t in pairs], is_query=False), ids, k=10)
    recalls: dict[tuple[int, int, str], float] = {}
    for probe, full in ((8, 8192), (1, 16)):  # PLAID's defaults, and a setting far from exact
        for name in ("sample", "whole"):
            index = indexes.PLAID(
                index_folder=str(checkout / "indexes"),
                index_name=name,
                device="cpu",
                n_ivf_probe=probe,
                n_full_scores=full,
                show_progress=False,
            )
            assert index.documents_ids == ids, name
            recalls[(probe, full, name)] = recall_at_k(index.search(encoded, k=10), reference, k=10)
    print("recall@10 against exact MaxSim (sample: sharded, whole: unsharded):", recalls)
    return max(abs(recalls[(p, f, "sample")] - recalls[(p, f, "whole")]) for p, f, _ in recalls)

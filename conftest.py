"""What every test and every docstring example shares: offline Hugging Face, one throwaway MLflow store.

Everything runs offline on the CPU with the packaged all-MiniLM-L6-v2. The package's docstring examples run
as tests (``--doctest-modules``); they find ``np``, ``Path`` and ``pd`` in their namespace.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

# Set before any Hugging Face import so no test can reach the Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path

import pytest

from tests.paths import on_ci


def _share_the_cores() -> None:
    """Under ``pytest -n N`` give each worker's processes cores / N OpenMP threads (torch's intra-op pool).

    Each worker runs its own stages, trainings and platforms at once; with torch's default (a thread per
    core) in every process, the workers ask for more threads than there are cores. Two tiny ``dvc repro``
    runs at once on 2 cores took a median 140 s at the default and 125 s with one thread each (three pairs
    each). Set before torch is imported, here and in every process the tests start (the environment is
    inherited); an ``OMP_NUM_THREADS`` already set wins.
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    if workers > 1:
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))


_share_the_cores()

#: Modules with these markers hold minutes-long module fixtures (a platform, a reference ``dvc repro``).
_LONG_FIRST = ("deploy", "faults", "slow")

#: Tests that may skip on CI (``CI=true``), each with why it cannot run there (node id, or a prefix of one
#: ending in ``::`` or ``/``: every test under it). Every other skip on CI is a failure: a green CI run must
#: mean each test ran. An entry would be, e.g., a test that needs a CUDA device (CI has none):
#: ``"tests/library/test_x.py::test_on_cuda": "CUDA only; CI machines have no GPU"``.
CI_MAY_SKIP: dict[str, str] = {}


def _may_skip_on_ci(nodeid: str) -> bool:
    return any(
        nodeid == allowed or (allowed.endswith(("::", "/")) and nodeid.startswith(allowed))
        for allowed in CI_MAY_SKIP
    )


def _skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # (file, line, "Skipped: reason")
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def _fail_skip_on_ci(report: pytest.TestReport | pytest.CollectReport) -> None:
    """Turn a skip that is not on ``CI_MAY_SKIP`` into a failure when on CI (an expected failure stays)."""
    if not report.skipped or hasattr(report, "wasxfail") or not on_ci() or _may_skip_on_ci(report.nodeid):
        return
    report.outcome = "failed"
    report.longrepr = (
        f"{report.nodeid} skipped on CI (CI=true), where every test must run: {_skip_reason(report)}. "
        "A test that cannot run on CI goes on CI_MAY_SKIP in conftest.py, with the reason."
    )


# The reports are changed where they are made: under xdist a worker makes them and the controller only sees
# the result, so a skip turned into a failure here is a failure in the summary and in the exit status alike.
@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    report = yield
    _fail_skip_on_ci(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    report = yield
    _fail_skip_on_ci(report)  # a whole module skipped (importorskip, allow_module_level)
    return report


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the modules with the longest fixtures first, each module's tests kept together and in order.

    ``make test`` runs two xdist workers that take one module at a time (``--dist loadscope
    --no-loadscope-reorder``): a few-test, many-minute module started last leaves the other core idle.
    """

    def rank(item: pytest.Item) -> int:
        names = {mark.name for mark in item.iter_markers()}
        return next((i for i, name in enumerate(_LONG_FIRST) if name in names), len(_LONG_FIRST))

    first_seen: dict[str, int] = {}
    module_rank: dict[str, int] = {}
    for position, item in enumerate(items):
        module = item.nodeid.split("::", 1)[0]
        first_seen.setdefault(module, position)
        module_rank[module] = min(module_rank.get(module, len(_LONG_FIRST)), rank(item))
    order = {id(item): position for position, item in enumerate(items)}

    def key(item: pytest.Item) -> tuple[int, int, int]:
        module = item.nodeid.split("::", 1)[0]
        return module_rank[module], first_seen[module], order[id(item)]

    items.sort(key=key)
    for item in items:  # the tier each test belongs to, in the junit XML (tests/tier_summary.py reads it)
        item.user_properties.append(("tier", (*_LONG_FIRST, "fast")[rank(item)]))


@pytest.fixture(scope="session", autouse=True)
def mlflow_tracking_db(tmp_path_factory) -> str:
    """One SQLite tracking store for the session: creating its tables costs ~10-25 s, so do it once.

    Tests that need their own server or store set ``MLFLOW_TRACKING_URI`` themselves (monkeypatch).
    """
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlruns.db'}"
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    yield uri
    if previous is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = previous


@pytest.fixture(autouse=True)
def _restore_tracking_uri(mlflow_tracking_db: str):
    """Put the session's tracking store back after each test.

    ``mlflow.set_tracking_uri`` also writes ``MLFLOW_TRACKING_URI`` into ``os.environ`` (subprocesses inherit
    it), which monkeypatch does not undo: one test pointing MLflow at its own short-lived server would
    otherwise send every later test in the session to a dead port.
    """
    yield
    if "mlflow" in sys.modules:  # its module-level URI too, which wins over the environment
        sys.modules["mlflow"].set_tracking_uri(mlflow_tracking_db)
    os.environ["MLFLOW_TRACKING_URI"] = mlflow_tracking_db


@pytest.fixture(autouse=True)
def _doctest_namespace(request: pytest.FixtureRequest, doctest_namespace: dict) -> None:
    """Names the docstring examples may use without importing them; each example runs in a fresh folder."""
    from _pytest.doctest import DoctestItem

    if not isinstance(request.node, DoctestItem):
        return
    import numpy as np

    doctest_namespace.update(np=np, Path=Path)
    if request.node.name.startswith("pipeline.evaluation"):
        doctest_namespace["model"] = request.getfixturevalue("doctest_model")
    if request.node.name.startswith("pipeline.ops.serving"):
        model_dir, index_dir = request.getfixturevalue("doctest_search_artifacts")
        doctest_namespace.update(model_dir=model_dir, index_dir=index_dir)
    if request.node.name.startswith("pipeline.ops.canary"):
        doctest_namespace["workspace"] = request.getfixturevalue("doctest_canary_workspace")
    request.getfixturevalue("monkeypatch").chdir(request.getfixturevalue("tmp_path"))


@pytest.fixture(scope="session")
def doctest_model():
    """A ColBERT model from the packaged MiniLM (its projection seeded) for the evaluators' examples."""
    import torch

    from pipeline import models

    torch.manual_seed(0)
    return models.ColBERT(device="cpu")


@pytest.fixture(scope="session")
def doctest_search_artifacts(tmp_path_factory) -> tuple[Path, Path]:
    """A saved ColBERT model (the packaged MiniLM, seeded projection) and a PLAID index of three documents."""
    import torch

    from pipeline import indexes, models

    folder = tmp_path_factory.mktemp("doctest-search")
    torch.manual_seed(0)
    model = models.ColBERT(device="cpu")
    model.save_pretrained(str(folder / "model"))
    ids = ["koala", "train", "dune"]
    texts = ["Koalas eat eucalyptus leaves.", "Trains run on rails.", "Frank Herbert wrote Dune."]
    index = indexes.PLAID(index_folder=str(folder / "indexes"), index_name="toy", override=True, device="cpu")
    index.add_documents(documents_ids=ids, documents_embeddings=model.encode(texts, is_query=False))
    return folder / "model", folder / "indexes" / "toy"


@pytest.fixture(scope="session")
def doctest_canary_workspace(
    tmp_path_factory, doctest_search_artifacts: tuple[Path, Path], mlflow_tracking_db: str
) -> Path:
    """For the canary's example: a project whose prepared benchmark asks about the three documents of
    :func:`doctest_search_artifacts`' index, and the served model over them registered as the champion of
    ``canary-example`` in the session's store."""
    import shutil

    import mlflow

    from pipeline.data.beir import BeirData
    from pipeline.data.nano import build_nano_benchmark
    from pipeline.ops import canary, serving
    from pipeline.project.layout import Layout
    from pipeline.project.params_file import load_params

    workspace = tmp_path_factory.mktemp("doctest-canary")
    shutil.copy(Path(__file__).parent / "params.yaml", workspace / "params.yaml")
    corpus = {"koala": "Koalas eat eucalyptus leaves.", "train": "Trains run on rails.", "dune": "Dune."}
    queries = {"q1": "what do koalas eat?", "q2": "what runs on rails?"}
    qrels = {"q1": {"koala": 1}, "q2": {"train": 1}}
    build_nano_benchmark(
        BeirData(corpus=corpus, queries=queries, qrels=qrels, name="toy"),
        Layout(load_params(workspace / "params.yaml"), workspace).benchmark,
        n_queries=len(queries),
        n_documents=len(corpus),
    )
    model_dir, index_dir = doctest_search_artifacts
    mlflow.set_tracking_uri(mlflow_tracking_db)
    # The artifacts (this model's, the canary's record) go under this folder: a new experiment's default is
    # below the folder the session's store was first opened from, the checkout itself for a session fixture.
    artifacts = (workspace / "mlruns").as_uri()
    experiment = mlflow.create_experiment("canary-example", artifact_location=artifacts)
    if mlflow.get_experiment_by_name(canary.EXPERIMENT) is None:
        mlflow.create_experiment(canary.EXPERIMENT, artifact_location=artifacts)
    with mlflow.start_run(experiment_id=experiment):
        info = serving.log_search_model(model_dir, index_dir, k=2)
    version = mlflow.register_model(info.model_uri, "canary-example").version
    mlflow.MlflowClient().set_registered_model_alias("canary-example", "champion", version)
    return workspace

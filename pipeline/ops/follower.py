"""Follow a registry alias: load and warm the version it points to beside the one serving, then switch.

``mlflow models serve models:/NAME@champion`` resolves the alias once, at start: a promoted model is served
only after a restart. :class:`AliasFollower` asks the registry every ``poll_seconds`` which version the
alias names. When it moved, the new version is downloaded, loaded and asked one query (:func:`load_version`)
while the old one keeps answering; only a version that answered replaces it, in one attribute assignment
(:meth:`AliasFollower.current` is read once per batch of requests, so a request is answered wholly by one
version). The old version is then dropped and collected: its model, index and download folder are freed
once the last request it was answering has finished.

Faults, each logged once rather than per request or per poll:

- the registry unreachable: the loaded version keeps serving; polls go on and the recovery is logged;
- the alias missing (no champion yet): nothing is served until it appears (``/ping`` answers 503);
- a version that fails to load or to answer its warm-up query: not switched to, the error logged with its
  cause; it is tried again after ``retry_failed_seconds`` (a download can fail for a passing reason).

Nothing heavy at module level: MLflow and pandas are imported where a version is loaded.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import shutil
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.ops.search_fit import FIT_QUERIES, SearchFit, fit_search

logger = logging.getLogger(__name__)

#: The query a new version must answer before it is switched to.
WARM_QUERY = "what is late interaction retrieval?"


class AliasMissing(LookupError):
    """The registered model has no version at the alias (yet)."""


@dataclass(eq=False)
class LoadedVersion:
    """One registered version, loaded: the pyfunc and what the server reports about it."""

    name: str
    version: str
    model: Any
    documents: int
    default_k: int
    folder: Path
    loaded_s: float = 0.0
    loaded_at: float = field(default_factory=time.time)
    #: The search settings for one query and for a batch, fitted at warm-up (:mod:`pipeline.ops.search_fit`).
    search_fit: SearchFit | None = None

    def prepare(self, queries: int) -> None:
        """Search ``queries`` queries at once with the settings fitted for that size (one caller at once)."""
        if self.search_fit is not None:
            self.model.unwrap_python_model().retriever.index.search_settings = self.search_fit.settings_for(
                queries
            )

    def predict(self, queries: list[str], k: int) -> list[dict[str, Any]]:
        """One row ``{query, ids, scores[, texts]}`` per query, in order (the pyfunc's output as records)."""
        import pandas as pd

        self.prepare(len(queries))
        frame = self.model.predict(pd.DataFrame({"query": queries}), params={"k": int(k)})
        return frame.to_dict(orient="records")

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "model_version": self.version,
            "documents": self.documents,
            "default_k": self.default_k,
            "load_seconds": round(self.loaded_s, 2),
            "search": self.search_fit.describe() if self.search_fit else "the index's own settings",
        }


@contextlib.contextmanager
def _no_leftovers() -> Iterator[None]:
    """Undo what loading a models-from-code version leaves in the process.

    MLflow prepends the version's ``code/`` folder to ``sys.path`` (a later lazy import would then come from
    a download that is deleted when the version is released), registers a ``code_model_<uuid>`` module, and
    keeps the last loaded model in a module global (which would keep a version that failed its warm-up
    alive). The server runs its own checkout's code; every version's model is its own object.
    """
    path_before, modules_before = list(sys.path), set(sys.modules)
    try:
        yield
    finally:
        added = set(sys.path) - set(path_before)
        sys.path[:] = [entry for entry in sys.path if entry not in added]
        for name in set(sys.modules) - modules_before:
            if name.startswith("code_model_"):
                sys.modules.pop(name, None)
        model_module = sys.modules.get("mlflow.models.model")
        if model_module is not None and hasattr(model_module, "__mlflow_model__"):
            model_module.__mlflow_model__ = None


def load_version(
    name: str,
    version: str,
    tracking_uri: str | None = None,
    scratch: Path | None = None,
    batch: int = 16,
) -> LoadedVersion:
    """Download ``models:/name/version`` into a folder of its own, load it and ask it :data:`WARM_QUERY`;
    then fit its search settings to one query and to ``batch`` queries (:func:`search_fit.fit_search`).

    ``tracking_uri`` is the registry's (default: MLflow's current one); it is passed, not set globally, so
    nothing else in the process is redirected. The folder is removed when the returned object is collected
    (or now, if loading fails): a released version leaves nothing on disk. Raises whatever loading or the
    warm-up raised.
    """
    import mlflow.pyfunc

    started = time.perf_counter()
    folder = Path(tempfile.mkdtemp(prefix=f"colbert-serve-{name}-v{version}-", dir=scratch))
    try:
        local = _download(name, version, tracking_uri, folder)
        with _no_leftovers():
            model = mlflow.pyfunc.load_model(local)
        inner = model.unwrap_python_model()
        loaded = LoadedVersion(
            name=name,
            version=str(version),
            model=model,
            documents=int(inner.retriever.index.num_documents),
            default_k=int(inner.k),
            folder=folder,
        )
        rows = loaded.predict([WARM_QUERY], k=min(loaded.default_k, loaded.documents))
        if not rows or not rows[0]["ids"]:
            raise RuntimeError(f"the warm-up query {WARM_QUERY!r} got no hits")
        queries = inner.model.encode(list(FIT_QUERIES), is_query=True, show_progress_bar=False)
        loaded.search_fit = fit_search(inner.retriever, queries, batch)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    loaded.loaded_s = time.perf_counter() - started
    weakref.finalize(loaded, shutil.rmtree, str(folder), True)
    return loaded


def _download(name: str, version: str, tracking_uri: str | None, folder: Path) -> str:
    """``models:/name/version``'s files in ``folder``, from ``tracking_uri``'s registry and artifact store.

    MLflow resolves a ``models:/`` URI with the process's global registry URI whatever it is told; here the
    version's own artifact location is looked up with an explicit client and downloaded from there.
    """
    import mlflow.artifacts
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    source = client.get_model_version_download_uri(name, version)
    if source.startswith("models:/"):  # MLflow 3: a logged model's id
        source = client.get_logged_model(source.removeprefix("models:/").split("/")[0]).artifact_location
    return mlflow.artifacts.download_artifacts(
        artifact_uri=source, dst_path=str(folder), tracking_uri=tracking_uri
    )


def alias_version(client: Any, name: str, alias: str) -> str:
    """The version ``alias`` names; :class:`AliasMissing` when the model or the alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise AliasMissing(f"models:/{name}@{alias}: {str(error).splitlines()[0]}") from None
        raise


class AliasFollower:
    """Serves whichever version ``models:/name@alias`` names, switching when the alias moves (module docs).

    ``resolve`` (the alias's version) and ``loader`` (:func:`load_version`) are parameters so a test can
    stand in for a registry outage; by default they ask ``tracking_uri``'s registry.
    """

    def __init__(
        self,
        name: str,
        alias: str = "champion",
        *,
        tracking_uri: str | None = None,
        poll_seconds: float = 10.0,
        retry_failed_seconds: float | None = None,
        scratch: Path | None = None,
        batch: int = 16,
        resolve: Callable[[], str] | None = None,
        loader: Callable[[str, str], LoadedVersion] | None = None,
    ) -> None:
        self.name, self.alias = name, alias
        self.poll_seconds = float(poll_seconds)
        self.retry_failed_seconds = (
            max(60.0, 6 * self.poll_seconds) if retry_failed_seconds is None else retry_failed_seconds
        )
        self._tracking_uri = tracking_uri
        self._client: tuple[str | None, Any] | None = None
        self._resolve = resolve or self._registry_alias
        self._loader = loader or (
            lambda model, version: load_version(model, version, tracking_uri, scratch, batch=batch)
        )
        #: The version answering requests (``None`` until the first one loaded).
        self.current: LoadedVersion | None = None
        self.last_poll: float | None = None
        self._failed: dict[str, float] = {}
        self._outage_since: float | None = None
        self._missing_logged = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _registry_alias(self) -> str:
        from mlflow import MlflowClient

        if self._client is None or self._client[0] != self._tracking_uri:
            self._client = (self._tracking_uri, MlflowClient(tracking_uri=self._tracking_uri))
        return alias_version(self._client[1], self.name, self.alias)

    # ---------------------------------------------------------------------------------------- polling
    def poll_once(self) -> None:
        """Ask the registry once; load, warm and switch to a version the alias newly names."""
        self.last_poll = time.time()
        try:
            version = self._resolve()
        except AliasMissing as missing:
            self._registry_back()
            if not self._missing_logged:
                serving = f"keeps serving v{self.current.version}" if self.current else "nothing to serve yet"
                logger.warning("%s; %s (polling every %.0f s)", missing, serving, self.poll_seconds)
                self._missing_logged = True
            return
        except Exception as error:
            self._registry_down(error)
            return
        self._registry_back()
        self._missing_logged = False
        if self.current is not None and self.current.version == version:
            return
        failed_at = self._failed.get(version)
        if failed_at is not None and time.time() - failed_at < self.retry_failed_seconds:
            return
        self._load_and_switch(version)

    def _load_and_switch(self, version: str) -> None:
        before = self.current.version if self.current else None
        logger.info("models:/%s@%s is v%s (serving: v%s): loading it", self.name, self.alias, version, before)
        try:
            loaded = self._loader(self.name, version)
        except Exception as error:
            self._failed[version] = time.time()
            keeping = f"v{before} keeps serving" if before else "nothing is served"
            logger.error(
                "v%s of %s failed to load or warm up, not switching (%s): %s: %s",
                version,
                self.name,
                keeping,
                type(error).__name__,
                error,
                exc_info=True,
            )
            return
        self._failed.pop(version, None)
        old, self.current = self.current, loaded  # the switch: the next batch of requests reads the new one
        logger.info(
            "switched to v%s of %s (was v%s; loaded and warmed in %.1f s)",
            version,
            self.name,
            before,
            loaded.loaded_s,
        )
        del old, loaded
        gc.collect()  # model, index and folder of the old version go once its last request has finished

    def _registry_down(self, error: BaseException) -> None:
        if self._outage_since is None:
            self._outage_since = time.time()
            serving = f"keeps serving v{self.current.version}" if self.current else "nothing to serve yet"
            logger.warning(
                "registry unreachable while following models:/%s@%s (%s: %s); %s, retrying every %.0f s",
                self.name,
                self.alias,
                type(error).__name__,
                str(error).splitlines()[0] if str(error) else "",
                serving,
                self.poll_seconds,
            )

    def _registry_back(self) -> None:
        if self._outage_since is not None:
            logger.info("registry reachable again after %.0f s", time.time() - self._outage_since)
            self._outage_since = None

    @property
    def registry_reachable(self) -> bool:
        return self._outage_since is None

    # ---------------------------------------------------------------------------------------- thread
    def start(self) -> None:
        """Poll in a background thread (the first poll at once) until :meth:`stop`."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"follow-{self.alias}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:  # a bug here must not end the following: log it and poll again
                logger.exception("following models:/%s@%s: unexpected error", self.name, self.alias)
            self._stop.wait(self.poll_seconds)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop polling (a load under way is left to finish in its daemon thread)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def release(self) -> None:
        """Stop serving: drop the current version and remove its download folder now.

        For a server's shutdown, after its last request: uvicorn re-raises the SIGTERM it caught once it has
        drained, and Python's default handler then ends the process without running exit handlers, so a
        folder left to the version's finalizer would stay behind (about 90 MB per stop).
        """
        current, self.current = self.current, None
        if current is not None:
            shutil.rmtree(current.folder, ignore_errors=True)

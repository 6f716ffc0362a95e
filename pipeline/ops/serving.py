"""The served model: a custom MLflow pyfunc that answers text queries from the index built with its model.

One registered model version packs two artifacts, the ColBERT model folder (``model``) and the index folder
built with that model (``index``), plus this package's code, so loading it anywhere with the pinned
requirements gives the same answers.

**Input**: a ``pandas.DataFrame`` with a string column ``query`` (a list of strings or a ``Series`` also
works). **Params**: ``k`` (hits per query; default ``register.k`` at registration).

**Output**: a ``pandas.DataFrame`` with one row per query, in input order, and columns

- ``query``: the query text;
- ``ids``: the ``k`` best document ids (strings), best first;
- ``scores``: their MaxSim scores (floats), same order;
- ``texts``: the hits' document texts, same order, each cut to :data:`MAX_TEXT_CHARS` characters (only when
  the version packs the texts the index was built from: the live index version's ``texts.jsonl``
  (beside the versions in indexes written before it moved there), which the index stage writes, or, in
  versions logged before that, the artifact ``documents``).

The logged model carries an input example (``serving_input_example.json``), the request body
``mlflow models serve`` accepts::

    {"dataframe_split": {"columns": ["query"], "data": [["..."]]}, "params": {"k": 10}}

Example (``model_dir`` and ``index_dir``: a small model and the index built with it, which the doctests
provide; in production, ``mlflow.pyfunc.load_model("models:/colbert-pipeline@champion")``):
    >>> with mlflow.start_run():
    ...     info = log_search_model(model_dir, index_dir, k=2)
    >>> model = mlflow.pyfunc.load_model(info.model_uri)
    >>> answer = model.predict(pd.DataFrame({"query": ["what do koalas eat?"]}), params={"k": 2})
    >>> list(answer.columns), answer["ids"][0][0], len(answer["scores"][0])
    (['query', 'ids', 'scores'], 'koala', 2)
    >>> local = Path(mlflow.artifacts.download_artifacts(info.model_uri))  # code, weights, index: no pickle
    >>> sorted({p.suffix for p in local.rglob("*.pkl")}), any(local.rglob("*.safetensors"))
    ([], True)
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd

logger = logging.getLogger(__name__)

MODEL_ARTIFACT = "model"
INDEX_ARTIFACT = "index"
DOCUMENTS_ARTIFACT = "documents"
#: Each hit's text is cut to this many characters: a bounded answer whatever the corpus.
MAX_TEXT_CHARS = 2000
EXAMPLE_QUERY = "what is late interaction retrieval?"
QUERY_COLUMN = "query"
#: Distributions the served model needs, pinned to the versions that logged it.
REQUIREMENTS = ("mlflow", "torch", "sentence-transformers", "transformers", "fast-plaid", "voyager", "pandas")
INDEX_KINDS = ("plaid", "voyager")


class ColBERTSearchModel(mlflow.pyfunc.PythonModel):
    """Encode queries with the packaged ColBERT model and search the packaged index (see module docs)."""

    def load_context(self, context: Any) -> None:
        from pipeline import indexes, models, retrieve
        from pipeline.indexes.storage import TEXTS_FILE
        from pipeline.models.precision import resolve_precision

        config = dict(getattr(context, "model_config", None) or {})
        self.k = int(config.get("k", 10))
        device = config.get("device")
        kind = config.get("index_kind", "plaid")
        if kind not in INDEX_KINDS:
            raise ValueError(f"model_config index_kind: {kind!r} is not one of {', '.join(INDEX_KINDS)}")
        index_path = Path(context.artifacts[INDEX_ARTIFACT])
        index_class = indexes.PLAID if kind == "plaid" else indexes.Voyager
        kwargs = {"device": device} if kind == "plaid" else {}
        index = index_class(
            index_folder=index_path.parent, index_name=index_path.name, override=False, **kwargs
        )
        if index.num_documents == 0:
            raise ValueError(f"{index_path}: the packaged index is empty")
        self.model = models.ColBERT(model_name_or_path=context.artifacts[MODEL_ARTIFACT], device=device)
        # Resolved where it serves (auto: bf16 on a bf16-native CPU); a version logged before it was a
        # setting has no key and encodes in float32, as it always did.
        self.model.encode_precision = resolve_precision(
            config.get("precision", "fp32"), device, key="model_config precision"
        )
        self.retriever = retrieve.ColBERT(index=index)
        self.texts: dict[str, str] | None = None
        documents = (getattr(context, "artifacts", None) or {}).get(DOCUMENTS_ARTIFACT)
        # The index stage writes the texts into the version they belong to; older indexes keep them beside.
        version = index.stats()["version"]
        for candidate in ([index_path / version / TEXTS_FILE] if version else []) + [index_path / TEXTS_FILE]:
            if not documents and candidate.is_file():
                documents = str(candidate)
        if documents:
            self.texts = read_documents(Path(documents))
        logger.info("serving %d documents from %s", index.num_documents, index_path)

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        queries = queries_from_input(model_input)
        k = (params or {}).get("k") or self.k
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"params k: expected a positive integer, got {k!r}")
        texts = getattr(self, "texts", None)
        if not queries:
            empty = {QUERY_COLUMN: [], "ids": [], "scores": []}
            return pd.DataFrame({**empty, "texts": []} if texts is not None else empty)
        embeddings = self.model.encode(queries, is_query=True, show_progress_bar=False)
        results = self.retriever.retrieve(embeddings, k=k, show_progress=False)
        ids = [[str(hit["id"]) for hit in hits] for hits in results]
        columns = {
            QUERY_COLUMN: queries,
            "ids": ids,
            "scores": [[float(hit["score"]) for hit in hits] for hits in results],
        }
        if texts is not None:
            columns["texts"] = [[texts.get(doc_id, "") for doc_id in row] for row in ids]
        return pd.DataFrame(columns)


def packaged_artifact(local_model: Path, artifact: str = MODEL_ARTIFACT) -> Path:
    """Where a downloaded served model keeps its ``model`` or ``index`` artifact, per its MLmodel."""
    from mlflow.models import Model

    flavor = Model.load(str(local_model)).flavors.get("python_function", {})
    entry = (flavor.get("artifacts") or {}).get(artifact)
    if not entry:
        raise FileNotFoundError(
            f"{local_model}/MLmodel: no {artifact!r} artifact (not a colbert-pipeline model)"
        )
    return Path(local_model) / entry["path"]


def write_documents(documents: Mapping[str, str], path: Path, max_chars: int = MAX_TEXT_CHARS) -> Path:
    """``{id: text}`` as JSON lines ``{"id", "text"}``, each text cut to ``max_chars`` (the served bound).

    Written atomically: a reader never sees half a file.
    """
    from pipeline.project.io import atomic_write_text

    rows = (
        json.dumps({"id": str(doc_id), "text": str(text)[:max_chars]}, ensure_ascii=False) + "\n"
        for doc_id, text in documents.items()
    )
    atomic_write_text(path, "".join(rows))
    return Path(path)


def read_documents(path: Path) -> dict[str, str]:
    """What :func:`write_documents` wrote; a bad line is an error naming the file and line."""
    texts = {}
    with open(path, encoding="utf-8") as stream:
        for number, line in enumerate(stream, 1):
            try:
                row = json.loads(line)
                texts[str(row["id"])] = str(row["text"])
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                raise ValueError(f"{path}:{number}: not a {{id, text}} JSON line ({error})") from None
    return texts


def queries_from_input(model_input: Any) -> list[str]:
    """The query strings of a DataFrame (column ``query``), Series, list or single string; errors name it.

    Example:
        >>> queries_from_input(pd.DataFrame({"query": ["a", "b"]}))
        ['a', 'b']
        >>> queries_from_input(pd.DataFrame({"text": ["a"]}))
        Traceback (most recent call last):
        ValueError: model input: expected a DataFrame with a 'query' column, got columns ['text']
    """
    if isinstance(model_input, pd.DataFrame):
        if QUERY_COLUMN not in model_input.columns:
            raise ValueError(
                f"model input: expected a DataFrame with a {QUERY_COLUMN!r} column, "
                f"got columns {[str(c) for c in model_input.columns]}"
            )
        values = model_input[QUERY_COLUMN].tolist()
    elif isinstance(model_input, pd.Series):
        values = model_input.tolist()
    elif isinstance(model_input, str):
        values = [model_input]
    elif isinstance(model_input, list | tuple):
        values = list(model_input)
    else:
        raise ValueError(f"model input: expected a DataFrame with a {QUERY_COLUMN!r} column")
    bad = [i for i, value in enumerate(values) if not isinstance(value, str) or not value.strip()]
    if bad:
        raise ValueError(f"model input: query rows {bad[:5]} are not non-empty strings")
    return [str(value) for value in values]


def signature(k: int) -> Any:
    """Input ``query: string``, output ``query``/``ids``/``scores``, param ``k`` (default ``k``)."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, DataType, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec(DataType.string, QUERY_COLUMN)]),
        outputs=Schema(
            [
                ColSpec(DataType.string, QUERY_COLUMN),
                ColSpec(Array(DataType.string), "ids"),
                ColSpec(Array(DataType.double), "scores"),
                ColSpec(Array(DataType.string), "texts", required=False),
            ]
        ),
        params=ParamSchema([ParamSpec("k", DataType.long, k)]),
    )


def pinned_requirements() -> list[str]:
    """``name==version`` of each distribution in :data:`REQUIREMENTS` installed here."""
    pins = []
    for name in REQUIREMENTS:
        try:
            pins.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            logger.warning("serving: %s is not installed; leaving it out of the requirements", name)
    return pins


def log_search_model(
    model_dir: Path,
    index_dir: Path,
    k: int = 10,
    index_kind: str = "plaid",
    name: str = "search_model",
    device: str | None = None,
    documents: Mapping[str, str] | None = None,
    precision: str = "auto",
) -> Any:
    """Log the pyfunc (model + index + this package's code) to the active run; return mlflow's ModelInfo.

    Checks both folders before uploading anything: ``model_dir`` must hold a saved model, ``index_dir`` an
    index (its ``CURRENT`` pointer). ``documents`` (``{id: text}``, the corpus the index was built from) is
    packed too, each text cut to :data:`MAX_TEXT_CHARS`, so answers carry the hits' texts. ``precision``
    (``index.precision``) is how the served model encodes queries, resolved on the machine that serves.

    The module's example logs one and asks it a question.
    """
    model_dir, index_dir = Path(model_dir), Path(index_dir)
    if not (model_dir / "config.json").is_file() and not (model_dir / "modules.json").is_file():
        raise FileNotFoundError(f"{model_dir}: no saved model here (run the train stage first)")
    if not (index_dir / "CURRENT").is_file():
        raise FileNotFoundError(f"{index_dir}: no index here (run the index stage first)")
    if index_kind not in INDEX_KINDS:
        raise ValueError(f"index_kind: {index_kind!r} is not one of {', '.join(INDEX_KINDS)}")
    from pipeline.models.precision import check_precision

    check_precision(precision, key="precision")  # resolved where it serves, not here
    package_dir = Path(__file__).resolve().parents[1]  # the whole ``pipeline`` package
    artifacts = {MODEL_ARTIFACT: str(model_dir), INDEX_ARTIFACT: str(index_dir)}
    with tempfile.TemporaryDirectory(prefix="colbert-documents-") as scratch:
        if documents:
            artifacts[DOCUMENTS_ARTIFACT] = str(write_documents(documents, Path(scratch) / "documents.jsonl"))
        return mlflow.pyfunc.log_model(
            name=name,
            # Models from code: the artifact holds served_model.py, never a pickled object.
            python_model=str(Path(__file__).with_name("served_model.py")),
            artifacts=artifacts,
            code_paths=[str(package_dir)],
            model_config={"k": int(k), "index_kind": index_kind, "device": device, "precision": precision},
            signature=signature(k),
            # Saved as serving_input_example.json: the request body `mlflow models serve` accepts.
            input_example=(pd.DataFrame({QUERY_COLUMN: [EXAMPLE_QUERY]}), {"k": int(k)}),
            pip_requirements=pinned_requirements(),
        )


def default_model_uri(params: Any) -> str:
    """``models:/<register.model_name>@champion``."""
    return f"models:/{params.register.model_name}@champion"


def search(
    params: Any, project: Path, queries: list[str], k: int | None = None, model_uri: str | None = None
) -> pd.DataFrame:
    """Answer ``queries`` with a registered model (the champion by default), as :class:`ColBERTSearchModel`.

    Without a registered model it says so (the doctests' store is empty):
        >>> from pipeline.project.config import Params
        >>> search(Params(), Path("."), ["who wrote Dune?"], k=3)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ValueError: models:/colbert-pipeline@champion: cannot load it (...); has the register stage run? ...
    """
    from mlflow.exceptions import MlflowException

    from pipeline.ops import tracking

    tracking.configure(params, project, experiment=False)
    uri = model_uri or default_model_uri(params)
    # A scratch folder for the download, removed after the answer: MLflow's own default is a new temporary
    # folder per load that nothing removes (the model and its index, every call).
    with tempfile.TemporaryDirectory(prefix="colbert-search-") as scratch:
        try:
            model = mlflow.pyfunc.load_model(uri, dst_path=scratch)
        except MlflowException as error:
            raise ValueError(
                f"{uri}: cannot load it ({str(error).splitlines()[0]}); has the register stage run? "
                "(colbert-pipeline status lists the champion)"
            ) from None
        return model.predict(pd.DataFrame({QUERY_COLUMN: queries}), params={"k": k} if k else None)


def hits(answer: pd.DataFrame) -> list[list[dict[str, Any]]]:
    """Per query of a :class:`ColBERTSearchModel` answer, its hits ``{"id", "score", "text"}``, best first.

    ``text`` is ``None`` for a version packed without texts. What ``search --json`` prints and the
    batch-inference DAG writes.

    Example:
        >>> hits(pd.DataFrame({"query": ["q"], "ids": [["d1"]], "scores": [[1.5]], "texts": [["one"]]}))
        [[{'id': 'd1', 'score': 1.5, 'text': 'one'}]]
    """
    texts = answer["texts"] if "texts" in answer.columns else [None] * len(answer)
    return [
        [
            {"id": str(doc_id), "score": float(score), "text": None if words is None else words[place]}
            for place, (doc_id, score) in enumerate(zip(ids, scores, strict=True))
        ]
        for ids, scores, words in zip(answer["ids"], answer["scores"], texts, strict=True)
    ]

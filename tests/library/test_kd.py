"""KDProcessing joins and the collator's handling of KD rows; the seed's KD training on real KD data."""

from __future__ import annotations

import copy
import gzip
import json
import math
from pathlib import Path

import pytest
from datasets import Dataset

from pipeline import utils


def seed_tables() -> tuple[Dataset, Dataset, Dataset]:
    """The PyLate docs' KD example: integer ids."""
    train = Dataset.from_list(
        [
            {"query_id": 54528, "document_ids": [6862419, 335116, 339186], "scores": [0.45, 0.66, 0.27]},
            {"query_id": 749480, "document_ids": [339186, 6862419, 335116], "scores": [0.25, 0.76, 0.97]},
        ]
    )
    documents = Dataset.from_list(
        [
            {"document_id": 6862419, "text": "example doc 1"},
            {"document_id": 335116, "text": "example doc 2"},
            {"document_id": 339186, "text": "example doc 3"},
        ]
    )
    queries = Dataset.from_list(
        [{"query_id": 749480, "text": "example query"}, {"query_id": 54528, "text": "other"}]
    )
    return train, queries, documents


def test_kd_join_gives_the_right_texts_in_the_right_order() -> None:
    train, queries, documents = seed_tables()
    train.set_transform(utils.KDProcessing(queries=queries, documents=documents, n_ways=3).transform)
    assert train[1] == {
        "query": "example query",
        "documents": ["example doc 3", "example doc 1", "example doc 2"],
        "scores": [0.25, 0.76, 0.97],
    }
    assert train[0]["query"] == "other"


def test_kd_ids_may_be_str_on_one_side_and_int_on_the_other() -> None:
    train, _, _ = seed_tables()
    kd = utils.KDProcessing(
        queries={"749480": "q text", "54528": "q2"},
        documents=[{"document_id": str(i), "text": f"doc {i}"} for i in (6862419, 335116, 339186)],
        n_ways=2,
    )
    train.set_transform(kd.transform)
    assert train[1]["documents"] == ["doc 339186", "doc 6862419"]  # the first n_ways, in row order
    assert train[1]["scores"] == [0.25, 0.76]


def test_kd_unresolved_ids_error_or_are_dropped_and_counted() -> None:
    train, queries, documents = seed_tables()
    bad = Dataset.from_list(
        [*train.to_list(), {"query_id": 1, "document_ids": [6862419, 999], "scores": [1.0, 0.0]}]
    )
    kd = utils.KDProcessing(queries=queries, documents=documents, n_ways=2)
    with pytest.raises(
        utils.TrainingDataError, match=r"\(query_id 1\): query_id 1 is not in the queries table"
    ):
        kd.validate(bad)
    with pytest.raises(utils.TrainingDataError, match=r"KD row 2 \(query_id 1\)"):
        kd.validate(bad)
    bad.set_transform(kd.transform)
    with pytest.raises(utils.TrainingDataError, match="on_invalid='drop'"):
        bad[0:3]

    dropping = utils.KDProcessing(queries=queries, documents=documents, n_ways=2, on_invalid="drop")
    assert dropping.validate(bad) == 2
    bad.set_transform(dropping.transform)
    assert len(bad[0:3]["query"]) == 2
    assert list(dropping.dropped) == ["1"]

    missing_doc = Dataset.from_list(
        [{"query_id": 54528, "document_ids": [6862419, 42], "scores": [1.0, 0.0]}]
    )
    with pytest.raises(utils.TrainingDataError, match="document id 42 is not in the documents table"):
        kd.validate(missing_doc)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (
            {"query_id": 54528, "document_ids": [6862419, 335116], "scores": [0.5]},
            "2 document_ids but 1 scores",
        ),
        ({"query_id": 54528, "document_ids": [6862419, 335116], "scores": [0.5, math.nan]}, "NaN"),
        ({"query_id": 54528, "document_ids": [6862419], "scores": [0.5]}, "needs at least two"),
    ],
)
def test_kd_malformed_rows_are_errors(row: dict, message: str) -> None:
    _, queries, documents = seed_tables()
    kd = utils.KDProcessing(queries=queries, documents=documents, n_ways=2, on_invalid="drop")
    dataset = Dataset.from_list([row])
    if "at least two" in message:  # a one-document row is droppable; the others are corrupt: always errors
        assert kd.validate(dataset) == 0
        kd = utils.KDProcessing(queries=queries, documents=documents, n_ways=2)
    with pytest.raises(utils.TrainingDataError, match=message):
        kd.validate(dataset)
    dataset.set_transform(kd.transform)
    with pytest.raises(utils.TrainingDataError, match=message):
        dataset[0]


def test_kd_tables_are_checked_up_front() -> None:
    _, queries, documents = seed_tables()
    with pytest.raises(ValueError, match="no column 'query_id'"):
        utils.KDProcessing(queries=queries.rename_column("query_id", "qid"), documents=documents)
    with pytest.raises(ValueError, match="n_ways"):
        utils.KDProcessing(queries=queries, documents=documents, n_ways=1)


def test_collator_spreads_kd_rows_into_document_columns(colbert_model) -> None:
    train, queries, documents = seed_tables()
    train.set_transform(utils.KDProcessing(queries=queries, documents=documents, n_ways=3).transform)
    batch = utils.ColBERTCollator(colbert_model.tokenize)([train[0], train[1]])
    assert batch["label"].flatten().tolist() == pytest.approx([0.45, 0.66, 0.27, 0.25, 0.76, 0.97])
    assert [key for key in batch if key.endswith("_input_ids")] == [
        "query_input_ids",
        "documents_1_input_ids",
        "documents_2_input_ids",
        "documents_3_input_ids",
    ]
    assert batch["query_input_ids"].shape[1] == 32  # queries are tokenized as queries (expansion)
    assert batch["documents_1_task"] == "document"
    document_prefix = colbert_model.tokenize(["x"], is_query=False)["input_ids"][0, 1]
    assert int(batch["documents_2_input_ids"][0, 1]) == int(document_prefix)  # "[D] " right after [CLS]
    # Ragged lists without per-row teacher scores (negatives) cannot be padded meaningfully: named error.
    # (Ragged KD rows, with scores, are padded and masked: tests/library/test_pylate_kd.py.)
    with pytest.raises(utils.TrainingDataError, match=r"batch row 1 .*has 2 items"):
        utils.ColBERTCollator(colbert_model.tokenize)(
            [
                {"query": "a", "positive": "p", "negatives": ["x", "y", "z"]},
                {"query": "b", "positive": "p", "negatives": ["x", "y"]},
            ]
        )


@pytest.mark.shared_data
def test_kd_join_on_the_real_kd_sample(shared_data: Path) -> None:
    folder = shared_data / "kd-sample-flagembedding"
    rows = [json.loads(line) for line in (folder / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    query_text = {
        r["query_id"]: r["text"] for r in map(json.loads, (folder / "queries.jsonl").open(encoding="utf-8"))
    }
    with gzip.open(folder / "documents.jsonl.gz", "rt", encoding="utf-8") as handle:
        document_text = {r["document_id"]: r["text"] for r in map(json.loads, handle)}

    train = Dataset.from_json(str(folder / "train.jsonl"))
    queries = Dataset.from_json(str(folder / "queries.jsonl"))
    documents = Dataset.from_json(str(folder / "documents.jsonl.gz"))
    kd = utils.KDProcessing(queries=queries, documents=documents, n_ways=8)
    assert kd.validate(train) == len(rows)
    train.set_transform(kd.transform)
    for index in (0, len(rows) // 2, len(rows) - 1):
        row = train[index]
        assert row["query"] == query_text[rows[index]["query_id"]]
        assert row["documents"] == [document_text[d] for d in rows[index]["document_ids"][:8]]
        assert row["scores"] == pytest.approx(rows[index]["scores"][:8])


@pytest.mark.shared_data
@pytest.mark.slow
def test_seed_kd_training_runs_on_real_kd_data(shared_data: Path, colbert_model, tmp_path: Path) -> None:
    """The PyLate KD example (Hub ids -> local files, tiny settings), through the trainer."""
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

    from pipeline import losses

    folder = shared_data / "kd-sample-flagembedding"
    train = Dataset.from_json(str(folder / "train.jsonl")).select(range(4))
    queries = Dataset.from_json(str(folder / "queries.jsonl"))
    documents = Dataset.from_json(str(folder / "documents.jsonl.gz"))
    train.set_transform(utils.KDProcessing(queries=queries, documents=documents, n_ways=4).transform)

    model = copy.deepcopy(colbert_model)
    model.transformer.document_length = 48
    before = model.transformer.auto_model.embeddings.word_embeddings.weight.detach().clone()
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path / "kd"),
        num_train_epochs=1,
        per_device_train_batch_size=2,
        fp16=False,
        bf16=False,
        learning_rate=1e-5,
        save_strategy="no",
        report_to="none",
        logging_steps=1,
    )
    trainer = SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=train,
        loss=losses.Distillation(model=model),
        data_collator=utils.ColBERTCollator(tokenize_fn=model.tokenize),
    )
    trainer.train()
    logged = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert trainer.state.global_step == 2 and len(logged) == 2
    assert all(math.isfinite(value) and value >= 0 for value in logged)
    after = model.transformer.auto_model.embeddings.word_embeddings.weight.detach()
    assert not after.equal(before)  # the optimizer did update the student

"""The seeds' training code, unchanged but for ``pylate`` -> ``pipeline`` and Hub data -> local data.

sentence-transformers 6.2's ``SentenceTransformerTrainer`` trains a ``MultiVectorEncoder`` when given our
collator and losses; these tests run it end to end (evaluation, checkpoints, resume) on tiny data.
"""

from __future__ import annotations

import copy
import math
import random
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

from pipeline import evaluation, losses, models, utils

FACTS = [
    ("Which animal barks?", "Dogs bark at strangers.", "Cats purr when content."),
    ("Which animal purrs?", "Cats purr when content.", "Horses gallop across fields."),
    ("Which animal gallops?", "Horses gallop across fields.", "Bees make honey in hives."),
    ("Which insect makes honey?", "Bees make honey in hives.", "Owls hunt at night."),
    ("Which bird hunts at night?", "Owls hunt at night.", "Frogs croak near ponds."),
    ("Which animal croaks?", "Frogs croak near ponds.", "Dolphins whistle underwater."),
    ("Which animal whistles underwater?", "Dolphins whistle underwater.", "Wolves howl at the moon."),
    ("Which animal howls?", "Wolves howl at the moon.", "Dogs bark at strangers."),
]


@pytest.fixture
def model(colbert_model):
    copied = copy.deepcopy(colbert_model)
    copied.transformer.document_length = 32
    return copied


def triplet_dataset() -> Dataset:
    return Dataset.from_list([{"query": q, "positive": p, "negative": n} for q, p, n in FACTS])


def arguments(output_dir: Path, **overrides) -> SentenceTransformerTrainingArguments:
    settings = {
        "output_dir": str(output_dir),
        "num_train_epochs": 1,
        "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 4,
        "fp16": False,
        "bf16": False,
        "learning_rate": 3e-6,
        "report_to": "none",
        "logging_steps": 1,
        "save_strategy": "no",
        "seed": 0,
    }
    settings.update(overrides)
    return SentenceTransformerTrainingArguments(**settings)


@pytest.mark.slow
def test_seed_contrastive_example_with_evaluation_checkpoints_and_resume(model, tmp_path: Path) -> None:
    train_dataset = triplet_dataset()
    eval_dataset = train_dataset.select(range(4))
    train_loss = losses.Contrastive(model=model)
    dev_evaluator = evaluation.ColBERTTripletEvaluator(
        anchors=eval_dataset["query"],
        positives=eval_dataset["positive"],
        negatives=eval_dataset["negative"],
    )
    args = arguments(
        tmp_path / "colbert-training",
        max_steps=1,
        eval_strategy="steps",
        eval_steps=1,
        save_strategy="steps",
        save_steps=1,
        save_total_limit=2,
    )
    trainer = SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        loss=train_loss,
        evaluator=dev_evaluator,
        data_collator=utils.ColBERTCollator(tokenize_fn=model.tokenize),
    )
    trainer.train()
    history = trainer.state.log_history
    assert any("eval_accuracy" in entry and 0.0 <= entry["eval_accuracy"] <= 1.0 for entry in history)
    assert any("eval_loss" in entry for entry in history)
    checkpoint = tmp_path / "colbert-training" / "checkpoint-1"
    assert (checkpoint / "trainer_state.json").is_file()

    # The checkpoint is a model folder that loads as a ColBERT model...
    reloaded = models.ColBERT(model_name_or_path=str(checkpoint), device="cpu")
    text = ["Which animal barks?"]
    assert torch.allclose(
        torch.as_tensor(reloaded.encode(text, is_query=True)[0]),
        torch.as_tensor(model.encode(text, is_query=True)[0]),
        atol=1e-5,
    )
    # ... and training resumes from it where it stopped.
    resumed = SentenceTransformerTrainer(
        model=reloaded,
        args=arguments(tmp_path / "colbert-training", max_steps=2),
        train_dataset=train_dataset,
        loss=losses.Contrastive(model=reloaded),
        data_collator=utils.ColBERTCollator(tokenize_fn=reloaded.tokenize),
    )
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.state.global_step == 2
    # The history restored from the checkpoint (its evaluation included) continues with step 2 only.
    assert [entry["step"] for entry in resumed.state.log_history if "loss" in entry] == [1, 2]
    assert any("eval_accuracy" in entry for entry in resumed.state.log_history)

    reloaded.save_pretrained(str(tmp_path / "custom-colbert-model"))
    assert (
        models.ColBERT(model_name_or_path=str(tmp_path / "custom-colbert-model"), device="cpu").query_length
        == 32
    )


@pytest.mark.slow
def test_seed_multiple_negatives_and_cached_contrastive_through_the_trainer(model, tmp_path: Path) -> None:
    rows = [
        {"query": q, "positive": p, "negative_1": n, "negative_2": FACTS[(i + 3) % len(FACTS)][1]}
        for i, (q, p, n) in enumerate(FACTS)
    ]
    for loss in (
        losses.Contrastive(model=model, temperature=0.02),
        losses.CachedContrastive(model=model, mini_batch_size=2, temperature=0.02),
    ):
        trainer = SentenceTransformerTrainer(
            model=model,
            args=arguments(tmp_path / type(loss).__name__, max_steps=1, per_device_train_batch_size=8),
            train_dataset=Dataset.from_list(rows),
            loss=loss,
            data_collator=utils.ColBERTCollator(model.tokenize),
        )
        trainer.train()
        [logged] = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
        assert 0 < logged < math.inf  # a real loss over 1 positive + 2 negatives per query


def test_bad_rows_fail_before_training_with_row_and_column(model, tmp_path: Path) -> None:
    good = {"query": "q", "positive": "p", "negative": "n"}
    with pytest.raises(utils.TrainingDataError, match=r"row 1: column 'positive' is missing"):
        utils.check_training_dataset(
            Dataset.from_list([good, {"query": "q2", "positive": None, "negative": "n"}])
        )
    with pytest.raises(utils.TrainingDataError, match=r"row 0: column 'negatives' is an empty list"):
        utils.check_training_dataset(Dataset.from_list([{"query": "q", "positive": "p", "negatives": []}]))
    with pytest.raises(utils.TrainingDataError, match="only the column 'query'"):
        utils.check_training_dataset(Dataset.from_list([{"query": "q"}]))
    with pytest.raises(utils.TrainingDataError, match="'query' must come first"):
        utils.check_training_dataset(Dataset.from_list([{"positive": "p", "query": "q"}]))
    with pytest.raises(utils.TrainingDataError, match=r"row 0: column 'scores' has 1 scores for 2 documents"):
        utils.check_training_dataset(
            Dataset.from_list([{"query": "q", "documents": ["a", "b"], "scores": [1.0]}])
        )
    # The collator applies the same checks to each batch, naming the batch row and its query.
    collator = utils.ColBERTCollator(tokenize_fn=model.tokenize)
    with pytest.raises(
        utils.TrainingDataError, match=r"batch row 0 \(query 'q'\): column 'positive' is missing"
    ):
        collator([{"query": "q", "positive": None}])
    # The trainer surfaces it at the first batch, before any optimizer step.
    trainer = SentenceTransformerTrainer(
        model=model,
        args=arguments(tmp_path / "never", max_steps=1),
        train_dataset=Dataset.from_list([{"query": "q", "positive": "", "negative": "n"}] * 4),
        loss=losses.Contrastive(model=model),
        data_collator=collator,
    )
    with pytest.raises(utils.TrainingDataError, match="column 'positive' is an empty text"):
        trainer.train()
    assert trainer.state.global_step == 0


@pytest.mark.slow
@pytest.mark.shared_data
def test_training_on_scifact_train_improves_the_local_nano_scifact(
    model, shared_data: Path, tmp_path: Path
) -> None:
    """A few contrastive steps on SciFact train pairs beat the untrained model on Nano-SciFact (test)."""
    from pipeline.data.beir import load_beir
    from pipeline.data.nano import build_nano_benchmark

    model.transformer.document_length = 64  # both sides the same; keeps CPU training short
    build_nano_benchmark(
        shared_data / "scifact", tmp_path / "nano", split="test", n_queries=30, n_documents=150
    )
    evaluator = evaluation.NanoBEIREvaluator(["scifact"], dataset_id=str(tmp_path / "nano"), write_csv=False)
    before = evaluator(model)[evaluator.primary_metric]

    train = load_beir(shared_data / "scifact", "train")
    rows = [
        {"query": train.queries[qid], "positive": " ".join(train.corpus[doc].split()[:64])}
        for qid in sorted(train.qrels)
        for doc in sorted(train.qrels[qid])
        if train.qrels[qid][doc] > 0
    ]
    random.Random(0).shuffle(rows)
    # Measured on this 2-core CPU: 30 steps at temperature 0.02 lift NDCG@10 from 0.646 to 0.691; 15 steps
    # (at 0.02 or 0.05) did not reliably help, so 30 is the floor for this check.
    steps, batch_size = 30, 8
    trainer = SentenceTransformerTrainer(
        model=model,
        args=arguments(
            tmp_path / "scifact",
            max_steps=steps,
            per_device_train_batch_size=batch_size,
            learning_rate=2e-5,
            warmup_ratio=0.1,
            logging_steps=5,
            seed=42,
        ),
        train_dataset=Dataset.from_list(rows[: steps * batch_size]),
        loss=losses.Contrastive(model=model, temperature=0.02),
        data_collator=utils.ColBERTCollator(tokenize_fn=model.tokenize),
    )
    trainer.train()
    after = evaluator(model)[evaluator.primary_metric]
    assert after > before, (before, after)

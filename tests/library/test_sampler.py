"""Batches without duplicate queries: the samplers the train stage picks for multi-positive data."""

from __future__ import annotations

import torch
from datasets import Dataset
from sentence_transformers.base.sampler import BatchSamplers, DefaultBatchSampler, NoDuplicatesBatchSampler
from torch.utils.data import RandomSampler

from pipeline.training.samplers import NoDuplicateQueriesBatchSampler, choose_batch_sampler, repeated_queries


def _multi_positive_triplets() -> Dataset:
    # 6 queries with 5 positives each (NFCorpus-like): 30 rows, each query five times.
    rows = [
        {"query": f"query {q}", "positive": f"doc {q}-{p}", "negative": f"negative {q}-{p}"}
        for q in range(6)
        for p in range(5)
    ]
    return Dataset.from_list(rows)


def _batches(sampler, epochs: int = 5) -> list[list[int]]:
    batches = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        batches.extend(list(sampler))
    return batches


def _has_repeat(dataset: Dataset, column: str, batches: list[list[int]]) -> bool:
    values = dataset.with_format(None)[column]
    return any(len({values[i] for i in batch}) < len(batch) for batch in batches)


def test_auto_picks_no_duplicates_for_repeated_queries_and_it_never_repeats_a_query():
    dataset = _multi_positive_triplets()
    assert repeated_queries(dataset, "triplets") == 6
    choice = choose_batch_sampler("auto", dataset, "triplets")
    assert choice == BatchSamplers.NO_DUPLICATES
    sampler = NoDuplicatesBatchSampler(
        dataset, batch_size=4, drop_last=False, generator=torch.Generator(), seed=0
    )
    batches = _batches(sampler)
    assert not _has_repeat(dataset, "query", batches)
    # Every row is still trained on once per epoch.
    assert sorted(i for batch in batches[: len(batches) // 5] for i in batch) == list(range(len(dataset)))
    # The check can fail: the plain shuffle does put one query twice in a batch on this data.
    plain = DefaultBatchSampler(
        RandomSampler(dataset, generator=torch.Generator().manual_seed(0)), batch_size=4, drop_last=False
    )
    assert _has_repeat(dataset, "query", _batches(plain))


def test_auto_keeps_the_plain_shuffle_when_every_query_is_unique_and_default_forces_it():
    unique = Dataset.from_dict({"query": ["a", "b", "c"], "positive": ["p", "q", "r"]})
    assert repeated_queries(unique, "triplets") == 0
    assert choose_batch_sampler("auto", unique, "triplets") == BatchSamplers.BATCH_SAMPLER
    forced = choose_batch_sampler("default", _multi_positive_triplets(), "triplets")
    assert forced == BatchSamplers.BATCH_SAMPLER
    assert choose_batch_sampler("no_duplicates", unique, "triplets") == BatchSamplers.NO_DUPLICATES


def test_kd_rows_are_kept_apart_by_query_id_without_running_the_text_join():
    rows = Dataset.from_dict(
        {
            "query_id": [q for q in range(5) for _ in range(4)],
            "document_ids": [[1, 2]] * 20,  # the teacher's documents repeat across queries: allowed
            "scores": [[0.9, 0.1]] * 20,
        }
    )

    def join_must_not_run(batch):
        raise AssertionError("the sampler ran the KD text join")

    rows.set_transform(join_must_not_run)
    assert repeated_queries(rows, "kd") == 5
    choice = choose_batch_sampler("auto", rows, "kd")
    assert choice is NoDuplicateQueriesBatchSampler
    sampler = choice(rows, batch_size=3, drop_last=False, generator=torch.Generator(), seed=1)
    batches = _batches(sampler)
    assert batches and not _has_repeat(rows, "query_id", batches)

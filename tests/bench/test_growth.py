"""The growth benchmark (``python -m bench.index.growth``): its synthetic documents are deterministic
near copies of real ones, and a run that would not fit in memory stops before any work, naming the size."""

from __future__ import annotations

import numpy as np
import pytest

from bench.index import growth
from bench.index.growth_data import size_documents, synthetic_document


def real_documents(count: int = 20, dim: int = 16) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    documents = [rng.normal(size=(int(rng.integers(3, 12)), dim)).astype(np.float32) for _ in range(count)]
    return [d / np.linalg.norm(d, axis=1, keepdims=True) for d in documents]


def test_a_synthetic_document_is_a_renormalised_noisy_copy_of_a_real_one_and_the_same_for_its_seed() -> None:
    real = real_documents()
    first = synthetic_document(real, 3, seed=1)
    assert np.array_equal(first, synthetic_document(real, 3, seed=1))
    assert not np.array_equal(first, synthetic_document(real, 3, seed=2))
    assert not np.array_equal(first, synthetic_document(real, 4, seed=1))
    assert first.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    # Its source is the one real document of its shape whose tokens it stays close to (noise norm ~0.3).
    sources = [d for d in real if d.shape == first.shape]
    closeness = [float(np.mean(np.sum(d * first, axis=1))) for d in sources]
    assert max(closeness) > 0.9
    assert float(np.mean(np.sum(first * synthetic_document(real, 3, seed=1, noise=0.0), axis=1))) > 0.9


def test_a_larger_size_extends_a_smaller_one() -> None:
    real = real_documents()
    ids = [f"real/{i}" for i in range(len(real))]
    small_ids, small = size_documents(real, ids, 25, seed=0)
    large_ids, large = size_documents(real, ids, 40, seed=0)
    assert small_ids == large_ids[:25] and len(large) == 40
    assert large_ids[20] == "synthetic/0"
    assert all(np.array_equal(a, b) for a, b in zip(small, large[:25], strict=True))
    assert size_documents(real, ids, 10)[0] == ids[:10]


def test_a_size_that_needs_more_memory_than_available_is_refused_naming_it() -> None:
    rates = {"ours": 1000.0, "peer": 2500.0}
    fits = growth.check_memory([1000, 3000], rates, available=8 * 2**30)
    assert fits[3000]["needed"] > fits[1000]["needed"]
    with pytest.raises(growth.DoesNotFit, match=r"size 100000 documents needs about \d+\.\d GiB"):
        growth.check_memory([1000, 100_000], rates, available=8 * 2**30)


def test_a_run_that_does_not_fit_stops_before_any_work(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[object] = []
    monkeypatch.setattr(growth, "run_worker", lambda *args, **kwargs: started.append(args))
    monkeypatch.setattr(growth, "ensure_peer_venv", lambda: started.append("peer venv"))
    args = growth.parser().parse_args(["--sizes", "1000", "50000", "--available-gib", "2"])
    with pytest.raises(growth.DoesNotFit, match=r"size 50000 documents needs about .* 2\.0 GiB available"):
        growth.orchestrate(args)
    assert started == []


def test_the_memory_estimate_calibrates_from_a_measured_record() -> None:
    record = {"sizes": [{"documents": 1000, "tokens": 150_000, "ours": {"build_peak_rss_mib": 1200.0}}]}
    rates = growth.calibrated(record)
    assert rates == {"ours": pytest.approx((1200.0 * 2**20 - growth.BASE_BYTES) / 150_000)}
    assert growth.calibrated(None) == growth.BUILD_BYTES_PER_TOKEN


def test_the_growth_exponent_is_the_log_log_slope() -> None:
    assert growth.exponent([(1000, 1.0), (10_000, 100.0)]) == pytest.approx(2.0)
    assert growth.exponent([(1000, 5.0)]) is None

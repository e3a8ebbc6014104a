"""Honest accuracy: Clopper-Pearson intervals against published values, scipy, and their coverage promise."""

from __future__ import annotations

import math

import pytest

from lastlayer.report.intervals import beta_quantile, clopper_pearson, count, regularized_beta

# R's binom.test(k, n)$conf.int (exact Clopper-Pearson, 95 %), to 4 decimals.
PUBLISHED = [
    (25, 25, 0.8628, 1.0),
    (7, 10, 0.3475, 0.9333),
    (0, 10, 0.0, 0.3085),
    (5, 10, 0.1871, 0.8129),
    (1, 1, 0.025, 1.0),
    (87, 100, 0.7880, 0.9289),
]


@pytest.mark.parametrize(("hits", "total", "low", "high"), PUBLISHED)
def test_clopper_pearson_matches_published_values(hits, total, low, high):
    found = clopper_pearson(hits, total)
    assert found == pytest.approx((low, high), abs=1e-4)


def test_matches_scipy_beta_quantiles():
    beta = pytest.importorskip("scipy.stats").beta
    for total in (2, 9, 40, 373, 20_000):
        for hits in sorted({0, 1, total // 3, total // 2, total - 1, total}):
            low, high = clopper_pearson(hits, total, 0.9)
            assert low == pytest.approx(0.0 if hits == 0 else beta.ppf(0.05, hits, total - hits + 1), abs=1e-10)
            assert high == pytest.approx(1.0 if hits == total else beta.ppf(0.95, hits + 1, total - hits), abs=1e-10)


def test_the_interval_covers_the_truth_at_least_as_often_as_promised():
    total = 20
    for p in (0.03, 0.2, 0.5, 0.77, 0.95, 0.99):
        covered = sum(math.comb(total, k) * p ** k * (1 - p) ** (total - k)
                      for k in range(total + 1) if clopper_pearson(k, total)[0] <= p <= clopper_pearson(k, total)[1])
        assert covered >= 0.95 - 1e-12


def test_incomplete_beta_inverts():
    for a, b in ((0.5, 0.5), (2.0, 5.0), (30.0, 1.0), (400.0, 600.0)):
        for q in (0.001, 0.3, 0.975):
            assert regularized_beta(a, b, beta_quantile(q, a, b)) == pytest.approx(q, abs=1e-9)
    assert regularized_beta(2.0, 3.0, 0.0) == 0.0 and regularized_beta(2.0, 3.0, 1.0) == 1.0


def test_wording_rounds_the_bounds_outwards():
    assert count(25, 25).describe() == "25 / 25 right, 95 % interval 0.86-1.00"  # 0.8628 floors to 0.86
    assert count(7, 10).describe("rejected") == "7 / 10 rejected, 95 % interval 0.34-0.94"  # 0.3475 -> 0.34, 0.9333 -> 0.94
    assert count(0, 10).interval_text() == "95 % interval 0.00-0.31"
    data = count(87, 100).to_dict()
    assert data["count"] == 87 and data["of"] == 100 and data["value"] == 0.87 and data["confidence"] == 0.95
    assert data["interval"] == pytest.approx([0.7880, 0.9289], abs=1e-4)


@pytest.mark.parametrize(("hits", "total", "confidence"), [(3, 2, 0.95), (-1, 5, 0.95), (0, 0, 0.95), (1, 2, 1.0)])
def test_impossible_counts_are_refused(hits, total, confidence):
    with pytest.raises(ValueError):
        clopper_pearson(hits, total, confidence)

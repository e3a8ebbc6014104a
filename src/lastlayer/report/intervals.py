"""Honest figures for few photos: how many out of how many, with a 95 % interval.

An accuracy measured on 25 photos says little without its uncertainty: "25 / 25 right" is
compatible with a true accuracy of 0.86. :func:`count` gives the Clopper-Pearson interval (the
exact binomial interval: it never covers less than its confidence, whatever the counts), and
:meth:`Count.describe` the wording every report uses, e.g. ``25 / 25 right, 95 % interval 0.86-1.00``;
the bounds are rounded outwards, so the printed interval is never narrower than the computed one.

Pure Python (the regularized incomplete beta function by its continued fraction, inverted by bisection).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

CONFIDENCE = 0.95
_ITERATIONS = 300  # continued-fraction terms (a few dozen suffice below ~10^6 photos)
_TINY = 1e-300


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz's method)."""
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    result = d
    for m in range(1, _ITERATIONS + 1):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + numerator / c
            c = c if abs(c) > _TINY else _TINY
            result *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return result


def regularized_beta(a: float, b: float, x: float) -> float:
    """``I_x(a, b)``, the CDF of the Beta(a, b) distribution at ``x`` (a, b > 0)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b


def beta_quantile(q: float, a: float, b: float) -> float:
    """The ``x`` with ``I_x(a, b) = q`` (bisection to about 1e-15)."""
    low, high = 0.0, 1.0
    for _ in range(60):
        middle = 0.5 * (low + high)
        if regularized_beta(a, b, middle) < q:
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)


def clopper_pearson(hits: int, total: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The exact (Clopper-Pearson) ``confidence`` interval of a proportion, ``hits`` out of ``total``."""
    if total < 1 or not 0 <= hits <= total:
        raise ValueError(f"a proportion needs 0 <= hits <= total and total >= 1, got {hits} / {total}")
    if not 0 < confidence < 1:
        raise ValueError(f"the confidence must be between 0 and 1, got {confidence}")
    tail = (1.0 - confidence) / 2.0
    low = 0.0 if hits == 0 else beta_quantile(tail, hits, total - hits + 1)
    high = 1.0 if hits == total else beta_quantile(1.0 - tail, hits + 1, total - hits)
    return low, high


@dataclass(frozen=True)
class Count:
    """``hits`` out of ``total`` (e.g. photos right), with its interval."""

    hits: int
    total: int
    low: float
    high: float
    confidence: float = CONFIDENCE

    @property
    def value(self) -> float:
        return self.hits / self.total

    def interval_text(self) -> str:
        """``95 % interval 0.86-1.00`` (bounds rounded outwards to 2 decimals)."""
        low = math.floor(self.low * 100 + 1e-9) / 100
        high = math.ceil(self.high * 100 - 1e-9) / 100
        return f"{self.confidence:.0%} interval {low:.2f}-{high:.2f}".replace("%", " %")

    def describe(self, what: str = "right") -> str:
        """E.g. ``25 / 25 right, 95 % interval 0.86-1.00``."""
        return f"{self.hits} / {self.total} {what}, {self.interval_text()}"

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.hits, "of": self.total, "value": round(self.value, 6),
                "interval": [round(self.low, 6), round(self.high, 6)], "confidence": self.confidence}


def count(hits: int, total: int, confidence: float = CONFIDENCE) -> Count:
    """``hits`` out of ``total`` with its Clopper-Pearson interval."""
    low, high = clopper_pearson(int(hits), int(total), confidence)
    return Count(int(hits), int(total), low, high, confidence)

"""Accuracy with its uncertainty: a Wilson interval for one variant, an exact McNemar test for
the difference between two variants scored on the same inputs.

    >>> wilson_interval(1791, 1800)
    (0.9905..., 0.9973...)
    >>> mcnemar_p([True] * 100, [False] * 7 + [True] * 93)   # 7 images lost, none gained
    0.015625

One test image is 1/n of accuracy: on 360 images a one-image difference is 0.28 pt, which no
user should act on. The interval says how far the true accuracy may be; McNemar says whether
two variants really differ, using only the inputs on which they disagree (Dietterich 1998
recommends it for comparing two classifiers on one test set).
"""

from __future__ import annotations

from collections.abc import Sequence

# A difference with a McNemar p at or above this is "not significant" in tables and charts.
SIGNIFICANCE = 0.05


def wilson_interval(correct: int, n: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """Wilson score interval of a proportion (better than ±1.96·SE near 0 and 1); None if n = 0."""
    if n <= 0:
        return None
    from scipy.stats import binomtest

    ci = binomtest(int(correct), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def mcnemar_p(base_right: Sequence[bool], variant_right: Sequence[bool]) -> float | None:
    """Exact two-sided McNemar p-value of two classifiers' correctness on the same inputs.

    Only discordant inputs count: b = base right and variant wrong, c = the reverse; under
    "no difference" b ~ Binomial(b + c, 1/2). Returns 1.0 when they never disagree, None when
    the inputs are not the same length.
    """
    import numpy as np

    a, v = np.asarray(base_right, dtype=bool), np.asarray(variant_right, dtype=bool)
    if a.shape != v.shape or a.ndim != 1:
        return None
    b, c = int(np.sum(a & ~v)), int(np.sum(~a & v))
    if b + c == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(b, b + c, 0.5).pvalue)


def significant(p: float | None) -> bool | None:
    """True when a difference is significant at SIGNIFICANCE; None when untested."""
    return None if p is None else p < SIGNIFICANCE

"""Latency with its uncertainty: the ratio to the baseline and the p50, each with a 95 % interval.

The unit of replication is the round (one runner process), never the sample: samples of one
process share its luck with the neighbours and its memory layout. In a paired round the runner
times the variant and its target/runtime's baseline in alternating ~5 ms blocks, so the round's
ratio p50(variant) / p50(baseline) is steady where each p50 alone is not: identical models under
neighbour load on a 2-core VM gave per-process p50s 0.029-0.046 ms one by one, and a per-round
ratio with an sd of 0.4 % interleaved.

    >>> ratio = latency_ratio([{"p50": 0.50, "ratio": 0.81}, {"p50": 0.52, "ratio": 0.80},
    ...                        {"p50": 0.49, "ratio": 0.82}], stopped_by="precision", precision=0.03)
    >>> round(ratio["value"], 3), [round(b, 3) for b in ratio["ci95"]], ratio["significant"]
    (0.81, [0.785, 0.835], True)

- `latency_ratio.value`: exp(mean over rounds of log ratio), its `ci95` the t interval of that
  mean (scipy), `p` the two-sided one-sample t-test of "no difference";
- unpaired (each model in its own processes, `[run] paired = false`): exp(mean log p50 −
  mean log p50 of the baseline) with a Welch interval, far wider under load;
- `latency_p50_ci95`: the t interval of the mean log p50 over rounds, back in ms.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

CONFIDENCE = 0.95
SIGNIFICANCE = 0.05  # a ratio whose interval holds 1.0 (p >= this) is no difference: "n.s."


def _t(df: float) -> float:
    from scipy.stats import t

    return float(t.ppf(0.5 + CONFIDENCE / 2, df))


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    return mean, (math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else math.inf)


def half_width(log_ratios: Sequence[float]) -> float:
    """Half the 95 % interval of the mean log ratio (log units; inf under 2 rounds).

    >>> round(half_width([0.0, 0.01, -0.01]), 4)
    0.0248
    """
    n = len(log_ratios)
    if n < 2:
        return math.inf
    return _t(n - 1) * _mean_sd(log_ratios)[1] / math.sqrt(n)


def precise(log_ratios: Sequence[float], precision: float) -> bool:
    """Whether the ratio's 95 % interval lies within ±`precision` of it (0.03: ±3 %).

    >>> precise([0.0, 0.01, -0.01], 0.03), precise([0.0, 0.05, -0.05], 0.03)
    (True, False)
    """
    return half_width(log_ratios) <= math.log1p(precision)


def round_ratio(samples: Sequence[float], beside: Sequence[float]) -> float | None:
    """One paired round's ratio: p50 of the variant's samples / p50 of the baseline's beside it."""
    import numpy as np

    if not len(samples) or not len(beside):
        return None
    base = float(np.median(beside))
    return float(np.median(samples)) / base if base > 0 else None


def _positive(values: Sequence[object]) -> list[float]:
    return [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)
            and math.isfinite(v) and v > 0]


def paired_ratio(ratios: Sequence[float]) -> dict | None:
    """{value, ci95, p, sd, rounds} from the per-round ratios of paired rounds (None: none).

    >>> paired_ratio([1.0, 1.0])["ci95"]
    [1.0, 1.0]
    """
    from scipy.stats import ttest_1samp

    logs = [math.log(r) for r in _positive(ratios)]
    if not logs:
        return None
    n = len(logs)
    mean, sd = _mean_sd(logs)
    out: dict = {"value": math.exp(mean), "ci95": None, "p": None, "sd": None if n < 2 else sd, "rounds": n,
                 "paired": True}
    if n >= 2 and sd == 0.0:  # the same ratio every round (a copy of a file): exact
        out.update(ci95=[math.exp(mean)] * 2, p=0.0 if mean else 1.0)
    elif n >= 2:
        h = half_width(logs)
        out.update(ci95=[math.exp(mean - h), math.exp(mean + h)], p=float(ttest_1samp(logs, 0.0).pvalue))
    return out


def unpaired_ratio(p50s: Sequence[float], baseline_p50s: Sequence[float]) -> dict | None:
    """{value, ci95, p, rounds} of p50 / the baseline's p50 from rounds measured apart (each model
    in its own processes): a Welch t-test on the log per-round p50s (scipy).

    >>> unpaired_ratio([2.0, 2.0], [1.0, 1.0])["value"]
    2.0
    """
    from scipy.stats import ttest_ind

    a, b = [math.log(v) for v in _positive(p50s)], [math.log(v) for v in _positive(baseline_p50s)]
    if not a or not b:
        return None
    diff = sum(a) / len(a) - sum(b) / len(b)
    out: dict = {"value": math.exp(diff), "ci95": None, "p": None, "sd": None, "rounds": len(a), "paired": False}
    if len(a) >= 2 and len(b) >= 2:
        if _mean_sd(a)[1] == 0.0 and _mean_sd(b)[1] == 0.0:
            out.update(ci95=[math.exp(diff)] * 2, p=0.0 if diff else 1.0)
        else:
            test = ttest_ind(a, b, equal_var=False)
            low, high = test.confidence_interval(CONFIDENCE)
            out.update(ci95=[math.exp(low), math.exp(high)], p=float(test.pvalue))
    return out


def latency_ratio(rounds: Sequence[dict], stopped_by: str | None, precision: float, reference: bool = False,
                  baseline_p50s: Sequence[float] | None = None) -> dict | None:
    """The record's `latency_ratio`: the baseline's own (1.0 exactly), from paired rounds
    (`ratio` in each of `rounds`), else unpaired against `baseline_p50s`; None without either.
    `significant`: the interval excludes 1.0; `stopped_by` says what ended the rounds."""
    if reference:
        out: dict | None = {"value": 1.0, "ci95": [1.0, 1.0], "p": None, "sd": None, "rounds": len(rounds),
                            "paired": None, "reference": True}
    else:
        ratios = [r.get("ratio") for r in rounds if isinstance(r, dict) and r.get("ratio") is not None]
        out = paired_ratio(ratios) if ratios else None
        if out is None and baseline_p50s:
            out = unpaired_ratio([r.get("p50") for r in rounds if isinstance(r, dict)], baseline_p50s)
    if out is None:
        return None
    ci = out["ci95"]
    out["significant"] = None if reference or ci is None else not ci[0] <= 1.0 <= ci[1]
    out.update(stat="p50", stopped_by=stopped_by, precision=precision or None)
    return out


def p50_interval(p50s: Sequence[float]) -> list[float] | None:
    """The 95 % interval of a variant's p50 across its rounds (t on the log per-round p50s, in
    ms); None under 2 rounds.

    >>> p50_interval([1.0, 1.0, 1.0])
    [1.0, 1.0]
    """
    logs = [math.log(v) for v in _positive(p50s)]
    if len(logs) < 2:
        return None
    mean, sd = _mean_sd(logs)
    h = _t(len(logs) - 1) * sd / math.sqrt(len(logs))
    return [math.exp(mean - h), math.exp(mean + h)]


def stop_reason(rounds: Sequence[dict], measure_s: float, options) -> str | None:
    """Why a variant's rounds end now, or None to add one: "rounds" (fixed: not paired, or
    precision 0), "precision", "max_rounds", "max_seconds" (its runner time so far)."""
    n = len(rounds)
    if n < options.rounds:
        return None
    ratios = _positive([r.get("ratio") for r in rounds])
    if not options.precision or len(ratios) < n:  # alone (or partly): nothing to make precise
        return "rounds"
    if precise([math.log(r) for r in ratios], options.precision):
        return "precision"
    if n >= max(options.max_rounds, options.rounds):
        return "max_rounds"
    if measure_s >= options.max_seconds:
        return "max_seconds"
    return None

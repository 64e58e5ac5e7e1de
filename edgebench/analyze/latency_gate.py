"""The statistics behind the latency part of `edgebench check`.

Two tests, both "slower only when significant AND by at least a minimum effect" (asv's rule):

- **relative** (every variant but the reference): the variant's latency divided by the same
  run's reference variant ("baseline", the uncompressed model on the same target and runtime),
  compared between the baseline run and the new run. On a shared machine whole runs shift
  (0.78×–1.24× at the median on a 2-core VM with neighbours, benchmarks/gate_noise.py); such a
  shift moves the variant and its reference alike and cancels in the ratio. Significance is a
  bootstrap of the ratio of ratios of medians, so the reference's own noise counts too.
- **absolute** (the reference itself, or a variant whose run has no reference): a one-sided
  Mann–Whitney U test on the raw samples plus a larger minimum effect, because nothing cancels
  a whole-run shift here. It is what catches a slower runtime version, which moves every
  variant and its reference alike and so is invisible to the relative test.

Both tests treat samples as independent draws, which they are not: samples of one process
share that process's luck with the neighbours. So p-values are optimistic, and the minimum
effect and a robust statistic, not the test, keep false alarms rare. Interference only ever
slows, in bursts of about a second, so the default statistic is the 25th percentile: it
ignores a burst that hits up to about half the samples; the median does not.

    >>> relative_test(ref_old, var_old, ref_new, var_new, effect=0.10, alpha=0.01).slower
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edgebench.analyze import fmt
from edgebench.errors import ConfigError

if TYPE_CHECKING:  # check.py imports this module; the options are only a type here
    import numpy as np

    from edgebench.analyze.check import GateOptions

LATENCY_STATS = ("p25", "p10", "p50", "min")  # p<q>: the q-th percentile
COMPACT_SAMPLES = 200
BOOTSTRAP_RESAMPLES = 2000


@dataclass(frozen=True)
class LatencyVerdict:
    """The outcome of one latency test; `ratio` is new/old of the statistic (or of its ratio)."""

    slower: bool  # significant AND ratio - 1 >= effect: a regression
    faster: bool  # ratio - 1 <= -effect: reported as "better", never fails
    p: float  # one-sided p-value of "not slower"
    ratio: float


def compact_samples(samples: Sequence[float] | None, k: int = COMPACT_SAMPLES) -> list[float]:
    """At most k values with the samples' distribution: evenly spaced quantiles when longer."""
    import numpy as np

    if samples is None or len(samples) == 0:
        return []
    values = np.asarray(samples, dtype=float)
    if len(values) > k:  # quantiles 0..1 inclusive, so the exact min and max are kept
        values = np.quantile(values, np.linspace(0.0, 1.0, k))
    return [round(float(v), 6) for v in values]


def latency_stat(samples: Sequence[float], stat: str) -> float:
    """The statistic the latency effect is measured on: a percentile ('p25', 'p10', 'p50') or 'min'."""
    import numpy as np

    if stat not in LATENCY_STATS:
        raise ConfigError(f"latency stat {stat!r} is not one of {', '.join(LATENCY_STATS)}")
    return float(np.min(samples) if stat == "min" else np.percentile(samples, float(stat[1:])))


def latency_test(base: Sequence[float], new: Sequence[float], effect: float, alpha: float,
                 stat: str = "p50") -> LatencyVerdict:
    """Absolute test: is `new` slower than `base` (Mann–Whitney U, one-sided) by >= `effect`?"""
    from scipy.stats import mannwhitneyu

    # Both sides compacted the same way, so a run compared with its own saved baseline
    # (which keeps only quantile points) sees identical inputs and passes exactly.
    a, b = compact_samples(base), compact_samples(new)
    ratio = latency_stat(b, stat) / latency_stat(a, stat)
    p = float(mannwhitneyu(b, a, alternative="greater").pvalue)
    return LatencyVerdict(p < alpha and ratio - 1 >= effect, ratio - 1 <= -effect, p, ratio)


def _bootstrap_stat(values: Sequence[float], stat: str, rng: np.random.Generator,
                    resamples: int) -> np.ndarray:
    """The statistic of `resamples` resamples (with replacement) of `values`."""
    import numpy as np

    array = np.asarray(values, dtype=float)
    drawn = array[rng.integers(0, len(array), size=(resamples, len(array)))]
    return drawn.min(axis=1) if stat == "min" else np.percentile(drawn, float(stat[1:]), axis=1)


def relative_test(ref_base: Sequence[float], var_base: Sequence[float], ref_new: Sequence[float],
                  var_new: Sequence[float], effect: float, alpha: float, stat: str = "p50",
                  resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> LatencyVerdict:
    """Relative test: did the variant get slower *relative to its run's reference*?

    ratio = (var_new / ref_new) / (var_base / ref_base), each term the statistic of its
    samples. p is the share of bootstrap resamples (all four sample sets redrawn) with a
    ratio <= 1. The seed is fixed so the same inputs always get the same verdict.
    """
    import numpy as np

    sets = [compact_samples(s) for s in (ref_base, var_base, ref_new, var_new)]
    rb, vb, rn, vn = (latency_stat(s, stat) for s in sets)
    ratio = (vn / rn) / (vb / rb)
    rng = np.random.default_rng(seed)
    rb_s, vb_s, rn_s, vn_s = (_bootstrap_stat(s, stat, rng, resamples) for s in sets)
    boot = (vn_s / rn_s) / (vb_s / rb_s)
    p = float((1 + np.count_nonzero(boot <= 1.0)) / (resamples + 1))
    return LatencyVerdict(p < alpha and ratio - 1 >= effect, ratio - 1 <= -effect, p, ratio)


# --- from records to check rows ----------------------------------------------------------------

def _stat_value(item: dict | None, metric: str) -> float | None:
    """A stored statistic such as 'latency_ms.p50' of a record or baseline entry, or None."""
    group, _, name = metric.partition(".")
    value = ((item or {}).get(group) or {}).get(name)
    return float(value) if isinstance(value, int | float) and value == value else None


def _samples(item: dict | None) -> list[float]:
    samples = (item or {}).get("latency_samples_ms")
    return list(samples) if samples is not None else []


def _usable(item: dict | None) -> bool:
    """An ok record/entry with something to time against: raw samples or the stored statistic."""
    return (item is not None and item.get("status", "ok") == "ok"
            and (len(_samples(item)) >= 3 or isinstance(item.get("latency_ms"), dict)))


def _verdict(result: LatencyVerdict) -> str:
    return "FAIL" if result.slower else "better" if result.faster else "ok"


def latency_checks(base: dict, new: dict, options: GateOptions, base_ref: dict | None = None,
                   new_ref: dict | None = None) -> list[tuple[str, str, str, str, str]]:
    """(metric, limit, value, verdict, detail) of the latency check of one variant.

    Relative to the run's reference when both runs have one (see latency_gate.py); absolute,
    with the larger effect, for the reference itself or when either run lacks it.
    """
    stat, alpha = options.latency_stat, options.alpha
    metric = f"latency_ms.{stat}"
    # Records store p50/p90/p99/min, not every percentile: without raw samples use the median.
    stored = metric if stat in ("p50", "min") else "latency_ms.p50"
    is_reference = str(new.get("variant")) == options.reference
    if not is_reference and _usable(base_ref) and _usable(new_ref):
        rel_metric = f"{metric} / {options.reference}"
        limit = f"+{options.latency_effect:.0%} & p<{alpha:g}"
        sets = [_samples(x) for x in (base_ref, base, new_ref, new)]
        if min(map(len, sets)) >= 3:
            result = relative_test(*sets, effect=options.latency_effect, alpha=alpha, stat=stat)
            base_ratio = latency_stat(compact_samples(sets[1]), stat) / latency_stat(compact_samples(sets[0]), stat)
            return [(rel_metric, f"baseline {base_ratio:.4f} ({limit})", f"{base_ratio * result.ratio:.4f}",
                     _verdict(result), f"{(result.ratio - 1) * 100:+.1f}%, p={result.p:.2g}")]
        stats = [_stat_value(x, stored) for x in (base_ref, base, new_ref, new)]
        if all(stats):  # no raw samples (an old or trimmed baseline): the effect alone decides
            rb, vb, rn, vn = (float(x) for x in stats if x)
            ratio = (vn / rn) / (vb / rb)
            verdict = "FAIL" if ratio - 1 >= options.latency_effect else "ok"
            return [(f"{stored} / {options.reference}", f"baseline {vb / rb:.4f} (+{options.latency_effect:.0%})", f"{vn / rn:.4f}",
                     verdict, f"{(ratio - 1) * 100:+.1f}%, no raw samples")]
    note = "" if is_reference else f", absolute: no {options.reference!r} to time against in both runs"
    effect = options.latency_effect_absolute
    bs, ns = _samples(base), _samples(new)
    if len(bs) >= 3 and len(ns) >= 3:
        result = latency_test(bs, ns, effect=effect, alpha=alpha, stat=stat)
        base_value = latency_stat(compact_samples(bs), stat)
        return [(metric, f"baseline {fmt(base_value, 4)} (+{effect:.0%} & p<{alpha:g})",
                 fmt(base_value * result.ratio, 4), _verdict(result),
                 f"{(result.ratio - 1) * 100:+.1f}%, p={result.p:.2g}{note}")]
    b_stat, n_stat = _stat_value(base, stored), _stat_value(new, stored)
    if b_stat and n_stat:  # no raw samples: the effect alone decides
        ratio = n_stat / b_stat
        return [(stored, f"baseline {fmt(b_stat, 4)} (+{effect:.0%})", fmt(n_stat, 4),
                 "FAIL" if ratio - 1 >= effect else "ok", f"{(ratio - 1) * 100:+.1f}%, no raw samples{note}")]
    return []

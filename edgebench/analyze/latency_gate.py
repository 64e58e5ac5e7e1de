"""The statistics behind the latency part of `edgebench check`: tests over runner processes.

The unit of replication is the runner process (a "round"), not the latency sample: samples of
one process share that process's luck with the neighbours (a busy hyperthread sibling, a
burst of load), so pooling them as independent draws overstates significance. Each process is
reduced to one statistic (`--latency-stat`, default the minimum), and the tests run over
those per-process statistics, on a log scale (latency effects are multiplicative).

- **A/B** (`paired_test`): the reference artifact and the candidate's are measured round
  after round, each round one runner process timing both in alternating ~5 ms blocks.
  d_i = log(cand_i / ref_i) per round; the ratio is exp(mean d); a one-sided t-test over the
  rounds says whether it is significantly above 1. A spell of load hits both artifacts'
  blocks alike and cancels in d_i; what is left widens the spread of d, which lowers t: noise
  costs rounds, not false alarms.
  `decided` is the stopping rule: a pair is measured until its interval of the ratio lies
  wholly below 1 + effect (no regression) or wholly above it, so a quiet machine decides in
  4 rounds and a noisy one spends more (at most `--max-rounds`).
- **stored** (`stored_test`): two runs measured at different times. Per variant, the log
  per-round statistics of the baseline and the candidate are compared with a t-test whose
  variance is pooled within runs over every variant of the same target and runtime (3 rounds
  per variant give a weak test alone; 10 variants × 2 runs × 2 df give 40 df). A shift of the
  whole machine between the two runs is *not* in that variance: stored mode cannot tell it
  from a slower model. Measured (benchmarks/gate_noise.py --stored, runs a few seconds apart
  under neighbour load): the same model 0/20 failed; the next run × 1.15 failed 16/20, the
  rest "unsure" or hidden by slow rounds of the baseline run itself. A/B has no such blind spot.

Either way a regression needs both: significant at `alpha` AND a ratio ≥ 1 + effect
(asv's rule). "better" is the mirror image and never fails.

    >>> paired_test([0.40, 0.41, 0.40, 0.40], [0.50, 0.50, 0.51, 0.50], effect=0.10, alpha=0.01).verdict
    'FAIL'
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from edgebench.errors import ConfigError

# Which per-process statistic is compared. Over 80 interleaved pairs of runner processes of
# the same model (0.1 s of timing each, load average 2.5-5 from other users of this 2-core VM),
# the round-to-round sd of log(cand/ref) was: min 1.9 %, p10 2.7 %, p25 4.6 % (largest |d|
# 13 %, 15 %, 30 %); in a noisier spell (40 rounds): min 10.7 %, p25 17.4 %. Neighbours only
# slow a measurement, and a process's fastest sample is the one none of them touched. p25,
# p10 and p50 stay available (`--latency-stat`).
LATENCY_STATS = ("min", "p10", "p25", "p50")
DEFAULT_STAT = "min"


@dataclass(frozen=True)
class LatencyVerdict:
    """The outcome of one latency test. `ratio` is candidate / reference (geometric mean)."""

    verdict: str  # "FAIL" | "better" | "ok" | "unsure" (large but not significant)
    ratio: float
    p: float  # one-sided p-value of "not slower"
    rounds: tuple[int, int]  # per-process statistics used: (reference, candidate)
    detail: str = ""

    @property
    def change(self) -> str:
        return f"{(self.ratio - 1) * 100:+.1f}%"


def check_stat(stat: str) -> str:
    """`stat` if it is one of LATENCY_STATS, else a ConfigError naming the valid ones."""
    if stat not in LATENCY_STATS:
        raise ConfigError(f"latency stat {stat!r} is not one of {', '.join(LATENCY_STATS)}")
    return stat


def sample_stat(samples: Sequence[float], stat: str) -> float:
    """The statistic of one process's latency samples: 'min' or a percentile 'p<q>'.

    >>> sample_stat([3.0, 1.0, 2.0, 4.0], "min")
    1.0
    """
    import numpy as np

    check_stat(stat)
    values = np.asarray(samples, dtype=float)
    return float(values.min() if stat == "min" else np.percentile(values, float(stat[1:])))


def round_values(rounds: object, stat: str) -> list[float] | None:
    """The positive finite `stat` of each per-round summary (`latency_rounds`), or None if any
    round lacks it (so a round is never silently dropped).

    >>> round_values([{"n": 200, "min": 0.4, "p25": 0.42}], "min")
    [0.4]
    """
    if not isinstance(rounds, list) or not rounds:
        return None
    out = []
    for item in rounds:
        value = item.get(stat) if isinstance(item, dict) else None
        if not _positive(value):
            return None
        out.append(float(value))
    return out


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _verdict(ratio: float, p_slower: float, p_faster: float, effect: float, alpha: float) -> str:
    if ratio - 1 >= effect:
        return "FAIL" if p_slower < alpha else "unsure"
    if 1 - ratio >= effect and p_faster < alpha:
        return "better"
    return "ok"


def _t_sf(t: float, df: float) -> float:
    from scipy.stats import t as student

    return float(student.sf(t, df))


def _t_quantile(alpha: float, df: float) -> float:
    from scipy.stats import t as student

    return float(student.ppf(1 - alpha, df))


def _log_ratios(reference: Sequence[float], candidate: Sequence[float]) -> list[float]:
    if len(reference) != len(candidate) or not reference:
        raise ValueError("paired statistics need the same number (>= 1) of rounds on each side")
    return [math.log(c / r) for r, c in zip(reference, candidate, strict=True)]


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else math.inf
    return mean, sd


def paired_test(reference: Sequence[float], candidate: Sequence[float], effect: float, alpha: float) -> LatencyVerdict:
    """A/B test over paired rounds: is the candidate slower by >= `effect`, significantly?

    `reference[i]` and `candidate[i]` are the statistics of the two processes of round i.

    >>> paired_test([1.0, 1.01, 0.99, 1.0], [1.0, 1.0, 1.0, 1.01], effect=0.10, alpha=0.01).verdict
    'ok'
    """
    d = _log_ratios(reference, candidate)
    mean, sd = _mean_sd(d)
    n = len(d)
    if sd == 0.0:  # identical statistics in every round: the sign of the mean decides
        p_slower, p_faster = (0.0 if mean > 0 else 1.0), (0.0 if mean < 0 else 1.0)
    elif math.isinf(sd):
        p_slower = p_faster = 1.0
    else:
        t = mean / (sd / math.sqrt(n))
        p_slower, p_faster = _t_sf(t, n - 1), _t_sf(-t, n - 1)
    ratio = math.exp(mean)
    spread = f", sd {sd * 100:.1f}%" if math.isfinite(sd) else ""
    return LatencyVerdict(_verdict(ratio, p_slower, p_faster, effect, alpha), ratio, p_slower, (n, n),
                          f"A/B {n} rounds{spread}")


FUTILITY = 0.10  # one-sided risk of stopping "no regression" early (see `decided`)


def decided(reference: Sequence[float], candidate: Sequence[float], effect: float, alpha: float,
            futility: float = FUTILITY) -> bool:
    """The stopping rule of A/B measuring: True once more rounds are not needed.

    - no regression: the one-sided (1 - futility) upper bound of the ratio is below
      1 + effect. Stopping here can only miss a regression near the effect itself, never
      raise an alarm; at 90 % it halved the rounds an unchanged model needs (simulated from
      measured rounds under heavy load: 5.7 instead of 10.0).
    - a regression: the one-sided (1 - alpha) *lower* bound is above 1 + effect, so the
      final rule (significant and >= effect) holds with room to spare. Stopping as soon as the
      final rule holds instead raised false alarms on an unchanged model from 0.2 % to 1.5 %
      per pair in the same simulation (several looks at a noisy mean).

    >>> decided([1.0, 1.0, 1.0, 1.0], [1.0, 1.001, 0.999, 1.0], effect=0.10, alpha=0.01)
    True
    """
    d = _log_ratios(reference, candidate)
    if len(d) < 2:
        return False
    mean, sd = _mean_sd(d)
    se = sd / math.sqrt(len(d))
    line = math.log(1 + effect)
    return (mean + _t_quantile(futility, len(d) - 1) * se < line
            or mean - _t_quantile(alpha, len(d) - 1) * se > line)


# --- stored mode -------------------------------------------------------------------------------

def pooled_log_variance(groups: Iterable[Sequence[float]]) -> tuple[float, int]:
    """The within-group variance of log values pooled over `groups`, and its degrees of freedom.

    >>> var, df = pooled_log_variance([[1.0, 1.0], [2.0, 2.0, 2.0]])
    >>> (var, df)
    (0.0, 3)
    """
    total, df = 0.0, 0
    for values in groups:
        if len(values) < 2:
            continue
        logs = [math.log(v) for v in values]
        mean = sum(logs) / len(logs)
        total += sum((x - mean) ** 2 for x in logs)
        df += len(logs) - 1
    return (total / df if df else math.nan), df


def stored_test(baseline: Sequence[float], candidate: Sequence[float], pooled_var: float, pooled_df: int,
                effect: float, alpha: float) -> LatencyVerdict:
    """Stored test: per-round statistics of one variant in two runs, with a pooled variance.

    ratio = exp(mean log candidate - mean log baseline); t = log ratio / (s √(1/n_b + 1/n_c))
    with s² and its df pooled over the target/runtime's variants in both runs
    (`pooled_log_variance`). Without any spread to pool (every variant measured in one round)
    the effect alone decides.

    >>> stored_test([1.0, 1.02, 0.99], [1.15, 1.17, 1.14], 0.0004, 40, effect=0.10, alpha=0.01).verdict
    'FAIL'
    """
    mean_b = sum(math.log(v) for v in baseline) / len(baseline)
    mean_c = sum(math.log(v) for v in candidate) / len(candidate)
    diff = mean_c - mean_b
    ratio = math.exp(diff)
    rounds = (len(baseline), len(candidate))
    if not pooled_df or not math.isfinite(pooled_var):
        verdict = "FAIL" if ratio - 1 >= effect else "better" if 1 - ratio >= effect else "ok"
        return LatencyVerdict(verdict, ratio, math.nan, rounds,
                              f"stored {rounds[0]} vs {rounds[1]} rounds, no spread to pool: effect alone")
    se = math.sqrt(pooled_var * (1 / len(baseline) + 1 / len(candidate)))
    if se == 0.0:
        p_slower, p_faster = (0.0 if diff > 0 else 1.0), (0.0 if diff < 0 else 1.0)
    else:
        p_slower, p_faster = _t_sf(diff / se, pooled_df), _t_sf(-diff / se, pooled_df)
    return LatencyVerdict(_verdict(ratio, p_slower, p_faster, effect, alpha), ratio, p_slower, rounds,
                          f"stored {rounds[0]} vs {rounds[1]} rounds, pooled sd {math.sqrt(pooled_var) * 100:.1f}% "
                          f"({pooled_df} df)")


def effect_only(baseline: float, candidate: float, effect: float) -> LatencyVerdict:
    """No per-round statistics (an older record or baseline): the effect alone decides.

    >>> effect_only(1.0, 1.2, effect=0.10).verdict
    'FAIL'
    """
    ratio = candidate / baseline
    verdict = "FAIL" if ratio - 1 >= effect else "better" if 1 - ratio >= effect else "ok"
    return LatencyVerdict(verdict, ratio, math.nan, (1, 1), "no per-round statistics: effect alone")

"""The shift of a whole run: every variant of a target/runtime slower (or faster) together.

Each variant's own latency check needs its own evidence; a change that moves *every* variant by
the same factor (a slower runtime release, a slower CI machine, a change in shared code) can
leave each one "unsure" while all of them say the same thing. This test adds up that evidence.

The unit of replication stays the round (a runner process): rounds of one run are interleaved
over its variants, so round r of a run is one stretch of time in which every variant ran once.

- **stored** (two runs measured at different times): each variant's log per-round statistic is
  centred on the variant's mean over both runs; a run's *level* in round r is the median of its
  variants' centred values in that round (rounds that hold at least half of the variants); the
  shift is exp(mean level of the run − mean level of the baseline), tested over the rounds with
  a two-sample t-test and its 95 % interval (scipy). A slow spell that hits a whole round moves
  that round's level, and so widens the interval instead of passing for a shift.
- **A/B** (pairs re-measured here, interleaved): a round's level is the median of the pairs' log
  ratios in that round; one-sample t-test over rounds.

The verdict is the per-variant rule of latency_gate: a shift fails when it is at least
`effect` and significant at `alpha` (one-sided); "better" is its mirror and never fails.

    >>> levels = {("a", "local", "ort"): ([1.0, 1.0, 1.01], [1.15, 1.15, 1.16]),
    ...           ("b", "local", "ort"): ([2.0, 2.02, 2.0], [2.3, 2.32, 2.3]),
    ...           ("c", "local", "ort"): ([3.0, 3.0, 3.03], [3.45, 3.46, 3.48])}
    >>> shift = stored_shifts(levels, effect=0.10, alpha=0.01)[0]
    >>> shift.verdict, round(shift.ratio, 2)
    ('FAIL', 1.15)
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from edgebench.analyze.latency_gate import _verdict

Key = tuple[str, str, str]
MIN_VARIANTS = 3  # fewer: each variant's own check says it all
WHOLE_RUN = "(whole run)"


@dataclass(frozen=True)
class Shift:
    """The whole-run shift of one (target, runtime): candidate / reference."""

    target: str
    runtime: str
    verdict: str  # "FAIL" | "better" | "ok" | "unsure"
    ratio: float
    ci95: tuple[float, float]
    p: float  # one-sided p of "not slower"
    variants: int
    detail: str


def _levels(runs: Sequence[dict[str, list[float]]], centres: dict[str, float], variants: int) -> list[list[float]]:
    """Per run: the median centred log value of each round that holds at least half the variants."""
    out = []
    for run in runs:
        levels = []
        for r in range(max((len(v) for v in run.values()), default=0)):
            values = [math.log(v[r]) - centres[name] for name, v in run.items() if len(v) > r]
            if len(values) >= max(MIN_VARIANTS, math.ceil(variants / 2)):
                levels.append(statistics.median(values))
        out.append(levels)
    return out


def _test(diff: float, sd: float, df: int, se_scale: float, effect: float, alpha: float) -> tuple:
    """(verdict, ratio, ci95, p_slower) of a mean log difference `diff` with sd `sd`."""
    from scipy.stats import t

    se = sd * se_scale
    if se == 0.0:  # the same level in every round (a copied run): the sign decides, exactly
        p_slower, p_faster, h = (0.0 if diff > 0 else 1.0), (0.0 if diff < 0 else 1.0), 0.0
    else:
        p_slower, p_faster = float(t.sf(diff / se, df)), float(t.sf(-diff / se, df))
        h = float(t.ppf(0.975, df)) * se
    ratio = math.exp(diff)
    return _verdict(ratio, p_slower, p_faster, effect, alpha), ratio, (math.exp(diff - h), math.exp(diff + h)), p_slower


def stored_shifts(values: dict[Key, tuple[list[float], list[float]]], effect: float, alpha: float) -> list[Shift]:
    """The shift of each (target, runtime) from stored per-round statistics:
    `values[(variant, target, runtime)] = (reference rounds, candidate rounds)`."""
    from scipy.stats import ttest_ind

    groups: dict[tuple[str, str], dict[str, tuple[list[float], list[float]]]] = {}
    for (variant, target, runtime), pair in values.items():
        groups.setdefault((target, runtime), {})[variant] = pair
    out = []
    for (target, runtime), by_variant in sorted(groups.items()):
        if len(by_variant) < MIN_VARIANTS:
            continue
        centres = {name: statistics.fmean(math.log(v) for v in a + b) for name, (a, b) in by_variant.items()}
        ref, cand = _levels([{n: a for n, (a, _) in by_variant.items()}, {n: b for n, (_, b) in by_variant.items()}],
                            centres, len(by_variant))
        if len(ref) < 2 or len(cand) < 2:
            continue  # no spread over rounds to test against
        diff = statistics.fmean(cand) - statistics.fmean(ref)
        df = len(ref) + len(cand) - 2
        pooled = math.sqrt((sum((x - statistics.fmean(ref)) ** 2 for x in ref)
                            + sum((x - statistics.fmean(cand)) ** 2 for x in cand)) / df)
        verdict, ratio, ci, p = _test(diff, pooled, df, math.sqrt(1 / len(ref) + 1 / len(cand)), effect, alpha)
        if pooled > 0:  # the same numbers as scipy's pooled two-sample t-test (asserted in the tests)
            assert math.isclose(ttest_ind(cand, ref).statistic, diff / (pooled * math.sqrt(1 / len(ref) + 1 / len(cand))),
                                rel_tol=1e-6)
        out.append(Shift(target, runtime, verdict, ratio, ci, p, len(by_variant),
                         f"median of {len(by_variant)} variants per round, {len(ref)} vs {len(cand)} rounds, "
                         f"t-test over rounds (sd of a round's level {pooled * 100:.1f}%)"))
    return out


def ab_shifts(values: dict[Key, list[float]], effect: float, alpha: float) -> list[Shift]:
    """The shift of each (target, runtime) from A/B pairs: `values[key]` = the pair's per-round
    log(candidate / reference), round i of every pair measured in the same A/B round."""
    groups: dict[tuple[str, str], dict[str, list[float]]] = {}
    for (variant, target, runtime), logs in values.items():
        groups.setdefault((target, runtime), {})[variant] = logs
    out = []
    for (target, runtime), by_variant in sorted(groups.items()):
        if len(by_variant) < MIN_VARIANTS:
            continue
        (levels,) = _levels([{n: [math.exp(x) for x in v] for n, v in by_variant.items()}],
                            dict.fromkeys(by_variant, 0.0), len(by_variant))
        if len(levels) < 2:
            continue
        diff, sd = statistics.fmean(levels), statistics.stdev(levels)
        verdict, ratio, ci, p = _test(diff, sd, len(levels) - 1, 1 / math.sqrt(len(levels)), effect, alpha)
        out.append(Shift(target, runtime, verdict, ratio, ci, p, len(by_variant),
                         f"median of {len(by_variant)} re-measured pairs per A/B round, {len(levels)} rounds, "
                         f"t-test over rounds (sd {sd * 100:.1f}%)"))
    return out


def shift_checks(reference, candidate, pairs: list, judged: set, options, checks: list) -> list:
    """The whole-run checks of `edgebench check` (Check rows, variant "(whole run)"): stored
    per-round statistics for every record judged on stored numbers (not in `judged`: the keys
    re-measured A/B or identical), A/B rounds for the re-measured `pairs`. `checks` (the
    per-variant ones) let a failing shift say how each variant alone was judged."""
    from edgebench.analyze.latency_gate import round_values
    from edgebench.analyze.regressions import Check

    stat = options.latency_stat
    ref, cand = reference.by_key(), candidate.by_key()
    stored: dict[Key, tuple[list[float], list[float]]] = {}
    for key in set(ref) & set(cand):
        if key in judged or ref[key].get("status", "ok") != "ok" or cand[key].get("status", "ok") != "ok":
            continue
        a, b = round_values(ref[key].get("latency_rounds"), stat), round_values(cand[key].get("latency_rounds"), stat)
        if a and b:
            stored[key] = (a, b)
    ab = {p.key: [math.log(c / r) for r, c in zip(p.reference_values, p.candidate_values, strict=True)]
          for p in pairs if not p.error and p.reference_values}
    out = []
    for shift in stored_shifts(stored, options.latency_effect, options.alpha) + ab_shifts(
            ab, options.latency_effect, options.alpha):
        alone = [c.verdict for c in checks if c.target == shift.target and c.runtime == shift.runtime
                 and c.metric.startswith("latency_ms.")]
        detail = shift.detail
        if shift.verdict in ("FAIL", "unsure"):
            counts = {v: alone.count(v) for v in ("FAIL", "unsure", "ok", "better") if alone.count(v)}
            detail += ("; each variant alone: " + ", ".join(f"{n} {v}" for v, n in counts.items())) if counts else ""
        out.append(Check(WHOLE_RUN, shift.target, shift.runtime, f"latency shift ({stat}, all variants together)",
                         f"+{options.latency_effect:.0%} & p<{options.alpha:g}",
                         f"×{shift.ratio:.3f} [{shift.ci95[0]:.3f}–{shift.ci95[1]:.3f}]", shift.verdict, detail))
    return out

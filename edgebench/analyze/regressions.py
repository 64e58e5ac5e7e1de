"""The checks of a run against a baseline: status, footprint, accuracy and latency per record.

    >>> checks = check_baseline(load_side("baselines/main.json", "baseline"), load_side(run, "run"),
    ...                         GateOptions())
    >>> [c.line() for c in checks if c.failed]

Nothing passes unseen: a record, metric or latency present in the baseline and missing, NaN or
an error in the run fails its check and says so; a variant new in the run is reported ("new"),
and fails when it is an error record; what cannot be compared fairly (accuracy on another
n_eval, footprint across exporter versions) is flagged "unsure", never compared silently.
Latency is judged by A/B outcomes when `edgebench.analyze.remeasure` measured the pair, else
on the stored per-round statistics (latency_gate.stored_test).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from edgebench.analyze import fmt
from edgebench.analyze.baseline import EXPORTERS, FOOTPRINT, Side, exporter_changes, key_of, number
from edgebench.analyze.latency_gate import (
    DEFAULT_STAT,
    LatencyVerdict,
    effect_only,
    pooled_log_variance,
    round_values,
    sample_stat,
    stored_test,
)

# verdicts: FAIL fails the gate; the others do not. "unsure": could not be compared fairly
# (said why); "known": an error record whose baseline is an error too.
VERDICTS = ("FAIL", "unsure", "known", "new", "better", "ok")


@dataclass(frozen=True)
class GateOptions:
    """The thresholds of the gate (`edgebench check --help` explains each)."""

    latency_effect: float = 0.10  # relative growth of latency needed to fail (and significance)
    alpha: float = 0.01  # one-sided significance level of the latency tests
    accuracy_drop: float = 0.01  # absolute (0.01 = one percentage point)
    metric_drop: float | None = None  # another task's metric: absolute, in its units (None: 1 % of the baseline)
    footprint_tolerance: float = 0.005  # relative growth of size/params/MACs still accepted
    latency_stat: str = DEFAULT_STAT  # the per-process statistic compared (latency_gate.py)


@dataclass
class Check:
    variant: str
    target: str
    runtime: str
    metric: str
    limit: str  # "<= 2.0" for a budget, "baseline 1.23 ..." against a baseline
    value: str
    verdict: str  # one of VERDICTS
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.verdict == "FAIL"

    def line(self) -> str:
        """One line naming the variant, target/runtime, metric, limit and value."""
        return (f"{self.verdict}: {self.variant} on {self.target}/{self.runtime}: {self.metric} = "
                f"{self.value} (limit {self.limit}){' — ' + self.detail if self.detail else ''}")

    def row(self) -> list[str]:
        return [self.variant, f"{self.target}/{self.runtime}", self.metric, self.limit, self.value,
                self.verdict, self.detail]


@dataclass(frozen=True)
class LatencyOutcome:
    """How one record's latency was judged: by re-measuring (A/B) or on stored statistics."""

    verdict: str
    reference: float | None  # the reference's statistic (ms), geometric mean over rounds
    candidate: float | None
    detail: str
    against: str = "baseline"  # "reference" when the reference run's artifact was measured again


def judged(result: LatencyVerdict, reference: float, against: str, prefix: str = "") -> LatencyOutcome:
    """A LatencyOutcome from a test's verdict: value = reference × ratio."""
    p = "" if math.isnan(result.p) else f", p={result.p:.2g}"
    return LatencyOutcome(result.verdict, reference, reference * result.ratio,
                          f"{prefix}{result.change}{p}, {result.detail}", against)


# --- latency from stored records ----------------------------------------------------------------

def _geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def _latency_sources(entry: dict, stat: str) -> dict[str, Any]:
    """What an entry holds to time against, best first: per-round statistics, raw samples,
    the stored summary of `stat`, its stored median."""
    out: dict[str, Any] = {}
    rounds = round_values(entry.get("latency_rounds"), stat)
    if rounds:
        out["rounds"] = rounds
    samples = [s for s in entry.get("latency_samples_ms") or [] if number(s) is not None and s > 0]
    if samples and len(samples) == len(entry.get("latency_samples_ms") or []):
        out["samples"] = sample_stat(samples, stat)
    summary = entry.get("latency_ms") or {}
    for key in (stat, "p50"):
        value = number(summary.get(key))
        if value is not None and value > 0:
            out.setdefault("summary" if key == stat else "median", value)
    return out


def stored_latency(base: dict, new: dict, options: GateOptions, pooled: tuple[float, int]) -> LatencyOutcome | None:
    """The latency check of one record pair from stored statistics; None when the baseline has
    no latency to keep."""
    stat = options.latency_stat
    have_b, have_n = _latency_sources(base, stat), _latency_sources(new, stat)
    if not have_b:
        return None
    if not have_n:
        return LatencyOutcome("FAIL", _value(have_b), None, "latency missing or NaN in this run")
    common = [k for k in ("rounds", "samples", "summary", "median") if k in have_b and k in have_n]
    if not common:  # e.g. the baseline has only p25 rounds and the run only a p50 (cannot be)
        return LatencyOutcome("unsure", _value(have_b), _value(have_n), "no common latency statistic")
    source = common[0]
    if source == "rounds":
        result = stored_test(have_b["rounds"], have_n["rounds"], *pooled, options.latency_effect, options.alpha)
        return judged(result, _geomean(have_b["rounds"]), "baseline")
    b, n = have_b[source], have_n[source]
    prefix = f"the median (no {stat} stored): " if source == "median" else ""
    return judged(effect_only(b, n, options.latency_effect), b, "baseline", prefix)


def _value(sources: dict[str, Any]) -> float:
    first = next(iter(sources.values()))
    return _geomean(first) if isinstance(first, list) else float(first)


def pooled_by_group(reference: Side, candidate: Side, stat: str) -> dict[tuple[str, str], tuple[float, int]]:
    """(variance, df) of the log per-round statistics within each variant, pooled over every
    variant of each (target, runtime) in both runs: the spread one process adds."""
    groups: dict[tuple[str, str], list[list[float]]] = {}
    for side in (reference, candidate):
        for record in side.records:
            rounds = round_values(record.get("latency_rounds"), stat) if record.get("status", "ok") == "ok" else None
            if rounds:
                groups.setdefault(key_of(record)[1:], []).append(rounds)
    return {group: pooled_log_variance(values) for group, values in groups.items()}


# --- one record against its baseline entry ----------------------------------------------------

def _exporters(metric: str, record: dict) -> tuple[str, ...]:
    """The packages whose versions decide `metric`: params are counted in torch; MACs on the
    float ONNX export; the size is that of the record's artifact format."""
    if metric == "params":
        return ()
    if metric == "macs":
        return ("torch", "onnx", "onnxscript")
    return EXPORTERS.get(str(record.get("format")), tuple(n for names in EXPORTERS.values() for n in names))


def compare_record(base: dict, new: dict, options: GateOptions, reference: Side, candidate: Side,
                   latency: LatencyOutcome | None) -> list[Check]:
    """The checks of one (variant, target, runtime) present in both sides."""
    variant, target, runtime = key_of(new)
    checks: list[Check] = []

    def add(metric: str, limit: str, value: str, verdict: str, detail: str = "") -> None:
        checks.append(Check(variant, target, runtime, metric, limit, value, verdict, detail))

    base_ok, new_ok = base.get("status", "ok") == "ok", new.get("status", "ok") == "ok"
    if not new_ok:
        if base_ok:
            add("status", "ok", "error", "FAIL", str(new.get("error") or "no error message"))
        else:
            add("status", "error in the baseline too", "error", "known", str(new.get("error") or ""))
        return checks
    if not base_ok:
        add("status", f"error in the baseline ({base.get('error') or '?'})", "ok", "better", "fixed")
        return checks
    changed = {}
    for metric in FOOTPRINT:
        b = number(base.get(metric))
        if b is None:
            continue
        n = number(new.get(metric))
        if n is None:
            add(metric, f"baseline {fmt(b)}", fmt(new.get(metric)), "FAIL", "missing or NaN in this run")
            continue
        tol = options.footprint_tolerance
        verdict = "FAIL" if n > b * (1 + tol) else "better" if n < b * (1 - tol) else "ok"
        detail = f"{(n / b - 1) * 100:+.1f}%" if b else ""
        key = tuple(_exporters(metric, new))
        if key not in changed:
            changed[key] = [c for c in exporter_changes(reference, candidate, None) if c.split()[0] in key]
        if changed[key] and verdict != "ok":
            verdict, detail = "unsure", f"{detail}; exporter versions differ ({', '.join(changed[key])}): not comparable"
        add(metric, f"baseline {fmt(b)} +{tol:.1%}", fmt(n), verdict, detail)
    _accuracy(base, new, options, add)
    if latency is not None:
        metric = f"latency_ms.{options.latency_stat}"
        against = latency.against if latency.reference is None else f"{latency.against} {fmt(latency.reference, 4)}"
        limit = f"{against} +{options.latency_effect:.0%} & p<{options.alpha:g}"
        add(metric, limit, fmt(latency.candidate, 4), latency.verdict, latency.detail)
    return checks


def _metric(base: dict, new: dict, options: GateOptions, add) -> None:
    """A task metric that is not accuracy (mAP, MAE, AUC, the user's): worse than the baseline
    run's by more than `metric_drop` (its units; default 1 % of the baseline's value) fails."""
    bm, nm = base.get("metric") or {}, new.get("metric") or {}
    b = number(bm.get("value"))
    if b is None:
        return
    name, higher = bm.get("name", "metric"), bm.get("higher_is_better", True)
    allowed = options.metric_drop if options.metric_drop is not None else abs(b) * 0.01
    limit = f"baseline {b:.4g} {'-' if higher else '+'} {allowed:.3g}"
    n = number(nm.get("value"))
    if n is None:
        add(name, limit, fmt(nm.get("value")), "FAIL", "missing or NaN in this run")
        return
    worse = (b - n) if higher else (n - b)
    add(name, limit, f"{n:.4g}", "FAIL" if worse > allowed + 1e-12 else "ok", f"{n - b:+.4g}")


def _accuracy(base: dict, new: dict, options: GateOptions, add) -> None:
    b = number(base.get("accuracy"))
    if b is None:
        _metric(base, new, options, add)
        return
    limit = f"baseline {b:.4f} - {options.accuracy_drop:g}"
    n = number(new.get("accuracy"))
    if n is None:
        add("accuracy", limit, fmt(new.get("accuracy")), "FAIL", "missing or NaN in this run")
        return
    b_eval, n_eval = number(base.get("n_eval")), number(new.get("n_eval"))
    if b_eval is not None and n_eval is not None and b_eval != n_eval:
        add("accuracy", limit, f"{n:.4f}", "unsure",
            f"measured on {n_eval:.0f} inputs, the baseline on {b_eval:.0f}: not compared")
        return
    verdict = "FAIL" if n < b - options.accuracy_drop - 1e-12 else "ok"
    add("accuracy", limit, f"{n:.4f}", verdict, f"{(n - b) * 100:+.2f} pt")


def check_baseline(reference: Side, candidate: Side, options: GateOptions,
                   measured: dict[tuple[str, str, str], LatencyOutcome] | None = None,
                   stored_why: dict[tuple[str, str, str], str] | None = None) -> list[Check]:
    """Every check of `candidate` against `reference`: records of the reference missing from
    the candidate fail; the candidate's new records are "new" (an error record fails).

    `measured` holds the A/B latency outcomes; other records are judged on stored statistics,
    with `stored_why[key]` (why they were not re-measured) in the detail.
    """
    measured, stored_why = measured or {}, stored_why or {}
    current = candidate.by_key()
    pooled = pooled_by_group(reference, candidate, options.latency_stat)
    checks: list[Check] = []
    for key, base in reference.by_key().items():
        new = current.get(key)
        if new is None:  # a variant that stopped being measured is a lost guarantee
            checks.append(Check(*key, "records", "in baseline", "missing", "FAIL", "not in this run"))
            continue
        latency = measured.get(key)
        if latency is None and new.get("status", "ok") == "ok" and base.get("status", "ok") == "ok":
            latency = stored_latency(base, new, options, pooled.get(key[1:], (math.nan, 0)))
            if latency is not None and key in stored_why and measured:  # mixed modes: say which
                latency = LatencyOutcome(latency.verdict, latency.reference, latency.candidate,
                                         f"{latency.detail} (stored: {stored_why[key]})", latency.against)
        checks.extend(compare_record(base, new, options, reference, candidate, latency))
    known = set(reference.by_key())
    for key, record in current.items():
        if key in known:
            continue
        if record.get("status", "ok") == "ok":
            checks.append(Check(*key, "records", "not in baseline", "ok", "new"))
        else:
            checks.append(Check(*key, "status", "not in baseline", "error", "FAIL",
                                f"new variant, an error record: {record.get('error') or 'no error message'}"))
    return checks

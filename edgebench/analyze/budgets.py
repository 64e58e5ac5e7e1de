"""Budgets for `edgebench check --budget FILE`: hard limits per variant glob, target and runtime.

    >>> budgets = load_budgets("budget.toml")
    >>> [c.line() for c in check_budgets(records, budgets) if c.failed]

A limit that is set must hold; a record that lacks the metric (or has NaN) fails it, and a
budget that matches no record fails too (a renamed variant must not silently pass).
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgebench.analyze import KEY, fmt
from edgebench.analyze.baseline import number
from edgebench.analyze.regressions import Check
from edgebench.config import build, read_toml
from edgebench.errors import ConfigError, did_you_mean

BUDGET_METRICS = {"latency_p50_ms": "latency_ms.p50", "latency_p90_ms": "latency_ms.p90",
                  "latency_p99_ms": "latency_ms.p99", "energy_mj": "energy_mj.value", "metric": "metric.value",
                  "metric_drop": "metric.drop"}


@dataclass(frozen=True)
class Budget:
    """One `[[budget]]` table; every limit is optional, a limit that is set must hold."""

    variant: str = "*"  # glob on variant names
    target: str | None = None  # glob; all targets when absent
    runtime: str | None = None  # glob; all runtimes when absent
    max_size_bytes: int | None = None
    max_size_gzip_bytes: int | None = None
    max_params: int | None = None
    max_macs: int | None = None
    max_latency_p50_ms: float | None = None
    max_latency_p90_ms: float | None = None
    max_latency_p99_ms: float | None = None
    max_peak_rss_mb: float | None = None
    max_energy_mj: float | None = None
    min_accuracy: float | None = None
    min_agreement: float | None = None
    # The task's metric (mAP, MAE, AUC, the user's own; accuracy for a classifier), in its units:
    # a floor or a ceiling on its value, and the most it may lose against the baseline measured
    # on the same target, runtime and inputs (worse by `max_metric_drop`, whichever way is better).
    min_metric: float | None = None
    max_metric: float | None = None
    max_metric_drop: float | None = None

    def limits(self) -> list[tuple[str, str, float]]:
        """(record metric, 'max'|'min', limit) for each limit that is set."""
        out = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None or not f.name.startswith(("max_", "min_")):
                continue
            kind, name = f.name[:3], f.name[4:]
            out.append((BUDGET_METRICS.get(name, name), kind, float(value)))
        return out

    def matches(self, record: dict) -> bool:
        return (fnmatch.fnmatchcase(str(record.get("variant")), self.variant)
                and (self.target is None or fnmatch.fnmatchcase(str(record.get("target")), self.target))
                and (self.runtime is None or fnmatch.fnmatchcase(str(record.get("runtime")), self.runtime)))


def load_budgets(path: str | Path) -> list[Budget]:
    """The `[[budget]]` tables of a TOML file; anything malformed is a ConfigError (exit 2)."""
    try:
        raw = read_toml(path, "budget file")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"budget file {path}: cannot read it ({exc})") from None
    for key in raw:
        if key != "budget":
            raise ConfigError(f"{path}: unknown key {key!r}{did_you_mean(key, ['budget'])}")
    tables = raw.get("budget")
    if not isinstance(tables, list) or not tables:
        raise ConfigError(f"{path}: no [[budget]] tables")
    return [build(Budget, t, f"{path}: budget[{i}]") for i, t in enumerate(tables)]


def _get(record: dict, metric: str) -> Any:
    if metric == "metric.drop":  # how much worse than the baseline, in the metric's units
        m = record.get("metric") or {}
        if record.get("variant") == "baseline" and m.get("value") is not None:
            return 0.0
        if m.get("delta") is None:
            return None
        return -m["delta"] if m.get("higher_is_better", True) else m["delta"]
    value: Any = record
    for part in metric.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def check_budgets(records: Sequence[dict], budgets: Sequence[Budget]) -> list[Check]:
    """One check per (record, limit) of each budget that matches it."""
    checks = []
    for i, budget in enumerate(budgets):
        matched = [r for r in records if budget.matches(r)]
        if not matched:  # a renamed variant must not silently pass the gate
            where = f"variant {budget.variant!r}" + (f", target {budget.target!r}" if budget.target else "")
            checks.append(Check(budget.variant, budget.target or "*", budget.runtime or "*", "records",
                                ">= 1", "0", "FAIL", f"budget[{i}] matches no record ({where})"))
            continue
        for record in matched:
            variant, target, runtime = (str(record.get(k)) for k in KEY)
            if record.get("status") != "ok":
                checks.append(Check(variant, target, runtime, "status", "ok", str(record.get("status")),
                                    "FAIL", str(record.get("error") or "")))
                continue
            for metric, kind, limit in budget.limits():
                value = number(_get(record, metric))
                bad = value is None or (value > limit if kind == "max" else value < limit)
                checks.append(Check(variant, target, runtime, metric,
                                    f"{'<=' if kind == 'max' else '>='} {fmt(limit, 4)}",
                                    fmt(value, 4), "FAIL" if bad else "ok",
                                    "missing or NaN in this run" if value is None else f"budget[{i}]"))
    return checks

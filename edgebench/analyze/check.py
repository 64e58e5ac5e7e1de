"""`edgebench check RUN_DIR`: the regression gate. Exit 0 pass, 1 regression, 2 bad input.

    edgebench check results/RUN --budget budget.toml --baseline baselines/main.json

Two kinds of check:

- **budgets** (`--budget FILE`, `[[budget]]` tables): hard limits per variant glob and target.
- **a baseline** (`--baseline` a JSON file written by `--save-baseline`, or an earlier run):
  footprint (size_bytes, params, macs) must not grow beyond a small tolerance; accuracy may
  drop at most `--accuracy-drop`; latency (see latency_gate.py) fails only when it is
  significantly slower AND by at least a minimum effect. Every variant but the reference
  ("baseline", `--reference`) is judged by its latency *relative to the same run's reference*
  on the same target and runtime (`--latency-effect`, 10%), so a whole run slowed by noisy
  neighbours does not fail; the reference itself, and a variant whose run lacks the reference,
  is judged on absolute latency with a larger effect (`--latency-effect-absolute`, 30%).

    >>> checks = compare_records(baseline_record, new_record, GateOptions(), base_ref, new_ref)
    >>> [c.line() for c in checks if c.failed]
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import json
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgebench.analyze import KEY, fmt, format_table, read_manifest, read_records
from edgebench.analyze.latency_gate import (
    LATENCY_STATS,
    compact_samples,
    latency_checks,
    latency_stat,
    latency_test,
    relative_test,
)
from edgebench.config import build, read_toml
from edgebench.errors import ConfigError, EdgebenchError, did_you_mean

HELP = "regression gate: check a run against budgets and/or a baseline (exit 1 on regression)"
BASELINE_KIND = "edgebench-baseline"
FOOTPRINT = ("size_bytes", "params", "macs")
__all__ = ["LATENCY_STATS", "compact_samples", "latency_stat", "latency_test", "relative_test", "latency_checks"]  # re-exported


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

    def limits(self) -> list[tuple[str, str, float]]:
        """(record metric, 'max'|'min', limit) for each limit that is set."""
        out = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None or not f.name.startswith(("max_", "min_")):
                continue
            kind, name = f.name[:3], f.name[4:]
            metric = BUDGET_METRICS.get(name, name)
            out.append((metric, kind, float(value)))
        return out

    def matches(self, record: dict) -> bool:
        return (fnmatch.fnmatchcase(str(record.get("variant")), self.variant)
                and (self.target is None or fnmatch.fnmatchcase(str(record.get("target")), self.target))
                and (self.runtime is None or fnmatch.fnmatchcase(str(record.get("runtime")), self.runtime)))


BUDGET_METRICS = {"latency_p50_ms": "latency_ms.p50", "latency_p90_ms": "latency_ms.p90",
                  "latency_p99_ms": "latency_ms.p99", "energy_mj": "energy_mj.value"}


@dataclass(frozen=True)
class GateOptions:
    # A variant's latency relative to its run's reference must grow at least this much to fail.
    latency_effect: float = 0.10
    # The reference's own latency (absolute) must grow at least this much: nothing cancels a
    # whole-run shift there, and on a shared 2-core VM whole runs shift by up to ~25% at the
    # median (benchmarks/gate_noise.py), so 30% sits above that noise. It still catches a
    # runtime upgrade or build flag that slows everything by a third or more.
    latency_effect_absolute: float = 0.30
    alpha: float = 0.01  # and the one-sided test must reject "not slower" at this level
    accuracy_drop: float = 0.01  # absolute (0.01 = one percentage point)
    footprint_tolerance: float = 0.005  # relative growth of size/params/MACs still accepted
    # Which statistic the effect is measured on. Neighbours only ever slow a measurement down,
    # in bursts of a second or so that hit one runner process, not the whole run: the median
    # of a hit process moves by up to 40%, its 25th percentile, over samples pooled from
    # several interleaved processes, by under 4% (benchmarks/gate_noise.py). "p50" and "min"
    # (pytest-benchmark's choice; one outlier moves it) remain available.
    latency_stat: str = "p25"
    reference: str = "baseline"  # the variant every other one is timed against, per run


@dataclass
class Check:
    variant: str
    target: str
    runtime: str
    metric: str
    limit: str  # "<= 2.0" for a budget, "baseline 1.23" for a baseline
    value: str
    verdict: str  # "ok" | "FAIL" | "better" | "new" | "skip"
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.verdict == "FAIL"

    def line(self) -> str:
        """One line naming the variant, target, metric, limit and value."""
        return (f"{self.verdict}: {self.variant} on {self.target}/{self.runtime}: {self.metric} = "
                f"{self.value} (limit {self.limit}){' — ' + self.detail if self.detail else ''}")

    def row(self) -> list[str]:
        return [self.variant, f"{self.target}/{self.runtime}", self.metric, self.limit, self.value,
                self.verdict, self.detail]


HEADERS = ["variant", "target/runtime", "metric", "limit / baseline", "value", "verdict", "detail"]


def _get(record: dict, metric: str) -> Any:
    value: Any = record
    for part in metric.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _num(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


# --- budgets -------------------------------------------------------------------------------

def load_budgets(path: str | Path) -> list[Budget]:
    raw = read_toml(path, "budget file")
    for key in raw:
        if key != "budget":
            raise ConfigError(f"{path}: unknown key {key!r}{did_you_mean(key, ['budget'])}")
    tables = raw.get("budget")
    if not isinstance(tables, list) or not tables:
        raise ConfigError(f"{path}: no [[budget]] tables")
    return [build(Budget, t, f"{path}: budget[{i}]") for i, t in enumerate(tables)]


def check_budgets(records: Sequence[dict], budgets: Sequence[Budget]) -> list[Check]:
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
                value = _num(_get(record, metric))
                bad = value is None or (value > limit if kind == "max" else value < limit)
                checks.append(Check(variant, target, runtime, metric,
                                    f"{'<=' if kind == 'max' else '>='} {fmt(limit, 4)}",
                                    fmt(value, 4), "FAIL" if bad else "ok",
                                    "not measured" if value is None else f"budget[{i}]"))
    return checks


# --- baselines -----------------------------------------------------------------------------

def baseline_entry(record: dict) -> dict:
    """What a committed baseline keeps of one ok record."""
    entry = {k: record.get(k) for k in (*KEY, *FOOTPRINT, "size_gzip_bytes", "accuracy", "agreement")}
    latency = record.get("latency_ms") or {}
    entry["latency_ms"] = {k: latency.get(k) for k in ("p50", "p90", "min", "n")}
    entry["latency_samples_ms"] = compact_samples(record.get("latency_samples_ms"))
    entry["machine"] = {k: (record.get("machine") or {}).get(k) for k in ("arch", "cpu", "runtime_version")}
    return entry


def save_baseline(run_dir: str | Path, path: str | Path) -> int:
    """Write the baseline JSON of a run's ok records; return how many entries it holds."""
    records = [r for r in read_records(run_dir) if r.get("status") == "ok"]
    manifest = read_manifest(run_dir)
    doc = {"kind": BASELINE_KIND, "schema_version": 1, "run_id": manifest.get("run_id"),
           "git": manifest.get("git"), "saved": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "entries": [baseline_entry(r) for r in records]}
    Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
    Path(path).expanduser().write_text(json.dumps(doc, indent=1) + "\n")
    return len(records)


def load_baseline(source: str | Path) -> list[dict]:
    """Baseline entries from a --save-baseline JSON file, a run dir or a records.jsonl."""
    path = Path(source).expanduser()
    if path.is_file() and path.suffix == ".json":
        try:
            doc = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"baseline {path}: not valid JSON ({exc.msg})") from None
        if not isinstance(doc, dict) or doc.get("kind") != BASELINE_KIND:
            raise ConfigError(f"baseline {path}: not an edgebench baseline (write one with --save-baseline)")
        return list(doc.get("entries") or [])
    if not path.exists():
        raise ConfigError(f"baseline not found: {path}")
    return [baseline_entry(r) for r in read_records(path) if r.get("status") == "ok"]


def compare_records(base: dict, new: dict, options: GateOptions = GateOptions(),
                    base_ref: dict | None = None, new_ref: dict | None = None) -> list[Check]:
    """Checks of one (variant, target, runtime): `base` and `new` are records or baseline entries.

    `base_ref` / `new_ref` are the reference variant's on the same target and runtime in each
    run; without them latency is judged on absolute values (the larger effect).
    """
    variant, target, runtime = (str(new.get(k)) for k in KEY)
    checks = []

    def add(metric: str, limit: str, value: str, verdict: str, detail: str = "") -> None:
        checks.append(Check(variant, target, runtime, metric, limit, value, verdict, detail))

    if new.get("status", "ok") != "ok":
        add("status", "ok", str(new.get("status")), "FAIL", str(new.get("error") or ""))
        return checks
    for metric in FOOTPRINT:
        b, n = _num(base.get(metric)), _num(new.get(metric))
        if b is None or n is None:
            continue
        tol = options.footprint_tolerance
        verdict = "FAIL" if n > b * (1 + tol) else "better" if n < b * (1 - tol) else "ok"
        add(metric, f"baseline {fmt(b)}", fmt(n), verdict, f"{(n / b - 1) * 100:+.1f}%" if b else "")
    b, n = _num(base.get("accuracy")), _num(new.get("accuracy"))
    if b is not None and n is not None:
        verdict = "FAIL" if n < b - options.accuracy_drop - 1e-12 else "ok"
        add("accuracy", f"baseline {b:.4f} - {options.accuracy_drop:g}", f"{n:.4f}", verdict,
            f"{(n - b) * 100:+.2f} pt")
    for row in latency_checks(base, new, options, base_ref, new_ref):
        add(*row)
    return checks


def check_baseline(records: Sequence[dict], entries: Iterable[dict], options: GateOptions) -> list[Check]:
    entries = list(entries)
    current = {tuple(str(r.get(k)) for k in KEY): r for r in records}

    def references(items: Iterable[dict]) -> dict[tuple[str, str], dict]:
        """The reference variant of each (target, runtime): what the others are timed against."""
        return {(str(i.get("target")), str(i.get("runtime"))): i for i in items
                if str(i.get("variant")) == options.reference and i.get("status", "ok") == "ok"}

    base_refs, new_refs = references(entries), references(current.values())
    checks, seen = [], set()
    for entry in entries:
        key = tuple(str(entry.get(k)) for k in KEY)
        seen.add(key)
        if key not in current:  # a variant that stopped being measured is a lost guarantee
            checks.append(Check(*key, "records", "in baseline", "missing", "FAIL", "not in this run"))
            continue
        where = key[1:]
        checks.extend(compare_records(entry, current[key], options, base_refs.get(where), new_refs.get(where)))
    for key, record in current.items():
        if key not in seen:
            checks.append(Check(*key, "records", "not in baseline", str(record.get("status")), "new"))
    return checks


def machine_note(records: Sequence[dict], entries: Sequence[dict]) -> str | None:
    """A warning when latency is compared across different CPUs or runtime versions."""
    def facts(items: Iterable[dict]) -> set:
        return {((i.get("machine") or {}).get("cpu"), (i.get("machine") or {}).get("runtime_version"))
                for i in items if i.get("machine")}

    a, b = facts(entries), facts(r for r in records if r.get("status") == "ok")
    if a and b and a != b:
        return f"note: baseline machine {sorted(a, key=str)} differs from this run's {sorted(b, key=str)}"
    return None


# --- command line --------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = GateOptions()
    parser.add_argument("run_dir", help="a results/<run-id>/ folder (or its records.jsonl)")
    parser.add_argument("--baseline", help="a baseline JSON (from --save-baseline) or an earlier run dir")
    parser.add_argument("--budget", help="a budget TOML file with [[budget]] tables")
    parser.add_argument("--save-baseline", metavar="PATH", help="write this run as a baseline JSON")
    parser.add_argument("--markdown", metavar="PATH", help="also write the table as markdown (CI summary)")
    parser.add_argument("--latency-effect", type=float, default=d.latency_effect,
                        help="growth of a variant's latency relative to its run's reference needed "
                             "to fail (default %(default)s)")
    parser.add_argument("--latency-effect-absolute", type=float, default=d.latency_effect_absolute,
                        help="growth of absolute latency needed to fail, for the reference itself "
                             "(whole runs shift on shared machines; default %(default)s)")
    parser.add_argument("--reference", default=d.reference,
                        help="variant the others are timed against in each run (default %(default)s)")
    parser.add_argument("--alpha", type=float, default=d.alpha,
                        help="significance level of the one-sided latency tests (default %(default)s)")
    parser.add_argument("--accuracy-drop", type=float, default=d.accuracy_drop,
                        help="allowed absolute accuracy drop vs the baseline (default %(default)s)")
    parser.add_argument("--footprint-tolerance", type=float, default=d.footprint_tolerance,
                        help="allowed relative growth of size/params/MACs (default %(default)s)")
    parser.add_argument("--latency-stat", choices=LATENCY_STATS, default=d.latency_stat,
                        help="statistic the latency effect is measured on (default %(default)s: a low "
                             "percentile ignores bursts from noisy neighbours)")


def main(args: argparse.Namespace) -> int:
    run = Path(args.run_dir).expanduser()
    if not run.exists():
        raise EdgebenchError(f"run not found: {run}")
    if not (args.baseline or args.budget or args.save_baseline):
        raise ConfigError("nothing to check: give --baseline and/or --budget (or --save-baseline PATH)")
    options = GateOptions(latency_effect=args.latency_effect,
                          latency_effect_absolute=args.latency_effect_absolute, alpha=args.alpha,
                          accuracy_drop=args.accuracy_drop, footprint_tolerance=args.footprint_tolerance,
                          latency_stat=args.latency_stat, reference=args.reference)
    budgets = load_budgets(args.budget) if args.budget else []  # bad input fails before any work
    entries = load_baseline(args.baseline) if args.baseline else None
    records = read_records(run)
    say = (lambda *a: None) if getattr(args, "json", False) else print
    if args.save_baseline:
        n = save_baseline(run, args.save_baseline)
        say(f"saved a baseline of {n} records to {args.save_baseline}")
    checks = check_budgets(records, budgets)
    notes = []
    if entries is not None:
        checks += check_baseline(records, entries, options)
        notes = [n for n in [machine_note(records, entries)] if n]
    failed = [c for c in checks if c.failed]
    summary = f"{len(checks)} checks, {len(failed)} failed" + (" — REGRESSION" if failed else " — pass")
    if getattr(args, "json", False):
        print(json.dumps({"passed": not failed, "checks": [dataclasses.asdict(c) for c in checks],
                          "notes": notes}))
    elif checks:
        shown = failed if getattr(args, "quiet", False) else checks
        say(format_table([c.row() for c in shown], HEADERS))
    for line in notes + [c.line() for c in failed] + ([summary] if checks else []):
        say(line)
    if args.markdown:
        body = format_table([c.row() for c in checks], HEADERS, markdown=True) if checks else "no checks"
        text = f"### edgebench check: {summary}\n\n{body}\n" + "".join(f"\n{n}\n" for n in notes)
        Path(args.markdown).expanduser().write_text(text)
    return 1 if failed else 0

"""Read a run's records into one table and find the Pareto front.

    >>> df = load("results/20261128T181500Z-3fa9c1")          # or several dirs / .jsonl files
    >>> df["on_front"] = pareto_front(df, ["accuracy", "size_bytes", "latency_ms.p50"])
    >>> df.loc[df.on_front, ["variant", "target", "runtime", "latency_ms.p50"]]

pandas is imported inside the functions so that `import edgebench.analyze` (and the CLI) stays
fast.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgebench.errors import EdgebenchError, did_you_mean

if TYPE_CHECKING:
    import pandas as pd

# The one table of metric directions: +1 higher is better, -1 lower is better.
DIRECTIONS: dict[str, int] = {
    "accuracy": +1,
    "agreement": +1,
    "size_bytes": -1,
    "size_gzip_bytes": -1,
    "weight_bytes": -1,
    "params": -1,
    "nonzero_params": -1,
    "macs": -1,
    "latency_ms.p50": -1,
    "latency_ms.p90": -1,
    "latency_ms.p99": -1,
    "latency_ms.mean": -1,
    "peak_rss_mb": -1,
    "energy_mj.value": -1,
    "logit_rel_err": -1,
}
# What "the front" means when nobody says otherwise: what a deployer trades against accuracy.
FRONT_METRICS = ("accuracy", "size_bytes", "latency_ms.p50", "peak_rss_mb", "energy_mj.value")
GROUP = ("target", "runtime")
ENERGY_TEXT = ("energy_mj.model", "energy_mj.scope", "energy_mj.source", "energy_mj.precision")
KEY = ("variant", "target", "runtime")
# Columns every loaded table has, even when no record carries them (e.g. a run of errors).
COLUMNS = (
    "run_id", "variant", "parent", "method", "steps", "target", "runtime", "format", "status",
    "error", "emulated", "precision", "compute_precision", "size_bytes", "size_gzip_bytes", "weight_bytes", "params",
    "nonzero_params", "macs", "latency_ms.p50", "latency_ms.p90", "latency_ms.p99",
    "latency_ms.mean", "latency_ms.n", "latency_samples_ms", "latency_p50_ci95", "latency_ratio.value",
    "latency_ratio.ci95", "latency_ratio.significant", "load_s", "first_inference_ms",
    "rss_after_load_mb", "peak_rss_mb", "peak_rss_eval_mb", "cpu_time_s", "energy_mj.value",
    "energy_mj.model", "accuracy", "n_eval", "accuracy_ci95", "accuracy_delta_p", "agreement", "logit_rel_err",
    "metric.name", "metric.value", "metric.ci95", "metric.delta", "metric.delta_ci95", "metric.delta_p",
    "machine.arch", "machine.cpu", "machine.runtime_version", "machine.threads",
)  # fmt: skip


@dataclass(frozen=True)
class Quality:
    """What a run's variants are judged by: top-1 accuracy for a classifier (in %, with its
    Wilson interval), else the task's metric (`metric.value`: mAP, MAE, AUC, the user's own)
    with its bootstrap interval and direction."""

    column: str  # the DataFrame column of the value
    name: str  # for axes and headers
    direction: int  # +1 higher is better, -1 lower
    percent: bool  # shown x100 with a % sign
    ci_column: str
    delta_column: str  # the paired difference from the baseline, in the metric's units
    p_column: str

    def label(self) -> str:
        return f"{self.title()} (%)" if self.percent else self.title()

    def title(self) -> str:
        """The metric as people write it: 'mAP@0.5' for map50, 'AUC' for auc."""
        return METRIC_TITLES.get(self.name, self.name)

    def scale(self) -> float:
        return 100.0 if self.percent else 1.0


ACCURACY = Quality("accuracy", "accuracy", +1, True, "accuracy_ci95", "metric.delta", "accuracy_delta_p")
METRIC_TITLES = {"map50": "mAP@0.5", "map50_95": "mAP@0.5:0.95", "mae": "MAE", "auc": "AUC"}


def quality(df: pd.DataFrame) -> Quality:
    """The Quality of the runs in `df`: accuracy when records have it, else their task metric
    (records carry `metric {name, higher_is_better}`), else agreement with the baseline."""
    if "accuracy" in df.columns and df["accuracy"].notna().any():
        return ACCURACY
    if "metric.value" in df.columns and df["metric.value"].notna().any():
        names = df["metric.name"].dropna()
        higher = df["metric.higher_is_better"].dropna() if "metric.higher_is_better" in df.columns else []
        direction = +1 if (len(higher) == 0 or bool(higher.iloc[0])) else -1
        return Quality("metric.value", str(names.iloc[0]) if len(names) else "metric", direction, False,
                       "metric.ci95", "metric.delta", "metric.delta_p")
    return Quality("agreement", "top-1 agreement with baseline", +1, True, "", "", "")


def front_metrics(df: pd.DataFrame) -> tuple[list[str], dict[str, int]]:
    """The metrics of the Pareto front for `df` (its Quality first) and their directions."""
    q = quality(df)
    metrics = available_metrics(df, (q.column, *FRONT_METRICS[1:]))
    return metrics, {q.column: q.direction}


def direction(metric: str) -> int:
    """+1 if higher `metric` is better, -1 if lower is better."""
    if metric not in DIRECTIONS:
        raise EdgebenchError(f"no direction known for metric {metric!r}{did_you_mean(metric, DIRECTIONS)}")
    return DIRECTIONS[metric]


def records_path(run: str | Path) -> Path:
    """The records.jsonl of a run directory, or the path itself if it is a file."""
    path = Path(run).expanduser()
    if path.is_dir():
        path = path / "records.jsonl"
    if not path.is_file():
        raise EdgebenchError(f"no records found: {path} does not exist")
    return path


def read_records(run: str | Path) -> list[dict]:
    """The records of one run (a directory or a records.jsonl path), the latest per key."""
    from edgebench.measure import records

    return records.read_records(records_path(run))


def read_manifest(run: str | Path) -> dict:
    """The run's manifest.json, or {} when there is none (e.g. a bare records.jsonl)."""
    path = Path(run).expanduser()
    manifest = (path if path.is_dir() else path.parent) / "manifest.json"
    try:
        return json.loads(manifest.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


# The parameter that says which kind of a method a step is: shown even at its default.
ALWAYS_SHOWN = ("scheme", "kind", "mode", "arch")


def main_method(steps: Any) -> str:
    """The method that names a variant's family in charts: its first step; 'baseline' if none."""
    if isinstance(steps, list) and steps and isinstance(steps[0], dict):
        return str(steps[0].get("method", "unknown"))
    return "baseline"


def describe_steps(steps: Any) -> str:
    """'prune(ratio=0.5) → quantize(scheme=int8_static)' for tables."""
    if not isinstance(steps, list) or not steps:
        return "—"
    parts = []
    for step in steps:
        defaults = _step_defaults(step.get("method"))
        # Only what differs from the method's defaults: the table stays readable, and
        # variant.json keeps every parameter.
        params = ", ".join(f"{k}={v}" for k, v in step.items()
                           if k != "method" and (k in ALWAYS_SHOWN or defaults.get(k, object()) != v))
        parts.append(f"{step.get('method', '?')}({params})")
    return " → ".join(parts)


def _step_defaults(method: Any) -> dict:
    import dataclasses

    from edgebench.compress import METHODS  # declarations only: no torch

    if method not in METHODS:
        return {}
    cls = METHODS.get(method)
    defaults = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            defaults[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            defaults[f.name] = f.default_factory()
    return defaults


def flatten(record: dict, prefix: str = "") -> dict:
    """Nested dicts become dotted keys (`latency_ms.p50`); lists stay as they are."""
    out: dict = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def load(runs: str | Path | Iterable[str | Path]) -> pd.DataFrame:
    """One row per record from one or several runs (directories or records.jsonl paths).

    Nested fields are flattened (`latency_ms.p50`, `energy_mj.value`, `machine.arch`); the raw
    latency samples stay a list column; `method` (the first step's method, or 'baseline') and
    `run_dir` are added. Rows of several runs are told apart by `run_id`.
    """
    import pandas as pd

    if isinstance(runs, (str, Path)):
        runs = [runs]
    rows = []
    for run in runs:
        path = records_path(run)
        fallback_id = read_manifest(run).get("run_id") or path.parent.name
        for record in read_records(path):
            row = flatten(record)
            row.setdefault("run_id", fallback_id)
            row["run_dir"] = str(path.parent)
            row["method"] = main_method(record.get("steps"))
            rows.append(row)
    df = pd.DataFrame(rows)
    for column in COLUMNS:
        if column not in df.columns:
            df[column] = None
    df["emulated"] = df["emulated"].fillna(False).astype(bool)
    df["status"] = df["status"].fillna("error")
    for column in df.columns:
        if column in DIRECTIONS or column.startswith(("latency_ms.", "energy_mj.")) or column in (
                "metric.value", "metric.delta", "metric.delta_p", "latency_ratio.value"):
            if column not in ENERGY_TEXT and df[column].dtype == object:
                df[column] = pd.to_numeric(df[column], errors="coerce")
    return df.reset_index(drop=True)


def pareto_front(
    df: pd.DataFrame,
    metrics: Sequence[str] = FRONT_METRICS,
    by: Sequence[str] | None = GROUP,
    directions: dict[str, int] | None = None,
    intervals: dict[str, tuple[str, str]] | None = None,
) -> pd.Series:
    """True for rows no other row of the same (target, runtime) group dominates.

    A row dominates another when it is at least as good on every metric and better on one, so
    rows equal on all metrics do not dominate each other (duplicates of a front point are all
    on the front). Rows with status other than "ok" or a missing metric are never on it.
    `directions` overrides the DIRECTIONS table (e.g. for a metric of your own). `intervals`
    maps a metric to its (low, high) columns: on it a row is better only when its interval lies
    wholly on the better side of the other's, and overlapping intervals are a tie
    (edgebench.analyze.intervals: latency from the ratio to the baseline).
    """
    import numpy as np
    import pandas as pd

    table = {**DIRECTIONS, **(directions or {})}
    for metric in metrics:
        if metric not in table:
            raise EdgebenchError(f"no direction known for metric {metric!r}{did_you_mean(metric, table)}")
    front = pd.Series(False, index=df.index, name="on_front")
    if df.empty or not metrics:
        return front
    values = df[list(metrics)].apply(pd.to_numeric, errors="coerce")
    ok = values.notna().all(axis=1)
    if "status" in df.columns:
        ok &= df["status"].eq("ok")
    # Every metric turned into "lower is better"; an interval's ends too (a point where it has none).
    sign = -np.array([table[m] for m in metrics], dtype=float)
    cost = values.to_numpy(dtype=float) * sign
    low, high = cost.copy(), cost.copy()
    for k, metric in enumerate(metrics):
        if metric in (intervals or {}):
            ends = [pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=float) * sign[k] for c in intervals[metric]]
            a, b = np.fmin(*ends), np.fmax(*ends)
            low[:, k], high[:, k] = np.where(np.isnan(a), cost[:, k], a), np.where(np.isnan(b), cost[:, k], b)
    groups = df[ok].groupby(list(by), dropna=False).indices if by else {None: np.flatnonzero(ok)}
    ok_positions = np.flatnonzero(ok)
    for positions in groups.values():
        rows = ok_positions[positions] if by else positions
        front.iloc[rows] = _non_dominated(low[rows], high[rows])
    return front


def _non_dominated(low: Any, high: Any = None) -> Any:
    """Boolean mask of the rows (n × m, lower is better) that nothing dominates; each value an
    interval [low, high] (a point when `high` is None). Row i dominates row j when on every
    metric it is not worse (low_i <= high_j) and on one it is better (high_i < low_j)."""
    import numpy as np

    high = low if high is None else high
    n = len(low)
    dominated = np.zeros(n, dtype=bool)
    step = max(1, 2_000_000 // max(n * low.shape[1], 1))  # bound the n × n × m temporaries
    for start in range(0, n, step):
        no_worse = (low[start : start + step, None, :] <= high[None, :, :]).all(axis=2)
        better = (high[start : start + step, None, :] < low[None, :, :]).any(axis=2)
        dominated |= (no_worse & better).any(axis=0)
    return ~dominated


def energy_of(row: Any) -> dict:
    """The `energy_mj` dict of a flattened row (for `edgebench.measure.energy.label`)."""
    return {k.split(".", 1)[1]: v for k, v in row.items() if isinstance(k, str) and k.startswith("energy_mj.")}


def available_metrics(df: pd.DataFrame, metrics: Sequence[str] = FRONT_METRICS) -> list[str]:
    """The metrics some ok row has a value for (a run without energy still gets a front)."""
    ok = df[df["status"].eq("ok")] if "status" in df.columns else df
    return [m for m in metrics if m in ok.columns and ok[m].notna().any()]


def best_variants(df: pd.DataFrame, max_drop: float | None = None) -> pd.DataFrame:
    """Per (target, runtime): the fastest (with the variants tied with it, where `df` has
    edgebench.analyze.intervals.BOUNDS) and the smallest ok variant whose quality is within
    `max_drop` of the baseline's (accuracy: 0.01 = one point by default; another metric: its
    own units, default 1 % of the baseline's value; all ok variants without a baseline)."""
    import pandas as pd

    q = quality(df)
    rows = []
    for (target, runtime), group in df[df["status"].eq("ok")].groupby(list(GROUP)):
        base = pd.to_numeric(group.loc[group["variant"].eq("baseline"), q.column], errors="coerce").dropna()
        keep = group
        if len(base) and group[q.column].notna().any():
            drop = max_drop if max_drop is not None else (0.01 if q.percent else abs(base.iloc[0]) * 0.01)
            values = pd.to_numeric(group[q.column], errors="coerce")
            keep = group[q.direction * (values - base.iloc[0]) >= -drop - 1e-12]
        row = {"target": target, "runtime": runtime, "fastest": None, "smallest": None}
        if keep["latency_ms.p50"].notna().any():
            from edgebench.analyze.intervals import tied_fastest

            fastest = keep["latency_ms.p50"].idxmin()
            tied = tied_fastest(keep, fastest)  # within the intervals: as fast, as far as anyone can tell
            row["fastest"] = keep.loc[fastest, "variant"] + (
                f" (tied: {', '.join(tied[:3])}{f' +{len(tied) - 3}' if len(tied) > 3 else ''})" if tied else "")
        if keep["size_bytes"].notna().any():
            row["smallest"] = keep.loc[keep["size_bytes"].idxmin(), "variant"]
        rows.append(row)
    return pd.DataFrame(rows, columns=["target", "runtime", "fastest", "smallest"])


def format_table(rows: Sequence[Sequence[Any]], headers: Sequence[str], markdown: bool = False) -> str:
    """A plain-text (aligned) or GitHub-markdown table of already-formatted cells."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    if markdown:
        def esc(c: str) -> str:
            return c.replace("|", "\\|").replace("\n", " ")

        lines = ["| " + " | ".join(esc(c) for c in cells[0]) + " |",
                 "|" + "|".join("---" for _ in headers) + "|"]
        lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in cells[1:]]
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def fmt(value: Any, digits: int = 3) -> str:
    """A number for a table: '—' for missing, thousands separators for big integers."""
    import math

    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        if float(value).is_integer() and abs(value) >= 1000:
            return f"{int(value):,}"
        return f"{value:.{digits}g}" if abs(value) < 1e6 else f"{value:,.0f}"
    return str(value)

"""Latency with its interval where people look: the table's `× baseline`, the front's ties.

A record's `latency_ratio` (edgebench.measure.latency) says how much slower or faster a variant
is than its target/runtime's baseline, timed beside it, with a 95 % interval over rounds. Two
latencies whose intervals overlap are a tie: no table marks one faster, and the Pareto front
does not call either dominated on that metric (edgebench.analyze.pareto_front's `intervals`).

    >>> ratio_text({"value": 0.562, "ci95": [0.551, 0.574], "significant": True})
    '0.562 [0.551–0.574]'
    >>> ratio_text({"value": 1.01, "ci95": [0.98, 1.04], "significant": False})
    '1.01 [0.980–1.04] n.s.'
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

LATENCY = "latency_ms.p50"
BOUNDS = ("latency_ms.p50_low", "latency_ms.p50_high")  # columns added by latency_bounds
NOTE = ("× baseline: p50 divided by the baseline's on the same target and runtime, both timed in the same runner "
        "processes in alternating blocks; [95% interval over rounds]; n.s.: the interval holds 1.0, treat it as no "
        "difference. Latencies whose intervals overlap are ties: the Pareto front does not rank them.")


def ratio_text(ratio: Any) -> str:
    """The table cell of a `latency_ratio` (its flattened value, interval and significance, or
    the dict): '0.562 [0.551–0.574]', '… n.s.' inside the noise, '1 (reference)' for the
    baseline, '—' without one."""
    if not isinstance(ratio, dict) or not _number(ratio.get("value")):
        return "—"
    if ratio.get("reference"):
        return "1 (reference)"
    ci = ratio.get("ci95")
    text = f"{ratio['value']:#.3g}"
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(_number(c) for c in ci):
        text += f" [{ci[0]:#.3g}–{ci[1]:#.3g}]"
    else:
        text += " (1 round: no interval)"
    unpaired = " apart" if ratio.get("paired") is False else ""
    return text + (" n.s." if ratio.get("significant") is False else "") + unpaired


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def row_ratio(row: Any) -> dict | None:
    """The `latency_ratio` dict of a flattened DataFrame row (None without one)."""
    value = row.get("latency_ratio.value")
    if not _number(value):
        return None
    return {"value": value, "ci95": row.get("latency_ratio.ci95"), "significant": row.get("latency_ratio.significant"),
            "reference": row.get("latency_ratio.reference") is True, "paired": row.get("latency_ratio.paired")}


def latency_bounds(df: pd.DataFrame) -> pd.DataFrame:
    """`df` with BOUNDS: each row's p50 interval for comparisons, in ms — the baseline's p50 (of
    the same target/runtime) times the ratio's 95 % interval, the baseline's own [p50, p50]; the
    bare p50 where a row has no interval (then only a strict difference counts)."""
    import numpy as np

    df = df.copy()
    p50 = df[LATENCY].astype(float) if LATENCY in df.columns else np.nan
    low, high = np.array(p50, dtype=float, copy=True), np.array(p50, dtype=float, copy=True)
    base = {}
    if "variant" in df.columns:
        for _, row in df[df["variant"].eq("baseline") & df["status"].eq("ok")].iterrows():
            base.setdefault((row["target"], row["runtime"]), row[LATENCY])
    for i, (_, row) in enumerate(df.iterrows()):
        ratio, scale = row_ratio(row), base.get((row.get("target"), row.get("runtime")))
        ci = ratio and ratio["ci95"]
        if ratio and isinstance(ci, (list, tuple)) and len(ci) == 2 and _number(scale) and all(_number(c) for c in ci):
            # The point stays the record's p50; the interval is the ratio's, around it.
            low[i], high[i] = p50.iloc[i] * ci[0] / ratio["value"], p50.iloc[i] * ci[1] / ratio["value"]
    df[BOUNDS[0]], df[BOUNDS[1]] = low, high
    return df


def intervals_of(df: pd.DataFrame) -> dict[str, tuple[str, str]]:
    """The `intervals` argument of pareto_front for a table with BOUNDS (none without)."""
    return {LATENCY: BOUNDS} if all(c in df.columns for c in BOUNDS) else {}


def tied_fastest(group: pd.DataFrame, fastest: Any) -> list[str]:
    """The variants of `group` whose p50 interval overlaps the fastest one's (a tie with it)."""
    if not all(c in group.columns for c in BOUNDS):
        return []
    best = group.loc[fastest]
    others = group.drop(index=fastest)
    tied = others[(others[BOUNDS[0]] <= best[BOUNDS[1]]) & (others[BOUNDS[1]] >= best[BOUNDS[0]])]
    return tied.sort_values(LATENCY)["variant"].astype(str).tolist()

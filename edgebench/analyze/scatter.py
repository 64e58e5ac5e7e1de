"""Scatter charts: accuracy against size, latency, energy or memory, one panel per target/runtime.

The 2-D Pareto front of each panel is a step line; points are labelled with their variant,
placed so labels do not overlap (by name when few, else by a number and a key beside the
figure). Each chart is registered in `edgebench.analyze.plots.CHARTS`.

    >>> from edgebench.analyze.plots import CHARTS
    >>> fig = CHARTS.get("accuracy_vs_size").draw(load(run_dir))
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgebench.analyze import GROUP, energy_of, pareto_front, quality
from edgebench.analyze.chart_style import (
    METHOD_STYLE,
    dark,
    figure,
    legend,
    log_axis,
    marker_size,
    number_label,
    ordered,
    panel_keys,
    panel_title,
    style,
)
from edgebench.analyze.intervals import intervals_of
from edgebench.analyze.labels import focus, label_points, variant_numbers
from edgebench.analyze.plots import CHARTS
from edgebench.export.precision import precision_label
from edgebench.measure.energy import NO_METER_NOTE
from edgebench.measure.energy import label as energy_label

if TYPE_CHECKING:
    import pandas as pd

FEW_TO_NAME = 8  # panels with at most this many points name every point directly


@dataclass(frozen=True)
class ScatterChart:
    """Accuracy against `column` (times `scale`, in the unit of `label`)."""

    name: str
    column: str
    label: str
    scale: float = 1.0  # multiply the column by this to get the axis unit
    order: int = 0  # its place in the report

    def applies(self, ok: pd.DataFrame) -> bool:
        """Whether some ok record has this chart's metric (energy may not be estimated)."""
        return self.column in ok.columns and bool(ok[self.column].notna().any())

    def draw(self, df: pd.DataFrame, run_id: str = "") -> Any:
        return scatter_chart(df, self, run_id)


for _chart in (
    ScatterChart("accuracy_vs_size", "size_bytes", "artifact size (KB)", 1 / 1024, order=0),
    ScatterChart("accuracy_vs_latency", "latency_ms.p50",
                 "latency p50 (ms, batch 1; bar: its 95% interval, whiskers: p10–p90)", order=1),
    ScatterChart("accuracy_vs_energy", "energy_mj.value", "energy per inference (mJ, estimate)", order=2),
    ScatterChart("accuracy_vs_memory", "peak_rss_mb", "peak RSS during batch-1 inference (MB, runtime + model)",
                 order=3),
):
    CHARTS.register(_chart.name, _chart)


def scatter_chart(df: pd.DataFrame, chart: ScatterChart, run_id: str = "") -> Any:
    """One figure: accuracy vs `chart.column`, a panel per (target, runtime).

    Panels of few points name every point; when the names do not all fit, or panels are
    crowded, points carry their variant number (same in every chart) and a key beside the
    figure lists number → variant, grouped by method; the front and the baseline keep their
    names where there is room.
    """
    import matplotlib.pyplot as plt

    ok = df[df["status"].eq("ok")]
    most = max([len(g) for _, g in ok.groupby(list(GROUP))] + [0])
    if most <= FEW_TO_NAME:
        fig, left = _scatter(df, chart, run_id, numbered=False)
        if left == 0:
            return fig
        plt.close(fig)
    return _scatter(df, chart, run_id, numbered=True)[0]


def _scatter(df: pd.DataFrame, chart: ScatterChart, run_id: str, numbered: bool) -> tuple[Any, int]:
    """The figure and how many labels could not be placed without overlap."""
    from matplotlib.lines import Line2D

    numbers = variant_numbers(df, list(METHOD_STYLE))
    q = quality(df)
    ycol, ylabel, yscale = q.column, q.label() + ("" if q.direction > 0 else ", lower is better: axis inverted"), q.scale()
    full_n = int(df["n_eval"].max()) if df["n_eval"].notna().any() else 0
    ok = df[df["status"].eq("ok") & df[chart.column].notna() & df[ycol].notna()]
    panels = panel_keys(df)
    fig, axes = figure(len(panels))
    methods: list[str] = []
    todo, clipped_any = [], False
    spans = [g[chart.column].max() / max(g[chart.column].min(), 1e-12) for _, g in ok.groupby(list(GROUP))]
    log_x = max(spans + [0]) > 8  # the same scale in every panel, so panels compare at a glance
    for ax, (target, runtime) in zip(axes, panels, strict=False):
        every = df[(df["target"] == target) & (df["runtime"] == runtime)]
        rows = ok[(ok["target"] == target) & (ok["runtime"] == runtime)]
        title = panel_title(df, target, runtime)
        if chart.column == "energy_mj.value" and len(rows):
            labels = sorted({energy_label(energy_of(row)) for _, row in rows.iterrows()})
            title += "\n" + "\n".join(textwrap.fill(t, 58) for t in labels)
        n_eval = rows["n_eval"].dropna()
        if len(n_eval) and n_eval.min() < full_n:  # e.g. the QEMU profile's eval_limit
            title += f"\n{q.name} on the first {int(n_eval.min())} of {full_n} test inputs"
        missing = len(every) - len(rows)
        if missing:  # in the title: inside the axes it would cover points
            title += f"\n{missing} record(s) not shown (error or no value)"
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(chart.label)
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        if rows.empty:
            ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center")
            continue
        x = rows[chart.column].astype(float) * chart.scale
        y = rows[ycol].astype(float) * yscale
        bounds = [b * yscale for c in rows.get(q.ci_column, []) if isinstance(c, (list, tuple))
                  for b in c if b is not None]
        # The axis holds the intervals too: a difference smaller than them is not one to zoom into.
        if q.direction > 0:
            low, high, cut = focus(list(y) + bounds, top=100.0 if q.percent else math.inf)
        else:  # lower is better: no clipping (the best points are the low ones), axis inverted below
            span = max(list(y) + bounds) - min(list(y) + bounds)
            low, high, cut = min(list(y) + bounds) - 0.1 * span - 1e-9, max(list(y) + bounds) + 0.1 * span + 1e-9, None
        clipped = y < (cut if cut is not None else -math.inf)
        shown = y.where(~clipped, low + ((cut or low) - low) * 0.4)  # clipped: drawn in the strip
        clipped_any |= bool(clipped.any())
        baseline = y[rows["variant"].eq("baseline")]
        if len(baseline) and not clipped[baseline.index[0]]:
            ax.axhline(baseline.iloc[0], color="#222", lw=0.7, ls=":", alpha=0.7, zorder=1)
        for method, part in rows.groupby("method"):
            color, marker = style(method)
            xs, ys, out = x[part.index], shown[part.index], clipped[part.index]
            if chart.column == "latency_ms.p50":
                err = [_whiskers(s, p) for s, p in zip(part["latency_samples_ms"], xs, strict=False)]
                ax.errorbar(xs, ys, xerr=list(zip(*err, strict=False)), fmt="none", ecolor=color,
                            alpha=0.3, capsize=2, lw=0.8, zorder=2)
                # How sure the p50 itself is: its 95 % interval over rounds (runner processes).
                err = [_interval(c, p) for c, p in zip(part["latency_p50_ci95"], xs, strict=False)]
                ax.errorbar(xs, ys, xerr=list(zip(*err, strict=False)), fmt="none", ecolor=color,
                            alpha=0.8, capsize=0, lw=2.4, zorder=2)
            ci = [c if isinstance(c, (list, tuple)) and len(c) == 2 and None not in c else None
                  for c in part[q.ci_column]] if q.ci_column in part else [None] * len(part)
            has = [c is not None and not o for c, o in zip(ci, out, strict=False)]
            if any(has):  # the 95 % interval of each value: a gap inside it is no gap
                lows = [max(y - c[0] * yscale, 0.0) for y, c, h in zip(ys, ci, has, strict=False) if h]
                highs = [max(c[1] * yscale - y, 0.0) for y, c, h in zip(ys, ci, has, strict=False) if h]
                ax.errorbar(xs[has], ys[has], yerr=[lows, highs], fmt="none", ecolor=color, alpha=0.35,
                            capsize=0, lw=2.2, zorder=2)
            ax.scatter(xs[~out], ys[~out], c=color, marker=marker, s=marker_size(method),
                       edgecolors="white", linewidths=0.6, zorder=3, clip_on=False)
            ax.scatter(xs[out], ys[out], c=color, marker="v", s=marker_size(method), edgecolors="black",
                       linewidths=0.8, zorder=3)
            methods.append(method)
        front = pareto_front(rows, [chart.column, ycol], by=None, directions={ycol: q.direction},
                             intervals=intervals_of(rows))  # latencies inside each other's intervals tie
        fx, fy = x[front].to_numpy(), shown[front].to_numpy()
        order = fx.argsort(kind="stable")
        ax.step(fx[order], fy[order], where="post", color="#555", lw=1.2, ls="--", zorder=2)
        ax.margins(x=0.08)
        if log_x:
            log_axis(ax.xaxis)
        ax.set_ylim((high, low) if q.direction < 0 else (low, high))
        if cut is not None:  # a shaded strip at the bottom holds the far-below points
            ax.axhspan(low, cut, color="#eeeeee", zorder=0)
            ax.set_yticks([t for t in ax.get_yticks() if cut <= t <= high])
            ax.set_ylim(low, high)
            ax.text(0.01, (cut - low) / (high - low) / 2, f"below {cut:.3g} ↓", transform=ax.transAxes,
                    fontsize=7, color="#666", va="center")
        names = rows["variant"].astype(str).tolist()
        # A scheme that did not take says so on its point: "fp16 (ran fp32)".
        value = [f"{_ran(a, r)}{f' ({v:.3g}{chr(37) if q.percent else chr(32)})' if c else ''}" for v, c, a, r in
                 zip(y, clipped, rows["precision"], rows["compute_precision"], strict=False)]
        long = [f"{numbers[n]} {n}{e}" if numbered else f"{n}{e}" for n, e in zip(names, value, strict=False)]
        short = [f"{numbers[n]}{e}" for n, e in zip(names, value, strict=False)] if numbered else long
        base = [n == "baseline" for n in names]
        rungs = [[f or b for f, b in zip(front, base, strict=False)], base, [False] * len(names)]
        radii = [math.sqrt(marker_size(m)) / 2 * fig.dpi / 72 + 1 for m in rows["method"]]
        colors = [dark(style(m)[0]) for m in rows["method"]]
        todo.append((ax, x.tolist(), shown.tolist(), short, long, rungs, radii, colors))
    extra = [Line2D([], [], color="#555", ls="--", label="Pareto front (this chart)"),
             Line2D([], [], color="#222", ls=":", lw=0.8, label=f"baseline {q.title()}")]
    if q.ci_column in ok and ok[q.ci_column].notna().any():
        extra.append(Line2D([], [], color="#888", lw=2.2, alpha=0.5, label=f"95% interval of {q.title()}"))
    if clipped_any:
        extra.append(Line2D([], [], color="#888", marker="v", ls="", markeredgecolor="black",
                            label="far below: clipped, value in label"))
    name = q.title()
    name = name if any(c.isupper() for c in name) else name[0].upper() + name[1:]  # mAP stays mAP
    title = f"{name} vs {chart.label.split(' (')[0]}" + (f" — run {run_id}" if run_id else "")
    if chart.column.startswith("energy_mj") and not _all_measured(ok):
        title += f"\n{NO_METER_NOTE}"
    fig.suptitle(title, fontsize=12)
    top = 1 - (0.2 + 0.2 * title.count("\n")) / fig.get_size_inches()[1]  # the suptitle's own room
    if numbered:
        right = _key(fig, ok, numbers, ordered(methods), extra)
        fig.tight_layout(rect=(0, 0, right, top))
    else:
        bottom = legend(fig, ordered(methods), extra)
        fig.tight_layout(rect=(0, bottom, 1, top))
    left = sum(label_points(*panel) for panel in todo)
    return fig, left


def _whiskers(samples: Any, p50: float) -> tuple[float, float]:
    import numpy as np

    if isinstance(samples, (list, tuple)) and len(samples) >= 2:
        p10, p90 = np.percentile(np.asarray(samples, dtype=float), [10, 90])
        return max(p50 - p10, 0.0), max(p90 - p50, 0.0)
    return 0.0, 0.0


def _interval(ci: Any, p50: float) -> tuple[float, float]:
    """(below, above) the p50 of its 95 % interval (`latency_p50_ci95`); none without one."""
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and None not in ci:
        return max(p50 - ci[0], 0.0), max(ci[1] - p50, 0.0)
    return 0.0, 0.0


def _ran(asked: Any, ran: Any) -> str:
    """' (ran fp32)' when the asked precision is not what computed, else ''."""
    label = precision_label(asked if isinstance(asked, str) else None, ran if isinstance(ran, str) else None)
    return label[label.index(" (ran"):] if " (ran" in label else ""


def _ran_anywhere(ok: pd.DataFrame, variant: str) -> str:
    """The key's note for a variant whose scheme did not take on some target/runtime: the
    note alone when it holds on every panel, else where it holds (" (ran fp16 on a/b)")."""
    rows = ok[ok["variant"].eq(variant)]
    where: dict[str, list[str]] = {}
    for _, row in rows.iterrows():
        note = _ran(row["precision"], row["compute_precision"])
        if note:
            where.setdefault(note, []).append(f"{row['target']}/{row['runtime']}")
    panels = len(rows[["target", "runtime"]].drop_duplicates())
    parts = []
    for note, at in sorted(where.items()):
        if len(at) == panels:
            parts.append(note)
        elif len(at) <= 2:
            parts.append(f"{note[:-1]} on {', '.join(sorted(at))})")
        else:
            parts.append(f"{note[:-1]} on {len(at)} of {panels} panels)")
    return "".join(parts)


def _all_measured(rows: pd.DataFrame) -> bool:
    return "energy_mj.measured" in rows.columns and bool(rows["energy_mj.measured"].eq(True).all())


def _key(fig: Any, ok: pd.DataFrame, numbers: dict[str, int], methods: list[str], extra: list) -> float:
    """The number → variant key, grouped under a header per method, right of the panels;
    widens the figure for it and returns where the panels end (figure fraction)."""
    from matplotlib.lines import Line2D

    blank = {"color": "none", "marker": "", "ls": ""}
    handles, headers = [], []
    for method in methods:
        color, marker = style(method)
        headers.append(len(handles))
        handles.append(Line2D([], [], color=color, marker=marker, ls="", markersize=8, label=method))
        variants = sorted(set(ok.loc[ok["method"].eq(method), "variant"].astype(str)), key=numbers.get)
        handles += [Line2D([], [], **blank, label=f"{number_label(numbers[v])}  {v}{_ran_anywhere(ok, v)}")
                    for v in variants]
    handles += [Line2D([], [], **blank, label=" ")] + extra
    width, height = fig.get_size_inches()
    renderer = fig.canvas.get_renderer()
    for ncol in (1, 2, 3):
        leg = fig.legend(handles=handles, loc="upper right", bbox_to_anchor=(1, 1 - 0.55 / height),
                         ncol=ncol, frameon=False, fontsize=8, handlelength=1.3, handletextpad=0.4,
                         labelspacing=0.3, columnspacing=1.0)
        box = leg.get_window_extent(renderer)
        need = box.height / fig.dpi + 0.8
        if need <= height * 1.5 or ncol == 3:  # rather taller panels than a key split in columns
            break
        leg.remove()
    height = max(height, need)
    leg.set_bbox_to_anchor((1, 1 - 0.55 / height))
    for i in headers:
        leg.get_texts()[i].set_fontweight("bold")
    extra_w = box.width / fig.dpi + 0.25
    fig.set_size_inches(width + extra_w, height)
    return width / (width + extra_w)

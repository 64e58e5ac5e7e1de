"""Charts of a run: accuracy against size, latency, energy and memory, plus latency spreads.

    >>> from edgebench.analyze import load
    >>> paths = write_plots(load(run_dir), run_dir / "plots")    # PNG and SVG of each chart

One panel per (target, runtime); one colour and marker per compression method, the same in
every chart; the 2-D Pareto front of each panel as a step line; points labelled with their
variant, placed so labels do not overlap. matplotlib is imported inside the functions (Agg).
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgebench.analyze import GROUP, energy_of, pareto_front
from edgebench.analyze.labels import focus, label_points, variant_numbers
from edgebench.energy import NO_METER_NOTE
from edgebench.energy import label as energy_label
from edgebench.precision import precision_label

if TYPE_CHECKING:
    import pandas as pd

# Fixed per method so a method looks the same in every chart and every run.
METHOD_STYLE: dict[str, tuple[str, str]] = {
    "baseline": ("#222222", "*"),
    "prune": ("#1f77b4", "o"),
    "quantize": ("#ff7f0e", "s"),
    "cluster": ("#2ca02c", "^"),
    "distill": ("#d62728", "D"),
    "lowrank": ("#9467bd", "v"),
    "compact": ("#8c564b", "P"),
}
FEW_TO_NAME = 8  # panels with at most this many points name every point directly
SPARE_STYLES = [("#e377c2", "X"), ("#17becf", "h"), ("#bcbd22", "<"), ("#7f7f7f", ">")]


@dataclass(frozen=True)
class Chart:
    name: str
    column: str
    label: str
    scale: float = 1.0  # multiply the column by this to get the axis unit


CHARTS = (
    Chart("accuracy_vs_size", "size_bytes", "artifact size (KB)", 1 / 1024),
    Chart("accuracy_vs_latency", "latency_ms.p50", "latency p50 (ms, batch 1; whiskers p10–p90)"),
    Chart("accuracy_vs_energy", "energy_mj.value", "energy per inference (mJ, estimate)"),
    Chart("accuracy_vs_memory", "peak_rss_mb", "peak RSS during batch-1 inference (MB, runtime + model)"),
)


def style(method: str) -> tuple[str, str]:
    """(colour, marker) of a compression method."""
    if method in METHOD_STYLE:
        return METHOD_STYLE[method]
    return SPARE_STYLES[sum(map(ord, method)) % len(SPARE_STYLES)]  # stable across runs


def _panels(df: pd.DataFrame) -> list[tuple[str, str]]:
    return sorted({(t, r) for t, r in df[list(GROUP)].itertuples(index=False, name=None)},
                  key=lambda k: (str(k[0]), str(k[1])))


def _panel_title(df: pd.DataFrame, target: str, runtime: str) -> str:
    rows = df[(df["target"] == target) & (df["runtime"] == runtime)]
    emulated = bool(rows["emulated"].any())
    return f"{target} / {runtime}" + (" (emulated)" if emulated else "")


def _figure(n_panels: int, height: float = 4.2, width: float = 5.6):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncols = n_panels if n_panels <= 3 else 2
    nrows = math.ceil(n_panels / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows + 1.0), squeeze=False)
    for ax in axes.flat[n_panels:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n_panels])


def _legend(fig: Any, methods: list[str], extra: list | None = None) -> float:
    """A legend under the panels, wrapped to the figure's width; returns the height it needs
    as a fraction of the figure (for tight_layout's rect)."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=style(m)[0], marker=style(m)[1], linestyle="", markersize=8,
                      label=m) for m in methods] + (extra or [])
    width, height = fig.get_size_inches()
    ncol = max(1, min(len(handles), int(width / 1.6)))
    fig.legend(handles=handles, loc="lower center", ncol=ncol, frameon=False, fontsize=9)
    rows = math.ceil(len(handles) / ncol)
    return (0.3 * rows + 0.15) / height


def _y(df: pd.DataFrame) -> tuple[str, str]:
    """Accuracy when measured, else agreement with the baseline (both shown in %)."""
    if df["accuracy"].notna().any():
        return "accuracy", "accuracy (%)"
    return "agreement", "top-1 agreement with baseline (%)"


def _whiskers(samples: Any, p50: float) -> tuple[float, float]:
    import numpy as np

    if isinstance(samples, (list, tuple)) and len(samples) >= 2:
        p10, p90 = np.percentile(np.asarray(samples, dtype=float), [10, 90])
        return max(p50 - p10, 0.0), max(p90 - p50, 0.0)
    return 0.0, 0.0


def scatter_chart(df: pd.DataFrame, chart: Chart, run_id: str = "") -> Any:
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


def _scatter(df: pd.DataFrame, chart: Chart, run_id: str, numbered: bool) -> tuple[Any, int]:
    """The figure and how many labels could not be placed without overlap."""
    from matplotlib.lines import Line2D

    numbers = variant_numbers(df, list(METHOD_STYLE))
    ycol, ylabel = _y(df)
    full_n = int(df["n_eval"].max()) if df["n_eval"].notna().any() else 0
    ok = df[df["status"].eq("ok") & df[chart.column].notna() & df[ycol].notna()]
    panels = _panels(df)
    fig, axes = _figure(len(panels))
    methods: list[str] = []
    todo, clipped_any = [], False
    spans = [g[chart.column].max() / max(g[chart.column].min(), 1e-12) for _, g in ok.groupby(list(GROUP))]
    log_x = max(spans + [0]) > 8  # the same scale in every panel, so panels compare at a glance
    for ax, (target, runtime) in zip(axes, panels, strict=False):
        every = df[(df["target"] == target) & (df["runtime"] == runtime)]
        rows = ok[(ok["target"] == target) & (ok["runtime"] == runtime)]
        title = _panel_title(df, target, runtime)
        if chart.column == "energy_mj.value" and len(rows):
            labels = sorted({energy_label(energy_of(row)) for _, row in rows.iterrows()})
            title += "\n" + "\n".join(textwrap.fill(t, 58) for t in labels)
        n_eval = rows["n_eval"].dropna()
        if len(n_eval) and n_eval.min() < full_n:  # e.g. the QEMU profile's eval_limit
            title += f"\naccuracy on the first {int(n_eval.min())} of {full_n} test inputs"
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
        y = rows[ycol].astype(float) * 100
        bounds = [b * 100 for c in rows["accuracy_ci95"] if ycol == "accuracy" and isinstance(c, (list, tuple))
                  for b in c if b is not None]
        # The axis holds the intervals too: a difference smaller than them is not one to zoom into.
        low, high, cut = focus(list(y) + bounds)
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
                            alpha=0.5, capsize=2.5, lw=1, zorder=2)
            ci = [c if isinstance(c, (list, tuple)) and len(c) == 2 and None not in c else None
                  for c in part["accuracy_ci95"]] if ycol == "accuracy" else [None] * len(part)
            has = [c is not None and not o for c, o in zip(ci, out, strict=False)]
            if any(has):  # the 95 % interval of each accuracy: a gap inside it is no gap
                lows = [y - c[0] * 100 for y, c, h in zip(ys, ci, has, strict=False) if h]
                highs = [c[1] * 100 - y for y, c, h in zip(ys, ci, has, strict=False) if h]
                ax.errorbar(xs[has], ys[has], yerr=[lows, highs], fmt="none", ecolor=color, alpha=0.35,
                            capsize=0, lw=2.2, zorder=2)
            ax.scatter(xs[~out], ys[~out], c=color, marker=marker, s=_size(method),
                       edgecolors="white", linewidths=0.6, zorder=3, clip_on=False)
            ax.scatter(xs[out], ys[out], c=color, marker="v", s=_size(method), edgecolors="black",
                       linewidths=0.8, zorder=3)
            methods.append(method)
        front = pareto_front(rows, [chart.column, ycol], by=None)
        fx, fy = x[front].to_numpy(), shown[front].to_numpy()
        order = fx.argsort(kind="stable")
        ax.step(fx[order], fy[order], where="post", color="#555", lw=1.2, ls="--", zorder=2)
        ax.margins(x=0.08)
        if log_x:
            _log_axis(ax.xaxis)
        ax.set_ylim(low, high)
        if cut is not None:  # a shaded strip at the bottom holds the far-below points
            ax.axhspan(low, cut, color="#eeeeee", zorder=0)
            ax.set_yticks([t for t in ax.get_yticks() if cut <= t <= high])
            ax.set_ylim(low, high)
            ax.text(0.01, (cut - low) / (high - low) / 2, f"below {cut:.3g} ↓", transform=ax.transAxes,
                    fontsize=7, color="#666", va="center")
        names = rows["variant"].astype(str).tolist()
        # A scheme that did not take says so on its point: "fp16 (ran fp32)".
        value = [f"{_ran(a, r)}{f' ({v:.3g}%)' if c else ''}" for v, c, a, r in
                 zip(y, clipped, rows["precision"], rows["compute_precision"], strict=False)]
        long = [f"{numbers[n]} {n}{e}" if numbered else f"{n}{e}" for n, e in zip(names, value, strict=False)]
        short = [f"{numbers[n]}{e}" for n, e in zip(names, value, strict=False)] if numbered else long
        base = [n == "baseline" for n in names]
        rungs = [[f or b for f, b in zip(front, base, strict=False)], base, [False] * len(names)]
        radii = [math.sqrt(_size(m)) / 2 * fig.dpi / 72 + 1 for m in rows["method"]]
        colors = [_dark(style(m)[0]) for m in rows["method"]]
        todo.append((ax, x.tolist(), shown.tolist(), short, long, rungs, radii, colors))
    extra = [Line2D([], [], color="#555", ls="--", label="Pareto front (this chart)"),
             Line2D([], [], color="#222", ls=":", lw=0.8, label="baseline accuracy")]
    if ycol == "accuracy" and ok["accuracy_ci95"].notna().any():
        extra.append(Line2D([], [], color="#888", lw=2.2, alpha=0.5, label="95% interval of accuracy"))
    if clipped_any:
        extra.append(Line2D([], [], color="#888", marker="v", ls="", markeredgecolor="black",
                            label="far below: clipped, value in label"))
    title = f"Accuracy vs {chart.label.split(' (')[0]}" + (f" — run {run_id}" if run_id else "")
    if chart.column.startswith("energy_mj") and not _all_measured(ok):
        title += f"\n{NO_METER_NOTE}"
    fig.suptitle(title, fontsize=12)
    if numbered:
        right = _key(fig, ok, numbers, _ordered(methods), extra)
        fig.tight_layout(rect=(0, 0, right, 1))
    else:
        bottom = _legend(fig, _ordered(methods), extra)
        fig.tight_layout(rect=(0, bottom, 1, 1))
    left = sum(label_points(*panel) for panel in todo)
    return fig, left


def _ran(asked: Any, ran: Any) -> str:
    """' (ran fp32)' when the asked precision is not what computed, else ''."""
    label = precision_label(asked if isinstance(asked, str) else None, ran if isinstance(ran, str) else None)
    return label[label.index(" (ran"):] if " (ran" in label else ""


def _ran_anywhere(ok: pd.DataFrame, variant: str) -> str:
    """The key's note for a variant whose scheme did not take on some target/runtime."""
    rows = ok[ok["variant"].eq(variant)]
    notes = sorted({_ran(a, r) for a, r in zip(rows["precision"], rows["compute_precision"], strict=False)} - {""})
    return "".join(notes)


def _all_measured(rows: pd.DataFrame) -> bool:
    return "energy_mj.measured" in rows.columns and bool(rows["energy_mj.measured"].eq(True).all())


def _ordered(methods: list[str]) -> list[str]:
    seen = list(dict.fromkeys(methods))
    return sorted(seen, key=lambda m: (m != "baseline", list(METHOD_STYLE).index(m)
                                       if m in METHOD_STYLE else 99, m))


def _size(method: str) -> float:
    return 190 if method == "baseline" else 55


def _dark(color: str) -> str:
    """The method's colour, darkened so that text in it stays readable on white."""
    from matplotlib.colors import to_hex, to_rgb

    return to_hex(tuple(c * 0.7 for c in to_rgb(color)))


def _log_axis(axis: Any) -> None:
    """Log scale with plain tick labels (0.05, 0.1, 0.2 … not 10⁻¹)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    getattr(axis.axes, f"set_{axis.axis_name}scale")("log")
    low, high = sorted(axis.get_view_interval())
    ticks = [t for t in LogLocator(subs=(1.0, 2.0, 5.0)).tick_values(low, high) if low <= t <= high]
    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0) if len(ticks) >= 3 else "all"))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _number(n: int) -> str:
    return str(n).rjust(2, "\u2007")  # figure space: as wide as a digit, so numbers align


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
        handles += [Line2D([], [], **blank, label=f"{_number(numbers[v])}  {v}{_ran_anywhere(ok, v)}")
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


def latency_chart(df: pd.DataFrame, run_id: str = "") -> Any:
    """Box plots of the raw latency samples, one row per variant (fastest on top), a panel per
    target/runtime; rows carry the variant's number from the scatter charts, p50 on the right."""
    import numpy as np

    numbers = variant_numbers(df, list(METHOD_STYLE))
    ok = df[df["status"].eq("ok")]
    ok = ok[ok["latency_samples_ms"].map(lambda s: isinstance(s, list) and len(s) > 0)]
    panels = _panels(ok) or _panels(df)
    most = max([len(ok[(ok.target == t) & (ok.runtime == r)]) for t, r in panels] + [1])
    fig, axes = _figure(len(panels), height=max(2.4, 0.34 * most + 1.2), width=6.4)
    methods = []
    for ax, (target, runtime) in zip(axes, panels, strict=False):
        rows = ok[(ok["target"] == target) & (ok["runtime"] == runtime)]
        ax.set_title(_panel_title(df, target, runtime), fontsize=11)
        ax.set_xlabel("latency per inference (ms, batch 1)")
        ax.grid(True, axis="x", alpha=0.3)
        if rows.empty:
            ax.text(0.5, 0.5, "no latency samples", transform=ax.transAxes, ha="center")
            continue
        rows = rows.assign(_median=rows["latency_samples_ms"].map(np.median))
        rows = rows.sort_values("_median", ascending=False)
        options = {"widths": 0.6, "patch_artist": True, "showfliers": True, "whis": (1, 99),
                   "flierprops": {"markersize": 2, "alpha": 0.4, "markeredgecolor": "#888"},
                   "medianprops": {"color": "black"}}
        try:  # matplotlib >= 3.10 names it orientation; `vert` is deprecated there
            box = ax.boxplot(list(rows["latency_samples_ms"]), orientation="horizontal", **options)
        except TypeError:
            box = ax.boxplot(list(rows["latency_samples_ms"]), vert=False, **options)
        for patch, method in zip(box["boxes"], rows["method"], strict=False):
            patch.set_facecolor(style(method)[0])
            patch.set_alpha(0.75)
            methods.append(method)
        ticks = range(1, len(rows) + 1)
        ax.set_yticks(ticks, [f"{v} {_number(numbers[v])}" for v in rows["variant"]], fontsize=8)
        for label, variant in zip(ax.get_yticklabels(), rows["variant"], strict=False):
            label.set_fontweight("bold" if variant == "baseline" else "normal")
        p50 = ax.secondary_yaxis("right")
        p50.set_yticks(ticks, [f"{m:.3g}" for m in rows["_median"]], fontsize=7, color="#444")
        p50.set_ylabel("p50 (ms)", fontsize=8, color="#444")
        whiskers = [np.percentile(s, [1, 99]) for s in rows["latency_samples_ms"]]
        if max(w[1] for w in whiskers) > 6 * max(min(w[0] for w in whiskers), 1e-9):
            _log_axis(ax.xaxis)
    bottom = _legend(fig, _ordered(methods))
    fig.suptitle("Latency distribution of the raw samples (box: p25–p75, whiskers: p1–p99)"
                 + (f" — run {run_id}" if run_id else ""), fontsize=11)
    # tight_layout leaves the title too little room over several rows of tall panels
    fig.tight_layout(rect=(0, bottom, 1, 1 - 0.35 / fig.get_size_inches()[1] if len(panels) > 3 else 1))
    return fig


def write_plots(df: pd.DataFrame, out_dir: str | Path, run_id: str = "") -> list[Path]:
    """Every chart as PNG and SVG into `out_dir`; returns the PNG paths (SVGs lie beside them).

    A chart whose metric no ok record has (e.g. energy not estimated) is skipped.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ok = df[df["status"].eq("ok")]
    figures = [(c.name, lambda c=c: scatter_chart(df, c, run_id)) for c in CHARTS
               if c.column in ok.columns and ok[c.column].notna().any()]
    if ok["latency_samples_ms"].map(lambda s: isinstance(s, list) and len(s) > 0).any():
        figures.append(("latency_distribution", lambda: latency_chart(df, run_id)))
    paths = []
    for name, make in figures:
        fig = make()
        for ext in ("png", "svg"):
            fig.savefig(out / f"{name}.{ext}", dpi=110)
        plt.close(fig)
        paths.append(out / f"{name}.png")
    return paths

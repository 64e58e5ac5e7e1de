"""Charts of a run: accuracy against size, latency, energy and memory, plus latency spreads.

    >>> from edgebench.analyze import load
    >>> paths = write_plots(load(run_dir), run_dir / "plots")    # PNG and SVG of each chart

One panel per (target, runtime); one colour and marker per compression method, the same in
every chart; the 2-D Pareto front of each panel as a step line; points labelled with their
variant, placed so labels do not overlap. matplotlib is imported inside the functions (Agg).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgebench.analyze import GROUP, pareto_front
from edgebench.energy import NO_METER_NOTE

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
    Chart("accuracy_vs_memory", "peak_rss_mb", "peak memory of the runner (RSS, MB)"),
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
    """One figure: accuracy vs `chart.column`, a panel per (target, runtime)."""
    from matplotlib.lines import Line2D

    ycol, ylabel = _y(df)
    ok = df[df["status"].eq("ok") & df[chart.column].notna() & df[ycol].notna()]
    panels = _panels(df)
    fig, axes = _figure(len(panels))
    methods = []
    for ax, (target, runtime) in zip(axes, panels, strict=False):
        every = df[(df["target"] == target) & (df["runtime"] == runtime)]
        rows = ok[(ok["target"] == target) & (ok["runtime"] == runtime)]
        title = _panel_title(df, target, runtime)
        if chart.column == "energy_mj.value" and rows["energy_mj.model"].notna().any():
            models = sorted({str(m).split(" (")[0] for m in rows["energy_mj.model"].dropna()})
            title += "\nenergy model: " + "; ".join(models)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(chart.label)
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        missing = len(every) - len(rows)
        if missing:
            ax.text(0.99, 0.01, f"{missing} record(s) not shown (error or no value)",
                    transform=ax.transAxes, ha="right", va="bottom", fontsize=7, color="#a00")
        if rows.empty:
            ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center")
            continue
        x = rows[chart.column].astype(float) * chart.scale
        y = rows[ycol].astype(float) * 100
        for method, part in rows.groupby("method"):
            color, marker = style(method)
            xs, ys = x[part.index], y[part.index]
            if chart.column == "latency_ms.p50":
                err = [_whiskers(s, p) for s, p in zip(part["latency_samples_ms"], xs, strict=False)]
                ax.errorbar(xs, ys, xerr=list(zip(*err, strict=False)), fmt="none", ecolor=color, alpha=0.6,
                            capsize=3, lw=1)
            ax.scatter(xs, ys, c=color, marker=marker, s=200 if method == "baseline" else 60,
                       edgecolors="white", linewidths=0.6, zorder=3)
            methods.append(method)
        front = pareto_front(rows, [chart.column, ycol], by=None)
        fx, fy = x[front].to_numpy(), y[front].to_numpy()
        order = fx.argsort(kind="stable")
        ax.step(fx[order], fy[order], where="post", color="#555", lw=1.2, ls="--", zorder=2)
        if x.max() > 20 * max(x.min(), 1e-12):
            ax.set_xscale("log")
        ax.margins(x=0.18, y=0.15)
        ax._edgebench_points = (x.to_numpy(), y.to_numpy(), rows["variant"].astype(str).tolist())
    front_handle = Line2D([], [], color="#555", ls="--", label="Pareto front (this chart)")
    bottom = _legend(fig, _ordered(methods), [front_handle])
    title = f"Accuracy vs {chart.label.split(' (')[0]}" + (f" — run {run_id}" if run_id else "")
    if chart.column.startswith("energy_mj") and not _all_measured(ok):
        title += f"\n{NO_METER_NOTE}"
    fig.suptitle(title, fontsize=12)
    fig.tight_layout(rect=(0, bottom, 1, 1))
    for ax in axes:
        if hasattr(ax, "_edgebench_points"):
            place_labels(fig, ax, *ax._edgebench_points)
    return fig


def _all_measured(rows: pd.DataFrame) -> bool:
    return "energy_mj.measured" in rows.columns and bool(rows["energy_mj.measured"].eq(True).all())


def _ordered(methods: list[str]) -> list[str]:
    seen = list(dict.fromkeys(methods))
    return sorted(seen, key=lambda m: (m != "baseline", list(METHOD_STYLE).index(m)
                                       if m in METHOD_STYLE else 99, m))


def place_labels(fig: Any, ax: Any, xs: Any, ys: Any, texts: list[str]) -> None:
    """Annotate each point with its text at the first nearby spot that overlaps no other label,
    no marker and stays inside the axes; crowded points get a leader line further out."""
    from matplotlib.transforms import Bbox

    fig.canvas.draw()  # fix the layout and limits first: placement works in display pixels
    renderer = fig.canvas.get_renderer()
    inside = ax.get_window_extent(renderer)
    pixels = ax.transData.transform(list(zip(xs, ys, strict=False)))
    markers = [Bbox.from_bounds(px - 5, py - 5, 10, 10) for px, py in pixels]
    taken: list[Any] = []
    near = [(7, 5, "left", "bottom"), (7, -5, "left", "top"), (-7, 5, "right", "bottom"),
            (-7, -5, "right", "top"), (0, 9, "center", "bottom"), (0, -9, "center", "top")]
    candidates = [(dx * k, dy * k, ha, va, k > 1) for k in (1, 2.5, 4) for dx, dy, ha, va in near]
    # Place the most crowded points first, while space is still free.
    order = sorted(range(len(texts)), key=lambda i: -sum(
        abs(pixels[i][0] - p[0]) + abs(pixels[i][1] - p[1]) < 60 for p in pixels))
    for i in order:
        best, best_cost = None, math.inf
        for dx, dy, ha, va, leader in candidates:
            ann = ax.annotate(texts[i], (xs[i], ys[i]), xytext=(dx, dy), textcoords="offset points",
                              ha=ha, va=va, fontsize=7.5, zorder=4,
                              bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.7},
                              arrowprops={"arrowstyle": "-", "color": "#999", "lw": 0.6} if leader else None)
            box = ann.get_window_extent(renderer).expanded(1.04, 1.15)
            others = [m for j, m in enumerate(markers) if j != i]
            cost = sum(box.overlaps(b) for b in taken + others) * 10
            cost += 0 if (inside.contains(box.x0, box.y0) and inside.contains(box.x1, box.y1)) else 5
            cost += 0.5 * leader
            if cost < best_cost:
                if best is not None:
                    best[0].remove()
                best, best_cost = (ann, box), cost
            else:
                ann.remove()
            if cost == 0:
                break
        if best is not None:
            taken.append(best[1])


def latency_chart(df: pd.DataFrame, run_id: str = "") -> Any:
    """Box plots of the raw latency samples, one row per variant, a panel per target/runtime."""
    ok = df[df["status"].eq("ok")]
    panels = _panels(ok) or _panels(df)
    most = max([len(ok[(ok.target == t) & (ok.runtime == r)]) for t, r in panels] + [1])
    fig, axes = _figure(len(panels), height=max(2.4, 0.42 * most + 1.2), width=6.2)
    methods = []
    for ax, (target, runtime) in zip(axes, panels, strict=False):
        rows = ok[(ok["target"] == target) & (ok["runtime"] == runtime)]
        rows = rows[rows["latency_samples_ms"].map(lambda s: isinstance(s, list) and len(s) > 0)]
        ax.set_title(_panel_title(df, target, runtime), fontsize=11)
        ax.set_xlabel("latency per inference (ms, batch 1)")
        ax.grid(True, axis="x", alpha=0.3)
        if rows.empty:
            ax.text(0.5, 0.5, "no latency samples", transform=ax.transAxes, ha="center")
            continue
        rows = rows.assign(_median=rows["latency_samples_ms"].map(lambda s: sorted(s)[len(s) // 2]))
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
        ax.set_yticks(range(1, len(rows) + 1), [f"{v}  " for v in rows["variant"]], fontsize=8)
        low, high = min(min(s) for s in rows["latency_samples_ms"]), max(max(s) for s in rows["latency_samples_ms"])
        if high > 20 * max(low, 1e-9):
            ax.set_xscale("log")
    bottom = _legend(fig, _ordered(methods))
    fig.suptitle("Latency distribution of the raw samples (box: p25–p75, whiskers: p1–p99)"
                 + (f" — run {run_id}" if run_id else ""), fontsize=11)
    fig.tight_layout(rect=(0, bottom, 1, 1))
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

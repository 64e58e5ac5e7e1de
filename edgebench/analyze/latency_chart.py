"""The latency chart: box plots of each variant's raw latency samples, a panel per target/runtime.

Registered in `edgebench.analyze.plots.CHARTS` as "latency_distribution".

    >>> fig = CHARTS.get("latency_distribution").draw(load(run_dir))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgebench.analyze.chart_style import (
    METHOD_STYLE,
    figure,
    legend,
    log_axis,
    number_label,
    ordered,
    panel_keys,
    panel_title,
    style,
)
from edgebench.analyze.intervals import ratio_text, row_ratio
from edgebench.analyze.labels import variant_numbers
from edgebench.analyze.plots import CHARTS

if TYPE_CHECKING:
    import pandas as pd


def _ratio(row: Any) -> str:
    """'  ×0.56 [0.55–0.57]' for a variant timed beside its baseline ('' for none, the baseline)."""
    ratio = row_ratio(row)
    if ratio is None or ratio["reference"]:
        return ""
    return f"  ×{ratio_text(ratio)}"


def has_samples(ok: pd.DataFrame):
    """Per row: whether it holds raw latency samples."""
    return ok["latency_samples_ms"].map(lambda s: isinstance(s, list) and len(s) > 0)


@dataclass(frozen=True)
class LatencyChart:
    name: str = "latency_distribution"
    order: int = 10  # after the scatter charts

    def applies(self, ok: pd.DataFrame) -> bool:
        return bool(has_samples(ok).any())

    def draw(self, df: pd.DataFrame, run_id: str = "") -> Any:
        return latency_chart(df, run_id)


CHARTS.register(LatencyChart.name, LatencyChart())


def latency_chart(df: pd.DataFrame, run_id: str = "") -> Any:
    """Box plots of the raw latency samples, one row per variant (fastest on top), a panel per
    target/runtime; rows carry the variant's number from the scatter charts, p50 on the right."""
    import numpy as np

    numbers = variant_numbers(df, list(METHOD_STYLE))
    ok = df[df["status"].eq("ok")]
    ok = ok[has_samples(ok)]
    panels = panel_keys(ok) or panel_keys(df)
    most = max([len(ok[(ok.target == t) & (ok.runtime == r)]) for t, r in panels] + [1])
    fig, axes = figure(len(panels), height=max(2.4, 0.34 * most + 1.2), width=6.4)
    methods = []
    for ax, (target, runtime) in zip(axes, panels, strict=False):
        rows = ok[(ok["target"] == target) & (ok["runtime"] == runtime)]
        ax.set_title(panel_title(df, target, runtime), fontsize=11)
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
        ax.set_yticks(ticks, [f"{v} {number_label(numbers[v])}" for v in rows["variant"]], fontsize=8)
        for label, variant in zip(ax.get_yticklabels(), rows["variant"], strict=False):
            label.set_fontweight("bold" if variant == "baseline" else "normal")
        for k, ci in zip(ticks, rows["latency_p50_ci95"], strict=False):  # how sure the p50 is, over rounds
            if isinstance(ci, (list, tuple)) and len(ci) == 2 and None not in ci:
                ax.plot(ci, [k, k], color="black", lw=3.2, solid_capstyle="butt", zorder=4)
        p50 = ax.secondary_yaxis("right")
        p50.set_yticks(ticks, [f"{m:.3g}{_ratio(row)}" for m, (_, row) in zip(rows["_median"], rows.iterrows(), strict=False)],
                       fontsize=7, color="#444")
        p50.set_ylabel("p50 (ms)  × baseline [95% interval]", fontsize=8, color="#444")
        whiskers = [np.percentile(s, [1, 99]) for s in rows["latency_samples_ms"]]
        if max(w[1] for w in whiskers) > 6 * max(min(w[0] for w in whiskers), 1e-9):
            log_axis(ax.xaxis)
    bottom = legend(fig, ordered(methods))
    fig.suptitle("Latency distribution of the raw samples (box: p25–p75, whiskers: p1–p99;\n"
                 "black bar: the p50's 95% interval over rounds)"
                 + (f" — run {run_id}" if run_id else ""), fontsize=11)
    # tight_layout leaves the title too little room over several rows of tall panels
    fig.tight_layout(rect=(0, bottom, 1, 1 - 0.35 / fig.get_size_inches()[1] if len(panels) > 3 else 1))
    return fig

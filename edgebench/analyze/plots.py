"""Charts of a run: every chart in `CHARTS`, written as PNG and SVG.

    >>> from edgebench.analyze import load
    >>> paths = write_plots(load(run_dir), run_dir / "plots")    # PNG and SVG of each chart

A chart is an object with a `name`, an `order` (its place in the report), `applies(ok)` (some
ok record has its metric) and `draw(df, run_id)` returning a matplotlib figure. The scatter
charts (accuracy against size, latency, energy, memory) are in `scatter.py`, the latency
distribution in `latency_chart.py`; adding a chart is a module that registers it and a line in
the table below. matplotlib is imported inside the functions (Agg).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from edgebench.registry import Registry

if TYPE_CHECKING:
    import pandas as pd

# The table: importing each module registers its charts.
CHARTS = Registry("chart", modules=(
    "edgebench.analyze.scatter",
    "edgebench.analyze.latency_chart",
))


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
    charts = sorted((chart for _, chart in CHARTS.items()), key=lambda c: (c.order, c.name))
    paths = []
    for chart in charts:
        if not chart.applies(ok):
            continue
        fig = chart.draw(df, run_id)
        for ext in ("png", "svg"):
            fig.savefig(out / f"{chart.name}.{ext}", dpi=110)
        plt.close(fig)
        paths.append(out / f"{chart.name}.png")
    return paths

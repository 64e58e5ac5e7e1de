"""What every chart shares: a colour and marker per method, panels, legends and axes.

One colour and marker per compression method, the same in every chart and every run; one panel
per (target, runtime). matplotlib is imported inside the functions (Agg).

    >>> style("prune")
    ('#1f77b4', 'o')
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from edgebench.analyze import GROUP

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


def style(method: str) -> tuple[str, str]:
    """(colour, marker) of a compression method."""
    if method in METHOD_STYLE:
        return METHOD_STYLE[method]
    return SPARE_STYLES[sum(map(ord, method)) % len(SPARE_STYLES)]  # stable across runs


def panel_keys(df: pd.DataFrame) -> list[tuple[str, str]]:
    return sorted({(t, r) for t, r in df[list(GROUP)].itertuples(index=False, name=None)},
                  key=lambda k: (str(k[0]), str(k[1])))


def panel_title(df: pd.DataFrame, target: str, runtime: str) -> str:
    rows = df[(df["target"] == target) & (df["runtime"] == runtime)]
    emulated = bool(rows["emulated"].any())
    return f"{target} / {runtime}" + (" (emulated)" if emulated else "")


def figure(n_panels: int, height: float = 4.2, width: float = 5.6):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncols = n_panels if n_panels <= 3 else 2
    nrows = math.ceil(n_panels / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows + 1.0), squeeze=False)
    for ax in axes.flat[n_panels:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n_panels])


def legend(fig: Any, methods: list[str], extra: list | None = None) -> float:
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


def ordered(methods: list[str]) -> list[str]:
    seen = list(dict.fromkeys(methods))
    return sorted(seen, key=lambda m: (m != "baseline", list(METHOD_STYLE).index(m)
                                       if m in METHOD_STYLE else 99, m))


def marker_size(method: str) -> float:
    return 190 if method == "baseline" else 55


def dark(color: str) -> str:
    """The method's colour, darkened so that text in it stays readable on white."""
    from matplotlib.colors import to_hex, to_rgb

    return to_hex(tuple(c * 0.7 for c in to_rgb(color)))


def log_axis(axis: Any) -> None:
    """Log scale with plain tick labels (0.05, 0.1, 0.2 … not 10⁻¹)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    getattr(axis.axes, f"set_{axis.axis_name}scale")("log")
    low, high = sorted(axis.get_view_interval())
    ticks = [t for t in LogLocator(subs=(1.0, 2.0, 5.0)).tick_values(low, high) if low <= t <= high]
    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0) if len(ticks) >= 3 else "all"))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def number_label(n: int) -> str:
    return str(n).rjust(2, "\u2007")  # figure space: as wide as a digit, so numbers align

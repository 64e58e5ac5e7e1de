"""Readable point labels for the charts: variant numbers, overlap-free placement, outlier clipping.

    >>> numbers = variant_numbers(df, order=["baseline", "prune", "quantize"])  # {"baseline": 1, ...}
    >>> left = label_points(ax, xs, ys, numbers, names, [on_front, no_one], radii)  # 0: no overlap

Placement works in display pixels once the figure's layout is fixed: every candidate spot is a
box computed from the text's measured size, so trying hundreds of spots costs no drawing; only
the chosen spot becomes a text (and a leader line when it sits away from its point).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

FONT_SIZE = 7.5
PAD = 3.5  # pixels kept free around each label, so neighbouring labels never read as one
# Unit directions tried around a point, the most natural reading positions first.
DIRECTIONS = [(1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, 1), (1, -1), (-1, -1),
              (1, 0.5), (-1, 0.5), (1, -0.5), (-1, -0.5), (0.5, 1), (-0.5, 1), (0.5, -1), (-0.5, -1)]
RINGS = (0, 10, 22, 38, 60, 90)  # extra distance (pixels) beyond the marker; > 0 draws a leader


def variant_numbers(df: Any, order: Sequence[str] = ()) -> dict[str, int]:
    """1, 2, 3 ... per variant name, the same in every chart and panel: grouped by method in
    `order` (other methods after, by name), by name within a method, so the numbers do not
    depend on the order of the rows."""
    pairs = set(zip(df["variant"].astype(str), df["method"].astype(str), strict=False))
    rank = {m: i for i, m in enumerate(order)}
    numbers: dict[str, int] = {}
    for variant, _method in sorted(pairs, key=lambda p: (rank.get(p[1], len(rank)), p[1], p[0])):
        numbers.setdefault(variant, len(numbers) + 1)
    return numbers


def focus(ys: Sequence[float], top: float = 100.0) -> tuple[float, float, float | None]:
    """(low, high, cut) y-limits that frame where most points are.

    Points far below the rest (a gap wider than twice the range of everything above it, and
    at least 2 points) fall under `cut`: the caller draws them clipped in a strip at the bottom
    instead of stretching the axis for them. `cut` is None when nothing is that far out.
    The axis never goes above `top` (accuracy cannot pass 100 %).
    """
    values = sorted((float(y) for y in ys if not math.isnan(float(y))), reverse=True)
    if not values:
        return 0.0, top, None
    keep = len(values)
    for k in range(len(values) - 1, math.ceil(len(values) / 2) - 1, -1):  # keep as many as possible
        gap, spread = values[k - 1] - values[k], values[0] - values[k - 1]
        if gap > max(2 * spread, 2.0):
            keep = k
            break
    high_value, low_value = values[0], values[keep - 1]
    margin = max(high_value - low_value, 0.5) * 0.12
    low, high = low_value - margin, min(high_value + margin, top)
    if keep == len(values):
        return low, high, None
    strip = (high - low) * 0.16  # room for the clipped markers and their values
    return low - strip, high, low


def _box(x: float, y: float, w: float, h: float) -> tuple[float, float, float, float]:
    return (x - PAD, y - PAD, x + w + PAD, y + h + PAD)


def _overlap(a: tuple, b: tuple) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _crosses(p: tuple[float, float], q: tuple[float, float], box: tuple) -> bool:
    """Does the segment p–q pass through `box`? (sampled: leader lines are short)"""
    return any(box[0] <= p[0] + (q[0] - p[0]) * t <= box[2] and box[1] <= p[1] + (q[1] - p[1]) * t <= box[3]
               for t in (i / 12 for i in range(1, 12)))


def _groups(pixels: Sequence[tuple[float, float]], tol: float = 4.0) -> list[list[int]]:
    """Points drawn on top of each other (within `tol` pixels) share one label."""
    groups: list[list[int]] = []
    for i, (x, y) in enumerate(pixels):
        for group in groups:
            gx, gy = pixels[group[0]]
            if abs(gx - x) <= tol and abs(gy - y) <= tol:
                group.append(i)
                break
        else:
            groups.append([i])
    return groups


def _plan(ax: Any, renderer: Any, pixels: list, texts: list[str], radii: list[float],
          obstacles: list[tuple]) -> tuple[list, int]:
    """Best spot per label: (dx, dy, ha, va, leader) offsets in pixels, and the overlaps left."""
    frame = ax.get_window_extent(renderer)
    sizes = []
    for text in texts:
        probe = ax.text(0, 0, text, fontsize=FONT_SIZE)
        extent = probe.get_window_extent(renderer)
        probe.remove()
        sizes.append((extent.width, extent.height))
    markers = [(x - r, y - r, x + r, y + r) for (x, y), r in zip(pixels, radii, strict=False)]
    taken: list[tuple] = list(obstacles)
    leaders: list[tuple] = []
    plan: list[Any] = [None] * len(texts)
    left = 0
    # Most crowded points first, while the space around them is still free.
    order = sorted(range(len(texts)), key=lambda i: -sum(
        math.dist(pixels[i], p) < 60 for p in pixels))
    for i in order:
        (x, y), (w, h), r = pixels[i], sizes[i], radii[i]
        best, best_cost = None, math.inf
        for ring in RINGS:
            for ux, uy in DIRECTIONS:
                norm = math.hypot(ux, uy)
                ax_, ay_ = x + ux / norm * (r + 2 + ring), y + uy / norm * (r + 2 + ring)
                x0 = ax_ if ux > 0 else ax_ - w if ux < 0 else ax_ - w / 2
                y0 = ay_ if uy > 0 else ay_ - h if uy < 0 else ay_ - h / 2
                box = _box(x0, y0, w, h)
                cost = 10 * sum(_overlap(box, b) for b in taken)
                cost += 10 * sum(_overlap(box, m) for j, m in enumerate(markers) if j != i)
                cost += 10 * (box[0] < frame.x0 or box[1] < frame.y0 or box[2] > frame.x1 or box[3] > frame.y1)
                cost += 10 * sum(_crosses(p, q, box) for p, q in leaders)
                if ring:
                    near = (min(max(x, box[0] + PAD), box[2] - PAD), min(max(y, box[1] + PAD), box[3] - PAD))
                    cost += 3 * sum(_crosses((x, y), near, b) for b in taken)
                if cost < best_cost:
                    best, best_cost = (ax_ - x, ay_ - y, ux, uy, ring > 0, box), cost
            if best_cost == 0:
                break
        dx, dy, ux, uy, leader, box = best
        taken.append(box)
        end = None
        if leader:  # the leader ends on the label's edge nearest the point
            end = (min(max(x, box[0] + PAD), box[2] - PAD) - x, min(max(y, box[1] + PAD), box[3] - PAD) - y)
            leaders.append(((x, y), (x + end[0], y + end[1])))
        left += best_cost >= 10
        ha = "left" if ux > 0 else "right" if ux < 0 else "center"
        va = "bottom" if uy > 0 else "top" if uy < 0 else "center"
        plan[i] = (dx, dy, ha, va, end)
    return plan, left


def label_points(ax: Any, xs: Sequence[float], ys: Sequence[float], short: Sequence[str],
                 long: Sequence[str], rungs: Sequence[Sequence[bool]], radii: Sequence[float],
                 colors: Sequence[str] | None = None) -> int:
    """Label the points (data coordinates) of `ax` so no label overlaps another, a marker, a
    leader line or the axes' edge; returns how many labels still overlap something (0 = clean).

    Each point has a `short` text (its number) and a `long` one (number and name); each rung
    says which points get the long text, and the first rung that places cleanly is drawn,
    else the last. Points on top of each other share one label ("3, 7"; all long if one is).
    `radii` are the marker radii in pixels. Call once the layout is final (after tight_layout):
    positions are worked out in display pixels, without drawing the figure.
    """
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    ax.get_xlim(), ax.get_ylim()  # applies pending autoscaling, so transData is final (no draw needed)
    pixels = [tuple(p) for p in ax.transData.transform(list(zip(xs, ys, strict=False)))]
    groups = [sorted(g, key=lambda j: (len(short[j]), short[j])) for g in _groups(pixels)]  # "1, 7, 12"
    anchors = [pixels[g[0]] for g in groups]
    sizes = [max(radii[j] for j in g) for g in groups]
    # Texts already in the axes (notes, "no data") are obstacles too.
    obstacles = [(b.x0, b.y0, b.x1, b.y1) for b in (t.get_window_extent(renderer) for t in ax.texts)]
    for n, rung in enumerate(rungs):
        texts = [", ".join(dict.fromkeys((long if any(rung[j] for j in g) else short)[j] for j in g))
                 for g in groups]
        plan, left = _plan(ax, renderer, anchors, texts, sizes, obstacles)
        if left == 0 or n == len(rungs) - 1:
            break
    from matplotlib.patches import ConnectionPatch
    from matplotlib.transforms import ScaledTranslation

    def shifted(dx: float, dy: float) -> Any:  # data point + an offset that keeps its inches at any dpi
        return ax.transData + ScaledTranslation(dx / fig.dpi, dy / fig.dpi, fig.dpi_scale_trans)

    for g, size, text, (dx, dy, ha, va, end) in zip(groups, sizes, texts, plan, strict=False):
        i = g[0]
        color = colors[i] if colors and len(g) == 1 else "#222"
        ax.text(xs[i], ys[i], text, transform=shifted(dx, dy), ha=ha, va=va, fontsize=FONT_SIZE,
                color=color, zorder=5, bbox={"boxstyle": "square,pad=0.05", "fc": "white", "ec": "none",
                                             "alpha": 0.75})
        if end is not None:
            ax.add_artist(ConnectionPatch((xs[i], ys[i]), (xs[i], ys[i]), ax.transData, shifted(*end),
                                          arrowstyle="-", color="#888", lw=0.6, zorder=4,
                                          shrinkA=size * 72 / fig.dpi, shrinkB=0))
    return left

"""The pool's boards in the report: the board-to-board spread of each variant measured on a
device class (its rounds ran on several boards), and the boards taken out of the pool.

Real fleets differ by more than one board's noise (clock, cooling, firmware): next to each
variant the report shows each board's median round p50 and the slowest/fastest ratio.
"""

from __future__ import annotations

import html
from collections import defaultdict
from statistics import median

HEADERS = ["variant", "target", "runtime", "p50 per board (ms)", "slowest / fastest"]


def spread_rows(records: list[dict]) -> list[list[str]]:
    rows = []
    for r in records:
        if r.get("status") != "ok":
            continue
        per: dict[str, list[float]] = defaultdict(list)
        for rnd in r.get("latency_rounds") or []:
            if rnd.get("board") and rnd.get("p50") is not None:
                per[rnd["board"]].append(float(rnd["p50"]))
        if len(per) < 2:
            continue
        p50 = {b: median(v) for b, v in sorted(per.items())}
        ratio = max(p50.values()) / min(p50.values()) if min(p50.values()) > 0 else float("nan")
        rows.append([r["variant"], r["target"], r["runtime"],
                     ", ".join(f"{b} {v:.4g} ({len(per[b])} rounds)" for b, v in p50.items()), f"{ratio:.3f}x"])
    return rows


def removed_lines(manifest: dict) -> list[str]:
    removed = (manifest.get("pool") or {}).get("removed") or {}
    return [f"{board}: taken out of the pool during the run: {why}" for board, why in sorted(removed.items())]


def boards_markdown(records: list[dict], manifest: dict) -> list[str]:
    from edgebench.analyze import format_table

    rows, removed = spread_rows(records), removed_lines(manifest)
    if not rows and not removed:
        return []
    lines = ["### Boards (device pool)", ""]
    if rows:
        lines += ["Each variant's rounds on each board of its class (median round p50):", "",
                  format_table(rows, HEADERS, markdown=True), ""]
    lines += [f"- {line}" for line in removed] + ([""] if removed else [])
    return lines


def boards_html(records: list[dict], manifest: dict) -> list[str]:
    rows, removed = spread_rows(records), removed_lines(manifest)
    if not rows and not removed:
        return []
    e = html.escape
    out = ["<h2>Boards (device pool)</h2>"]
    if rows:
        out.append("<p>Each variant's rounds on each board of its class (median round p50):</p><table><thead><tr>"
                   + "".join(f"<th>{e(h)}</th>" for h in HEADERS) + "</tr></thead><tbody>")
        out += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows]
        out.append("</tbody></table>")
    out += [f"<p>{e(line)}</p>" for line in removed]
    return out


"""The chart of `edgebench profile`: one stacked bar per variant, a segment per module.

One panel per (target, runtime); the same module keeps its colour across bars, so a module that
shrank or appeared (Q/DQ) shows at a glance. Bars are the record's clean p50; segments are the
modules' shares of it (measured, or estimated from MACs: the panel title says which).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

MAX_MODULES = 10  # the largest modules by time get their own colour; the rest are "other"


def draw_profiles(docs: list[dict], path: Path, run_id: str = "") -> Path | None:
    """Write the chart for the ok profile documents in `docs` to `path` (.png, and .svg beside)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for doc in docs:
        if doc.get("status") == "ok" and doc.get("rows"):
            panels[(doc["target"], doc["runtime"])].append(doc)
    if not panels:
        return None
    totals: dict[str, float] = defaultdict(float)
    for rows in panels.values():
        for doc in rows:
            for row in doc["rows"]:
                totals[row["module"]] += row["ms"]
    named = [m for m, _ in sorted(totals.items(), key=lambda kv: -kv[1])[:MAX_MODULES]]
    cmap = plt.get_cmap("tab20")
    colours = {m: cmap(i % 20) for i, m in enumerate(named)} | {"other": (0.8, 0.8, 0.8, 1.0)}
    height = max(2.5, 0.45 * max(len(v) for v in panels.values()) + 1.2)
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, height * len(panels)), squeeze=False)
    for ax, ((target, runtime), rows) in zip(axes[:, 0], sorted(panels.items())):
        labels = []
        for y, doc in enumerate(rows):
            left = 0.0
            parts: dict[str, float] = defaultdict(float)
            for row in doc["rows"]:
                parts[row["module"] if row["module"] in colours else "other"] += row["ms"]
            for module in [*named, "other"]:
                if parts.get(module):
                    ax.barh(y, parts[module], left=left, color=colours[module], edgecolor="white", linewidth=0.5)
                    left += parts[module]
            labels.append(doc["variant"])
        ax.set_yticks(range(len(rows)), labels)
        ax.invert_yaxis()
        ax.set_xlabel("ms (clean p50, split by each module's share)")
        how = "measured shares" if all(d.get("measured") for d in rows) else "ESTIMATED from MACs (no op profiler)"
        emulated = ", EMULATED" if any(d.get("emulated") for d in rows) else ""
        ax.set_title(f"{target} / {runtime}: {how}{emulated}", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[m]) for m in [*named, "other"]]
    fig.legend(handles, [*named, "other"], loc="center right", fontsize=8, title="module")
    fig.suptitle("Where the time goes" + (f" — run {run_id}" if run_id else ""), fontsize=12)
    fig.tight_layout(rect=(0, 0, 0.78, 1 - 0.3 / fig.get_size_inches()[1]))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    fig.savefig(path.with_suffix(".svg"))
    plt.close(fig)
    return path


def load_profiles(run_dir: Path) -> list[dict]:
    """The profile documents `edgebench profile` wrote into the run (none: [])."""
    import json

    folder = Path(run_dir) / "profiles"
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []


def _top(doc: dict, n: int = 8) -> list[list[str]]:
    rows = [[r["module"], ",".join(r["ops"])[:32], r.get("precision") or "-", f"{r['ms']:.4f}", f"{r['share'] * 100:.1f}%"]
            for r in doc["rows"][:n]]
    if len(doc["rows"]) > n:
        rest = doc["rows"][n:]
        rows.append([f"({len(rest)} more)", "", "", f"{sum(r['ms'] for r in rest):.4f}",
                     f"{sum(r['share'] for r in rest) * 100:.1f}%"])
    return rows


HEADERS = ["module", "ops", "precision", "ms", "share"]


def _caption(doc: dict) -> str:
    how = doc.get("label") or ""
    return (f"{doc['variant']} on {doc['target']}/{doc['runtime']} — p50 {doc['p50_ms']:.4g} ms; {how} "
            f"(profiles/{doc['variant']}__{doc['target']}__{doc['runtime']}.json)")


def profile_markdown(docs: list[dict]) -> list[str]:
    from edgebench.analyze import format_table

    ok = [d for d in docs if d.get("status") == "ok" and d.get("rows")]
    if not ok:
        return []
    lines = ["### Where the time goes (edgebench profile)", ""]
    for doc in ok:
        lines += [_caption(doc), "", format_table(_top(doc), HEADERS, markdown=True), ""]
    return lines


def profile_html(docs: list[dict]) -> list[str]:
    import html

    ok = [d for d in docs if d.get("status") == "ok" and d.get("rows")]
    if not ok:
        return []
    e = html.escape
    out = ["<h2>Where the time goes (edgebench profile)</h2>"]
    for doc in ok:
        out.append(f"<p>{e(_caption(doc))}</p><table><thead><tr>"
                   + "".join(f"<th>{e(h)}</th>" for h in HEADERS) + "</tr></thead><tbody>")
        out += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in _top(doc)]
        out.append("</tbody></table>")
    return out

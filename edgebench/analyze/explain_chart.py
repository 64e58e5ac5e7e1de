"""The chart and the report's section of `edgebench explain`: where the accuracy goes.

One panel per variant (those where one module adds the most error, at most MAX_PANELS): each
module's SQNR against the variant's own float model (fp32, on the host) along the network, one
line per target and runtime, each line's worst module (the lowest added dB) marked and named.
Against its own float model, not the baseline, so that a module the variant added (or changed)
has a point too, and a pruned or distilled variant (its float model differs from the baseline's
on purpose) shows only what its runtime's arithmetic does.
"""

from __future__ import annotations

from pathlib import Path

MAX_PANELS = 6


def _ok(docs: list[dict]) -> list[dict]:
    return [d for d in docs if d.get("status") == "ok" and d.get("exposed")]


def _points(doc: dict) -> dict[str, float]:
    return {r["module"]: r["float_sqnr_db"] for r in doc["rows"] if r.get("float_sqnr_db") is not None}


def _output_sqnr(doc: dict) -> float | None:
    """The SQNR against the baseline of the last module that has one (the model's output, usually)."""
    values = [r["sqnr_db"] for r in doc["rows"] if r.get("sqnr_db") is not None and "float model" not in r.get("note", "")]
    return values[-1] if values else None


def _chosen(docs: list[dict]) -> list[str]:
    """Variants with a per-layer line to draw (three modules or more), the one whose worst
    module adds the most error first."""
    worst: dict[str, float] = {}
    for doc in _ok(docs):
        added = [r["added_db"] for r in doc["rows"] if r.get("added_db") is not None]
        if len(_points(doc)) >= 3 and added:
            worst[doc["variant"]] = min(worst.get(doc["variant"], float("inf")), min(added))
    return sorted(worst, key=lambda v: worst[v])[:MAX_PANELS]


def draw_explanations(docs: list[dict], path: Path, run_id: str = "") -> Path | None:
    """Write the chart for the explanations in `docs` to `path` (.png, and .svg beside)."""
    variants = _chosen(docs)
    if not variants:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(variants), 1, figsize=(10, 3.0 * len(variants) + 0.6), squeeze=False)
    for ax, variant in zip(axes[:, 0], variants):
        lines = [d for d in _ok(docs) if d["variant"] == variant]
        order: list[str] = []
        for doc in lines:
            order += [r["module"] for r in doc["rows"] if r.get("exposed") and r["module"] not in order]
        for doc in sorted(lines, key=lambda d: (d["target"], d["runtime"])):
            points = _points(doc)
            if not any(m in points for m in order):
                continue
            # A gap where a module was not compared (not exposed, or not the float model's tensor).
            (line,) = ax.plot(range(len(order)), [points.get(m, float("nan")) for m in order], marker="o",
                              markersize=3, label=f"{doc['target']}/{doc['runtime']}")
            culprit = (doc.get("worst") or [None])[0]
            if culprit in points:
                x, y = order.index(culprit), points[culprit]
                ax.plot([x], [y], marker="v", markersize=10, color=line.get_color())
                ax.annotate(culprit or "(top level)", (x, y), textcoords="offset points", xytext=(4, -14),
                            fontsize=8, color=line.get_color())
        ax.set_xticks(range(len(order)), [m or "(top level)" for m in order], rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("SQNR vs its float model (dB)")
        ax.set_title(f"{variant}: ▼ the module that adds the most error", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    fig.suptitle("Where the accuracy goes" + (f" — run {run_id}" if run_id else ""), fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_size_inches()[1]))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    fig.savefig(path.with_suffix(".svg"))
    plt.close(fig)
    return path


HEADERS = ["variant", "target/runtime", "computes", "output SQNR dB", "worst modules (added dB)"]


def summary_rows(docs: list[dict]) -> list[list[str]]:
    rows = []
    for doc in sorted(docs, key=lambda d: (d["variant"], d["target"], d["runtime"])):
        where = f"{doc['target']}/{doc['runtime']}"
        if doc.get("status") != "ok":
            rows.append([doc["variant"], where, "", "", f"error: {doc.get('error')}"[:120]])
            continue
        if not doc.get("exposed"):
            rows.append([doc["variant"], where, str(doc.get("precision") or ""), "", str(doc.get("note"))[:120]])
            continue
        added = {r["module"]: r.get("added_db") for r in doc["rows"]}
        worst = ", ".join(f"{m or '(top level)'} ({added[m]:.1f})" for m in doc.get("worst") or []) or "none measurable"
        skipped = sum("not compared" in (r.get("note") or "") for r in doc["rows"])
        if skipped:  # the baseline's tensor for them was not its float model's (explain's check)
            worst += f"; {skipped} of {len(doc['rows'])} modules not compared (the converter fused their tensors)"
        output = _output_sqnr(doc)
        rows.append([doc["variant"], where, str(doc.get("precision") or ""),
                     "—" if output is None else f"{output:.1f}", worst])
    return rows


INTRO = ("Each module's output against the same tensor of the fp32 baseline on the same target and runtime "
         "(`edgebench explain`; files in explanations/). Added dB: the SQNR of the error a module adds on its "
         "own, beyond its input's — the lower, the more that module is to blame; `quantize keep_float` keeps "
         "named modules (or `\"auto:K\"`, the K worst) in float.")


def explain_markdown(docs: list[dict]) -> list[str]:
    from edgebench.analyze import format_table

    if not docs:
        return []
    lines = ["### Where the accuracy goes (edgebench explain)", "", INTRO, "",
             "Chart: plots/explain.png (per-module SQNR along the network, one line per runtime).", ""]
    return [*lines, format_table(summary_rows(docs), HEADERS, markdown=True), ""]


def explain_html(docs: list[dict]) -> list[str]:
    import html

    if not docs:
        return []
    e = html.escape
    out = ["<h2>Where the accuracy goes (edgebench explain)</h2>", f"<p>{e(INTRO)}</p><table><thead><tr>"
           + "".join(f'<th class="t">{e(h)}</th>' for h in HEADERS) + "</tr></thead><tbody>"]
    out += ["<tr>" + "".join(f'<td class="t">{e(c)}</td>' for c in row) + "</tr>" for row in summary_rows(docs)]
    return [*out, "</tbody></table>"]

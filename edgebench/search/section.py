"""A search run's result in report.md (from search.json): the best and what it cost. Written as
`RUN/sections/search.md`, which the report includes (edgebench.analyze.report.handed_sections):
the report does not import the search."""

from __future__ import annotations


def search_markdown(run) -> list[str]:
    """A search run's result in report.md (from search.json): the best and what it cost."""
    import json
    from pathlib import Path

    path = Path(run) / "search.json"
    if not path.is_file():
        return []
    out = json.loads(path.read_text())
    lines = ["### Search", "", f"{out['trials']} trials, {out['device_trials']} measured on the device "
             f"({out['device_seconds']:.1f} s), {out.get('pruned_before_export', 0)} pruned before export; budgets "
             + ", ".join(f"{k} {v:g}" for k, v in out["budgets"].items()) + f"; minimize {', '.join(out['minimize'])}.", ""]
    best = out.get("best")
    lines.append(f"Best within budgets: **{best['variant']}** — {best['chain']}" if best else "No trial met the budgets.")
    return [*lines, ""]


def write_search_section(run) -> None:
    """`RUN/sections/search.md` from search.json, for the report to include."""
    from pathlib import Path

    lines = search_markdown(run)
    if lines:
        folder = Path(run) / "sections"
        folder.mkdir(exist_ok=True)
        (folder / "search.md").write_text("\n".join(lines), encoding="utf-8")

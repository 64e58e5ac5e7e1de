"""`edgebench report RUN_DIR`: records.csv, plots, report.html and report.md of a run.

    >>> write_reports("results/20261128T181500Z-3fa9c1")
    [PosixPath('.../records.csv'), PosixPath('.../plots/accuracy_vs_size.png'), ...]

report.html is one self-contained file (images embedded, no network, a small inline script to
sort the table); report.md is for PR comments and CI step summaries.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgebench.analyze import (
    ACCURACY,
    best_variants,
    describe_steps,
    energy_of,
    fmt,
    format_table,
    front_metrics,
    load,
    pareto_front,
    quality,
    read_manifest,
)
from edgebench.analyze.intervals import NOTE as LATENCY_NOTE
from edgebench.analyze.intervals import intervals_of, latency_bounds, ratio_text, row_ratio
from edgebench.export.precision import precision_label
from edgebench.measure.accuracy import SIGNIFICANCE
from edgebench.measure.energy import NO_METER_NOTE

if TYPE_CHECKING:
    import pandas as pd

HELP = "redraw plots and write records.csv, report.html and report.md from a run's records"

# (header, column, scale, digits[, sort column]): what the tables show, in the user's units.
# A text column may sort by a numeric one. The columns a choice is made on come first (what, where,
# how good, how fast, how big), so they are on a laptop's screen; the details follow.
TABLE = (
    ("variant", "variant", None, 0), ("target", "target_text", None, 0), ("runtime", "runtime", None, 0),
    ("accuracy %", "accuracy", 100, 4), ("95% CI", "ci_text", None, 0, "accuracy"),
    ("Δ acc pt", "delta_text", None, 0, "accuracy_delta_pt"),
    ("p50 ms", "latency_ms.p50", 1, 3), ("× baseline", "ratio_text", None, 0, "latency_ratio.value"),
    ("size KB", "size_bytes", 1 / 1024, 4), ("computes", "ran_text", None, 0),
    ("steps", "steps_text", None, 0), ("gzip KB", "size_gzip_bytes", 1 / 1024, 4),
    ("params", "params", 1, 0), ("MACs", "macs", 1, 0),
    ("p90 ms", "latency_ms.p90", 1, 3), ("load ms", "load_s", 1000, 3), ("RSS after load MB", "rss_after_load_mb", 1, 3),
    ("peak RSS inference MB", "peak_rss_mb", 1, 3), ("energy mJ", "energy_mj.value", 1, 3),
    ("n", "n_eval", 1, 0), ("agreement %", "agreement", 100, 4),
    ("status", "status_text", None, 0),
)  # fmt: skip
TEXT_COLUMNS = ("variant", "steps_text", "target_text", "runtime", "ran_text", "ci_text", "delta_text",
                "status_text", "ratio_text")
SIGNIFICANCE_NOTE = ("Δ acc pt: accuracy minus the baseline's on the same target, runtime and inputs; "
                     "* the difference is significant (exact McNemar test, p < 0.05), n.s. it is not: "
                     "treat it as no difference. 95% CI: Wilson interval of the accuracy on n inputs.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="a results/<run-id>/ folder")


def main(args: argparse.Namespace) -> int:
    quiet = getattr(args, "quiet", False) or getattr(args, "json", False)
    paths = write_reports(args.run_dir, log=(lambda *a: None) if quiet else print)
    if getattr(args, "json", False):
        print(json.dumps([str(p) for p in paths]))
    return 0


def prepare(df: pd.DataFrame) -> pd.DataFrame:
    """The loaded table plus `on_front` and the text columns the reports show."""
    df = latency_bounds(df)  # the p50's interval from the ratio to the baseline: ties on the front
    metrics, directions = front_metrics(df)
    df["on_front"] = pareto_front(df, metrics, directions=directions, intervals=intervals_of(df)) if metrics else False
    df["ratio_text"] = [ratio_text(row_ratio(row)) for _, row in df.iterrows()]
    q = quality(df)
    df["steps_text"] = df["steps"].map(describe_steps)
    df["target_text"] = df["target"].astype(str) + df["emulated"].map({True: " (emulated)", False: ""})
    df["status_text"] = [s if s == "ok" else f"{s}: {e}" for s, e in zip(df["status"], df["error"], strict=False)]
    if not q.delta_column:  # neither accuracy nor a task metric: agreement alone, no difference to show
        df["accuracy_delta_pt"], df["delta_text"], df["ci_text"] = float("nan"), "—", "—"
    elif q == ACCURACY:
        df["accuracy_delta_pt"] = accuracy_delta_pt(df)
        df["delta_text"] = [_delta_text(v, d, p) for v, d, p in
                            zip(df["variant"], df["accuracy_delta_pt"], df["accuracy_delta_p"], strict=False)]
        df["ci_text"] = df["accuracy_ci95"].map(_ci_text)
    else:  # the task's metric, in its own units; the difference and its p from the paired bootstrap
        import pandas as pd

        df["accuracy_delta_pt"] = pd.to_numeric(df.get(q.delta_column), errors="coerce")
        df["delta_text"] = [_delta_text(v, d, p, digits=4) for v, d, p in
                            zip(df["variant"], df[q.delta_column], df[q.p_column], strict=False)]
        df["ci_text"] = df[q.ci_column].map(lambda ci: _ci_text(ci, 1.0))
    df.attrs["quality"] = q
    df["ran_text"] = [precision_label(a if isinstance(a, str) else None, r if isinstance(r, str) else None)
                      for a, r in zip(df["precision"], df["compute_precision"], strict=False)]
    df.attrs["front_metrics"] = metrics
    return df.sort_values(["target", "runtime", "latency_ms.p50"], na_position="last", kind="stable")


def accuracy_delta_pt(df: pd.DataFrame) -> pd.Series:
    """Accuracy minus the baseline's on the same target and runtime, in points (NaN if unknown)."""
    import pandas as pd

    base = df[df["variant"].eq("baseline") & df["status"].eq("ok")].set_index(["target", "runtime"])["accuracy"]
    base = base[~base.index.duplicated()]
    keys = pd.MultiIndex.from_frame(df[["target", "runtime"]])
    return (pd.to_numeric(df["accuracy"], errors="coerce") - base.reindex(keys).to_numpy()) * 100


def _delta_text(variant: Any, delta: Any, p: Any, digits: int = 2) -> str:
    if variant == "baseline" or delta is None or delta != delta:
        return "—"
    if p is None or p != p:
        return f"{delta:+.{digits}g}" if digits > 2 else f"{delta:+.2f}"
    text = f"{delta:+.{digits}g}" if digits > 2 else f"{delta:+.2f}"
    return f"{text} {'*' if p < SIGNIFICANCE else '(n.s.)'}"


def _ci_text(ci: Any, scale: float = 100.0) -> str:
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and None not in ci:
        return f"{ci[0] * scale:.1f}–{ci[1] * scale:.1f}" if scale == 100.0 else f"{ci[0]:.4g}–{ci[1]:.4g}"
    return "—"


def significance_note(df: pd.DataFrame) -> str:
    q = df.attrs.get("quality", ACCURACY)
    latency = f" {LATENCY_NOTE}" if df["latency_ratio.value"].notna().any() else ""
    if q == ACCURACY:
        return SIGNIFICANCE_NOTE + latency
    return (f"Δ {q.name}: {q.name} minus the baseline's on the same target, runtime and inputs "
            f"({'higher' if q.direction > 0 else 'lower'} is better); * when the paired bootstrap's p < "
            f"{SIGNIFICANCE}, (n.s.) otherwise: treat it as no difference. 95% CI: bootstrap interval "
            f"of the {q.name} over the n inputs.{latency}")


def _drop_text(df: pd.DataFrame) -> str:
    q = df.attrs.get("quality", ACCURACY)
    return "1 point" if q == ACCURACY else "1 %"


def table_spec(df: pd.DataFrame) -> tuple:
    """TABLE, with the task's metric in place of accuracy for a run that is not a classifier's."""
    q = df.attrs.get("quality", ACCURACY)
    if q == ACCURACY:
        return TABLE
    swap = {"accuracy %": (q.name, q.column, 1, 4), "95% CI": ("95% CI", "ci_text", None, 0, q.column),
            "Δ acc pt": (f"Δ {q.name}", "delta_text", None, 0, "accuracy_delta_pt")}
    return tuple(swap.get(spec[0], spec) for spec in TABLE if spec[0] != "agreement %")


def energy_notes(df: pd.DataFrame) -> list[str]:
    """One line per target/runtime saying what its energy figures are: measured or which
    estimate, with the watts, their scope and their source."""
    from edgebench.measure.energy import label

    lines = []
    for (target, runtime), group in df[df["status"].eq("ok")].groupby(["target", "runtime"]):
        figures = [energy_of(row) for _, row in group.iterrows()]
        labels = sorted({label(e) for e in figures if e.get("value") == e.get("value") and e.get("value") is not None})
        if labels:
            lines.append(f"{target}/{runtime}: {'; '.join(labels)}")
    return lines


def _cell(row: Any, column: str, scale: float | None, digits: int, sort: str | None = None) -> tuple[str, Any]:
    """(shown text, sort key) of one table cell."""
    value = row[column]
    if scale is None:
        key: Any = str(value)
        if sort is not None:
            number = row.get(sort)
            key = float(number) if isinstance(number, (int, float)) and number == number else None
        return str(value if value is not None else "—"), key
    try:
        number = float(value) * scale
    except (TypeError, ValueError):
        return "—", None
    if number != number:  # NaN
        return "—", None
    return (fmt(round(number)) if digits == 0 else fmt(number, digits)), number


def write_reports(run_dir: str | Path, log: Callable[..., Any] = print) -> list[Path]:
    """Write records.csv, plots/, report.html and report.md into `run_dir`; return their paths."""
    from edgebench.analyze.boards import boards_html, boards_markdown
    from edgebench.analyze.explain_chart import draw_explanations, explain_html, explain_markdown
    from edgebench.analyze.plots import write_plots
    from edgebench.analyze.profile_chart import (
        draw_profiles,
        load_profiles,
        profile_html,
        profile_markdown,
    )
    from edgebench.measure.numerics import load_explanations

    run = Path(run_dir).expanduser()
    df = prepare(load(run))
    manifest = read_manifest(run)
    run_id = manifest.get("run_id") or (df["run_id"].dropna().iloc[0] if df["run_id"].notna().any() else run.name)
    paths = [write_csv(df, run / "records.csv")]
    log(f"wrote {paths[0]}")
    plots = write_plots(df, run / "plots", str(run_id))
    profiles = load_profiles(run)  # written by `edgebench profile`, if it ran
    chart = draw_profiles(profiles, run / "plots" / "profile.png", str(run_id)) if profiles else None
    plots += [chart] if chart else []
    explanations = load_explanations(run)  # written by `edgebench explain`, if it ran
    chart = draw_explanations(explanations, run / "plots" / "explain.png", str(run_id)) if explanations else None
    plots += [chart] if chart else []
    if (run / "plots" / "search.png").is_file():  # drawn by `edgebench search`
        plots.append(run / "plots" / "search.png")
    for p in plots:
        log(f"wrote {p} (+ .svg)")
    from edgebench.measure.records import latest, read_records

    records = latest(read_records(run / "records.jsonl")) if (run / "records.jsonl").exists() else []
    html_path = run / "report.html"
    html_path.write_text(render_html(df, manifest, plots, str(run_id),
                                     [*boards_html(records, manifest), *profile_html(profiles),
                                      *explain_html(explanations)]), encoding="utf-8")
    md_path = run / "report.md"
    md_path.write_text("\n".join([render_markdown(df, manifest, plots, str(run_id), run), *handed_sections(run),
                                  *boards_markdown(records, manifest), *profile_markdown(profiles),
                                  *explain_markdown(explanations)]), encoding="utf-8")
    log(f"wrote {html_path}\nwrote {md_path}")
    return [*paths, *plots, html_path, md_path]


def handed_sections(run: Path) -> list[str]:
    """Sections other commands hand to the report as files (`RUN/sections/*.md`, e.g. the
    search's): the report includes them without importing the command that wrote them."""
    folder = run / "sections"
    return [p.read_text(encoding="utf-8") for p in sorted(folder.glob("*.md"))] if folder.is_dir() else []


def write_csv(df: pd.DataFrame, path: Path) -> Path:
    """The flat table; raw latency samples stay in records.jsonl (they would swamp a CSV)."""
    table = df.drop(columns=["latency_samples_ms", "latency_rounds", "steps_text", "target_text", "status_text",
                             "run_dir", *[c for c in df.columns if str(c).startswith("precision_ops.")]],
                    errors="ignore").copy()
    table["steps"] = table["steps"].map(lambda s: json.dumps(s) if isinstance(s, list) else "")
    table.to_csv(path, index=False)
    return path


def _rows(df: pd.DataFrame) -> list[list[tuple[str, Any]]]:
    spec = table_spec(df)
    return [[_cell(row, *s[1:]) for s in spec] for _, row in df.iterrows()]


def render_markdown(df: pd.DataFrame, manifest: dict, plots: list[Path], run_id: str, run: Path) -> str:
    git = manifest.get("git") or {}
    lines = [f"## edgebench run `{run_id}`", ""]
    if git:
        lines.append(f"commit `{git.get('commit') or 'not a git checkout'}`{' (dirty)' if git.get('dirty') else ''} · "
                     f"{_machine_line(manifest)}")
        lines.append("")
    rows = [["★" if front else ""] + [text for text, _ in cells]
            for front, cells in zip(df["on_front"], _rows(df), strict=False)]
    lines.append(format_table(rows, ["front"] + [h for h, *_ in table_spec(df)], markdown=True))
    note = f"★ Pareto front per target/runtime over: {', '.join(df.attrs['front_metrics']) or '—'}."
    lines += ["", note, "", significance_note(df), ""]
    notes = energy_notes(df)
    if notes:
        lines += ["Energy per inference — " + ("" if _any_measured(df) else f"{NO_METER_NOTE}:"), ""]
        lines += [f"- {n}" for n in notes] + [""]
    best = best_variants(df)
    if len(best):
        lines += ["### Best variant per target/runtime", "",
                  f"Within {_drop_text(df)} of the baseline's {df.attrs.get('quality', ACCURACY).name}: "
                  "the fastest (p50) and the smallest.", ""]
        lines.append(format_table(best.fillna("—").values.tolist(),
                                  ["target", "runtime", "fastest", "smallest"], markdown=True))
        lines.append("")
    if plots:
        lines += ["### Charts", ""]
        lines += [f"- [{p.stem.replace('_', ' ')}]({p.relative_to(run).as_posix()})" for p in plots]
        lines.append("")
    return "\n".join(lines)


def _any_measured(df: pd.DataFrame) -> bool:
    return "energy_mj.measured" in df.columns and bool(df["energy_mj.measured"].eq(True).any())


def _machine_line(manifest: dict) -> str:
    m = manifest.get("host") or manifest.get("machine") or {}
    parts = [m.get("cpu"), m.get("arch"), m.get("system"),
             f"{m['cpu_count']} CPUs" if m.get("cpu_count") else None]
    return ", ".join(str(p) for p in parts if p) or "machine unknown"


STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:20px}h2{font-size:16px;margin-top:28px}
table{border-collapse:collapse;font-size:12px}td,th{padding:3px 8px;border-bottom:1px solid #ddd;
text-align:right;white-space:nowrap}td.t,th.t{text-align:left}th{cursor:pointer;background:#f4f4f4;
position:sticky;top:0}th.asc:after{content:" ▲"}th.desc:after{content:" ▼"}
tr.front td{background:#fff7d6}tr.error td{color:#a00}td.err{white-space:normal;max-width:420px}
img{max-width:100%;border:1px solid #eee;margin:8px 0}dl{display:grid;grid-template-columns:max-content auto;
gap:2px 12px}dt{color:#666}pre{background:#f7f7f7;padding:8px;overflow:auto;font-size:12px}
"""
# Sorts numerically on data-v (missing values last), else as text; no libraries, no network.
SCRIPT = r"""
document.querySelectorAll('table.sortable th').forEach(function(th){
  th.addEventListener('click',function(){
    var table=th.closest('table'),body=table.tBodies[0],i=+th.dataset.col;
    var asc=!th.classList.contains('asc');
    table.querySelectorAll('th').forEach(function(h){h.classList.remove('asc','desc')});
    th.classList.add(asc?'asc':'desc');
    var rows=Array.prototype.slice.call(body.rows);
    rows.sort(function(a,b){
      var x=a.cells[i].dataset.v,y=b.cells[i].dataset.v;
      if(x===undefined||x===''){return 1}if(y===undefined||y===''){return -1}
      var num=/^-?\d*\.?\d+(e[-+]?\d+)?$/i,c;
      if(num.test(x)&&num.test(y)){c=parseFloat(x)-parseFloat(y)}else{c=x.localeCompare(y)}
      return asc?c:-c});
    rows.forEach(function(r){body.appendChild(r)});
  });
});
"""


def render_html(df: pd.DataFrame, manifest: dict, plots: list[Path], run_id: str, extra: list[str] | None = None) -> str:
    e = html.escape
    git = manifest.get("git") or {}
    facts = {
        "run": run_id,
        "commit": f"{git.get('commit') or 'not a git checkout'}{' (dirty)' if git.get('dirty') else ''}",
        "edgebench": manifest.get("edgebench", manifest.get("edgebench_version", "—")),
        "machine": _machine_line(manifest),
        "started": manifest.get("started", "—"),
        "finished": manifest.get("finished", "—"),
        "records": f"{len(df)} ({int(df['status'].ne('ok').sum())} errors)",
        "front over": ", ".join(df.attrs["front_metrics"]) or "—",
    }
    head = [("★", True)] + [(h, col in TEXT_COLUMNS) for h, col, *_ in table_spec(df)]
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           f"<title>edgebench report {e(run_id)}</title>", f"<style>{STYLE}</style>", "</head>", "<body>",
           f"<h1>edgebench report — run {e(run_id)}</h1>", "<dl>"]
    out += [f"<dt>{e(k)}</dt><dd>{e(str(v))}</dd>" for k, v in facts.items()]
    out += ["</dl>", "<h2>Variants</h2>",
            "<p>★ on the Pareto front of its target/runtime. Click a header to sort. "
            "Peak RSS is the runner process's during batch-1 inference (runtime and model; the "
            "accuracy pass is not counted). Computes: the precision the runtime's graph really "
            f"computes in.</p><p>{e(significance_note(df))}</p>",
            '<table class="sortable"><thead><tr>']
    out += [f'<th data-col="{i}" class="{"t" if text else ""}">{e(h)}</th>' for i, (h, text) in enumerate(head)]
    out.append("</tr></thead><tbody>")
    for (_, row), cells in zip(df.iterrows(), _rows(df), strict=False):
        css = "front" if row["on_front"] else ("error" if row["status"] != "ok" else "")
        tds = [f'<td class="t" data-v="{1 if row["on_front"] else 0}">{"★" if row["on_front"] else ""}</td>']
        for (text, key), (_, text_col) in zip(cells, head[1:], strict=False):
            klass = ("t err" if text.startswith("error") else "t") if text_col else ""
            sort = "" if key is None else (repr(key) if isinstance(key, float) else str(key))
            tds.append(f'<td class="{klass}" data-v="{e(sort)}">{e(text)}</td>')
        out.append(f'<tr class="{css}">{"".join(tds)}</tr>')
    out.append("</tbody></table>")
    notes = energy_notes(df)
    if notes:
        out.append(f"<p>Energy per inference{'' if _any_measured(df) else ' (' + e(NO_METER_NOTE) + ')'}:</p><ul>")
        out += [f"<li>{e(n)}</li>" for n in notes] + ["</ul>"]
    for png in plots:
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        out += [f"<h2>{e(png.stem.replace('_', ' '))}</h2>",
                f'<img alt="{e(png.stem)}" src="data:image/png;base64,{data}">']
    out += extra or []
    config = json.dumps(manifest.get("experiment", {}), indent=2, default=str)
    out += ["<h2>Experiment</h2>", f"<pre>{e(config)}</pre>", f"<script>{SCRIPT}</script>",
            "</body>", "</html>"]
    return "\n".join(out)

"""`edgebench explain RUN_DIR`: where a variant's accuracy goes, per PyTorch module, on the target.

How the tensors are exposed and compared is in `edgebench.measure.numerics`; this is the
command: choose records, run the baseline once per target and runtime with its module
boundaries exposed, then each variant, print per-module tables with the culprits marked, redraw
the chart and the report's section.

    $ edgebench explain results/RUN --variant int8 --target local --runtime onnxruntime
    $ edgebench explain results/RUN --inputs 500           # every measured variant, 500 eval inputs
    $ edgebench explain results/RUN --json    # rows {variant, target, runtime, module, sqnr_db, added_db, ...}

Each explanation is written to `RUN/explanations/<variant>__<target>__<runtime>.json`.
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from edgebench.errors import ConfigError
from edgebench.measure.numerics import DEFAULT_INPUTS

HELP = "per-layer numerics of variants on a target against the fp32 baseline: which module loses the accuracy"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="a run folder (with its variants/)")
    parser.add_argument("--variant", action="append", help="variant(s) to explain (default: every measured one)")
    parser.add_argument("--target", help="only this target")
    parser.add_argument("--runtime", help="only this runtime")
    parser.add_argument("--inputs", type=int, default=None,
                        help=f"eval inputs to compare on (default: {DEFAULT_INPUTS}, or fewer where the target's "
                             "profile limits its eval set)")
    parser.add_argument("--top", type=int, default=12, help="rows per table (default: %(default)s)")


def _records(run_dir: Path) -> list[dict]:
    from edgebench.measure.records import latest, read_records

    path = run_dir / "records.jsonl"
    if not path.is_file():
        raise ConfigError(f"{run_dir}: not a run folder (no records.jsonl)")
    return [r for r in latest(read_records(path)) if r.get("status") == "ok"]


def _chosen(records: list[dict], args) -> list[dict]:
    out = [r for r in records
           if (args.variant and r["variant"] in args.variant or not args.variant and r.get("steps"))
           and (not args.target or r["target"] == args.target)
           and (not args.runtime or r["runtime"] == args.runtime)]
    if not out:
        raise ConfigError(f"{args.run_dir}: no measured record matches "
                          f"variant={args.variant or 'any but the baseline'} target={args.target or 'any'} "
                          f"runtime={args.runtime or 'any'}")
    return out


def _inputs(args, profile) -> int:
    if args.inputs is not None:
        return args.inputs
    limit = int((profile.measure or {}).get("eval_limit") or 0)
    return min(DEFAULT_INPUTS, limit) if limit else DEFAULT_INPUTS


def table(doc: dict, top: int) -> str:
    """One explanation as text: a row per module in the order they run, the culprits marked."""
    from edgebench.analyze import format_table

    head = f"{doc['variant']} on {doc['target']}/{doc['runtime']} against the baseline there"
    if doc.get("status") != "ok":
        return f"{head}\n  error: {doc.get('error')}"
    if not doc.get("exposed"):
        return f"{head}\n  {doc.get('note')}"
    culprits = {m: i + 1 for i, m in enumerate(doc.get("worst") or [])}
    head += f" ({doc['n_inputs']} inputs{', EMULATED' if doc.get('emulated') else ''})"
    if doc.get("note"):
        head += f"\n  {doc['note']}"

    def num(value, digits=1):
        return "-" if value is None else f"{value:.{digits}f}"

    rows = [[r["module"] or "(top level)", num(r.get("sqnr_db")), num(r.get("float_sqnr_db")), num(r.get("added_db")),
             num(r.get("cosine"), 4),
             "-" if r.get("max_abs") is None else f"{r['max_abs']:.3g}",
             f"#{culprits[r['module']]}" if r["module"] in culprits else "",
             "identical" if r.get("identical") else r.get("note", "")[:60]] for r in doc["rows"][:top]]
    if len(doc["rows"]) > top:
        rows.append([f"({len(doc['rows']) - top} more)", "", "", "", "", "", "", ""])
    worst = ", ".join(f"{m or '(top level)'}" for m in doc.get("worst") or []) or "none adds measurable error"
    return (f"{head}\n  SQNR against the baseline there, and against the variant's float model (fp32, here); added "
            f"dB: the SQNR of the error a module adds on its own (lower: more to blame); worst: {worst}\n"
            + format_table(rows, ["module", "SQNR dB", "vs float", "added dB", "cosine", "max abs", "worst", "note"]))


def _explain_place(target, options, run_dir: Path, runtime: str, records: list[dict], args) -> list[dict]:
    """Explain `records` (one target and runtime) against the baseline there, run once."""
    from edgebench.measure.numerics import checked_reference, explain_on, exposed_tensors

    reference = checked_reference(run_dir, exposed_tensors(target, options, run_dir, "baseline", runtime))
    docs = []
    # The next artifact runs on the target while this one is compared here (the runner is
    # another process); one ahead at most, so only its tensors wait in memory.
    with ThreadPoolExecutor(max_workers=1) as ahead:
        pending = ahead.submit(exposed_tensors, target, options, run_dir, records[0]["variant"], runtime)
        for i, record in enumerate(records):
            got = pending.result()
            if i + 1 < len(records):
                pending = ahead.submit(exposed_tensors, target, options, run_dir, records[i + 1]["variant"], runtime)
            docs.append(explain_on(target, options, run_dir, record, reference, got))
            if not getattr(args, "json", False):
                print(table(docs[-1], args.top) + "\n")
    return docs


def main(args: argparse.Namespace) -> int:
    from edgebench.analyze.remeasure import manifest_profiles, run_options
    from edgebench.measure.numerics import (
        explain_options,
        json_rows,
        write,
    )
    from edgebench.targets import open_target

    run_dir = Path(args.run_dir)
    if args.inputs is not None and args.inputs < 1:
        raise ConfigError("--inputs must be at least 1")
    chosen = _chosen(_records(run_dir), args)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    profiles = manifest_profiles(manifest, [])
    docs: list[dict] = []
    by_place: dict[tuple[str, str], list[dict]] = {}
    for record in chosen:
        by_place.setdefault((record["target"], record["runtime"]), []).append(record)
    for (name, runtime), records in by_place.items():
        profile = profiles.get(name)
        if not hasattr(profile, "name"):
            for record in records:
                docs.append(write(run_dir, {"variant": record["variant"], "target": name, "runtime": runtime,
                                            "status": "error", "error": f"target {name}: {profile or 'not in the manifest'}"}))
            continue
        options = explain_options(run_options(manifest, profile, 1.0), _inputs(args, profile))
        target = open_target(profile)
        try:
            docs += _explain_place(target, options, run_dir, runtime, records, args)
        finally:
            target.close()
    if getattr(args, "json", False):
        print(json.dumps([row for doc in docs for row in json_rows(doc)]))
    else:  # the chart and the report's section: every explanation of this run so far
        from edgebench.analyze.report import write_reports

        write_reports(run_dir, log=lambda _m: None)
        print(f"wrote {run_dir / 'plots' / 'explain.png'} and the report's 'Where the accuracy goes' section")
    return 1 if all(d.get("status") != "ok" for d in docs) else 0

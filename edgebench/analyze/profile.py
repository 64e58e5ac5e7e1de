"""`edgebench profile RUN_DIR`: where a variant's time goes, per PyTorch module, on the target.

How a profile is taken and labelled is in `edgebench.measure.profiling`; this is the command: choose
records, profile each on its target, print tables and per-module differences, redraw the chart
and the report's section.

    $ edgebench profile results/RUN --variant slim50 --target local --runtime onnxruntime
    $ edgebench profile results/RUN --variant slim50 --against baseline     # what changed where
    $ edgebench profile results/RUN --json    # rows {variant, target, runtime, module, op_types, time_ms, ...}
    $ edgebench profile results/RUN --cluster tls://SCHED:8786 --tls certs/   # on the pool's boards

Each profile is written to `RUN/profiles/<variant>__<target>__<runtime>.json`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edgebench.errors import ConfigError
from edgebench.measure.profiling import DEFAULT_RUNS

HELP = "per-layer time of variants on a target, mapped to PyTorch modules; diff against another variant"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="a run folder (with its variants/)")
    parser.add_argument("--variant", action="append", help="variant(s) to profile (default: all measured)")
    parser.add_argument("--target", help="only this target")
    parser.add_argument("--runtime", help="only this runtime")
    parser.add_argument("--against", metavar="VARIANT",
                        help="also profile VARIANT and show per-module differences (\"parent\": each variant's parent)")
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS, help="profiled runs after warm-up (default: %(default)s)")
    parser.add_argument("--top", type=int, default=15, help="rows per table (default: %(default)s)")


def _records(run_dir: Path) -> list[dict]:
    from edgebench.measure.records import read_records

    path = run_dir / "records.jsonl"
    if not path.is_file():
        raise ConfigError(f"{run_dir}: not a run folder (no records.jsonl)")
    return [r for r in read_records(path) if r.get("status") == "ok"]


def _chosen(records: list[dict], args) -> list[dict]:
    out = [r for r in records
           if (not args.variant or r["variant"] in args.variant)
           and (not args.target or r["target"] == args.target)
           and (not args.runtime or r["runtime"] == args.runtime)]
    if not out:
        raise ConfigError(f"{args.run_dir}: no measured record matches "
                          f"variant={args.variant or 'any'} target={args.target or 'any'} runtime={args.runtime or 'any'}")
    return out


def profile_record(run_dir: Path, record: dict, manifest: dict, runs: int, targets: dict, opener=None) -> dict:
    """Profile one record's artifact on its target, opened from the run's manifest (and kept
    open in `targets` for the next record); the profile document (also written to disk).
    `opener(profile, record)`, when given, opens the target instead (the device pool's: the
    board that measured the record, edgebench.pool.profile)."""
    from edgebench.analyze.remeasure import manifest_profiles, run_options
    from edgebench.measure.profiling import profile_on, write
    from edgebench.targets import open_target

    name = record["target"]
    profile = manifest_profiles(manifest, []).get(name)
    if not hasattr(profile, "name"):
        doc = {"variant": record["variant"], "target": name, "runtime": record["runtime"],
               "p50_ms": float(record["latency_ms"]["p50"]), "emulated": bool(record.get("emulated")),
               "status": "error", "error": f"target {name}: {profile or 'not in the manifest'}"}
        return write(run_dir, doc)
    where = (name, record.get("board")) if opener else name
    if where not in targets:
        targets[where] = opener(profile, record) if opener else open_target(profile)
    return profile_on(targets[where], run_options(manifest, profile, 1.0), run_dir, record, runs)


def diff(doc: dict, reference: dict) -> list[dict]:
    """Per-module change in ms from `reference` to `doc` (largest change first)."""
    a = {r["module"]: r["ms"] for r in reference.get("rows") or []}
    b = {r["module"]: r["ms"] for r in doc.get("rows") or []}
    rows = [{"module": m, "before_ms": a.get(m, 0.0), "after_ms": b.get(m, 0.0), "delta_ms": b.get(m, 0.0) - a.get(m, 0.0)}
            for m in set(a) | set(b)]
    return sorted(rows, key=lambda r: -abs(r["delta_ms"]))


def _table(doc: dict, top: int) -> str:
    from edgebench.analyze import format_table

    head = f"{doc['variant']} on {doc['target']}/{doc['runtime']}: clean p50 {doc['p50_ms']:.4g} ms"
    if doc.get("status") != "ok":
        return f"{head}\n  error: {doc.get('error')}"
    if doc.get("measured"):
        coverage = f" ({doc['coverage'] * 100:.0f}% of it)" if doc.get("coverage") else ""
        head += (f"; profiled run {doc['profiled_run_ms']:.4g} ms (x{doc['inflation']:.2f} the clean p50), nodes sum "
                 f"{doc['node_sum_ms']:.4g} ms{coverage} over {doc['runs']} runs ({doc['source']})")
    if not doc.get("module_map"):
        head += "\n  no module map for this variant (exported before edgebench kept one): rows are the runtime's nodes"
    rows = [[r["module"], ",".join(r["ops"])[:40], r.get("precision") or "-", f"{r['ms']:.4f}", f"{r['share'] * 100:.1f}%"]
            for r in doc["rows"][:top]]
    rest = doc["rows"][top:]
    if rest:
        rows.append([f"({len(rest)} more)", "", "", f"{sum(r['ms'] for r in rest):.4f}", f"{sum(r['share'] for r in rest) * 100:.1f}%"])
    return f"{head}\n  {doc['label']}\n" + format_table(rows, ["module", "ops", "precision", "ms", "share"])


def _diff_table(doc: dict, reference: dict, top: int) -> str:
    from edgebench.analyze import format_table

    rows = [[r["module"], f"{r['before_ms']:.4f}", f"{r['after_ms']:.4f}", f"{r['delta_ms']:+.4f}"]
            for r in diff(doc, reference)[:top]]
    total = doc["p50_ms"] - reference["p50_ms"]
    how = "" if doc.get("measured") and reference.get("measured") else " (per-module times ESTIMATED from MACs)"
    return (f"{doc['variant']} against {reference['variant']} on {doc['target']}/{doc['runtime']}: "
            f"p50 {reference['p50_ms']:.4g} -> {doc['p50_ms']:.4g} ms ({total:+.4f}){how}\n"
            + format_table(rows, ["module", f"{reference['variant']} ms", f"{doc['variant']} ms", "change ms"]))


def main(args: argparse.Namespace, opener=None) -> int:
    run_dir = Path(args.run_dir)
    if args.runs < 1:
        raise ConfigError("--runs must be at least 1")
    records = _records(run_dir)
    chosen = _chosen(records, args)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    by_key = {(r["variant"], r["target"], r["runtime"]): r for r in records}
    targets: dict = {}
    done: dict[tuple, dict] = {}
    failed = 0
    try:
        for record in chosen:
            key = (record["variant"], record["target"], record["runtime"])
            done[key] = doc = profile_record(run_dir, record, manifest, args.runs, targets, opener)
            failed += doc.get("status") != "ok"
            if not getattr(args, "json", False):
                print(_table(doc, args.top) + "\n")
            if args.against and doc.get("status") == "ok":
                ref_name = record.get("parent") if args.against == "parent" else args.against
                ref_key = (ref_name, record["target"], record["runtime"])
                if ref_name and ref_key in by_key and ref_name != record["variant"]:
                    if ref_key not in done:
                        done[ref_key] = profile_record(run_dir, by_key[ref_key], manifest, args.runs, targets, opener)
                    if done[ref_key].get("status") == "ok" and not getattr(args, "json", False):
                        print(_diff_table(doc, done[ref_key], args.top) + "\n")
    finally:
        for target in targets.values():
            target.close()
    if getattr(args, "json", False):
        from edgebench.measure.profiling import json_rows

        print(json.dumps([row for doc in done.values() for row in json_rows(doc)]))
    else:  # the chart and the report's section: every profile of this run so far
        from edgebench.analyze.report import write_reports

        write_reports(run_dir, log=lambda _m: None)
        print(f"wrote {run_dir / 'plots' / 'profile.png'} and the report's 'Where the time goes' section")
    return 1 if failed == len(done) else 0

"""`edgebench profile RUN_DIR`: where a variant's time goes, per PyTorch module, on the target.

For each chosen (variant, target, runtime) record of a run, the runner profiles the variant's
artifact on that target (`--profile-runs`: onnxruntime session profiling, OpenVINO performance
counters; warm-up runs dropped) and reports each node's time. Profiling inflates the total
(onnxruntime: 1.5-3x), so only the **shares** are taken from it: a module's time is its share
times the record's clean p50, and both are labelled so. Nodes are mapped back to the user's
modules with the map kept at export (`variants/<v>/modules.json`, `edgebench.module_map`);
Q/DQ and layout nodes get rows of their own. TFLite's Python interpreter has no op profiler:
its per-module time is an estimate from each module's share of the MACs, labelled so.

    $ edgebench profile results/RUN --variant slim50 --target local --runtime onnxruntime
    $ edgebench profile results/RUN --variant slim50 --against baseline     # what changed where

Each profile is written to `RUN/profiles/<variant>__<target>__<runtime>.json`.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from edgebench.errors import ConfigError

HELP = "per-layer time of variants on a target, mapped to PyTorch modules; diff against another variant"
DEFAULT_RUNS = 50
APPROXIMATE = "estimated from each module's share of the MACs (no per-op profiler): not measured"


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
    from edgebench.records import read_records

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


def module_map(run_dir: Path, variant: str) -> dict | None:
    path = run_dir / "variants" / variant / "modules.json"
    return json.loads(path.read_text()) if path.is_file() else None


def aggregate(nodes: list[dict], mapping: dict | None, p50_ms: float) -> list[dict]:
    """Rows per module: its ops, kernels and precisions, its share of the profiled node time
    and that share of the clean p50 (ms), largest first."""
    if mapping:
        from edgebench.module_map import attribute
    total = sum(n["ms"] for n in nodes) or 1.0
    rows: dict[str, dict] = defaultdict(lambda: {"ops": set(), "kernels": set(), "precisions": set(), "node_ms": 0.0})
    for node in nodes:
        module = (attribute(node["name"], node["op"], mapping) if mapping else node["name"]) or "(top level)"
        row = rows[module]
        row["ops"].add(node["op"])
        if node.get("kernel"):
            row["kernels"].add(node["kernel"])
        if node.get("precision"):
            row["precisions"].add(node["precision"])
        row["node_ms"] += node["ms"]
    out = [{"module": m, "ops": sorted(r["ops"]), "kernels": sorted(r["kernels"]), "precision": "/".join(sorted(r["precisions"])),
            "share": r["node_ms"] / total, "ms": r["node_ms"] / total * p50_ms} for m, r in rows.items()]
    return sorted(out, key=lambda r: -r["ms"])


def estimate_from_macs(mapping: dict | None, p50_ms: float) -> list[dict]:
    """TFLite: each module's share of the MACs times the clean p50 (an estimate)."""
    modules = (mapping or {}).get("modules") or {}
    total = sum(m.get("macs") or 0 for m in modules.values())
    if not total:
        return []
    rows = [{"module": name or "(top level)", "ops": sorted(m.get("ops") or []), "kernels": [], "precision": "",
             "share": (m.get("macs") or 0) / total, "ms": (m.get("macs") or 0) / total * p50_ms}
            for name, m in modules.items() if m.get("macs")]
    return sorted(rows, key=lambda r: -r["ms"])


def profile_record(run_dir: Path, record: dict, manifest: dict, runs: int, targets: dict) -> dict:
    """Profile one record's artifact on its target; the profile document (also written to disk)."""
    from edgebench.analyze.remeasure import manifest_profiles, run_options
    from edgebench.runtimes import FORMATS, runtime
    from edgebench.targets import open_target

    variant, target_name, rt = record["variant"], record["target"], record["runtime"]
    fmt = FORMATS[runtime(rt).format]
    artifact = run_dir / "variants" / variant / f"model{fmt.suffix}"
    mapping = module_map(run_dir, variant)
    p50 = float(record["latency_ms"]["p50"])
    doc = {"variant": variant, "target": target_name, "runtime": rt, "p50_ms": p50, "emulated": bool(record.get("emulated")),
           "module_map": mapping is not None}
    profiles = manifest_profiles(manifest, [])
    profile = profiles.get(target_name)
    if not artifact.is_file():
        doc.update(status="error", error=f"no artifact {artifact} (deleted, or the run kept none)")
    elif not hasattr(profile, "name"):
        doc.update(status="error", error=f"target {target_name}: {profile or 'not in the manifest'}")
    else:
        if target_name not in targets:
            targets[target_name] = open_target(profile)
        options = run_options(manifest, profile, 1.0)
        result = targets[target_name].measure(artifact, run_dir / "eval.npz", rt, options,
                                              extra_args=["--profile-runs", str(runs)])
        if result.get("status") == "ok" and result.get("profile"):
            prof = result["profile"]
            node_sum = sum(n["ms"] for n in prof["nodes"])
            doc.update(status="ok", measured=True, source=prof.get("source"), runs=prof.get("runs"),
                       profiled_run_ms=prof.get("profiled_run_ms"), node_sum_ms=node_sum,
                       # what profiling costs: its run (and its nodes' sum) against the clean p50
                       inflation=(prof["profiled_run_ms"] / p50) if prof.get("profiled_run_ms") and p50 else None,
                       nodes=prof["nodes"],
                       rows=aggregate(prof["nodes"], mapping, p50),
                       label="shares measured with profiling on; ms = share x the record's clean p50")
        elif "no per-op profiler" in str(result.get("error", "")):
            rows = estimate_from_macs(mapping, p50)
            doc.update(status="ok" if rows else "error", measured=False, rows=rows, label=APPROXIMATE,
                       **({} if rows else {"error": "no per-op profiler and no module map to estimate from"}))
        else:
            doc.update(status="error", error=str(result.get("error", "no profile in the runner's answer")))
    if doc.get("emulated"):
        doc["label"] = doc.get("label", "") + "; EMULATED: shares under emulation are not the device's"
    out = run_dir / "profiles"
    out.mkdir(exist_ok=True)
    (out / f"{variant}__{target_name}__{rt}.json").write_text(json.dumps(doc, indent=1))
    return doc


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
        head += (f"; profiled run {doc['profiled_run_ms']:.4g} ms (x{doc['inflation']:.2f}), nodes sum "
                 f"{doc['node_sum_ms']:.4g} ms over {doc['runs']} runs ({doc['source']})")
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


def main(args: argparse.Namespace) -> int:
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
            done[key] = doc = profile_record(run_dir, record, manifest, args.runs, targets)
            failed += doc.get("status") != "ok"
            if not getattr(args, "json", False):
                print(_table(doc, args.top) + "\n")
            if args.against and doc.get("status") == "ok":
                ref_name = record.get("parent") if args.against == "parent" else args.against
                ref_key = (ref_name, record["target"], record["runtime"])
                if ref_name and ref_key in by_key and ref_name != record["variant"]:
                    if ref_key not in done:
                        done[ref_key] = profile_record(run_dir, by_key[ref_key], manifest, args.runs, targets)
                    if done[ref_key].get("status") == "ok" and not getattr(args, "json", False):
                        print(_diff_table(doc, done[ref_key], args.top) + "\n")
    finally:
        for target in targets.values():
            target.close()
    if getattr(args, "json", False):
        print(json.dumps(list(done.values())))
    else:  # the chart and the report's section: every profile of this run so far
        from edgebench.analyze.report import write_reports

        write_reports(run_dir, log=lambda _m: None)
        print(f"wrote {run_dir / 'plots' / 'profile.png'} and the report's 'Where the time goes' section")
    return 1 if failed == len(done) else 0

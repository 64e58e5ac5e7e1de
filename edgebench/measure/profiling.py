"""Per-layer profiles: where a variant's time goes on a target, per PyTorch module.

The runner profiles an artifact on the target (`--profile-runs N`: onnxruntime session
profiling, OpenVINO performance counters; warm-up runs dropped) and answers each node's time.
Profiling inflates the total (onnxruntime: 1.5-3x), so only the **shares** are taken from it:
a module's time is its share of the node time times the record's clean p50, and both are
labelled so. Nodes are mapped back to the user's modules with the map kept at export
(`variants/<v>/modules.json`, `edgebench.export.module_map`); Q/DQ and layout nodes get rows of their
own. TFLite's Python interpreter has no op profiler: its per-module time is an estimate from
each module's share of the MACs, labelled so.

Used by `edgebench profile RUN_DIR` (edgebench.analyze.profile) and by `[run] profile = true`
(edgebench.measure.rounds), which both write `RUN/profiles/<variant>__<target>__<runtime>.json`.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

DEFAULT_RUNS = 50
APPROXIMATE = "estimated from each module's share of the MACs (no per-op profiler): not measured"
MEASURED = "shares measured with profiling on; ms = share x the record's clean p50"


def profile_path(run_dir: Path, variant: str, target: str, runtime: str) -> Path:
    return Path(run_dir) / "profiles" / f"{variant}__{target}__{runtime}.json"


def module_map(run_dir: Path, variant: str) -> dict | None:
    path = Path(run_dir) / "variants" / variant / "modules.json"
    return json.loads(path.read_text()) if path.is_file() else None


def aggregate(nodes: list[dict], mapping: dict | None, p50_ms: float) -> list[dict]:
    """Rows per module: its ops, kernels and precisions, its share of the profiled node time
    and that share of the clean p50 (ms), largest first."""
    if mapping:
        from edgebench.export.module_map import attribute
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


def profile_on(target, options, run_dir: Path, record: dict, runs: int) -> dict:
    """Profile one measured record's artifact on its (open) target; the profile document, also
    written to `profile_path(...)`. A failure is a document with status "error", never raised."""
    from edgebench.runtimes import FORMATS, runtime

    variant, target_name, rt = record["variant"], record["target"], record["runtime"]
    artifact = Path(run_dir) / "variants" / variant / f"model{FORMATS[runtime(rt).format].suffix}"
    mapping = module_map(run_dir, variant)
    p50 = float(record["latency_ms"]["p50"])
    doc = {"variant": variant, "target": target_name, "runtime": rt, "p50_ms": p50,
           "emulated": bool(record.get("emulated")), "module_map": mapping is not None}
    if not artifact.is_file():
        doc.update(status="error", error=f"no artifact {artifact} (deleted, or the run kept none)")
    else:
        try:
            result = target.measure(artifact, Path(run_dir) / "eval.npz", rt, options,
                                    extra_args=["--profile-runs", str(runs)])
        except Exception as exc:  # noqa: BLE001 - a failed profile is a document, the run goes on
            result = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
        doc.update(_from_result(result, mapping, p50))
    if doc.get("emulated"):
        doc["label"] = doc.get("label", "") + "; EMULATED: shares under emulation are not the device's"
    return write(run_dir, doc)


def _from_result(result: dict, mapping: dict | None, p50: float) -> dict:
    if result.get("status") == "ok" and result.get("profile"):
        prof = result["profile"]
        node_sum = sum(n["ms"] for n in prof["nodes"])
        run_ms = prof.get("profiled_run_ms")
        return dict(status="ok", measured=True, source=prof.get("source"), runs=prof.get("runs"),
                    profiled_run_ms=run_ms, node_sum_ms=node_sum,
                    # what profiling costs (its run against the clean p50), and how much of the
                    # profiled run the nodes account for (the rest: the session's own overhead)
                    inflation=(run_ms / p50) if run_ms and p50 else None,
                    coverage=(node_sum / run_ms) if run_ms else None,
                    nodes=prof["nodes"], rows=aggregate(prof["nodes"], mapping, p50), label=MEASURED)
    if "no per-op profiler" in str(result.get("error", "")):
        rows = estimate_from_macs(mapping, p50)
        if not rows:
            return dict(status="error", measured=False, rows=[],
                        error="no per-op profiler and no module map to estimate from")
        return dict(status="ok", measured=False, rows=rows, label=APPROXIMATE)
    return dict(status="error", error=str(result.get("error", "no profile in the runner's answer")))


def write(run_dir: Path, doc: dict) -> dict:
    path = profile_path(run_dir, doc["variant"], doc["target"], doc["runtime"])
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(doc, indent=1))
    return doc


def json_rows(doc: dict) -> list[dict]:
    """The flat rows scripts read (`edgebench profile --json`): one per module, or one error row."""
    key = {"variant": doc["variant"], "target": doc["target"], "runtime": doc["runtime"]}
    if doc.get("status") != "ok":
        return [{**key, "module": None, "status": "error", "error": doc.get("error")}]
    return [{**key, "module": r["module"], "op_types": r["ops"], "time_ms": r["ms"], "share": r["share"],
             "precision": r.get("precision") or None, "approximate": not doc.get("measured"),
             "emulated": bool(doc.get("emulated")), "status": "ok"} for r in doc["rows"]]

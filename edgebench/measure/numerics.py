"""Per-layer numerics of a variant on its target's runtime: where the accuracy goes.

The variant's artifact gets every module boundary as an extra output (`edgebench.export.exposure`:
ONNX graph outputs for onnxruntime and OpenVINO, subgraph outputs of the `.tflite` for LiteRT),
runs through the ordinary runner on the target on the first N eval inputs (the runner returns
every output of a model), and each tensor is compared with the same tensor of the fp32 baseline's
artifact on the same target and runtime (`edgebench.export.layer_errors`): SQNR, cosine, max abs
error, and the error each module adds on its own — its output against its float self (the
variant's float model, on the host) run on the inputs it received on the target
(`edgebench.export.float_reference`). Runtimes whose artifacts cannot be opened up (ExecuTorch's
XNNPACK-delegated programs, ncnn) answer rows that say so.

Used by `edgebench explain RUN_DIR` (edgebench.analyze.explain), which writes
`RUN/explanations/<variant>__<target>__<runtime>.json`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from edgebench.export.exposure import expose, module_units
from edgebench.export.layer_errors import align, unit_errors, worst

DEFAULT_INPUTS = 300
# The baseline's own tensor of a module on a runtime, this far (SQNR) from the same module's in
# its float ONNX model on the host, is another tensor: a converter fused it with a neighbour's or
# renamed it so that the module map cannot tell it apart (LiteRT, on a net with squeeze-excite
# gates and residual sums: -1 to 5 dB, where fp32, bf16 and fp16 kernels give 30 dB or more).
UNMATCHED_DB = 15.0
EXPOSABLE = {".onnx", ".tflite"}
NOT_EXPOSED = {
    # Measured with ExecuTorch 1.5.1 (ETDump with a debug buffer, the demo CNN lowered to XNNPACK):
    # one event of 14 carried data, the DELEGATE_CALL's input and output. A program lowered without
    # the delegate would expose more, but would not be the kernels that ship.
    "executorch": "ExecuTorch runs the program inside one XNNPACK delegate call: its ETDump debug buffer logs only "
                  "that call's inputs and outputs, not the tensors inside it",
    "ncnn": "ncnn's Python build exposes no intermediate blobs of a pnnx-converted model here",
}


def explanation_path(run_dir: Path, variant: str, target: str, runtime: str) -> Path:
    return Path(run_dir) / "explanations" / f"{variant}__{target}__{runtime}.json"


def explain_options(options, inputs: int):
    """Measurement settings for an explanation: no timing worth the name, N inputs predicted."""
    return dataclasses.replace(options, warmup=0, min_runs=1, min_seconds=0.0, max_seconds=1.0, rounds=1,
                               eval_limit=inputs, evaluate=True)


def _artifact(run_dir: Path, variant: str, runtime: str) -> Path:
    from edgebench.runtimes import FORMATS
    from edgebench.runtimes import runtime as runtime_of

    return Path(run_dir) / "variants" / variant / f"model{FORMATS[runtime_of(runtime).format].suffix}"


def _variant_facts(run_dir: Path, variant: str) -> tuple[dict | None, list[str]]:
    vdir = Path(run_dir) / "variants" / variant
    mapping = json.loads((vdir / "modules.json").read_text()) if (vdir / "modules.json").is_file() else None
    info = json.loads((vdir / "variant.json").read_text()) if (vdir / "variant.json").is_file() else {}
    return mapping, info.get("output_names") or ["logits"]


def float_model(run_dir: Path, variant: str) -> Path | None:
    """The variant's float ONNX: `float.onnx` (kept when export quantized it), else its
    `model.onnx` when that is float; None for a run that kept neither."""
    vdir = Path(run_dir) / "variants" / variant
    if (vdir / "float.onnx").is_file():
        return vdir / "float.onnx"
    info = json.loads((vdir / "variant.json").read_text()) if (vdir / "variant.json").is_file() else {}
    return vdir / "model.onnx" if info.get("export_scheme") == "fp32" and (vdir / "model.onnx").is_file() else None


def exposed_tensors(target, options, run_dir: Path, variant: str, runtime: str) -> dict:
    """Run `variant`'s artifact with its module boundaries exposed on the (open) target:
    {"status": "ok", "tensors": {module: array}, "spec": ..., "runtime_version": ...} or an error."""
    from edgebench.device.runner import decode_outputs

    artifact = _artifact(run_dir, variant, runtime)
    mapping, output_names = _variant_facts(run_dir, variant)
    if not artifact.is_file():
        return {"status": "error", "error": f"no artifact {artifact} (deleted, or the run kept none)"}
    if mapping is None:
        return {"status": "error", "error": f"{variant} has no module map (exported before edgebench kept one)"}
    if artifact.suffix not in EXPOSABLE or runtime in NOT_EXPOSED:
        return {"status": "unexposed", "why": NOT_EXPOSED.get(runtime, f"{runtime} artifacts cannot be exposed"),
                "mapping": mapping}
    exposed = Path(run_dir) / "explanations" / "artifacts" / variant / f"exposed{artifact.suffix}"
    try:
        spec = expose(artifact, exposed, mapping, output_names)
    except Exception as exc:  # noqa: BLE001 - a graph we cannot open up is this row's error
        return {"status": "error", "error": f"exposing {artifact.name}'s tensors failed: {type(exc).__name__}: {exc}"}
    try:
        result = target.measure(exposed, Path(run_dir) / "eval.npz", runtime, options)
    except Exception as exc:  # noqa: BLE001 - the target's failure is a document, the command goes on
        result = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
    if result.get("status") != "ok":
        return {"status": "error", "error": str(result.get("error", "the runner gave no result"))}
    outputs = decode_outputs(result)
    if len(outputs) != len(spec["outputs"]):
        return {"status": "error", "error": f"the runtime returned {len(outputs)} outputs, the exposed graph has "
                                            f"{len(spec['outputs'])}"}
    return {"status": "ok", "spec": spec, "tensors": {u["module"]: outputs[u["output"]] for u in spec["units"]},
            "runtime_version": result.get("runtime_version"), "emulated": bool(result.get("emulated")),
            "n": int(result.get("n_eval") or len(outputs[0]))}


def checked_reference(run_dir: Path, reference: dict) -> dict:
    """`reference` (the baseline's `exposed_tensors` on one target and runtime) with `unmatched`:
    {module: why} for the units whose tensor is not the float model's same module (UNMATCHED_DB),
    so that no row compares them."""
    path = Path(run_dir) / "variants" / "baseline" / "model.onnx"
    mapping, _ = _variant_facts(run_dir, "baseline")
    if reference.get("status") != "ok" or mapping is None or not path.is_file():
        return reference
    from edgebench.device.runner import read_inputs
    from edgebench.export.float_reference import float_units

    xs = read_inputs(str(Path(run_dir) / "eval.npz"), np, rows=reference["n"])
    floats = float_units(path, mapping, xs)["tensors"]
    unmatched = {}
    for row in unit_errors(reference["spec"]["units"], reference["tensors"], floats):
        module = row["module"]
        if module not in floats or module not in reference["tensors"]:
            continue
        if align(reference["tensors"][module], floats[module]) is None:
            unmatched[module] = "its shape differs from the float model's"
        elif row["sqnr_db"] is not None and row["sqnr_db"] < UNMATCHED_DB:  # None: no error at all
            unmatched[module] = f"it is {row['sqnr_db']:.1f} dB from the float model's"
    return {**reference, "unmatched": unmatched}


def explain_on(target, options, run_dir: Path, record: dict, reference: dict, got: dict | None = None) -> dict:
    """The explanation document of one measured record against `reference` (what
    `exposed_tensors` gave for the baseline on the same target and runtime); also written to
    `explanation_path(...)`. `got`: the record's own `exposed_tensors`, when already run. A
    failure is a document with status "error", never raised."""
    variant, name, rt = record["variant"], record["target"], record["runtime"]
    doc = {"variant": variant, "target": name, "runtime": rt, "reference": "baseline",
           "precision": record.get("compute_precision") or record.get("precision"),
           "metric": (record.get("metric") or {}).get("value", record.get("accuracy")),
           "emulated": bool(record.get("emulated"))}
    got = got or exposed_tensors(target, options, run_dir, variant, rt)
    if got["status"] == "unexposed":
        units = list(dict.fromkeys(module_units(got["mapping"]).values()))
        doc.update(status="ok", exposed=False, note=got["why"],
                   rows=[{"module": m, "exposed": False, "sqnr_db": None, "added_db": None, "cosine": None,
                          "max_abs": None, "note": got["why"]} for m in units])
        return write(run_dir, doc)
    if got["status"] != "ok":
        return write(run_dir, {**doc, "status": "error", "error": got["error"]})
    if reference.get("status") != "ok":
        return write(run_dir, {**doc, "status": "error", "error": f"baseline: {reference.get('error')}"})
    n = min(got["n"], reference["n"])
    mine = {m: a[:n] for m, a in got["tensors"].items()}
    theirs = {m: a[:n] for m, a in reference["tensors"].items()}
    own = float_model(run_dir, variant)
    if own is None:
        doc["note"] = "no float model kept for this variant (exported before edgebench kept float.onnx): added error unknown"
        rows = unit_errors(got["spec"]["units"], mine, theirs)
    else:
        from edgebench.device.runner import read_inputs
        from edgebench.export.float_reference import added_ratios, float_units

        xs = read_inputs(str(Path(run_dir) / "eval.npz"), np, rows=n)
        mapping, _ = _variant_facts(run_dir, variant)
        floats = float_units(own, mapping, xs)
        rows = unit_errors(got["spec"]["units"], mine, theirs, added_ratios(floats, mine, xs), fallback=floats["tensors"])
    unmatched = reference.get("unmatched", {})
    feeds = {u["module"]: u.get("inputs", []) for u in got["spec"]["units"]}
    for row in rows:  # a tensor the baseline's own artifact does not match its float model on
        why = unmatched.get(row["module"])
        if why:
            row.update(exposed=False, sqnr_db=None, cosine=None, max_abs=None, added_db=None, float_sqnr_db=None,
                       note=f"not compared: the baseline's {rt} tensor for this module is another one ({why}): "
                            "the converter fused or renamed it")
        elif row.get("added_db") is not None and any(m in unmatched for m in feeds.get(row["module"], [])):
            row.update(added_db=None, note="added error unknown: an input's tensor is not matched")
    seen = {r["module"] for r in rows}
    for unit in reference["spec"]["units"]:  # the baseline's units this artifact has no tensor for
        if unit["module"] not in seen:
            rows.append({"module": unit["module"], "exposed": False, "sqnr_db": None, "added_db": None, "cosine": None,
                         "max_abs": None, "note": "the baseline's module has no tensor in this artifact (a step "
                                                  "removed or replaced it, or its export fused it)"})
    doc.update(status="ok", exposed=True, n_inputs=n, runtime_version=got["runtime_version"], rows=rows,
               worst=[r["module"] for r in worst(rows, 3)], emulated=doc["emulated"] or got["emulated"])
    return write(run_dir, doc)


def write(run_dir: Path, doc: dict) -> dict:
    path = explanation_path(run_dir, doc["variant"], doc["target"], doc["runtime"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1))
    return doc


def json_rows(doc: dict) -> list[dict]:
    """The flat rows scripts read (`edgebench explain --json`): one per module, or one error row."""
    key = {"variant": doc["variant"], "target": doc["target"], "runtime": doc["runtime"]}
    if doc.get("status") != "ok":
        return [{**key, "module": None, "status": "error", "error": doc.get("error")}]
    fields = ("sqnr_db", "added_db", "cosine", "max_abs", "exposed", "float_sqnr_db")
    return [{**key, "module": r["module"], **{f: r.get(f) for f in fields}, "status": "ok",
             **({"adds_nothing": True} if r.get("adds_nothing") else {}),
             **({"note": r["note"]} if r.get("note") else {})} for r in doc["rows"]]


def load_explanations(run_dir: Path) -> list[dict]:
    """The documents `edgebench explain` wrote into the run (none: [])."""
    folder = Path(run_dir) / "explanations"
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []

"""Which modules an int8 export keeps in float: `quantize keep_float = ["glob", ...]` or `"auto:K"`.

    [[variant]]
    name = "int8-mixed"
    steps = [{ method = "quantize", scheme = "int8_static", keep_float = "auto:1" }]

Globs match the user's module names (`features.3*`, `classifier`) among the modules int8
quantizes (Conv, Linear, MatMul: a unit, with the activations fused into it). onnxruntime's QDQ
quantizer leaves their nodes out (`nodes_to_exclude`; OpenVINO reads the same graph), LiteRT's
PT2E quantizer leaves them unannotated, so they run in float between a dequantize and a quantize.

`"auto:K"` keeps the K modules that add the most error by `edgebench explain`'s analysis, run at
export on the **calibration split** (never the test split): the fully quantized artifact is made
once, its module boundaries exposed (`edgebench.export.exposure`) and run on the host's runtime
(onnxruntime, LiteRT), each unit compared with its float self run on the inputs it received
(`edgebench.export.float_reference`), and the K units with the lowest added dB
(`edgebench.export.layer_errors`) are kept float in the artifact that ships. Each format chooses on its own runtime; the artifact's entry (and every record) says
which modules stayed float (`kept_float`) and the ranking they came from.
"""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path

import numpy as np

from edgebench.errors import ExportError
from edgebench.export.exposure import expose, module_units, unit_nodes
from edgebench.export.layer_errors import unit_errors, worst
from edgebench.tasks.arrays import ArrayLike, as_list

AUTO = re.compile(r"auto:(\d+)$")
RANKING_ROWS = 5  # rows of the ranking kept in the artifact's entry


def auto_count(keep_float) -> int | None:
    """K of `"auto:K"`, else None (globs, or nothing)."""
    match = AUTO.match(keep_float) if isinstance(keep_float, str) else None
    return int(match.group(1)) if match else None


def module_map_beside(path: Path) -> dict:
    """The variant's module map (written by the float ONNX export beside its artifacts)."""
    mapping = Path(path).parent / "modules.json"
    if not mapping.is_file():
        raise ExportError("keep_float needs the module map of the variant's ONNX export, and there is none "
                          "(the ONNX export failed)")
    return json.loads(mapping.read_text())


def quantizable_units(mapping: dict) -> dict[str, list[str]]:
    """Each unit that int8 quantizes (it has MACs) -> the modules it covers (its own first)."""
    compute = {m for m, info in (mapping.get("modules") or {}).items() if info.get("macs")}
    units: dict[str, list[str]] = {}
    for module, unit in module_units(mapping).items():
        if unit in compute:
            units.setdefault(unit, [unit])
            if module != unit:
                units[unit].append(module)
    return units


def resolve_globs(globs, mapping: dict) -> list[str]:
    """The quantizable units a list of globs names (by a unit's module or one fused into it);
    ExportError for a glob that names none, with the names it could have used."""
    units = quantizable_units(mapping)
    chosen: list[str] = []
    for glob in globs:
        hits = [u for u, modules in units.items() if any(fnmatch.fnmatchcase(m, glob) for m in modules)]
        if not hits:
            names = ", ".join(sorted(units)[:12]) + (" ..." if len(units) > 12 else "")
            raise ExportError(f"keep_float: {glob!r} matches no module that int8 quantizes (those: {names})")
        chosen += [u for u in hits if u not in chosen]
    return chosen


def covered_modules(units: list[str], mapping: dict) -> list[str]:
    """The units and every module fused into them (what LiteRT's quantizer must leave alone)."""
    groups = quantizable_units(mapping)
    return [m for u in units for m in groups.get(u, [u])]


def onnx_excluded_nodes(units: list[str], mapping: dict) -> list[str]:
    """The float graph's nodes of these units: onnxruntime's `nodes_to_exclude`."""
    return unit_nodes(mapping, set(units))


def read_float_inputs(path: Path, nodes: list[str]) -> None:
    """Rewire the kept nodes of a QDQ graph to read the float tensor before a quantize/dequantize
    pair. onnxruntime re-quantizes, at load, the float weight of a Conv/Gemm whose input comes
    from a DequantizeLinear (its WeightBiasQuantization optimizer; measured: the kept conv ran as
    QLinearConv and lost as much as before); a kept node that reads a float tensor stays float.
    Q/DQ pairs nothing reads any more are dropped."""
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    producer = {t: n for n in graph.node for t in n.output}
    kept = set(nodes)
    for node in graph.node:
        if node.name not in kept:
            continue
        for k, tensor in enumerate(node.input):
            dq = producer.get(tensor)
            q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is not None and q.op_type == "QuantizeLinear":
                node.input[k] = q.input[0]
    outputs = {o.name for o in graph.output}
    while True:
        used = {t for n in graph.node for t in n.input} | outputs
        dead = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                and not any(t in used for t in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    used = {t for n in graph.node for t in n.input}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
    onnx.save(model, str(path))


def _ranking(rows: list[dict], k: int) -> tuple[list[str], list[dict]]:
    ranked = worst(rows, max(k, RANKING_ROWS), compute_only=True)
    table = [{"module": r["module"], "added_db": r["added_db"], "sqnr_db": r.get("sqnr_db")} for r in ranked]
    if not ranked:
        raise ExportError("keep_float auto: no quantized module adds measurable error on the calibration split")
    return [r["module"] for r in ranked[:k]], table


def rank(quantized: Path, float_onnx: Path | None, mapping: dict, calibration: ArrayLike, k: int) -> tuple[list, list]:
    """The K quantizable units of the int8 artifact `quantized` (.onnx or .tflite) that add the
    most error on their own, run on the calibration split on its runtime here (onnxruntime,
    LiteRT), each against its float self from `float_onnx`; (units, ranking rows)."""
    from edgebench.device import rt_onnxruntime, rt_tflite
    from edgebench.device.runner import predict_all
    from edgebench.export.float_reference import added_ratios, float_units

    if float_onnx is None or not Path(float_onnx).is_file():
        raise ExportError('keep_float "auto" needs the variant\'s float ONNX export, and there is none')
    xs = [np.ascontiguousarray(a, dtype=np.float32 if a.dtype.kind == "f" else a.dtype) for a in as_list(calibration)]
    reference = float_units(float_onnx, mapping, xs)
    exposed = quantized.with_name(quantized.stem + ".exposed" + quantized.suffix)
    spec = expose(quantized, exposed, mapping, [o.name for o in reference["model"].graph.output])
    adapter = rt_tflite if quantized.suffix == ".tflite" else rt_onnxruntime
    try:
        outputs = predict_all(adapter.Model(str(exposed), threads=1), xs)
    finally:
        exposed.unlink(missing_ok=True)
    got = {u["module"]: outputs[u["output"]] for u in spec["units"]}
    rows = unit_errors(spec["units"], got, reference["tensors"], added_ratios(reference, got, xs))
    return _ranking(rows, k)

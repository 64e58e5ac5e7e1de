"""Reading the precision onnxruntime computes an .onnx in, from the graph it optimized.

The vocabulary of the fields it returns is in `edgebench.export.precision`.

    >>> inspect_onnx(Path("int8.onnx"), asked="int8_static")["compute_precision"]  # doctest: +SKIP
    'int8'
"""

from __future__ import annotations

import platform
import tempfile
from pathlib import Path
from typing import Any

from edgebench.export.precision import summarize

# MAC-carrying ops -> (activation input, weight input). Names as in the optimized graph,
# domain ignored (the NCHWc Conv is op_type "Conv" in domain com.microsoft.nchwc).
ONNX_MAC_OPS = {
    **dict.fromkeys(
        "Conv ConvTranspose FusedConv NhwcFusedConv Gemm FusedGemm MatMul FusedMatMul ConvInteger"
        " MatMulInteger DynamicQuantizeMatMul MatMulIntegerToFloat".split(),
        (0, 1),
    ),
    **dict.fromkeys("QLinearConv QLinearMatMul QGemm QLinearConvTranspose".split(), (0, 3)),
}
ONNX_INTEGER_MAC_OPS = frozenset(
    "QLinearConv QLinearMatMul QGemm QLinearConvTranspose ConvInteger MatMulInteger MatMulIntegerToFloat".split()
)
ONNX_DYNAMIC_MAC_OPS = frozenset({"DynamicQuantizeMatMul"})  # quantizes its float input itself
# Ops that move or convert data rather than compute on it: not counted in precision_ops.
ONNX_PLUMBING = frozenset(
    "Reshape Transpose Flatten Squeeze Unsqueeze Identity Shape Size Gather Concat Slice Split"
    " Expand Pad Constant ReorderInput ReorderOutput Cast QuantizeLinear DequantizeLinear"
    " DynamicQuantizeLinear".split()
)
# A weight reached through these from an initializer is stored as that initializer.
ONNX_WEIGHT_PASS = frozenset("DequantizeLinear Cast Reshape Transpose Identity Unsqueeze Squeeze".split())
# onnx.TensorProto element types: FLOAT, FLOAT16, BFLOAT16, DOUBLE, UINT8, INT8, UINT16, INT16.
ONNX_DTYPE = {1: "fp32", 10: "fp16", 16: "bf16", 11: "fp64", 2: "int8", 3: "int8", 4: "int16", 5: "int16"}


def inspect_onnx(path: Path, asked: str | None = None) -> dict[str, Any]:
    """Read the precision onnxruntime computes `path` in, from its optimized graph.

    The model is loaded as the runner loads it (CPU EP, ORT_ENABLE_ALL, one thread) with
    `optimized_model_filepath` set, so the graph read is the one after ORT's own rewrites:
    QDQ pairs fused into QLinearConv/QGemm, fp16 nodes given float32 casts, NCHWc layouts.
    Weight storage comes from the artifact itself (ORT folds fp16 weights to float32).

    >>> inspect_onnx(Path("int8.onnx"), asked="int8_static")["compute_precision"]  # doctest: +SKIP
    'int8'
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    with tempfile.TemporaryDirectory(prefix="edgebench-precision-") as tmp:
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return read_onnx_optimized(
            Path(options.optimized_model_filepath),
            path,
            asked,
            source=f"onnxruntime {ort.__version__} CPU optimized graph on {platform.machine()}",
        )


def read_onnx_optimized(optimized_path: Path, original_path: Path, asked: str | None, source: str) -> dict[str, Any]:
    """The precision fields from a graph onnxruntime saved (`optimized_model_filepath`), here or
    on a device: its kernels decide the compute, the original artifact the weight storage.

    >>> read_onnx_optimized(Path("pi.opt.onnx"), Path("model.onnx"), "fp16", "onnxruntime 1.32.0 on aarch64")  # doctest: +SKIP
    """
    import onnx

    optimized = onnx.load(str(optimized_path)).graph
    types = _onnx_types(optimized)
    producers = {out: node for node in optimized.node for out in node.output}
    compute: list[tuple[str, str]] = []  # (op_type, precision) of MAC ops
    others: list[tuple[str, str]] = []
    for node in optimized.node:
        op = node.op_type
        if op in ONNX_MAC_OPS:
            compute.append((op, _onnx_mac_precision(node, types, producers)))
        elif op not in ONNX_PLUMBING:
            first = types.get(node.input[0]) if node.input and node.input[0] else None
            prec = "int8" if op.startswith("QLinear") else ONNX_DTYPE.get(first or 0)
            if prec:
                others.append((op, prec))

    weights = _onnx_weight_storage(onnx.load(str(original_path), load_external_data=False).graph)
    # Measured with onnxruntime 1.32: on x86_64 an fp16 model (keep_io_types) gives outputs
    # identical to the fp32 model's (rel. err 3.8e-7 vs torch for both, with fp16-exact weights;
    # rounding the input alone to fp16 would give 2e-4): nothing runs in fp16. The aarch64 wheel
    # under qemu saves the same float32 graph with -cpu cortex-a72 (Pi 4), but with -cpu
    # cortex-a76 (Pi 5, ARMv8.2 fp16 arithmetic) it keeps NhwcFusedConv and Gemm in fp16.
    why_fp32 = "no fp16 kernel for them on this CPU: casts to float32 inserted at load, weights folded to float32"
    return summarize(compute, others, weights, asked, source=source, fp16_fallback=why_fp32)


# Element type names in onnxruntime's profile ("input_type_shape").
ORT_TYPE_NAMES = {"float": "fp32", "float16": "fp16", "bfloat16": "bf16", "double": "fp64",
                  "uint8": "int8", "int8": "int8", "int16": "int16", "uint16": "int16"}


def read_ort_kernels(executed: dict, artifact: Path | None, asked: str | None) -> dict[str, Any]:
    """The precision fields from the kernels onnxruntime ran on a device: `executed["kernels"]`
    is [[op_type, [input element type names]], ...] from one profiled inference (the runner's
    onnxruntime adapter); weight storage comes from the artifact as written.

    >>> read_ort_kernels({"kernels": [["QLinearConv", ["uint8", "float", "uint8", "float", "int8"]]],
    ...                   "source": "x"}, None, "int8")["compute_precision"]
    'int8'
    """
    kernels = [(str(op), [str(t) for t in types]) for op, types in executed.get("kernels") or []]
    dynamic = any(op == "DynamicQuantizeLinear" for op, _ in kernels)
    compute: list[tuple[str, str]] = []
    others: list[tuple[str, str]] = []
    for op, types in kernels:
        if op in ONNX_MAC_OPS:
            if op in ONNX_DYNAMIC_MAC_OPS or (op in ONNX_INTEGER_MAC_OPS and dynamic):
                prec = "int8-dynamic"
            elif op in ONNX_INTEGER_MAC_OPS:
                prec = "int8"
            else:
                prec = ORT_TYPE_NAMES.get(types[0] if types else "", "unknown")
            compute.append((op, prec))
        elif op not in ONNX_PLUMBING and types:
            prec = "int8" if op.startswith("QLinear") else ORT_TYPE_NAMES.get(types[0])
            if prec:
                others.append((op, prec))
    weights: list[str] = []
    if artifact is not None and Path(artifact).is_file():
        import onnx

        weights = _onnx_weight_storage(onnx.load(str(artifact), load_external_data=False).graph)
    why_fp32 = "no fp16 kernel for them on this CPU: onnxruntime casts to float32 at load"
    return summarize(compute, others, weights, asked, source=str(executed.get("source") or "onnxruntime kernels"),
                     fp16_fallback=why_fp32)


def _onnx_types(graph) -> dict[str, int]:
    """Element type of every tensor of an optimized graph (which carries no value_info).

    onnx's shape inference does not know the com.microsoft / NCHWc ops, so types are
    propagated here with the few rules those ops follow.
    """
    types = {v.name: v.type.tensor_type.elem_type for v in (*graph.input, *graph.value_info)}
    types.update({init.name: init.data_type for init in graph.initializer})
    for node in graph.node:  # saved graphs are topologically sorted
        for k, out in enumerate(node.output):
            if out and not types.get(out):
                dtype = _onnx_output_type(node, k, types)
                if dtype:
                    types[out] = dtype
    return types


def _onnx_output_type(node, k: int, types: dict[str, int]) -> int | None:
    from onnx import TensorProto as T

    def at(i: int) -> int | None:
        return types.get(node.input[i]) if len(node.input) > i and node.input[i] else None

    op = node.op_type
    if op == "Cast":
        return next((a.i for a in node.attribute if a.name == "to"), None)
    if op == "DynamicQuantizeLinear":
        return (T.UINT8, T.FLOAT, T.UINT8)[k]
    if op == "QuantizeLinear":
        return at(2) or next((a.i for a in node.attribute if a.name == "output_dtype" and a.i), T.UINT8)
    if op == "DequantizeLinear":
        return at(1) or T.FLOAT
    if op in ("ConvInteger", "MatMulInteger"):
        return T.INT32
    if op in ("DynamicQuantizeMatMul", "MatMulIntegerToFloat"):
        return T.FLOAT
    if op == "QGemm":  # without y_scale it writes float
        return (at(8) or at(0)) if at(7) else at(1)
    if op in ("Shape", "Size", "NonZero", "ArgMax", "ArgMin"):
        return T.INT64
    return next((t for t in (at(i) for i in range(len(node.input))) if t), None)


def _onnx_mac_precision(node, types: dict[str, int], producers: dict) -> str:
    op = node.op_type
    act = node.input[ONNX_MAC_OPS[op][0]]
    if op in ONNX_DYNAMIC_MAC_OPS:
        return "int8-dynamic"
    if op in ONNX_INTEGER_MAC_OPS:
        source = producers.get(act)
        dynamic = source is not None and source.op_type == "DynamicQuantizeLinear"
        return "int8-dynamic" if dynamic else "int8"
    return ONNX_DTYPE.get(types.get(act) or 0, "unknown")


def _onnx_weight_storage(graph) -> list[str]:
    """Storage precision of each conv/matmul weight of the artifact as written."""
    inits = {init.name: init.data_type for init in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            inits[node.output[0]] = node.attribute[0].t.data_type
    storage = []
    for node in graph.node:
        if node.op_type not in ONNX_MAC_OPS:
            continue
        name = node.input[ONNX_MAC_OPS[node.op_type][1]]
        for _ in range(4):
            if name in inits or name not in producers or producers[name].op_type not in ONNX_WEIGHT_PASS:
                break
            name = producers[name].input[0]
        if name in inits:
            storage.append(ONNX_DTYPE.get(inits[name], "unknown"))
    return storage

"""What precision an artifact really computes in, read from the graph its runtime will run.

A scheme asks for a precision; the runtime decides what runs. On this x86 host, onnxruntime
1.32 turns every fp16 Conv/Gemm back into float32 at load (the saved optimized graph holds
float32 weights and float32 ops), and a TFLite fp16 file DEQUANTIZEs its float16 weights to
float32 before the first conv. A record that said "fp16" for those would be costed as fp16
and was not. So after export the artifact's graph is read and every record carries:

- ``compute_precision``: one of
    ``"fp32"``          every conv/matmul op computes in float32 (whatever the weights are stored in);
    ``"fp16"``          every conv/matmul op computes in float16;
    ``"int8"``          every conv/matmul op computes on int8 with calibrated activation scales;
    ``"int8-dynamic"``  every conv/matmul op computes on int8 weights and activations quantized
                        at run time (onnxruntime ConvInteger / DynamicQuantizeMatMul, TFLite
                        hybrid kernels: float tensor in, int8 weights);
    ``"mixed"``         the conv/matmul ops split over several of the above (see precision_ops);
    ``None``            the inspection failed (the reason is in precision_note).
  Only ops that carry the MACs decide it (conv, matmul, gemm and their quantized forms); other
  ops that stayed float in an int8 model (activations, pools, softmax) are named in the note.
- ``weight_precision``: what the conv/matmul weights are stored in (fp32, fp16, int8, mixed).
- ``precision_note``: one line for humans, e.g. ``"int8: all 6 conv/matmul ops compute on int8;
  float: HardSigmoid, ReduceMean"``; it starts with ``"<asked> did not take: "`` when the
  asked scheme is not what computes, ``"<asked> partly took: mixed: ..."`` when only some ops.
- ``precision_ops``: ``{precision: {op_type: count}}`` over every op that computes (layout
  and conversion ops such as Reshape, Transpose, Q/DQ and Cast are left out).
- ``precision_source``: what was read, e.g. ``"onnxruntime 1.32.0 CPU optimized graph on x86_64"``.

`took(asked, compute_precision)` says whether a scheme took (None when unknown), and
`precision_label` gives the short legend text ("int8", "fp16 (ran fp32)", "int8 (ran mixed)").

    >>> info = inspect_artifact(Path("model.onnx"), "onnx", asked="fp16")  # doctest: +SKIP
    >>> info["compute_precision"], took("fp16", info["compute_precision"])  # doctest: +SKIP
    ('fp32', False)

The host reads the graph after export (not the device, not the runner), so the label is the
host's: it holds for x86_64 and for a Pi 4 (Cortex-A72), but onnxruntime on a CPU with fp16
arithmetic (Cortex-A76, Pi 5) really computes an fp16 model in fp16 (measured under qemu).
That is why the source names the runtime and the machine; `read_onnx_optimized` reads a graph
that onnxruntime saved on the device itself.
"""

from __future__ import annotations

import platform
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

COMPUTE_PRECISIONS = ("fp32", "fp16", "int8", "int8-dynamic", "mixed")
# What each asked precision or scheme accepts as "took". int8 MACs on run-time quantized
# activations are int8 compute, so a plain "int8" ask (the record's `precision`) takes either.
ACCEPTS: dict[str, frozenset[str]] = {
    "fp32": frozenset({"fp32"}),
    "fp16": frozenset({"fp16"}),
    "int8": frozenset({"int8", "int8-dynamic"}),
    "int8_static": frozenset({"int8"}),
    "qat": frozenset({"int8"}),
    "int8_dynamic": frozenset({"int8-dynamic", "int8"}),
}

# --- onnxruntime ---------------------------------------------------------------------------
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

# --- TFLite ----------------------------------------------------------------------------------
TFLITE_MAC_OPS = {
    **dict.fromkeys("CONV_2D DEPTHWISE_CONV_2D FULLY_CONNECTED BATCH_MATMUL CONV_3D".split(), (0, 1)),
    **dict.fromkeys(("TRANSPOSE_CONV", "CONV_3D_TRANSPOSE"), (2, 1)),  # inputs: shape, weights, x
}
TFLITE_PLUMBING = frozenset(
    "RESHAPE TRANSPOSE SQUEEZE EXPAND_DIMS PAD PADV2 CONCATENATION SLICE STRIDED_SLICE SPLIT"
    " SPLIT_V GATHER PACK UNPACK SHAPE QUANTIZE DEQUANTIZE CAST DELEGATE".split()
)
TFLITE_DTYPE = {
    "float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "float64": "fp64",
    "int8": "int8", "uint8": "int8", "int16": "int16",
}  # fmt: skip


def took(asked: str | None, compute_precision: str | None) -> bool | None:
    """Whether the asked precision (a record's `precision` or a scheme name) is what computes.

    None when either is unknown; False for "mixed" (the scheme only partly took).

    >>> took("int8", "int8-dynamic"), took("fp16", "fp32"), took("int8", "mixed"), took("fp32", None)
    (True, False, False, None)
    """
    if not asked or not compute_precision or asked not in ACCEPTS:
        return None
    return compute_precision in ACCEPTS[asked]


def precision_label(asked: str | None, compute_precision: str | None) -> str:
    """A short legend/table label: what computed when the ask took, else "<asked> (ran <what>)".

    >>> precision_label("int8", "int8"), precision_label("fp16", "fp32"), precision_label("int8", None)
    ('int8', 'fp16 (ran fp32)', 'int8')
    """
    verdict = took(asked, compute_precision)
    if verdict is None:
        return asked or compute_precision or "?"
    return compute_precision if verdict else f"{asked} (ran {compute_precision})"


def inspect_artifact(path: Path, fmt: str, asked: str | None = None) -> dict[str, Any]:
    """inspect_onnx / inspect_tflite by format; never raises: a failure gives compute_precision None.

    >>> inspect_artifact(Path("missing.onnx"), "onnx")["compute_precision"] is None  # doctest: +SKIP
    True
    """
    inspect = {"onnx": inspect_onnx, "tflite": inspect_tflite}.get(fmt)
    try:
        if inspect is None:
            raise ValueError(f"no precision inspection for format {fmt!r}")
        return inspect(Path(path), asked)
    except Exception as exc:  # noqa: BLE001 - a failed read-back is a fact of the record, not a crash
        lines = [s for s in str(exc).splitlines() if s.strip()]
        return {
            "compute_precision": None,
            "weight_precision": None,
            "precision_ops": {},
            "precision_note": f"precision not read: {type(exc).__name__}: {lines[0][:200] if lines else ''}",
            "precision_source": None,
        }


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
    return _summary(compute, others, weights, asked, source=source, fp16_fallback=why_fp32)


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


def inspect_tflite(path: Path, asked: str | None = None) -> dict[str, Any]:
    """Read the precision ai-edge-litert computes `path` in, from its ops and tensor types.

    Per conv/matmul op: int8 input and weights -> int8; float input with int8 weights ->
    int8-dynamic (TFLite's hybrid kernels quantize the input per inference); float input with
    float weights -> fp32, also when the weights are float16 DEQUANTIZEd to float32.

    >>> inspect_tflite(Path("fp16.tflite"), asked="fp16")["precision_note"]  # doctest: +SKIP
    'fp16 did not take: fp16 storage, fp32 compute: all 6 conv/matmul ops compute in fp32 (...)'
    """
    import numpy as np
    from ai_edge_litert import interpreter as litert

    # The flatbuffer's own graph: without the default XNNPACK delegate, so no DELEGATE nodes
    # replace the ops. XNNPACK keeps their precision here (measured with ai-edge-litert 2.3 on
    # x86_64, weights exact on the int8/fp16 grid): an fp16 file gives the fp32 file's outputs
    # (rel. err 4.9e-7 vs torch), and an int8_dynamic one errs 1.2% with XNNPACK and 0.56%
    # without it: both quantize the activations, neither dequantizes the weights to float.
    interp = litert.Interpreter(
        model_path=str(path),
        num_threads=1,
        experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    ops = interp._get_ops_details()  # noqa: SLF001 - the only op-level view the Python API gives
    produced = {int(o): op for op in ops for o in op["outputs"]}
    inputs = {t["index"] for t in interp.get_input_details()}

    def dtype(index: int) -> str | None:
        tensor = tensors.get(int(index)) if index >= 0 else None
        return None if tensor is None else TFLITE_DTYPE.get(np.dtype(tensor["dtype"]).name)

    def storage(index: int) -> str | None:
        """Storage of a constant weight, looking through a DEQUANTIZE; None for activations."""
        op = produced.get(int(index))
        if op is not None and op["op_name"] == "DEQUANTIZE":
            index, op = int(op["inputs"][0]), produced.get(int(op["inputs"][0]))
        return dtype(index) if op is None and index not in inputs else None

    compute: list[tuple[str, str]] = []
    others: list[tuple[str, str]] = []
    weights: list[str] = []
    for op in ops:
        name = op["op_name"]
        if name in TFLITE_MAC_OPS:
            act_i, weight_i = TFLITE_MAC_OPS[name]
            act, weight = dtype(op["inputs"][act_i]), storage(op["inputs"][weight_i])
            if weight:
                weights.append(weight)
            if act == "fp32" and weight == "int8" and dtype(op["inputs"][weight_i]) == "int8":
                compute.append((name, "int8-dynamic"))
            else:
                compute.append((name, act or "unknown"))
        elif name not in TFLITE_PLUMBING and len(op["inputs"]):
            prec = dtype(op["inputs"][0])
            if prec:
                others.append((name, prec))
    return _summary(
        compute,
        others,
        weights,
        asked,
        source=f"ai-edge-litert {_version('ai-edge-litert')} graph on {platform.machine()}",
        fp16_fallback="float16 weights are DEQUANTIZEd to float32 once, at load",
    )


def _summary(
    compute: list[tuple[str, str]],
    others: list[tuple[str, str]],
    weights: list[str],
    asked: str | None,
    source: str,
    fp16_fallback: str,
) -> dict[str, Any]:
    """The record fields from per-op precisions (see the module docstring for the vocabulary)."""
    counts: dict[str, Counter] = {}
    for op, prec in compute + others:
        counts.setdefault(prec, Counter())[op] += 1
    known = [(op, prec) for op, prec in compute if prec != "unknown"]
    decided_by = known or [(op, prec) for op, prec in others if prec != "unknown"]
    compute_precision = _single(Counter(prec for _, prec in decided_by))
    weight_precision = _single(Counter(w for w in weights if w != "unknown"))

    n = len(known)
    if compute_precision is None:
        note = "precision not read: no op with a known element type"
    elif not n:
        note = f"{compute_precision}: no conv/matmul op"
    elif compute_precision == "mixed":
        groups = Counter(prec for _, prec in known).most_common()
        note = "mixed: " + ", ".join(f"{k} of {n} conv/matmul ops {prec} ({_ops(known, prec)})" for prec, k in groups)
    elif compute_precision == "int8":
        note = f"int8: all {n} conv/matmul ops compute on int8"
    elif compute_precision == "int8-dynamic":
        note = f"int8-dynamic: all {n} conv/matmul ops compute on int8 weights and activations quantized at run time"
    elif weight_precision not in (None, "mixed", compute_precision):
        note = f"{weight_precision} storage, {compute_precision} compute: all {n} conv/matmul ops compute in {compute_precision}"
        if weight_precision == "fp16":
            note += f" ({fp16_fallback})"
    else:
        note = f"{compute_precision}: all {n} conv/matmul ops compute in {compute_precision}"
    if len(known) < len(compute):
        note += f"; {len(compute) - len(known)} conv/matmul ops of unknown type"
    if compute_precision in ("int8", "int8-dynamic", "mixed"):
        floats = sorted({op for op, prec in others if prec in ("fp32", "fp16", "bf16")})
        if floats:
            note += f"; float: {', '.join(floats)}"
    verdict = took(asked, compute_precision)
    if verdict is False:
        note = f"{asked} {'partly took' if compute_precision == 'mixed' else 'did not take'}: {note}"
    return {
        "compute_precision": compute_precision,
        "weight_precision": weight_precision,
        "precision_note": note,
        "precision_ops": {prec: dict(sorted(c.items())) for prec, c in sorted(counts.items())},
        "precision_source": source,
    }


def _ops(ops: list[tuple[str, str]], precision: str) -> str:
    """'QLinearConv, FULLY_CONNECTED x2' for the ops of one precision."""
    counts = Counter(op for op, prec in ops if prec == precision)
    return ", ".join(op if k == 1 else f"{op} x{k}" for op, k in sorted(counts.items()))


def _single(counts: Counter) -> str | None:
    if not counts:
        return None
    return next(iter(counts)) if len(counts) == 1 else "mixed"


def _version(package: str) -> str:
    try:
        from importlib.metadata import version

        return version(package)
    except Exception:  # noqa: BLE001 - a version is a fact, not a requirement
        return "unknown"

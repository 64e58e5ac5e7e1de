"""Reading the precision ai-edge-litert computes a .tflite in, from its ops and tensor types.

The vocabulary of the fields it returns is in `edgebench.export.precision`.

    >>> inspect_tflite(Path("fp16.tflite"), asked="fp16")["compute_precision"]  # doctest: +SKIP
    'fp32'
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

from edgebench.export.precision import summarize

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
    return summarize(
        compute,
        others,
        weights,
        asked,
        source=f"ai-edge-litert {_version('ai-edge-litert')} graph on {platform.machine()}",
        fp16_fallback="float16 weights are DEQUANTIZEd to float32 once, at load",
    )


def _version(package: str) -> str:
    try:
        from importlib.metadata import version

        return version(package)
    except Exception:  # noqa: BLE001 - a version is a fact, not a requirement
        return "unknown"

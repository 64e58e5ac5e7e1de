"""Shapes and per-node multiply-accumulates of an ONNX graph (batch 1).

Shared by `edgebench.export.onnx.onnx_costs` (per graph) and `edgebench.export.module_map` (per module),
so the two always agree.
"""

from __future__ import annotations

import numpy as np

CONV_OPS = ("Conv", "QLinearConv", "ConvInteger", "ConvTranspose")
MATMUL_OPS = ("Gemm", "MatMul", "QLinearMatMul", "MatMulInteger")


def batch1_shapes(model) -> dict[str, list[int]]:
    """Tensor name -> shape with the batch fixed to 1 (a copy of `model` is shape-inferred).

    Dimensions that stay unknown are 0. DequantizeLinear outputs take their input's shape,
    so QDQ weights are seen through.
    """
    import onnx
    from onnx import shape_inference

    model = onnx.ModelProto.FromString(model.SerializeToString())
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].dim_value:
            dims[0].dim_value = 1
    try:
        model = shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # noqa: BLE001 - fall back to what shapes are known
        pass
    shapes: dict[str, list[int]] = {}
    for v in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        shapes[v.name] = [d.dim_value for d in v.type.tensor_type.shape.dim]
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in shapes:
            shapes.setdefault(node.output[0], shapes[node.input[0]])
    return shapes


def node_macs(node, shapes: dict[str, list[int]]) -> int:
    """MACs of one node: Conv, ConvTranspose, Gemm and MatMul (and their integer forms); 0 else."""
    op = node.op_type
    if op in CONV_OPS:
        w_name = node.input[3] if op == "QLinearConv" else node.input[1]
        out, w = shapes.get(node.output[0]), shapes.get(w_name)
        if out and w and all(out) and all(w):
            # out: N, Cout, H, W...; w: Cout, Cin/groups, k...
            return int(np.prod(out)) * int(np.prod(w[1:]))
    elif op in MATMUL_OPS:
        b_name = node.input[3] if op == "QLinearMatMul" else node.input[1]
        out, b = shapes.get(node.output[0]), shapes.get(b_name)
        if out and b and all(out) and all(b):
            if op == "Gemm":
                k = b[-1] if attr_int(node, "transB") else b[0]
            else:
                k = b[-2] if len(b) >= 2 else b[0]
            return int(np.prod(out)) * int(k)
    return 0


def attr_int(node, name: str, default: int = 0) -> int:
    for a in node.attribute:
        if a.name == name:
            return a.i
    return default

"""Which of the user's PyTorch modules each ONNX node, and each runtime node, comes from.

At export (before the debug metadata is stripped) every node of the float ONNX graph is given
the attribute path of the module that made it, read from the exporter's
`pkg.torch.onnx.name_scopes`:

    >>> build_module_map(onnx.load("raw.onnx"), module_names={"", "stage", "stage.0.dw", ...})
    {"nodes": {"node_conv2d_1": "stage.0.dw", ...},          # "" = no submodule (forward itself)
     "modules": {"stage.0.dw": {"macs": 9216, "ops": ["Conv"]}, ...},
     "tensors": {"conv2d_1": "node_conv2d_1", ...},          # producer of each tensor
     "params": {"stage.0.dw.weight": "stage.0.dw", ...},     # initializers named after parameters
     "anchors": {"node_relu": "node_Conv_20", ...}}          # activation -> the conv it follows

`attribute(name, op, map)` then maps a runtime's node (an onnxruntime profile event, an
OpenVINO runtime-model op) back to a module path after undoing the runtime's renames, or to
one of LAYOUT, QUANT, UNATTRIBUTED.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

from edgebench.export.onnx_graph import CONV_OPS, MATMUL_OPS, batch1_shapes, node_macs

LAYOUT = "(layout/convert)"
QUANT = "(quantize/dequantize)"
UNATTRIBUTED = "(unattributed)"

# Runtime op types (ORT kernels, OpenVINO layer types) that do a module's arithmetic.
COMPUTE_OPS = frozenset({
    *CONV_OPS, *MATMUL_OPS, "QGemm", "FusedConv", "FusedGemm", "FusedMatMul", "NchwcConv",
    "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "ConvTransposeWithDynamicPads",
    "Convolution", "GroupConvolution", "FullyConnected", "Deconvolution", "GroupDeconvolution",
})  # fmt: skip
QUANT_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "FakeQuantize"})
LAYOUT_OPS = frozenset({"ReorderInput", "ReorderOutput", "Reorder", "Transpose", "Cast", "Convert"})
# Elementwise ops a runtime fuses into the Conv/Gemm before them (named after their output).
_FUSABLE = frozenset({"Relu", "Clip", "HardSigmoid", "Sigmoid", "LeakyRelu", "Tanh", "HardSwish", "Add"})

_SCOPES = "pkg.torch.onnx.name_scopes"
# Suffixes runtimes and the quantizer append to a node's or tensor's name, longest first.
_SUFFIXES = (
    "_quant_output_scale_mul", "_quant_scales_mul", "_output_quantized_cast", "_MatMul_quant",
    "_DequantizeLinear", "_QuantizeLinear", "_bias_add", "_quantized", "_quant", "_nchwc",
    "/DequantizationMultiply", "/WithoutBiases", "/transpose_b", "/sink_port_0", "_dq", "_q",
)  # fmt: skip
_PREFIXES = ("InsertedPrecisionFreeCast_",)
_TOKEN = re.compile(r"_token_\d+$")
INLINED_TAG = "/inlined_"  # export.onnx.name_inlined: `<node>/inlined_<op>_<k>`, a function op's body
INLINED_PREFIX = "_inlfunc_"  # onnxruntime's prefix for the tensors of a function op it inlined
# OpenVINO's reorders: "<src>_abcd_acdb_<dst>" (from one memory layout to another).
_OV_REORDER = re.compile(r"_(a[b-h]{2,6})_(a[b-h]{2,6})_")


def _ov_reorder_source(name: str) -> str | None:
    """`<src>` of an OpenVINO reorder's name `<src>_<layout>_<layout>_<dst>`, else None."""
    for match in _OV_REORDER.finditer(name):
        a, b = match.groups()
        if a != b and sorted(a) == sorted(b) == list("abcdefgh"[: len(a)]):
            return name[: match.start()]
    return None


def _module_of(node) -> str | None:
    """The module path from the exporter's name scopes: [..., module, fx node name]."""
    for prop in node.metadata_props:
        if prop.key == _SCOPES:
            try:
                scopes = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                return None
            return scopes[-2] if len(scopes) >= 2 else ""
    return None


def build_module_map(model, module_names: set[str] | None = None) -> dict:
    """The map of an exported (not yet stripped) float ONNX model; see the module docstring.

    `module_names` (from `model.named_modules()`) lets a Conv whose weight is named after a
    module keep that module after a rewrite (BatchNorm folded into a Conv is scoped to the
    BatchNorm by the exporter; its MACs belong to the Conv).
    """
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    params = {}
    for name in inits:
        owner = name.rsplit(".", 1)[0] if "." in name else ""
        if owner and (module_names is None or owner in module_names):
            params[name] = owner
    shapes = batch1_shapes(model)
    nodes, tensors, anchors, modules = {}, {}, {}, {}
    ops, by_name = {}, {}
    for i, node in enumerate(graph.node):
        name = node.name or f"{node.op_type}_{i}"
        by_name[name] = node
        module = _module_of(node)
        if node.op_type in CONV_OPS + MATMUL_OPS and len(node.input) > 1 and node.input[1] in params:
            module = params[node.input[1]]
        module = "" if module is None else module
        nodes[name], ops[name] = module, node.op_type
        for out in node.output:
            tensors[out] = name
        entry = modules.setdefault(module, {"macs": 0, "ops": []})
        entry["macs"] += node_macs(node, shapes)
        if node.op_type not in entry["ops"] and node.op_type != "Constant":
            entry["ops"].append(node.op_type)
    for name, op in ops.items():
        if op not in _FUSABLE or not by_name[name].input:
            continue
        if op == "Add":  # a sum fused into the Conv that makes one of its inputs
            srcs = [tensors.get(t) for t in by_name[name].input]
            src = next((s for s in srcs if s is not None and ops[s] in CONV_OPS + MATMUL_OPS), None)
        else:  # a chain of activations after a Conv
            src, steps = tensors.get(by_name[name].input[0]), 0
            while src is not None and ops[src] in _FUSABLE and ops[src] != "Add" and steps < 4:
                prev, steps = by_name[src], steps + 1
                src = tensors.get(prev.input[0]) if prev.input else None
        if src is not None and ops[src] in CONV_OPS + MATMUL_OPS:
            anchors[name] = src
    return {"nodes": nodes, "modules": modules, "tensors": tensors, "params": params, "anchors": anchors}


def write_module_map(model, path: Path, module_names: set[str] | None = None) -> dict:
    mapping = build_module_map(model, module_names)
    path.write_text(json.dumps(mapping, indent=1, sort_keys=True))
    return mapping


def load_module_map(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def _candidates(name: str) -> list[str]:
    """`name` and what it was before each known rename, in the order they are undone."""
    seen, todo = [], [name]
    while todo:
        cur = todo.pop(0)
        if not cur or cur in seen:
            continue
        seen.append(cur)
        for prefix in _PREFIXES:
            if cur.startswith(prefix):
                todo.append(cur[len(prefix) :])
        for suffix in _SUFFIXES:
            if cur.endswith(suffix):
                todo.append(cur[: -len(suffix)])
        todo.append(_TOKEN.sub("", cur))
        if INLINED_TAG in cur:
            todo.append(cur[: cur.index(INLINED_TAG)])
        if "," in cur:  # OpenVINO's fused layers list their original names
            todo.extend(part.strip() for part in cur.split(","))
    return seen


def _lookup(name: str, mapping: dict) -> tuple[str, str] | None:
    """(kind, value) for the first candidate known to the map: a node, a tensor or a parameter."""
    nodes, tensors, params = mapping.get("nodes", {}), mapping.get("tensors", {}), mapping.get("params", {})
    for cand in _candidates(name):
        if cand in nodes:
            return "node", cand
        if cand in tensors:
            return "node", tensors[cand]
        if cand in params:
            return "param", params[cand]
    return None


def source_node(name: str, module_map: dict) -> str | None:
    """The float graph's node that a runtime's or quantizer's node `name` comes from (known
    renames undone, as `attribute` does), or None (a node the quantizer or runtime added)."""
    found = _lookup(name, module_map)
    return found[1] if found and found[0] == "node" else None


def _node_module(node: str, op: str, mapping: dict) -> str:
    """A node's module; a compute op named after a fused activation is the Conv's module."""
    if op in COMPUTE_OPS:
        node = mapping.get("anchors", {}).get(node, node)
    return mapping["nodes"][node]


def attribute(name: str, op: str, module_map: dict) -> str:
    """The module path of a runtime node (`name` as the runtime reports it, `op` its type).

    Rules, in order:
    - Q/DQ ops (QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear, FakeQuantize): the
      module whose parameter they (de)quantize (`stage.0.dw.weight_DequantizeLinear`), else QUANT.
    - OpenVINO reorders `<src>_abcd_acdb_<dst>`: QUANT when `<src>` is a quantized tensor, else
      LAYOUT. Layout ops (ReorderInput/Output, Reorder, Cast, Convert, and a Transpose the
      runtime inserted, i.e. not named after an ONNX node; OpenVINO's `*_flatten_reshape` of
      grouped-conv weights): LAYOUT.
    - Otherwise the name, then each form with a known rename undone (prefix
      `InsertedPrecisionFreeCast_`; suffixes `_nchwc`, `_token_<n>`, `/inlined_<op>_<k>`, `/WithoutBiases`,
      `/transpose_b`, `/sink_port_0`, `/DequantizationMultiply`, the quantizer's `_quant`,
      `_QuantizeLinear`...; a comma-separated list of fused names) is looked up as an ONNX
      node, a tensor (its producer) or a parameter. A compute op found through a fused activation's output
      (`relu_nchwc`) is the Conv's module.
    - Nothing found: UNATTRIBUTED.
    """
    if op in QUANT_OPS:
        found = _lookup(name, module_map)
        return found[1] if found and found[0] == "param" else QUANT
    src = _ov_reorder_source(name)
    if src is not None and op not in COMPUTE_OPS:
        return QUANT if any(s in src for s in ("QuantizeLinear", "_quantized", "FakeQuantize")) else LAYOUT
    if op in LAYOUT_OPS and not (op == "Transpose" and name in module_map.get("nodes", {})):
        return LAYOUT
    if op == "Reshape" and name.endswith("_flatten_reshape"):  # OpenVINO's grouped-conv weights
        return LAYOUT
    found = _lookup(name, module_map)
    if found is None:
        return UNATTRIBUTED
    kind, value = found
    return value if kind == "param" else _node_module(value, op, module_map)

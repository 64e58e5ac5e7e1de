"""Every module boundary of an artifact as an extra output: the graph surgery behind `edgebench
explain` (per-layer numerics) and `quantize keep_float = "auto:K"`.

A *unit* is what a runtime runs as one layer: a module that computes (Conv, Linear, MatMul) with
the activations and sums fused into it (the module map's anchors: `features.0.0` with its ReLU
`features.0.2`), or any other module with nodes of its own (a pool; "" for ops in a forward
itself). Its *boundary* is the last tensor it hands to another unit or to the caller, taken as
the next unit sees it: after the quantize/dequantize pair an int8 graph puts on it. Units keep
the module's name in every format, so a variant's units meet the baseline's by name.

    >>> spec = expose_onnx(Path("model.onnx"), Path("exposed.onnx"), mapping)
    >>> spec["units"][0]
    {'module': 'features.0.0', 'also': ['features.0.2'], 'output': 1, 'tensor': 'relu_DequantizeLinear_Output',
     'inputs': ['(input)'], 'compute': True, 'entering': ['input_DequantizeLinear_Output']}
    >>> spec = expose_tflite(Path("model.tflite"), Path("exposed.tflite"), mapping, ["logits"])

Measured here: the extra outputs change nothing that runs on onnxruntime (it keeps its
QLinearConv/QGemm kernels, giving a consumed DQ its own copy) or LiteRT (XNNPACK keeps the
graph): final outputs bit-identical with and without them. OpenVINO keeps its u8 convolutions
(bit-identical on the demo CNN) but an extra output can stop one of its fusions (a net with
SiLU, Hardswish and a residual sum: final outputs 45 dB apart, the same answers). ONNX graphs get graph outputs; a `.tflite` gets subgraph outputs (flatbuffer
rewritten with LiteRT's own schema), so both run through the ordinary runner on any target.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from edgebench.export.module_map import QUANT_OPS, source_node

INPUT = "(input)"
_DYNAMIC = frozenset({"DynamicQuantizeLinear"})
_REMOVABLE = frozenset({"Relu", "Clip"})
# LiteRT ops that join the unit of the Conv before them, as the module map anchors them in ONNX:
# a residual sum (often with its activation fused in) or an activation after it.
_TFLITE_FUSED = frozenset({"ADD", "RELU", "RELU6", "RELU_N1_TO_1"})
_UNTUPLE = re.compile(r"[()'\s]")
_TFLITE_COMPUTE = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL", "TRANSPOSE_CONV",
                             "CONV_3D"})
_TFLITE_CARRIERS = frozenset({"QUANTIZE", "DEQUANTIZE"})
_TFLITE_LAYOUT = frozenset({"TRANSPOSE", "RESHAPE", "PAD", "PADV2", "SQUEEZE", "EXPAND_DIMS"})


def module_units(mapping: dict) -> dict[str, str]:
    """Each module of the map (with nodes) -> the unit it belongs to: its Conv's, for an
    activation module fused into one; itself for a module whose nodes go to several units (a
    forward's own ops, "", of which a `torch.relu` may be anchored to a Conv and a concat not)."""
    nodes, anchors = mapping.get("nodes", {}), mapping.get("anchors", {})
    units: dict[str, set] = defaultdict(set)
    for node, module in nodes.items():
        units[module].add(nodes.get(anchors.get(node, node), module))
    return {m: next(iter(u)) if len(u) == 1 else m for m, u in units.items()}


def compute_modules(mapping: dict) -> set[str]:
    """Modules with multiply-accumulates of their own (Conv, Gemm, MatMul): those int8 quantizes
    and `keep_float` can keep in float."""
    return {m for m, info in (mapping.get("modules") or {}).items() if info.get("macs")}


def unit_nodes(mapping: dict, units: set[str]) -> list[str]:
    """The float graph's nodes of these units (a Conv and the activations anchored to it)."""
    nodes, anchors = mapping.get("nodes", {}), mapping.get("anchors", {})
    return [n for n, module in nodes.items() if nodes.get(anchors.get(n, n), module) in units]


# ---- ONNX -------------------------------------------------------------------------------------


def onnx_units(model, mapping: dict) -> list[dict]:
    """The units of an ONNX graph (float, QDQ, fp16, dynamic int8) in the order they run."""
    graph = model.graph
    nodes = list(graph.node)
    units_of = module_units(mapping)
    compute = compute_modules(mapping)
    anchors, names = mapping.get("anchors", {}), mapping.get("nodes", {})
    unit: list[str | None] = []
    for node in nodes:
        src = None if node.op_type in QUANT_OPS or not node.input else source_node(node.name, mapping)
        unit.append(None if src is None else names[anchors.get(src, src)])
    producer = {t: i for i, n in enumerate(nodes) for t in n.output}
    consumers: dict[str, list[int]] = defaultdict(list)
    for i, node in enumerate(nodes):
        for t in node.input:
            consumers[t].append(i)
    inputs = {i.name for i in graph.input}
    outputs = [o.name for o in graph.output]
    for i, node in enumerate(nodes):
        # A ReLU/Clip after a Conv's residual sum (module map anchors stop at the Add) is fused
        # by runtimes and removed by ORT's QDQ quantizer: it belongs to the Conv's unit too, so
        # that unit ends at the same tensor in the float graph and the int8 one.
        if node.op_type in _REMOVABLE and unit[i] not in compute and node.input:
            p = producer.get(node.input[0])
            while p is not None and unit[p] is None and nodes[p].op_type in QUANT_OPS and nodes[p].input:
                p = producer.get(nodes[p].input[0])
            if p is not None and unit[p] in compute:
                unit[i] = unit[p]
    memo: dict[str, frozenset] = {}

    def origins(tensor: str) -> frozenset:
        """The units whose value a tensor carries (through Q/DQ, casts and added nodes)."""
        if tensor not in memo:
            memo[tensor] = frozenset()  # a cycle guard; graphs are acyclic
            if tensor in inputs:
                memo[tensor] = frozenset({INPUT})
            elif tensor in producer:
                i = producer[tensor]
                memo[tensor] = (frozenset({unit[i]}) if unit[i] is not None
                                else frozenset().union(*(origins(t) for t in nodes[i].input if t)))
        return memo[tensor]

    def leaves(tensor: str, owner: str, seen: set) -> bool:
        """Whether the tensor reaches another unit or the graph's outputs."""
        if tensor in outputs:
            return True
        for c in consumers.get(tensor, []):
            if c in seen:
                continue
            seen.add(c)
            if unit[c] is None and any(leaves(t, owner, seen) for t in nodes[c].output):
                return True
            if unit[c] is not None and unit[c] != owner:
                return True
        return False

    def carried(tensor: str) -> str:
        """The float tensor that carries `tensor` on to the next unit: through Q -> DQ, casts and
        the nodes a quantizer adds (dynamic int8's rescaling Mul and bias Add), not through a
        DynamicQuantizeLinear (the next unit's own input quantization)."""
        best, cur = tensor, tensor
        for _ in range(12):
            if cur in outputs:
                return cur
            nxt = [c for c in consumers.get(cur, []) if unit[c] is None and nodes[c].op_type not in _DYNAMIC]
            if not nxt:
                break
            node = nodes[nxt[0]]
            cur = node.output[0]
            if node.op_type != "QuantizeLinear":
                best = cur
        return best

    by_unit: dict[str, list[int]] = defaultdict(list)
    for i, u in enumerate(unit):
        if u is not None:
            by_unit[u].append(i)
    found = []
    for module, members in by_unit.items():
        leaving = [(i, t) for i in members for t in nodes[i].output if t and leaves(t, module, set())]
        if not leaving:
            continue
        last, tensor = max(leaving)
        feeds = set().union(*(origins(t) for i in members for t in nodes[i].input if t)) - {module}
        made = {t for i in members for t in nodes[i].output}
        entering = list(dict.fromkeys(t for i in members for t in nodes[i].input if t and t not in made and (
            t in inputs or (t in producer and nodes[producer[t]].input))))
        found.append({"module": module, "also": sorted(m for m, u in units_of.items() if u == module and m != module),
                      "tensor": carried(tensor), "inputs": sorted(feeds), "compute": module in compute,
                      "entering": entering, "_order": last})
    found.sort(key=lambda u: u.pop("_order"))
    return found


def expose_onnx(src: Path, dst: Path, mapping: dict) -> dict:
    """Write `src` with every unit's boundary added as a graph output to `dst`; the spec that
    says which output is which unit (`units[k]["output"]`, an index into the model's outputs)."""
    import onnx
    from onnx import helper

    model = onnx.load(str(src))
    units = onnx_units(model, mapping)
    outputs = [o.name for o in model.graph.output]
    types = onnx_types(model)
    for u in units:
        if u["tensor"] not in outputs:
            outputs.append(u["tensor"])
            model.graph.output.append(helper.make_tensor_value_info(u["tensor"], types.get(u["tensor"], 1), None))
        u["output"] = outputs.index(u["tensor"])
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dst))
    return {"format": "onnx", "outputs": outputs, "units": units}


def onnx_types(model) -> dict[str, int]:
    """Element type of each tensor: ONNX shape inference, and where it stops (it gives up after
    the first fp16 Conv of onnxruntime's float16 converter, measured here) the type of a node's
    first typed input, or what Cast, DequantizeLinear and integer ops make."""
    import onnx
    from onnx import TensorProto

    types = {i.name: i.type.tensor_type.elem_type for i in [*model.graph.input, *model.graph.output]}
    types |= {i.name: i.data_type for i in model.graph.initializer}
    try:
        inferred = onnx.shape_inference.infer_shapes(model).graph.value_info
    except Exception:  # noqa: BLE001 - a graph shape inference cannot read: propagate below
        inferred = []
    types |= {v.name: v.type.tensor_type.elem_type for v in inferred if v.type.tensor_type.elem_type}
    fixed = {"DynamicQuantizeLinear": TensorProto.UINT8, "ConvInteger": TensorProto.INT32,
             "MatMulInteger": TensorProto.INT32, "Shape": TensorProto.INT64}
    for node in model.graph.node:
        for out in node.output:
            if out in types or not out:
                continue
            if node.op_type == "Cast":
                types[out] = next(a.i for a in node.attribute if a.name == "to")
            elif node.op_type == "DequantizeLinear" and len(node.input) > 1:
                types[out] = types.get(node.input[1], TensorProto.FLOAT)
            elif node.op_type == "QuantizeLinear" and len(node.input) > 2:
                types[out] = types.get(node.input[2], TensorProto.UINT8)
            elif node.op_type in fixed:
                types[out] = fixed[node.op_type]
            else:
                types[out] = next((types[t] for t in node.input if t in types), TensorProto.FLOAT)
    return types


# ---- TFLite -----------------------------------------------------------------------------------


def _load_tflite(path: Path):
    from ai_edge_litert import schema_py_generated as schema

    buf = Path(path).read_bytes()
    return schema, schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(buf, 0))


def name_modules(name: str, known: set[str]) -> list[str]:
    """Module paths in a LiteRT tensor name: litert-torch names a tensor after the locations of
    the ops fused into it (`;;`-separated), each a path of `<module class>_<attribute>` steps
    (`...DemoCNN/torch.nn.modules.container.Sequential_features/...conv.Conv2d_0;1`). `known`
    (the modules and their parents) settles attribute names that hold an underscore."""
    out = []
    for location in name.split(";;"):
        path = ""
        for step in location.split(";")[0].split("/")[1:]:
            last = step.rsplit(".", 1)[-1]
            cuts = [i for i, ch in enumerate(last) if ch == "_"]
            # A GraphModule's submodules (a QAT model) come as `Conv2d_features, '0'), '0')`.
            attrs = [last[i + 1 :] for i in cuts] + [_UNTUPLE.sub("", last[i + 1 :]).replace(",", ".") for i in cuts]
            nxt = next((f"{path}.{a}".lstrip(".") for a in attrs if f"{path}.{a}".lstrip(".") in known), None)
            if nxt is None:
                break
            path = nxt
        if path and path not in out:
            out.append(path)
    return out


def tflite_units(model, schema, mapping: dict, output_names: list[str]) -> list[dict]:
    """The units of a `.tflite` (its first subgraph) in the order its ops run; `output_names`
    are the ONNX graph's outputs (the module map's tensors name their producers)."""
    sg = model.subgraphs[0]
    codes = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    units_of = module_units(mapping)
    compute = compute_modules(mapping)
    known = set(units_of) | {m.rsplit(".", i)[0] for m in units_of for i in range(1, m.count(".") + 1)}
    names, anchors, tensors = mapping.get("nodes", {}), mapping.get("anchors", {}), mapping.get("tensors", {})
    out_units = []
    for name in output_names:
        node = tensors.get(name)
        out_units.append(names.get(anchors.get(node, node)) if node else None)
    sub_outputs = [int(t) for t in sg.outputs]
    ops, unit = [], []
    for op in sg.operators:
        code = model.operatorCodes[op.opcodeIndex]
        kind = codes.get(max(code.builtinCode, code.deprecatedBuiltinCode), "?")
        outs = [int(t) for t in op.outputs]
        modules = [] if kind in _TFLITE_CARRIERS else name_modules(sg.tensors[outs[0]].name.decode(), known)
        # An op's name lists the locations fused into it, its own last (a conv's: "ReLU;;BN;;Conv"; a
        # residual sum's: "act;;<an input's ReLU>;;Block"), neighbours' sometimes in between.
        candidates = [units_of[m] for m in [*modules[-1:], *modules[:-1]] if m in units_of]
        if kind in _TFLITE_COMPUTE:  # a Conv's own module wins over a neighbour fused into its name
            candidates = [m for m in modules if m in compute] + candidates
        chosen = candidates[0] if candidates else None
        if kind in _TFLITE_LAYOUT and chosen in compute:  # the converter's layout op beside a Conv, not the Conv
            chosen = None
        if kind not in _TFLITE_CARRIERS and outs[0] in sub_outputs:
            k = sub_outputs.index(outs[0])
            chosen = out_units[k] if k < len(out_units) and out_units[k] else chosen
        ops.append((kind, [int(t) for t in op.inputs if t >= 0], outs))
        unit.append(chosen)
    producer = {t: i for i, (_, _, outs) in enumerate(ops) for t in outs}
    for i, (kind, ins, _) in enumerate(ops):  # a residual sum, an activation after it: the Conv's unit
        if unit[i] not in compute and kind in _TFLITE_FUSED:
            made = [producer.get(t) for t in ins]  # x + f(x): the last input is the Conv's own
            unit[i] = next((unit[p] for p in reversed(made) if p is not None and unit[p] in compute), unit[i])
    consumers: dict[int, list[int]] = defaultdict(list)
    for i, (_, ins, _) in enumerate(ops):
        for t in ins:
            consumers[t].append(i)
    graph_inputs = {int(t) for t in sg.inputs}

    def origins(t: int, depth: int = 0) -> set:
        if t in graph_inputs:
            return {INPUT}
        i = producer.get(t)
        if i is None or depth > 50:
            return set()
        return {unit[i]} if unit[i] is not None else set().union(*(origins(s, depth + 1) for s in ops[i][1]))

    def leaves(t: int, owner: str, depth: int = 0) -> bool:
        if t in sub_outputs:
            return True
        for c in consumers.get(t, []):
            if unit[c] is None and depth < 50 and any(leaves(s, owner, depth + 1) for s in ops[c][2]):
                return True
            if unit[c] is not None and unit[c] != owner:
                return True
        return False

    def carried(t: int) -> int:
        for _ in range(4):
            nxt = [c for c in consumers.get(t, []) if ops[c][0] == "DEQUANTIZE"]
            if t in sub_outputs or not nxt:
                break
            t = ops[nxt[0]][2][0]
        return t

    by_unit: dict[str, list[int]] = defaultdict(list)
    for i, u in enumerate(unit):
        if u is not None:
            by_unit[u].append(i)
    found = []
    for module, members in by_unit.items():
        leaving = [(i, t) for i in members for t in ops[i][2] if leaves(t, module)]
        if not leaving:
            continue
        last, tensor = max(leaving)
        feeds = set().union(*(origins(t) for i in members for t in ops[i][1])) - {module}
        index = carried(tensor)
        found.append({"module": module, "also": sorted(m for m, u in units_of.items() if u == module and m != module),
                      "tensor": sg.tensors[index].name.decode(), "index": index, "inputs": sorted(feeds),
                      "compute": module in compute, "_order": last})
    found.sort(key=lambda u: u.pop("_order"))
    return found


def expose_tflite(src: Path, dst: Path, mapping: dict, output_names: list[str]) -> dict:
    """Write `src` with every unit's boundary tensor added to its subgraph's outputs (after the
    model's own, which keep their places) to `dst`; the spec, as `expose_onnx`'s."""
    import flatbuffers

    schema, model = _load_tflite(src)
    sg = model.subgraphs[0]
    units = tflite_units(model, schema, mapping, output_names)
    outputs = [int(t) for t in sg.outputs]
    for u in units:
        if u["index"] not in outputs:
            outputs.append(u["index"])
        u["output"] = outputs.index(u.pop("index"))
    sg.outputs = outputs
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(builder.Output())
    return {"format": "tflite", "outputs": [sg.tensors[t].name.decode() for t in outputs], "units": units}


def expose(src: Path, dst: Path, mapping: dict, output_names: list[str]) -> dict:
    """`expose_onnx` or `expose_tflite`, by the artifact's suffix."""
    if Path(src).suffix == ".tflite":
        return expose_tflite(src, dst, mapping, output_names)
    if Path(src).suffix == ".onnx":
        return expose_onnx(src, dst, mapping)
    raise ValueError(f"{Path(src).name}: no way to expose its tensors (only .onnx and .tflite)")


__all__ = ["INPUT", "compute_modules", "expose", "expose_onnx", "expose_tflite", "module_units",
           "name_modules", "onnx_units", "tflite_units", "unit_nodes"]

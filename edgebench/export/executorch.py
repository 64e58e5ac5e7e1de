"""Export a PyTorch model to an ExecuTorch `.pte` lowered to XNNPACK, and say what was delegated.

Schemes (each one `.pte` with the sample's static input shapes, batch 1; several inputs and
outputs as the model has them):

- ``fp32``: torch.export -> to_edge_transform_and_lower(XnnpackPartitioner) -> to_executorch.
- ``fp16``: the model and float inputs cast to half first; XNNPACK takes fp16 graphs, so the
  program's float inputs are half (the runner adapter casts). Ops XNNPACK has no fp16 kernel
  for stay in portable kernels (measured: LayerNorm, GELU, the dtype casts).
- ``int8_static``: XNNPACKQuantizer (symmetric, per-channel weights: XNNPACK's own recipe,
  whatever the step's `per_channel`) + torchao's prepare_pt2e, calibration on the calibration
  split, convert_pt2e, then the same lowering. Inputs and outputs stay float32.
- ``int8_dynamic``: the same quantizer with is_dynamic=True (int8 weights, activations
  quantized per inference: XNNPACK kernels "QDU8, F32, QC8W"); no calibration.

Ops XNNPACK does not take run on ExecuTorch's portable (reference) kernels, silently and slowly:
`delegation_facts` counts them, and the exporter writes `model.pte.json` beside the program
(what was delegated, each compute op's precision, the version that wrote it) and adds the
program's profile nodes to the variant's `modules.json` (each delegate's XNNPACK kernels by
family and order, each portable op by instruction, mapped to the user's modules through the
nodes' `nn_module_stack`), so `edgebench profile` gives per-module rows.

    >>> facts = export_executorch(model, x[:1], Path("m.pte"), "int8_static", calibration=x_cal)
    >>> facts["delegation"]["share"], facts["delegation"]["fallback_ops"]   # 1.0, {} for a plain CNN
"""

from __future__ import annotations

import copy
import json
import re
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgebench.errors import ExportError, did_you_mean
from edgebench.tasks.arrays import ArrayLike, as_list

if TYPE_CHECKING:
    import torch

SCHEMES = ("fp32", "fp16", "int8_static", "int8_dynamic")
INSTALL_HINT = "install edgebench[executorch] (pip install executorch==1.5.1)"
CALIBRATION_BATCH = 32  # PT2E observers cost per call: batches are far faster than single rows
NOT_OPS = {"getitem", "executorch_call_delegate", "alloc"}  # bookkeeping, neither delegated nor fallback work
COMPUTE_OPS = ("convolution", "linear", "addmm", "mm", "bmm")
# Edge op -> the XNNPACK kernel family that runs it (the device adapter names kernels so).
FAMILIES = {"convolution": "Convolution", "linear": "Fully Connected", "addmm": "Fully Connected",
            "mm": "Fully Connected", "bmm": "Batch Matrix Multiply", "mean": "Mean", "avg_pool2d": "Average Pooling",
            "max_pool2d": "Max Pooling", "max_pool2d_with_indices": "Max Pooling", "add": "Add", "mul": "Multiply",
            "sub": "Subtract", "div": "Divide", "hardswish": "HardSwish", "sigmoid": "Sigmoid", "tanh": "TanH",
            "_softmax": "Softmax", "cat": "Concatenate", "gelu": "GELU", "leaky_relu": "Leaky ReLU", "elu": "ELU",
            "relu": "Clamp", "hardtanh": "Clamp", "clamp": "Clamp", "abs": "Abs", "neg": "Negate",
            "sqrt": "Square Root", "exp": "Exp", "log": "Log", "upsample_bilinear2d": "Resize Bilinear"}
DELEGATE_REST = "(xnnpack delegate call)"


def export_executorch(model: torch.nn.Module, sample: ArrayLike, path: Path, scheme: str = "fp32",
                      calibration: ArrayLike | None = None) -> dict[str, Any]:
    """Write `path` (.pte), `path`.json and the profile nodes in `modules.json` beside it; return
    the facts (seconds, delegation, the exporter's version). ExportError with one line on failure."""
    if scheme not in SCHEMES:
        raise ExportError(f'unknown ExecuTorch scheme "{scheme}"{did_you_mean(scheme, SCHEMES)}')
    if scheme == "int8_static" and (calibration is None or not len(calibration)):
        raise ExportError("int8_static needs calibration inputs")
    try:
        import torch
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower
    except ImportError as exc:
        raise ExportError(f"unavailable: ExecuTorch export is not installed: {INSTALL_HINT} ({exc})") from None

    started = time.perf_counter()
    path = Path(path)
    model = copy.deepcopy(model).eval()
    example = _tensors(sample)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if scheme == "fp16":
            model = model.half()
            example = tuple(t.half() if t.is_floating_point() else t for t in example)
        if scheme.startswith("int8"):
            model = _quantize(model, example, scheme, calibration)
        try:
            exported = torch.export.export(model, example)
        except Exception as exc:
            raise ExportError(f"torch.export failed: {_one_line(exc)}") from exc
        try:
            edge = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()])
            graph = edge.exported_program().graph_module
            delegation, ops = delegation_facts(graph)
            program = edge.to_executorch()
        except Exception as exc:
            raise ExportError(f"lowering to ExecuTorch/XNNPACK failed: {_one_line(exc)}") from exc
    path.write_bytes(program.buffer)
    facts = {"scheme": scheme, "executorch_version": _version(), "per_channel": scheme.startswith("int8"),
             "delegation": delegation, "input_dtypes": [str(t.dtype).replace("torch.", "") for t in example]}
    Path(f"{path}.json").write_text(json.dumps({**facts, **ops}, indent=1))
    add_profile_nodes(path.with_name("modules.json"), profile_nodes(program))
    return {**facts, "seconds": round(time.perf_counter() - started, 2)}


def _tensors(x: ArrayLike) -> tuple:
    """Fresh C-ordered tensors, one per input. Why a copy: `torch.from_numpy(x[:, None])` keeps
    numpy's 0 stride on the unit axis, and to_executorch() then fails ("0 in strides is not
    supported", measured)."""
    import torch

    return tuple(torch.from_numpy(np.array(a, order="C", copy=True)) for a in as_list(x))


def _quantize(model: torch.nn.Module, example: tuple, scheme: str, calibration: ArrayLike | None) -> Any:
    """PT2E: capture (batch-dynamic when the model allows it, so calibration runs in batches),
    annotate with XNNPACKQuantizer, observe, convert. The caller re-exports the result at batch 1."""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    dynamic = scheme == "int8_dynamic"
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=dynamic))
    try:
        batch = torch.export.Dim("batch", min=1)
        graph = torch.export.export(model, tuple(torch.cat([t, t]) for t in example),
                                    dynamic_shapes=tuple({0: batch} for _ in example)).module()
        step = CALIBRATION_BATCH
    except Exception:  # noqa: BLE001 - a model whose batch is fixed: calibrate row by row
        graph, step = torch.export.export(model, example).module(), 1
    prepared = prepare_pt2e(graph, quantizer)
    if dynamic:
        prepared(*example)  # weight observers record ranges only once the graph has run
    else:
        for start in range(0, len(calibration), step):
            prepared(*_tensors(calibration[start:start + step]))
    return convert_pt2e(prepared)


def delegation_facts(graph_module: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """What XNNPACK took, from the lowered edge program: ({share, delegated_nodes, portable_nodes,
    subgraphs, fallback_ops}, {compute, others, weights}: per compute op its precision and where
    it runs, for `precision_mobile.inspect_pte`). Nodes are edge-dialect nodes: one conv+bn+relu
    counts 3 (XNNPACK fuses them into one kernel); bookkeeping (getitem) is left out."""
    delegated = portable = subgraphs = 0
    fallback: dict[str, int] = {}
    compute: list[list[str]] = []
    others: list[list[str]] = []
    weights: list[str] = []
    for node in graph_module.graph.nodes:
        if node.op == "get_attr" and node.name.startswith("lowered_module"):
            subgraphs += 1
            for inner in getattr(graph_module, node.target).original_module.graph.nodes:
                if inner.op == "call_function" and _op(inner) not in NOT_OPS and not _is_qdq(inner):
                    delegated += 1
                    _precision_of(inner, "xnnpack", compute, weights)
        elif node.op == "call_function" and _op(node) not in NOT_OPS:
            portable += 1
            fallback[_op(node)] = fallback.get(_op(node), 0) + 1
            if not _precision_of(node, "portable", compute, weights) and not _is_qdq(node):
                others.append([_op(node), _dtype(node)])
    total = delegated + portable
    return ({"share": round(delegated / total, 4) if total else None, "delegated_nodes": delegated,
             "portable_nodes": portable, "subgraphs": subgraphs, "fallback_ops": fallback},
            {"compute": compute, "others": others, "weights": weights})


def _op(node: Any) -> str:
    """aten.native_layer_norm.default -> native_layer_norm; quantized_decomposed.dequantize_per_channel.default -> dequantize_per_channel."""
    name = getattr(node.target, "__name__", str(node.target))
    return re.sub(r"^(aten|dim_order_ops|quantized_decomposed)[._]", "", name).split(".")[0]


def _is_qdq(node: Any) -> bool:
    return _op(node).startswith(("quantize_per", "dequantize_per", "choose_qparams"))


def _dtype(node: Any) -> str:
    val = node.meta.get("val")
    dtype = str(getattr(val, "dtype", "")).replace("torch.", "")
    return {"float16": "fp16", "bfloat16": "bf16", "float32": "fp32", "int8": "int8"}.get(dtype, "fp32")


def _precision_of(node: Any, where: str, compute: list, weights: list) -> bool:
    """Append a compute op's [op, precision, where] (int8 when its input is dequantized from int8,
    int8-dynamic when those scales are computed per inference); False for other ops."""
    op = _op(node)
    if op not in COMPUTE_OPS:
        return False
    args = [a for a in node.args if hasattr(a, "op")]
    act = args[0] if args else None
    if op == "addmm" and len(args) > 1:
        act = args[1]
    precision = _dtype(node)
    if act is not None and _op(act).startswith("dequantize_per") and where == "xnnpack":
        scale = act.args[1] if len(act.args) > 1 else None
        precision = "int8-dynamic" if hasattr(scale, "op") and scale.op == "call_function" else "int8"
    weight = args[1] if len(args) > 1 and op != "addmm" else (args[2] if len(args) > 2 else None)
    if weight is not None:
        weights.append("int8" if _op(weight).startswith("dequantize_per") else _dtype(weight))
    compute.append([op, precision, where])
    return True


def _module(node: Any) -> str:
    """The innermost nn.Module path of a node ("stage.0.dw"); "" for the model's own forward."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path = list(stack.values())[-1][0]
    return re.sub(r"^(L__self__|L\['self'\]\.?)", "", path).replace("_modules['", "").replace("']", "").lstrip(".")


def profile_nodes(program: Any) -> dict[str, str]:
    """Runtime node name -> module path, in the names the device adapter gives ETDump's events
    (edgebench/device/rt_executorch.py): `xnnpack<k>/<family>#<i>` is the i-th kernel of that
    family in the k-th delegate call, matched to the i-th edge op of that family inside the
    delegate (XNNPACK runs a subgraph's operators in order; fused ops such as a conv's ReLU have
    no kernel and their entries stay unused); `op<i>` is the portable op of instruction i, matched
    to the graph's calls in order."""
    graph = program.exported_program().graph_module
    calls = [n for n in graph.graph.nodes if n.op == "call_function" and _op(n) not in ("getitem", "alloc")]
    plan = program.executorch_program.execution_plan[0]
    nodes: dict[str, str] = {}
    k = cursor = 0
    for i, instruction in enumerate(plan.chains[0].instructions):
        args = instruction.instr_args
        if hasattr(args, "delegate_index"):
            want = "executorch_call_delegate"
        elif hasattr(args, "op_index"):
            want = plan.operators[args.op_index].name.split("::")[-1]
        else:
            continue
        match = next((j for j in range(cursor, len(calls)) if _op(calls[j]) == want), None)
        if match is None:
            continue
        cursor = match + 1
        if want == "executorch_call_delegate":
            lowered = getattr(graph, calls[match].args[0].target)
            seen: dict[str, int] = {}
            for inner in lowered.original_module.graph.nodes:
                family = FAMILIES.get(_op(inner)) if inner.op == "call_function" else None
                if family == "Convolution" and len(inner.args) > 6 and inner.args[6] is True:
                    family = "Deconvolution"
                if family:
                    n = seen[family] = seen.get(family, -1) + 1
                    nodes[f"xnnpack{k}/{family}#{n}"] = _module(inner)
            nodes[f"xnnpack{k}/(rest)"] = DELEGATE_REST
            k += 1
        else:
            nodes[f"op{i}"] = _module(calls[match])
    return nodes


def add_profile_nodes(modules_json: Path, nodes: dict[str, str]) -> None:
    """Add runtime nodes to a variant's module map (made by the ONNX export; new if it is not there)."""
    mapping = json.loads(modules_json.read_text()) if modules_json.is_file() else {"nodes": {}, "modules": {}}
    mapping.setdefault("nodes", {}).update(nodes)
    tmp = modules_json.with_name(modules_json.name + ".tmp")
    tmp.write_text(json.dumps(mapping, indent=1, sort_keys=True))
    tmp.replace(modules_json)


def verify_executorch(path: Path, model: torch.nn.Module, inputs: ArrayLike) -> dict[str, Any]:
    """Load the `.pte` once with the runner's own adapter (as on a device: the smoke test that
    finds operators without a kernel, which export fine and fail only at load) and compare every
    output with torch's on `inputs`: the worst output's relative error and top-1 agreement."""
    from edgebench.device import rt_executorch
    from edgebench.device.runner import predict_all
    from edgebench.model.train import predict_outputs

    try:
        pte = rt_executorch.Model(str(path), threads=1)
    except rt_executorch.Unsupported as exc:
        raise ExportError(f"the .pte does not load in ExecuTorch: {exc}") from None
    got = predict_all(pte, [np.ascontiguousarray(a) for a in as_list(inputs)])
    want = predict_outputs(copy.deepcopy(model), inputs)
    if [g.size for g in got] != [w.size for w in want]:
        raise ExportError(f"{Path(path).name} gives outputs {[list(g.shape) for g in got]}, torch gives "
                          f"{[list(w.shape) for w in want]}")
    got = [g.reshape(w.shape) for g, w in zip(got, want)]
    errors = [float(np.linalg.norm(g - w) / np.linalg.norm(w)) if np.linalg.norm(w) > 0 else float("nan")
              for g, w in zip(got, want)]
    n = len(inputs)
    return {"logit_rel_err": max(errors), "n": n,
            "agreement": float((got[0].reshape(n, -1).argmax(1) == want[0].reshape(n, -1).argmax(1)).mean())}


def _version() -> str:
    from importlib.metadata import version

    return version("executorch")


def _one_line(exc: BaseException, limit: int = 300) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:limit]

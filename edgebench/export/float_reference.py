"""The variant's float model, unit by unit, on the host: what each unit adds on its own.

An error a unit inherits is not its fault. To isolate what it adds, each unit of the variant's
float ONNX (`variants/<v>/float.onnx`, kept for variants quantized at export; `model.onnx` for
float ones) is cut out as its own small graph and run here, on
onnxruntime in fp32, on the very tensors the unit received on the target (the exposed outputs of
the units before it, laid out as the float graph takes them: a `.tflite`'s NHWC moved back to
NCHW). The unit's exposed output against that float output is the error it adds alone: its
weights' and output's quantization, its kernel's arithmetic — whatever came before cancels out.

    >>> ref = float_units(Path("float.onnx"), mapping, xs)       # every unit's float tensor on xs
    >>> local = added_ratios(ref, got, xs)    # {module: noise/signal of what the unit adds}, None: unknown
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from edgebench.export.exposure import expose_onnx


def _run(model_bytes: bytes, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """A graph on onnxruntime (fp32 CPU), in batches of 64, one row at a time for a fixed batch."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    n = len(next(iter(feeds.values())))
    step = 1 if any(i.shape and isinstance(i.shape[0], int) for i in session.get_inputs()) else 64
    try:
        parts = [session.run(None, {k: feeds[k][i : i + step] for k in names}) for i in range(0, n, step)]
    except Exception:  # noqa: BLE001 - a graph that fixes its batch inside (a Reshape to 1, ...)
        parts = [session.run(None, {k: feeds[k][i : i + 1] for k in names}) for i in range(n)]
    return [np.concatenate([p[k] for p in parts]).astype(np.float32) for k in range(len(parts[0]))]


def float_units(float_onnx: Path, mapping: dict, xs: list[np.ndarray]) -> dict:
    """Every unit of the float model on the inputs `xs` (one array per model input), on the host:
    {"spec", "tensors": {module: array}, "model": the ONNX model, "inputs": its input names}."""
    import onnx

    model = onnx.load(str(float_onnx))
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in initializers]
    with tempfile.TemporaryDirectory(prefix="edgebench-float-") as tmp:
        spec = expose_onnx(Path(float_onnx), Path(tmp) / "exposed.onnx", mapping)
        outputs = _run((Path(tmp) / "exposed.onnx").read_bytes(), dict(zip(inputs, xs)))
    return {"spec": spec, "tensors": {u["module"]: outputs[u["output"]] for u in spec["units"]},
            "model": model, "inputs": inputs}


def cut(model, inputs: list[str], output: str, types: dict[str, int]) -> bytes:
    """The part of `model` that computes `output` from `inputs` (and its weights), as a graph of
    its own. (onnx.utils.Extractor needs value_info, which exported graphs here no longer carry.)"""
    from onnx import helper

    producer = {t: n for n in model.graph.node for t in n.output}
    weights = {i.name: i for i in model.graph.initializer}
    kept: dict[int, object] = {}
    todo, seen = [output], set()
    while todo:
        tensor = todo.pop()
        if not tensor or tensor in seen or tensor in inputs or tensor in weights:
            continue
        seen.add(tensor)
        node = producer.get(tensor)
        if node is None:
            raise ValueError(f"{tensor} is not computed from {inputs}")
        if id(node) not in kept:
            kept[id(node)] = node
            todo += list(node.input)
    nodes = [n for n in model.graph.node if id(n) in kept]
    used = list(dict.fromkeys(t for n in nodes for t in n.input if t in weights))
    graph = helper.make_graph(nodes, "unit", [helper.make_tensor_value_info(t, types.get(t, 1), None) for t in inputs],
                              [helper.make_tensor_value_info(output, types.get(output, 1), None)],
                              initializer=[weights[t] for t in used])
    return helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version).SerializeToString()


def to_layout(array: np.ndarray, like: np.ndarray) -> np.ndarray | None:
    """`array` laid out as `like` (same rows): as it is, channels moved from last to second
    (a `.tflite` keeps NHWC inside), or reshaped over singleton axes; None if it cannot be."""
    want = like.shape[1:]
    if array.shape[1:] == want:
        return array
    if array.ndim in (3, 4) and np.moveaxis(array, -1, 1).shape[1:] == want:
        return np.ascontiguousarray(np.moveaxis(array, -1, 1))
    if int(np.prod(array.shape[1:])) == int(np.prod(want)) and \
            [d for d in array.shape[1:] if d != 1] == [d for d in want if d != 1]:
        return array.reshape((len(array), *want))
    return None


def added_ratios(reference: dict, got: dict[str, np.ndarray], xs: list[np.ndarray]) -> dict[str, float | None]:
    """For each unit of `got` that the float model has: the noise power of the unit's output
    against the float unit run on the unit's own inputs as `got` has them, over its signal
    power. Inputs that `got` does not expose (a concat in a forward, which has no unit of its
    own in a `.tflite`) are computed in float from the nearest tensors it does. None where the
    shapes do not meet or the unit cannot be cut out."""
    from edgebench.export.exposure import onnx_types
    from edgebench.export.layer_errors import align, noise_ratio

    model, inputs = reference["model"], reference["inputs"]
    units = {u["module"]: u for u in reference["spec"]["units"]}
    available = {u["tensor"]: m for m, u in units.items() if m in got}
    producer = {t: n for n in model.graph.node for t in n.output}
    weights = {i.name for i in model.graph.initializer}
    types = onnx_types(model)

    def feeds_for(module: str) -> dict[str, np.ndarray] | None:
        n = len(got[module])
        feeds: dict[str, np.ndarray] = {}
        todo, seen = list(units[module]["entering"]), set()
        while todo:
            tensor = todo.pop()
            if tensor in seen or tensor in weights:
                continue
            seen.add(tensor)
            if tensor in inputs:
                feeds[tensor] = xs[inputs.index(tensor)][:n]
            elif available.get(tensor, module) != module:
                source = available[tensor]
                laid = to_layout(got[source], reference["tensors"][source])
                if laid is None:
                    return None
                feeds[tensor] = laid
            else:  # not exposed: computed in float, from further up
                node = producer.get(tensor)
                if node is None or len(seen) > 500:
                    return None
                todo += [t for t in node.input if t]
        return feeds or None

    out: dict[str, float | None] = {}
    for module, unit in units.items():
        if module not in got:
            continue
        feeds = feeds_for(module)
        try:
            (local,) = _run(cut(model, list(feeds), unit["tensor"], types), feeds) if feeds else (None,)
        except Exception:  # noqa: BLE001 - a unit that does not cut out cleanly: unknown, not an error
            local = None
        mine = None if local is None else align(got[module], local)  # the float output, laid out as the variant's
        out[module] = None if mine is None else noise_ratio(got[module], mine)
    return out

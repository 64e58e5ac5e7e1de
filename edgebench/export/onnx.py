"""Export a variant to ONNX (one file, dynamic batch), quantize it for onnxruntime, verify it.

Models are taken as they are: one input or several (`Arrays`, named as the data names them),
any number of outputs (a tensor, a tuple, a dict), every one kept and named in the graph.

    >>> export_onnx(model, data.x_test[:1], Path("model.onnx"))
    >>> quantize_onnx(Path("model.onnx"), Path("int8.onnx"), "int8_static", data.x_calib)
    >>> verify_onnx(Path("model.onnx"), model, data.x_test[:64])   # raises ExportError on mismatch

Quantization that belongs to a runtime happens here, at export, from the calibration split.
"""

from __future__ import annotations

import contextlib
import copy
import gzip
import io
import logging
import warnings
from pathlib import Path

import numpy as np

from edgebench.errors import ExportError
from edgebench.tasks.arrays import ArrayLike, as_list, names_of

ONNX_SCHEMES = ("fp32", "fp16", "int8_dynamic", "int8_static")
# float32 exports must follow torch this closely (relative L2 error of logits).
ONNX_FP32_TOLERANCE = 1e-4


@contextlib.contextmanager
def _quiet():
    """torch.onnx and the quantizer print pages of progress; keep the terminal for ours."""
    buf_out, buf_err = io.StringIO(), io.StringIO()
    level = logging.root.level
    logging.disable(logging.WARNING)
    with warnings.catch_warnings(), contextlib.redirect_stdout(buf_out), contextlib.redirect_stderr(buf_err):
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            logging.disable(logging.NOTSET)
            logging.root.setLevel(level)


_TORCHLIB_REGISTRIES: dict = {}


@contextlib.contextmanager
def _reuse_torchlib_registry():
    """Build torch.onnx's table of ATen->ONNX functions once per process, not once per export.

    torch 2.13's exporter rebuilds it on every call by parsing ~500 onnxscript functions:
    0.5-0.9 s of a 1.4-2.5 s export of the demo CNN (measured here), ~10 s of the demo's
    exports. The table is only read during an export (no custom translations are passed),
    and the exported files are byte-identical with and without reuse. If torch's private
    layout changes, this does nothing and exports run as before.
    """
    try:
        from torch.onnx._internal.exporter import _registration

        registry_class = _registration.ONNXRegistry
        original = registry_class.__dict__["from_torchlib"]
        build_table = original.__func__
    except (ImportError, AttributeError, KeyError):
        yield
        return

    def cached(cls, *args, **kwargs):
        key = (args, tuple(sorted(kwargs.items())))
        if key not in _TORCHLIB_REGISTRIES:
            _TORCHLIB_REGISTRIES[key] = build_table(cls, *args, **kwargs)
        return _TORCHLIB_REGISTRIES[key]

    registry_class.from_torchlib = classmethod(cached)
    try:
        yield
    finally:
        registry_class.from_torchlib = original


# The last few exports, by model content: variants whose compression happens at export
# (int8, fp16, int8-dynamic) hand over the very model the baseline exported.
_EXPORTED: dict[str, bytes] = {}
_EXPORTED_KEEP = 4
_MODULE_MAPS: dict[str, str] = {}  # the module map (JSON) of an export in _EXPORTED


def _model_key(model, sample: ArrayLike) -> str:
    """A hash of what decides the exported file: module classes, structure and plain
    attributes (strides, groups...), every parameter and buffer (names, dtypes, shapes,
    values), and the input's shape and dtype."""
    import hashlib

    h = hashlib.sha256(repr(model).encode())
    for name, module in model.named_modules():
        simple = (int, float, str, bool, tuple, type(None))
        plain = sorted((k, v) for k, v in vars(module).items() if k != "training" and isinstance(v, simple))
        h.update(f"{name}:{type(module).__module__}.{type(module).__qualname__}:{plain};".encode())
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update((t.float() if t.dtype.is_floating_point else t).numpy().tobytes())
    for name, a in zip(names_of(sample), as_list(sample)):
        h.update(f"{name}:{a.shape[1:]}:{a.dtype}".encode())
    return h.hexdigest()


def export_onnx(model, sample: ArrayLike, path: Path, modules_out: Path | None = None) -> Path:
    """Export `model` (not modified) to a single .onnx file with a dynamic batch dimension.

    Inputs are named as the data names them ("input" for a single one), outputs "logits" for
    a single tensor, else by the forward's dict keys or out0, out1, ... Where the exporter
    cannot keep the batch dynamic (a model that reshapes with a batch size read as a Python
    int), the graph takes batch 1, and every reader feeds it one sample at a time.

    A model exported earlier in this process with the same content is written from memory:
    the exporter is deterministic (byte-identical files, checked), and it saves ~2 s for each
    of the demo's three export-time quantization variants.

    `modules_out`: also write the JSON map of ONNX nodes to the model's module paths, with
    MACs per module (`edgebench.export.module_map`), read from the metadata the file then loses.
    """
    import torch

    from edgebench.tasks.arrays import call, output_names, to_torch

    key = _model_key(model, sample)
    path.parent.mkdir(parents=True, exist_ok=True)
    if key in _EXPORTED and (modules_out is None or key in _MODULE_MAPS):
        path.write_bytes(_EXPORTED[key])
        if modules_out is not None:
            modules_out.write_text(_MODULE_MAPS[key])
        return path
    model = copy.deepcopy(model).eval()
    x = to_torch(sample[:1])
    args = x if isinstance(x, tuple) else (x,)
    # Traced with two rows: with one, torch.export specializes a batch size the model reads
    # (a ViT's `cls.expand(x.shape[0], ...)`) to 1 and the graph silently takes batch 1 only.
    traced = tuple(torch.cat([a, a]) for a in args)
    with torch.no_grad():
        names = output_names(call(model, x))
    batch = torch.export.Dim("batch", min=1, max=4096)
    options = dict(dynamo=True, external_data=False, input_names=names_of(sample), output_names=names, optimize=True)
    try:
        with _quiet(), _reuse_torchlib_registry():
            try:
                torch.onnx.export(model, traced, str(path), dynamic_shapes=tuple({0: batch} for _ in args), **options)
                if fixed_batch(path):
                    raise ValueError("the batch was specialized")
            except Exception:  # noqa: BLE001 - a batch the model fixes: export for batch 1 instead
                torch.onnx.export(model, args, str(path), **options)
    except Exception as exc:  # noqa: BLE001 - any exporter failure is the variant's error
        msg = str(exc).strip().splitlines()
        raise ExportError(f"ONNX export failed: {type(exc).__name__}: {msg[0] if msg else ''}") from None
    if modules_out is not None:
        import onnx

        from edgebench.export.module_map import write_module_map

        module_names = {name for name, _ in model.named_modules()}
        write_module_map(onnx.load(str(path)), modules_out, module_names)
        _MODULE_MAPS[key] = modules_out.read_text()
    _strip_metadata(path)
    _EXPORTED[key] = path.read_bytes()
    while len(_EXPORTED) > _EXPORTED_KEEP:
        del _EXPORTED[next(iter(_EXPORTED))]
    for old in [k for k in _MODULE_MAPS if k not in _EXPORTED]:
        del _MODULE_MAPS[old]
    return path


def fixed_batch(path: Path) -> bool:
    """Whether the graph's inputs take one batch size only (the exporter could not keep it dynamic)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    dims = [i.type.tensor_type.shape.dim for i in graph.input if i.name not in initializers]
    return any(d and d[0].HasField("dim_value") for d in dims)


def _strip_metadata(path: Path) -> None:
    """Drop what only debugging needs (source stack traces per node, inferred shapes).

    The dynamo exporter stores 10-40 KB of it: on a small model that would hide the weight
    savings that size_bytes is meant to show. Runtimes do not read it.
    """
    import onnx

    model = onnx.load(str(path))
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    for init in model.graph.initializer:
        del init.metadata_props[:]
    del model.graph.value_info[:]
    del model.metadata_props[:]
    onnx.save(model, str(path))


def _calibration_reader(names: list[str], calibration: ArrayLike):
    from onnxruntime.quantization import CalibrationDataReader

    arrays = as_list(calibration)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.rows = iter(range(len(arrays[0])))

        def get_next(self):
            i = next(self.rows, None)
            return None if i is None else {name: a[i : i + 1] for name, a in zip(names, arrays)}

    return Reader()


def quantize_onnx(
    src: Path,
    dst: Path,
    scheme: str,
    calibration: ArrayLike | None = None,
    per_channel: bool = False,
    method: str = "minmax",
    nodes_to_exclude: list[str] | None = None,
) -> Path:
    """Quantize a float .onnx for onnxruntime: fp16, int8 dynamic, or int8 static (QDQ).

    `method` is the static calibration: "minmax", "percentile" or "entropy". `nodes_to_exclude`
    (int8 static): nodes left in float (`quantize keep_float`, edgebench.export.keep_float).
    """
    import onnx

    if scheme == "fp32":
        if src != dst:
            dst.write_bytes(src.read_bytes())
        return dst
    try:
        with _quiet():
            if scheme == "fp16":
                from onnxruntime.transformers.float16 import convert_float_to_float16

                # Inputs and outputs stay float32 so callers feed the same arrays.
                model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
                onnx.save(model, str(dst))
            elif scheme == "int8_dynamic":
                from onnxruntime.quantization import QuantType, quantize_dynamic

                quantize_dynamic(str(src), str(dst), per_channel=per_channel, weight_type=QuantType.QInt8)
            elif scheme == "int8_static":
                from onnxruntime.quantization import (
                    CalibrationMethod,
                    QuantFormat,
                    QuantType,
                    quantize_static,
                )
                from onnxruntime.quantization.shape_inference import quant_pre_process

                if calibration is None or len(calibration) == 0:
                    raise ExportError("int8_static needs calibration data")
                pre = dst.with_suffix(".pre.onnx")
                quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
                name_inlined(pre, src)
                graph = onnx.load(str(pre), load_external_data=False).graph
                initializers = {i.name for i in graph.initializer}
                names = [i.name for i in graph.input if i.name not in initializers]
                calib = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                         "entropy": CalibrationMethod.Entropy}[method]  # fmt: skip
                quantize_static(
                    str(pre), str(dst), _calibration_reader(names, calibration),
                    quant_format=QuantFormat.QDQ, per_channel=per_channel,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=calib, nodes_to_exclude=list(nodes_to_exclude or []),
                    extra_options={"CalibMovingAverage": False},
                )  # fmt: skip
                pre.unlink(missing_ok=True)
            else:
                raise ExportError(f"unknown ONNX quantization scheme {scheme!r} (one of {', '.join(ONNX_SCHEMES)})")
    except ExportError:
        raise
    except Exception as exc:  # noqa: BLE001
        msg = str(exc).strip().splitlines()
        raise ExportError(f"onnxruntime {scheme} quantization failed: {type(exc).__name__}: {msg[0] if msg else ''}") from None
    _strip_metadata(dst)
    return dst


def name_inlined(path: Path, src: Path) -> int:
    """Name the nodes of the function ops (Mish, ...) that onnxruntime's optimizer inlined in
    `path` (unnamed Softplus, Tanh, Mul making `_inlfunc_*` tensors, the last one the op's own
    output) after the op's node in `src`: `<node>/inlined_<op>_<k>`, which the module map reads
    back (`module_map.INLINED_TAG`), so profiles, explain and keep_float find the user's module and
    not "(unattributed)". Returns how many it named."""
    import onnx

    from edgebench.export.module_map import INLINED_PREFIX, INLINED_TAG

    made_by = {t: n.name for n in onnx.load(str(src), load_external_data=False).graph.node for t in n.output}
    model = onnx.load(str(path), load_external_data=False)
    nodes = list(model.graph.node)
    consumers: dict[str, list] = {}
    for node in nodes:
        for t in node.input:
            consumers.setdefault(t, []).append(node)
    origin: dict[int, str] = {}
    for k, node in reversed(list(enumerate(nodes))):  # the op's own output last: its consumers first
        if node.name:
            continue
        found = next((made_by[t] for t in node.output if t in made_by), None)
        if found is None and any(t.startswith(INLINED_PREFIX) for t in node.output):
            found = next((origin[id(c)] for t in node.output for c in consumers.get(t, []) if id(c) in origin), None)
        if found:
            origin[id(node)] = found
            node.name = f"{found}{INLINED_TAG}{node.op_type}_{k}"
    if origin:
        onnx.save(model, str(path))
    return len(origin)


def onnx_outputs(path: Path, x: ArrayLike) -> list[np.ndarray]:
    """Every output of the graph on every input (batches of 64, or one by one for a fixed batch)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    arrays = as_list(x)
    step = 1 if any(isinstance(i.shape[0], int) for i in sess.get_inputs()) else 64
    parts = [sess.run(None, {n: a[i : i + step] for n, a in zip(names, arrays)}) for i in range(0, len(arrays[0]), step)]
    return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]


def onnx_logits(path: Path, x: ArrayLike) -> np.ndarray:
    """The first output (a classifier's logits)."""
    return onnx_outputs(path, x)[0]


def rel_err(a: np.ndarray, ref: np.ndarray) -> float:
    """‖a − ref‖ / ‖ref‖ over all elements."""
    return float(np.linalg.norm(a - ref) / max(np.linalg.norm(ref), 1e-12))


def verify_onnx(path: Path, model, x: ArrayLike, tolerance: float = ONNX_FP32_TOLERANCE) -> float:
    """Compare a float ONNX export with torch on real inputs, every output; ExportError if they
    differ. Returns the worst output's relative error."""
    from edgebench.model.train import predict_outputs

    ref = predict_outputs(model, x)
    got = onnx_outputs(path, x)
    if len(got) != len(ref) or any(g.shape != r.shape for g, r in zip(got, ref)):
        raise ExportError(f"ONNX export gives outputs {[list(g.shape) for g in got]}, torch "
                          f"{[list(r.shape) for r in ref]} on {len(x)} test inputs")
    err = max(rel_err(g, r) for g, r in zip(got, ref))
    if not err <= tolerance:
        raise ExportError(
            f"ONNX export does not match torch: relative error {err:.2e} > {tolerance:.0e} on {len(x)} test inputs"
        )
    return err


def artifact_sizes(path: Path) -> tuple[int, int]:
    """(bytes, gzip bytes) of an artifact, counting an external-data side file if present."""
    files = [path] + ([path.with_name(path.name + ".data")] if path.with_name(path.name + ".data").exists() else [])
    blob = b"".join(f.read_bytes() for f in files)
    return len(blob), len(gzip.compress(blob, compresslevel=9, mtime=0))


def onnx_macs(path: Path) -> int:
    """Multiply-accumulates of one batch-1 inference (see `onnx_costs`)."""
    return onnx_costs(path)["macs"]


def onnx_costs(path: Path) -> dict:
    """MACs and activation elements of one batch-1 inference.

    MACs count Conv, ConvTranspose, Gemm and MatMul; activation elements are the outputs of
    every node whose shape is known (what a runtime writes to memory once, at least).

    Works on float and QDQ graphs alike (QDQ keeps float Conv nodes between Q/DQ pairs;
    QLinearConv/MatMulInteger and friends are counted too).
    """
    import onnx

    from edgebench.export.onnx_graph import batch1_shapes, node_macs

    model = onnx.load(str(path))
    shapes = batch1_shapes(model)
    total = activations = 0
    for node in model.graph.node:
        out_shape = shapes.get(node.output[0]) if node.output else None
        if out_shape and all(out_shape) and node.op_type not in ("Constant", "QuantizeLinear", "DequantizeLinear"):
            activations += int(np.prod(out_shape))
        total += node_macs(node, shapes)
    return {"macs": total, "activation_elements": activations}


"""Convert a variant's float `.onnx` to ncnn (`.param` + `.bin`) with pnnx, and check it.

    facts = export_ncnn(Path("float.onnx"), x[:1], Path("out/model.param"), fp16=False)
    facts["layers"], facts["source"]        # 4, "onnx"

Why the pnnx binary and not `pnnx.convert`: the Python wrapper imports torch, ignores its
subprocess's return code (pnnx segfaults on ONNX TopK and on QOperator int8 models: rc -11, no
files) and then imports the generated `*_pnnx.py`. The binary is found inside the pnnx wheel
without importing the package. Every side file pnnx writes (pnnx.param/bin/py/onnx, ncnn.py,
and `<name>.pnnxsim.onnx` beside its input) goes to a temp folder.

What pnnx does (measured, pnnx 20261020): drops the batch axis, names blobs in0/out0, stores
weights as fp16 unless fp16=0, and writes ops it cannot map as `pnnx.*`/`Tensor.*`/`torch.*`
layers or raw ONNX names (QuantizeLinear, ConvInteger, CumSum...) that fail at load_param: the
`.param` is scanned before anything loads it, and such layers make the export "unavailable",
naming them. Known bug: from ONNX, a reduction over one axis of a 3-D (batch, tokens, features)
tensor is written with empty axes, so ncnn reduces nothing (a tiny transformer gave (8, 10)
instead of (10,)); pnnx from TorchScript gets it right. So when the ONNX path fails or does
not match torch, the model is traced (torch.jit.trace) and converted again; `source` says
which path made the files and `onnx_error` why the first did not.

There is no int8 path: ncnn int8 needs ncnn2table + ncnn2int8 (C++ tools that ship in no
wheel); pnnx turns a QDQ ONNX into unsupported Quantize/DequantizeLinear layers and crashes on
QOperator. An int8 variant is an "unavailable" artifact with that reason.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgebench.device import rt_ncnn
from edgebench.errors import ExportError
from edgebench.tasks.arrays import ArrayLike, as_list

INSTALL_HINT = "install edgebench[ncnn] (pip install ncnn pnnx)"
INT8_UNAVAILABLE = ("unavailable: ncnn int8 needs ncnn2table and ncnn2int8 (C++ tools in no pip wheel); pnnx "
                    "turns a quantized ONNX into layers ncnn cannot load, so no int8 .param/.bin can be made here")
FP32_TOLERANCE = 1e-4  # fp16 options off (fp32 weights); fp16 storage gives ~1e-4..7e-4 (measured)
BROKEN_REL_ERR = 1.0
PNNX_TIMEOUT_S = 600
PNNX_TYPES = {"float32": "f32", "float16": "f16", "int64": "i64", "int32": "i32", "int8": "i8", "uint8": "u8"}


class Unconvertible(ExportError):
    """pnnx wrote layers ncnn does not have: this model cannot run on ncnn ("unavailable")."""


def pnnx_binary() -> str:
    spec = importlib.util.find_spec("pnnx")
    if spec is None or not spec.submodule_search_locations:
        raise ExportError(f"unavailable: pnnx is not installed: {INSTALL_HINT}")
    binary = os.path.join(list(spec.submodule_search_locations)[0], "pnnx")
    if not os.access(binary, os.X_OK):
        raise ExportError(f"pnnx binary not found or not executable at {binary}")
    return binary


def input_shapes(sample: ArrayLike) -> str:
    """pnnx's `inputshape=`: one `[1,C,H,W]` per input, with a type suffix when not float32."""
    return ",".join(f"[{','.join(map(str, (1, *a.shape[1:])))}]" + ("" if a.dtype == np.float32 else
                    PNNX_TYPES.get(a.dtype.name, "f32")) for a in as_list(sample))


def _run_pnnx(source: Path, shapes: str, param: Path, fp16: bool, tmp: Path) -> float:
    """pnnx on `source` (copied into `tmp`, so its side files land there); seconds taken."""
    local = tmp / source.name
    if local.resolve() != source.resolve():
        shutil.copyfile(source, local)
    side = {k: str(tmp / f"side.{k}") for k in ("pnnxparam", "pnnxbin", "pnnxpy", "pnnxonnx", "ncnnpy")}
    command = [pnnx_binary(), str(local), f"inputshape={shapes}", f"ncnnparam={param}",
               f"ncnnbin={param.with_suffix('.bin')}", f"fp16={int(fp16)}", *(f"{k}={v}" for k, v in side.items())]
    for stale in (param, param.with_suffix(".bin")):
        stale.unlink(missing_ok=True)  # a file left by an earlier run must not pass as this one's
    started = time.perf_counter()
    done = subprocess.run(command, cwd=tmp, capture_output=True, text=True, timeout=PNNX_TIMEOUT_S, check=False)
    if done.returncode != 0 or not param.is_file() or not param.with_suffix(".bin").is_file():
        tail = " | ".join((done.stdout + done.stderr).strip().splitlines()[-3:])[:300]
        how = f"signal {-done.returncode}" if done.returncode < 0 else f"exit {done.returncode}"
        raise ExportError(f"pnnx failed on {source.name} ({how}): {tail or 'no output'}")
    return time.perf_counter() - started


def scan_param(param: Path) -> dict[str, Any]:
    """Layer types, the ones ncnn cannot create (by this host's ncnn when installed, else by
    name) and pnnx's known empty-axes reduction, read from the text .param before any load."""
    layers = rt_ncnn.read_param(str(param))
    try:
        ncnn = rt_ncnn.import_runtime()
    except ImportError:
        ncnn = None
    types: dict[str, int] = {}
    for kind, *_ in layers:
        types[kind] = types.get(kind, 0) + 1
    suspicious = []
    for line in param.read_text().splitlines()[2:]:
        parts = line.split()
        if parts and parts[0] == "Reduction" and "-23303=0" in parts and "1=0" in parts:
            suspicious.append(f"{parts[1]}: Reduction with no axes and reduce_all=0 (pnnx's ONNX bug: reduces nothing)")
    return {"layers": len(layers), "layer_types": types, "unsupported_layers": rt_ncnn.unsupported_layers(layers, ncnn),
            "suspicious": suspicious}


def verify_ncnn(param: Path, inputs: ArrayLike, want: list[np.ndarray]) -> dict[str, Any]:
    """Every output of the files on `inputs`, through the runner's own adapter (fp16 options
    from the weights, as on a device), against `want` (torch's outputs on the same inputs)."""
    from edgebench.device.runner import predict_all

    model = rt_ncnn.Model(str(param), threads=1)
    got = predict_all(model, [np.ascontiguousarray(a) for a in as_list(inputs)])
    if [g.size for g in got] != [w.size for w in want]:
        raise ExportError(f"ncnn gives outputs {[list(g.shape) for g in got]}, torch {[list(w.shape) for w in want]}")
    got = [g.reshape(w.shape) for g, w in zip(got, want)]
    errors = [float(np.linalg.norm(g - w) / np.linalg.norm(w)) if np.linalg.norm(w) > 0 else float("nan")
              for g, w in zip(got, want)]
    n = len(inputs)
    return {"logit_rel_err": max(errors), "n": n,
            "agreement": float((got[0].reshape(n, -1).argmax(1) == want[0].reshape(n, -1).argmax(1)).mean())}


def export_ncnn(onnx: Path, sample: ArrayLike, param: Path, fp16: bool = False, *, inputs: ArrayLike | None = None,
                want: list[np.ndarray] | None = None, torch_model: Any = None) -> dict[str, Any]:
    """Write `param` and its `.bin`; facts: pnnx seconds, layers, the check against `want` when
    `inputs` are given, which path made them ("onnx" or "torchscript") and `onnx_error` when the
    fallback was needed. Unconvertible when every path gives layers ncnn does not have;
    ExportError for any other failure."""
    param = Path(param).resolve()  # pnnx runs in a temp folder
    shapes = input_shapes(sample)
    errors: list[str] = []
    missing: list[str] = []
    for source in ["onnx"] + (["torchscript"] if torch_model is not None else []):
        with tempfile.TemporaryDirectory(prefix="edgebench-pnnx-") as tmp:
            try:
                made = Path(onnx) if source == "onnx" else _trace(torch_model, sample, Path(tmp) / "model.pt")
                seconds = _run_pnnx(made, shapes, param, fp16, Path(tmp))
                facts = {"source": source, "pnnx_seconds": round(seconds, 2), **scan_param(param)}
                if facts["unsupported_layers"]:
                    listed = ", ".join(f"{k} x{n}" for k, n in sorted(facts["unsupported_layers"].items()))
                    missing.append(f"{source}: {listed}")
                    raise Unconvertible(f"ncnn has no layer {listed}")
                if inputs is not None and want is not None:
                    try:
                        check = verify_ncnn(param, inputs, want)
                    except ExportError as exc:  # a wrong shape: say what in the graph explains it
                        raise ExportError("; ".join([str(exc), *facts["suspicious"]])) from None
                    limit = BROKEN_REL_ERR if fp16 else FP32_TOLERANCE
                    if not check["logit_rel_err"] <= limit:
                        raise ExportError("; ".join([f"ncnn output differs from torch: relative error "
                                                     f"{check['logit_rel_err']:.2e} > {limit:.0e}", *facts["suspicious"]]))
                    facts.update(export_rel_err=check["logit_rel_err"], export_agreement=check["agreement"])
            except (ExportError, subprocess.TimeoutExpired, ValueError, RuntimeError) as exc:
                errors.append(f"{source}: {exc}")
                continue
        return {**facts, "fp16_storage": fp16, **({"onnx_error": errors[0]} if errors else {})}
    if missing and len(missing) == len(errors):
        raise Unconvertible(f"unavailable: ncnn {_ncnn_version()} cannot run this model: pnnx wrote layers ncnn has "
                            f"no kernel for ({'; '.join(missing)})")
    raise ExportError("ncnn conversion failed: " + "; ".join(errors))


def _trace(model: Any, sample: ArrayLike, out: Path) -> Path:
    """TorchScript for pnnx. check_trace=False: nn.MultiheadAttention takes its fused fast path
    under no_grad, and the tracer's re-run check compares it with the slow path and fails."""
    import torch

    example = tuple(torch.from_numpy(np.array(a[:1], order="C", copy=True)) for a in as_list(sample))
    with torch.no_grad():
        torch.jit.trace(model.eval(), example, check_trace=False).save(str(out))
    return out


def _ncnn_version() -> str:
    try:
        return rt_ncnn.import_runtime().__version__
    except ImportError:
        return "(not installed)"

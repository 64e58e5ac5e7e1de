"""Export a PyTorch model to a `.tflite` file with litert-torch, and check it.

The model is taken as it is: one input or several (`Arrays`; the file keeps their order in its
signature), any number of outputs. Four precision schemes, each one `.tflite` file whose
inputs have batch 1 (layout unchanged, e.g. NCHW):

- ``fp32``: plain conversion.
- ``fp16``: weights stored as float16 and dequantized to float32 when the interpreter loads
  (ai-edge-quantizer's float-casting recipe, which litert-torch applies after conversion).
- ``int8_dynamic``: dynamic-range quantization: int8 per-channel weights, float activations
  quantized on the fly inside conv/linear kernels (PT2E dynamic config).
- ``int8_static``: full-integer PT2E quantization calibrated on `calibration` (the same split
  the ONNX int8 variant uses); input and output tensors are int8, which the runner
  (de)quantizes with each tensor's scale and zero point.

Example::

    path = export_tflite(model, x[:1], Path("model.tflite"), "int8_static", calibration=x_cal)
    verify_tflite(path, model, x_test)  # {"max_abs_diff": ..., "logit_rel_err": ..., ...}

torch and litert-torch are imported inside the functions so `edgebench --help` stays fast.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgebench.errors import ExportError, did_you_mean
from edgebench.tasks.arrays import ArrayLike, as_list

if TYPE_CHECKING:
    import torch

SCHEMES = ("fp32", "fp16", "int8_dynamic", "int8_static")
INSTALL_HINT = "install edgebench[tflite] (pip install litert-torch ai-edge-litert)"
# Calibration runs in batches when the model exports with a dynamic batch dimension;
# PT2E's histogram observers cost ~20 ms per call, so batch-1 calibration is 30x slower.
CALIBRATION_BATCH = 32

log = logging.getLogger(__name__)


def export_tflite(
    model: torch.nn.Module,
    sample: ArrayLike,
    path: Path,
    scheme: str = "fp32",
    calibration: ArrayLike | None = None,
    *,
    per_channel: bool = True,
    keep_float: list[str] | None = None,
) -> Path:
    """Convert `model` to a `.tflite` file at `path`.

    `sample` is one input row (batch 1; `Arrays` for several inputs); the file has those static
    input shapes. `calibration` (rows like the sample) is required for ``int8_static`` and
    ignored otherwise. `per_channel` picks per-channel (default) or per-tensor int8 weights.
    `keep_float`: module paths (``features.3.0``) the int8 quantizer leaves in float.
    The model is not modified. Any failure raises `ExportError` with a one-line reason;
    a missing litert-torch raises ``ExportError("unavailable: ...")``.

    >>> export_tflite(model, x[:1], Path("m.tflite"), "int8_dynamic")  # doctest: +SKIP
    PosixPath('m.tflite')
    """
    if scheme not in SCHEMES:
        raise ExportError(f'unknown TFLite scheme "{scheme}"{did_you_mean(scheme, SCHEMES)}')
    if scheme == "int8_dynamic":
        # Per-tensor dynamic-range models from litert-torch 0.10 run in ai-edge-litert 2.3 with
        # overflowing outputs (measured: logits ~6e18, 8.6% top-1 agreement with torch on the
        # demo CNN); per-channel ones match torch (1.3% relative error, 100% agreement).
        per_channel = True
    rows = [np.ascontiguousarray(a) for a in as_list(sample)]
    if any(len(a) != 1 for a in rows):
        raise ExportError(f"TFLite export needs a batch-1 sample, got shapes {[list(a.shape) for a in rows]}")
    if scheme == "int8_static":
        if calibration is None or len(calibration) == 0:
            raise ExportError("int8_static needs calibration inputs (the ONNX int8 split)")
        if [a.shape[1:] for a in as_list(calibration)] != [a.shape[1:] for a in rows]:
            raise ExportError("calibration inputs differ in shape from the sample")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    notes: list[str] = []  # logged once the converter's output is no longer redirected
    with quiet_output() as captured:
        try:
            import litert_torch  # noqa: F401 - imported here so a missing extra is one clear line
            import torch
        except ImportError as exc:
            raise ExportError(f"unavailable: {INSTALL_HINT} ({exc})") from exc
        try:
            with _stage(scheme, "copying the model"):
                model = copy.deepcopy(model).eval()
                example = tuple(torch.from_numpy(a) for a in rows)
            if scheme in ("fp32", "fp16"):
                with _stage(scheme, "litert-torch conversion"):
                    edge_model = _convert_float(model, example, scheme)
            else:
                edge_model = _convert_pt2e(model, example, scheme, calibration, per_channel, notes, keep_float)
            with _stage(scheme, "writing the file"):
                edge_model.export(str(path))
        except ExportError:
            log.debug("litert-torch output:\n%s", captured.getvalue())
            raise
    seconds = time.perf_counter() - started
    log.debug("litert-torch output:\n%s", captured.getvalue())
    for note in notes:
        log.warning("%s: %s", path.name, note)
    _check_input_shapes(path, [a.shape for a in rows])
    log.info("exported %s (%s, %d bytes) in %.1f s", path, scheme, path.stat().st_size, seconds)
    return path


@contextlib.contextmanager
def _stage(scheme: str, name: str) -> Iterator[None]:
    """Turn any failure inside into one `ExportError` line that says where it happened."""
    try:
        yield
    except ExportError:
        raise
    except Exception as exc:  # noqa: BLE001 - converter failures come in every type
        raise ExportError(f"TFLite {scheme} export failed in {name}: {_one_line(exc)}") from exc


def _convert_float(model: torch.nn.Module, example: tuple, scheme: str) -> Any:
    import litert_torch

    quant_config = None
    if scheme == "fp16":
        # litert-torch has no fp16 flag of its own; its "generative" recipes drive
        # ai-edge-quantizer on the converted flatbuffer, and the default recipe's regex
        # matches every op, so it works on any model, not only generative ones.
        from litert_torch.generative.quantize import quant_recipes

        quant_config = quant_recipes.full_fp16_recipe()
    return litert_torch.convert(model, example, quant_config=quant_config)


def _convert_pt2e(
    model: torch.nn.Module,
    example: tuple,
    scheme: str,
    calibration: ArrayLike | None,
    per_channel: bool,
    notes: list[str],
    keep_float: list[str] | None = None,
) -> Any:
    import litert_torch
    import torch
    from litert_torch.quantize import pt2e_quantizer
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import quantize_pt2e

    dynamic = scheme == "int8_dynamic"
    quantizer = (_keeping_float(pt2e_quantizer, keep_float) if keep_float else pt2e_quantizer.PT2EQuantizer()).set_global(
        pt2e_quantizer.get_symmetric_quantization_config(
            is_per_channel=per_channel, is_dynamic=dynamic
        )
    )
    with _stage(scheme, "torch.export"):
        graph, batched = _export_for_quantization(model, example, notes)
    with _stage(scheme, "PT2E quantization"), torch.no_grad():
        prepared = quantize_pt2e.prepare_pt2e(graph, quantizer)
        if dynamic:
            # Weight observers only record ranges once the graph has run.
            prepared(*example)
        else:
            step = CALIBRATION_BATCH if batched else 1
            for start in range(0, len(calibration), step):
                prepared(*(torch.from_numpy(np.ascontiguousarray(a)) for a in as_list(calibration[start : start + step])))
        quantized = quantize_pt2e.convert_pt2e(prepared, fold_quantize=False)
    with _stage(scheme, "litert-torch conversion"), _strict_qdq(bool(keep_float)):
        # Converting with the batch-1 example gives static batch-1 input tensors.
        return litert_torch.convert(quantized, example, quant_config=QuantConfig(pt2e_quantizer=quantizer))


@contextlib.contextmanager
def _strict_qdq(on: bool) -> Iterator[None]:
    """LiteRT's converter in strict QDQ mode while it runs (keep_float): by default it quantizes a
    float conv that sits between a dequantize and a quantize, weights and all (measured: the kept
    conv came out CONV_2D int8); strict mode converts only what the quantizer annotated, so the
    kept modules run DEQUANTIZE -> float op -> QUANTIZE. It also gives the file float inputs and
    outputs (QUANTIZE/DEQUANTIZE at its ends). litert-torch has no switch for it: its config is
    set on the way into the converter's passes."""
    if not on:
        yield
        return
    from litert_torch._convert import litert_converter

    api = litert_converter.converter_api_ext
    original = api.run_convert_to_tfl_passes

    def strict(module: Any, pass_manager: Any, config: Any) -> Any:
        config.strict_qdq_mode = True
        return original(module, pass_manager, config)

    api.run_convert_to_tfl_passes = strict
    try:
        yield
    finally:
        api.run_convert_to_tfl_passes = original


def _keeping_float(pt2e_quantizer: Any, modules: list[str]) -> Any:
    """A PT2E quantizer that leaves the ops of `modules` (and of their submodules) unannotated,
    so they run in float. litert-torch's own `set_module_name` reads `nn_module_stack` keys in a
    form torch 2.13 no longer writes (its filter matched nothing here), so this one reads the
    module paths the stack holds."""
    import re

    keep = set(modules)

    def path(raw: str) -> str:  # "features.0.0", or an older "L['self'].features[0][0]"
        return re.sub(r"\[(\d+)\]", r".\1", re.sub(r"^L\['self'\]\.?", "", str(raw)))

    def outside(node: Any) -> bool:
        return not any(path(entry[0]) in keep for entry in (node.meta.get("nn_module_stack") or {}).values())

    class KeepFloat(pt2e_quantizer.PT2EQuantizer):
        def _annotate_for_static_quantization_config(self, model: Any) -> Any:
            self._annotate_all_static_patterns(model, self.global_config, outside)
            return model

    return KeepFloat()


def _export_for_quantization(model: torch.nn.Module, example: tuple, notes: list[str]) -> tuple[Any, bool]:
    """Capture `model` for PT2E; return the graph module and whether its batch is dynamic.

    Strict (dynamo) export first: only it records the `source_fn_stack` metadata that the
    quantizer needs to annotate residual adds and pooling; with non-strict export those run
    in float between DEQUANTIZE/QUANTIZE ops. A dynamic batch lets calibration run in batches.
    """
    import torch

    batch = torch.export.Dim("batch", min=1)
    attempts = [
        (True, True),
        (True, False),
        (False, True),
        (False, False),
    ]
    errors = []
    for strict, dynamic in attempts:
        try:
            if dynamic:
                # A batch-1 example would specialize the dimension to 1; trace with two rows.
                args = tuple(torch.cat([t, t]) for t in example)
                shapes: Any = tuple({0: batch} for _ in example)
            else:
                args, shapes = example, None
            exported = torch.export.export(model, args, dynamic_shapes=shapes, strict=strict)
            if not strict:
                notes.append(
                    f"strict torch.export failed ({_one_line(errors[1], 120)}); captured"
                    " non-strict, so residual adds and pools may stay float"
                )
            return exported.module(), dynamic
        except Exception as exc:  # noqa: BLE001 - try the next, more permissive capture
            errors.append(exc)
    raise errors[-1]


def _check_input_shapes(path: Path, shapes: list[tuple[int, ...]]) -> None:
    """Fail now, not on the device, if the file does not take the sample's shapes."""
    from edgebench.device import rt_tflite

    with quiet_output():  # LiteRT's "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." on fd 2
        got = [tuple(int(d) for d in detail["shape"]) for detail in rt_tflite.Model(str(path), threads=1).inputs]
    if got != [tuple(s) for s in shapes]:
        raise ExportError(f"{path.name} takes inputs {got}, expected {[tuple(s) for s in shapes]}")


def _interpreter(path: Path) -> Any:
    try:
        from ai_edge_litert import interpreter as litert
    except ImportError as exc:
        raise ExportError(f"unavailable: {INSTALL_HINT} ({exc})") from exc
    try:
        interp = litert.Interpreter(model_path=str(path), num_threads=1)
        interp.allocate_tensors()
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"{path.name} does not load in ai-edge-litert: {_one_line(exc)}") from exc
    return interp


def verify_tflite(path: Path, model: torch.nn.Module, inputs: ArrayLike) -> dict[str, Any]:
    """Run `inputs` through the `.tflite` file and through torch; compare every output.

    The file runs through the runner's own adapter, so int8 inputs/outputs are (de)quantized
    exactly as on a target. Returns `max_abs_diff`, `logit_rel_err` (‖tflite − torch‖ / ‖torch‖
    of the worst output), `agreement` (share of equal top-1 of the first output), `n`, and
    the file's first `input_dtype` / `output_dtype`. Judging the numbers is the caller's.

    >>> verify_tflite(Path("m.tflite"), model, x_test)["agreement"]  # doctest: +SKIP
    1.0
    """
    from edgebench.device import rt_tflite
    from edgebench.device.runner import predict_all
    from edgebench.model.train import predict_outputs

    with quiet_output():  # LiteRT's delegate line on fd 2, as in _check_input_shapes
        try:
            tflite = rt_tflite.Model(str(path), threads=1)
        except ImportError as exc:
            raise ExportError(f"unavailable: ai-edge-litert is not installed ({rt_tflite.INSTALL_HINT})") from exc
        got = predict_all(tflite, [np.ascontiguousarray(a) for a in as_list(inputs)])
    want = predict_outputs(copy.deepcopy(model), inputs)
    if [g.size for g in got] != [w.size for w in want]:
        raise ExportError(f"{Path(path).name} gives outputs {[list(g.shape) for g in got]}, torch gives "
                          f"{[list(w.shape) for w in want]}")
    n = len(inputs)
    got = [g.reshape(w.shape) for g, w in zip(got, want)]
    errors = [float(np.linalg.norm(g - w) / np.linalg.norm(w)) if np.linalg.norm(w) > 0 else float("nan")
              for g, w in zip(got, want)]
    first_got, first_want = got[0].reshape(n, -1), want[0].reshape(n, -1)
    return {
        "max_abs_diff": max(float(np.abs(g - w).max()) if g.size else 0.0 for g, w in zip(got, want)),
        "logit_rel_err": max(errors),
        "agreement": float((first_got.argmax(axis=1) == first_want.argmax(axis=1)).mean()),
        "n": n,
        "input_dtype": np.dtype(tflite.inputs[0]["dtype"]).name,
        "output_dtype": np.dtype(tflite.outputs[0]["dtype"]).name,
    }


def _one_line(exc: BaseException, limit: int = 300) -> str:
    """The first non-empty line of an exception, prefixed with its type, at most `limit` chars."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


@contextlib.contextmanager
def quiet_output() -> Iterator[io.StringIO]:
    """Collect the converter's chatter (C++ logs on fd 1/2, progress lines, warnings).

    litert-torch prints progress per pass and absl/MLIR log to the raw file descriptors,
    which `contextlib.redirect_*` cannot catch; the text is returned for debug logging.
    The redirect is process-wide while it lasts.
    """
    collected = io.StringIO()
    saved_env = os.environ.get("LITERT_TORCH_SHOW_PROGRESS")
    os.environ["LITERT_TORCH_SHOW_PROGRESS"] = "n"
    _flush()
    with tempfile.TemporaryFile() as sink:
        try:
            saved_fds: tuple[int, ...] = (os.dup(1), os.dup(2))
        except OSError:  # no fd 1/2 (a detached process): nothing to redirect
            saved_fds = ()
        for fd in (1, 2) if saved_fds else ():
            os.dup2(sink.fileno(), fd)
        try:
            with (
                warnings.catch_warnings(),
                contextlib.redirect_stdout(collected),
                contextlib.redirect_stderr(collected),
            ):
                warnings.simplefilter("ignore")
                yield collected
        finally:
            _flush()
            for fd, saved in zip((1, 2), saved_fds, strict=False):  # () when not redirected
                os.dup2(saved, fd)
                os.close(saved)
            if saved_env is None:
                os.environ.pop("LITERT_TORCH_SHOW_PROGRESS", None)
            else:
                os.environ["LITERT_TORCH_SHOW_PROGRESS"] = saved_env
            sink.seek(0)
            collected.write(sink.read().decode("utf-8", errors="replace"))


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()

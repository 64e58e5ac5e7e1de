"""Each artifact format's exporter: make the file from a variant's model and check it against torch.

A format (`edgebench.runtimes.FORMATS`) names its exporter here. Every exporter has one
signature, `exporter(model, request, path, log, name) -> entry`, and never raises: the entry
is the artifact's part of variant.json (`file`, `size_bytes`, `size_gzip_bytes`,
`export_rel_err`, ...) or `{"error": why}`, so a variant that cannot be exported to one format
still runs in the others and its records say why.

    >>> request = ExportRequest(x_test=data.x_test[:128], x_calib=data.x_calib, scheme="int8_static")
    >>> onnx_artifact(model, request, vdir / "model.onnx", print, "int8")["size_bytes"]  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgebench.errors import EdgebenchError
from edgebench.tasks.arrays import ArrayLike, Arrays

TFLITE_FP32_TOLERANCE = 1e-4
TFLITE_BROKEN_REL_ERR = 1.0  # ‖Δlogits‖ ≥ ‖logits‖: nothing of the model is left


@dataclass(frozen=True)
class ExportRequest:
    """What an exporter may use besides the model: test inputs to verify on (the first one is
    the sample), calibration inputs, the quantization scheme and its options, and the float
    ONNX export every variant already has (made once, for MACs and the ONNX formats)."""

    x_test: ArrayLike
    x_calib: ArrayLike
    scheme: str = "fp32"
    per_channel: bool = False
    calibration: str = "minmax"
    float_onnx: Path | None = None
    float_onnx_rel_err: float | None = None
    keep_float: tuple[str, ...] | str = ()  # int8 static: module globs kept in float, or "auto:K"

    def portable(self) -> ExportRequest:
        """The same request with only the data an exporter reads (for another process)."""
        return ExportRequest(copy_rows(self.x_test[:128]), copy_rows(self.x_calib),
                             self.scheme, self.per_channel, self.calibration, self.float_onnx, self.float_onnx_rel_err,
                             self.keep_float)


def copy_rows(x: ArrayLike) -> ArrayLike:
    """A compact copy (what goes to another process), one array or several."""
    if isinstance(x, Arrays):
        return Arrays({k: np.ascontiguousarray(v) for k, v in x.items()})
    return np.ascontiguousarray(x)


def _entry(path: Path, **extra: Any) -> dict:
    from edgebench.export.onnx import artifact_sizes

    size, gz = artifact_sizes(path)
    return {"file": path.name, "size_bytes": size, "size_gzip_bytes": gz, **extra}


def _guarded(what: str, export: Callable[[], dict], log, name: str) -> dict:
    """Run an export; a failure becomes the entry's error (logged), never an exception."""
    try:
        return export()
    except EdgebenchError as exc:
        log(f"{name}: {what}: {exc}")
        return {"error": str(exc)}
    except Exception as exc:  # noqa: BLE001 - the user's model: one line, the sweep goes on
        log(f"{name}: {what}: {type(exc).__name__}: {exc}")
        return {"error": f"{what} export failed: {type(exc).__name__}: {exc}"}


def onnx_artifact(model, request: ExportRequest, path: Path, log, name: str) -> dict:
    """The .onnx onnxruntime and OpenVINO read: the float export (already verified against
    torch) quantized to the scheme by onnxruntime's quantizer (fp16, int8 dynamic, QDQ int8)."""
    from edgebench.export.onnx import quantize_onnx

    def export() -> dict:
        if request.float_onnx is None or not Path(request.float_onnx).is_file():
            raise EdgebenchError("no float ONNX export to quantize")
        kept: dict = {}
        if request.keep_float and request.scheme == "int8_static":
            kept = _onnx_kept_float(request, path)
        nodes = kept.pop("nodes", None)
        out = quantize_onnx(request.float_onnx, path, request.scheme, request.x_calib,
                            per_channel=request.per_channel, method=request.calibration, nodes_to_exclude=nodes)
        if nodes:
            from edgebench.export.keep_float import read_float_inputs

            read_float_inputs(out, nodes)
        return _entry(out, export_rel_err=request.float_onnx_rel_err, **kept)

    return _guarded("ONNX", export, log, name)


def tflite_artifact(model, request: ExportRequest, path: Path, log, name: str) -> dict:
    """The .tflite LiteRT reads, converted by litert-torch and run against torch: a float
    export must match (relative error ≤ 1e-4); a quantized one must not be broken."""

    def export() -> dict:
        try:
            from edgebench.export.tflite import export_tflite, verify_tflite
        except ImportError as exc:
            raise EdgebenchError(f"unavailable: TFLite export is not installed ({exc})") from None
        kept: dict = {}
        if request.keep_float and request.scheme == "int8_static":
            kept = _tflite_kept_float(model, request, path)
        export_tflite(model, request.x_test[:1], path, scheme=request.scheme, calibration=request.x_calib,
                      per_channel=request.per_channel, keep_float=kept.pop("modules", None))
        check = verify_tflite(path, model, request.x_test[:128])
        if request.scheme == "fp32" and not check["logit_rel_err"] <= TFLITE_FP32_TOLERANCE:
            raise EdgebenchError(f"TFLite export does not match torch: relative error {check['logit_rel_err']:.2e} "
                                 f"> {TFLITE_FP32_TOLERANCE:.0e} on {check['n']} test inputs")
        if not np.isfinite(check["logit_rel_err"]) or check["logit_rel_err"] > TFLITE_BROKEN_REL_ERR:
            # Quantization error is expected; outputs this far from torch mean a broken model.
            raise EdgebenchError(f"TFLite {request.scheme} export is broken: relative error "
                                 f"{check['logit_rel_err']:.2e}, top-1 agreement {check['agreement']:.0%} "
                                 f"with torch on {check['n']} test inputs")
        return _entry(path, export_rel_err=check["logit_rel_err"], export_agreement=check["agreement"], **kept)

    return _guarded("TFLite", export, log, name)


def _onnx_kept_float(request: ExportRequest, path: Path) -> dict:
    """`keep_float` for onnxruntime's quantizer: the units kept float (globs resolved, or "auto:K"
    ranked on onnxruntime on the calibration split), the ranking, and their nodes."""
    from edgebench.export import keep_float as kf
    from edgebench.export.onnx import quantize_onnx

    mapping = kf.module_map_beside(path)
    k, extra = kf.auto_count(request.keep_float), {}
    if k is None:
        units = kf.resolve_globs(request.keep_float, mapping)
    else:
        trial = path.with_name(path.stem + ".all-int8.onnx")
        try:
            quantize_onnx(request.float_onnx, trial, "int8_static", request.x_calib, per_channel=request.per_channel,
                          method=request.calibration)
            units, extra["keep_float_ranking"] = kf.rank(trial, request.float_onnx, mapping, request.x_calib, k)
        finally:
            trial.unlink(missing_ok=True)
    return {"kept_float": units, **extra, "nodes": kf.onnx_excluded_nodes(units, mapping)}


def _tflite_kept_float(model, request: ExportRequest, path: Path) -> dict:
    """`keep_float` for LiteRT's PT2E quantizer: the units kept float (globs resolved, or "auto:K"
    ranked on LiteRT on the calibration split), the ranking, and every module they cover."""
    from edgebench.export import keep_float as kf
    from edgebench.export.tflite import export_tflite

    mapping = kf.module_map_beside(path)
    k, extra = kf.auto_count(request.keep_float), {}
    if k is None:
        units = kf.resolve_globs(request.keep_float, mapping)
    else:
        trial = path.with_name(path.stem + ".all-int8.tflite")
        try:
            export_tflite(model, request.x_test[:1], trial, scheme="int8_static", calibration=request.x_calib,
                          per_channel=request.per_channel)
            units, extra["keep_float_ranking"] = kf.rank(trial, request.float_onnx, mapping, request.x_calib, k)
        finally:
            trial.unlink(missing_ok=True)
    return {"kept_float": units, **extra, "modules": kf.covered_modules(units, mapping)}

"""The mobile runtimes' exporters, behind the one signature of `edgebench.export.artifacts`:
`exporter(model, request, path, log, name) -> entry`, never raising (a failure is the entry's
`error`, "unavailable: ..." when the runtime cannot run this variant at all).

- `pte_artifact`: ExecuTorch `.pte` lowered to XNNPACK, from the variant's torch model
  (`edgebench.export.executorch`); loaded once by the runner's adapter and checked against torch.
- `ncnn_artifact`: ncnn `.param` + `.bin`, converted by pnnx from the variant's float ONNX
  (`edgebench.export.ncnn`); fp32 and fp16 weights, no int8 (see there).

    >>> pte_artifact(model, request, vdir / "model.pte", print, "int8")["delegation"]["share"]  # doctest: +SKIP
    1.0
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from edgebench.errors import EdgebenchError
from edgebench.export.artifacts import ExportRequest, _entry, _guarded

FP32_TOLERANCE = 1e-4
BROKEN_REL_ERR = 1.0  # ‖Δ‖ ≥ ‖outputs‖: nothing of the model is left


def _judged(what: str, scheme: str, check: dict) -> None:
    """A float export must match torch; a quantized one must not be broken."""
    err = check["logit_rel_err"]
    if scheme == "fp32" and not err <= FP32_TOLERANCE:
        raise EdgebenchError(f"{what} export does not match torch: relative error {err:.2e} > {FP32_TOLERANCE:.0e} "
                             f"on {check['n']} test inputs")
    if not np.isfinite(err) or err > BROKEN_REL_ERR:
        raise EdgebenchError(f"{what} {scheme} export is broken: relative error {err:.2e}, top-1 agreement "
                             f"{check['agreement']:.0%} with torch on {check['n']} test inputs")


def pte_artifact(model, request: ExportRequest, path: Path, log, name: str) -> dict:
    """The .pte ExecuTorch reads: fp32, fp16, int8 static (calibration split) or dynamic."""

    def export() -> dict:
        from edgebench.export.executorch import export_executorch, verify_executorch

        facts = export_executorch(model, request.x_test[:1], path, request.scheme, calibration=request.x_calib)
        check = verify_executorch(path, model, request.x_test[:128])
        _judged("ExecuTorch", request.scheme, check)
        facts.pop("seconds", None)
        return _entry(path, export_rel_err=check["logit_rel_err"], export_agreement=check["agreement"], **facts)

    return _guarded("ExecuTorch", export, log, name)


def ncnn_artifact(model, request: ExportRequest, path: Path, log, name: str) -> dict:
    """The .param/.bin ncnn reads, from the float ONNX: fp32 weights, or fp16 for fp16."""

    def export() -> dict:
        from edgebench.export.ncnn import INT8_UNAVAILABLE, export_ncnn
        from edgebench.model.train import predict_outputs

        if request.scheme not in ("fp32", "fp16"):
            raise EdgebenchError(INT8_UNAVAILABLE)
        if request.float_onnx is None or not Path(request.float_onnx).is_file():
            raise EdgebenchError("no float ONNX export to convert")
        try:
            import ncnn  # noqa: F401 - the check below runs the files with it
        except ImportError as exc:
            raise EdgebenchError(f"unavailable: ncnn is not installed: pip install ncnn pnnx ({exc})") from None
        inputs = request.x_test[:128]
        facts = export_ncnn(Path(request.float_onnx), request.x_test[:1], path, fp16=request.scheme == "fp16",
                            inputs=inputs, want=predict_outputs(model, inputs), torch_model=model)
        _judged("ncnn", request.scheme, {"logit_rel_err": facts["export_rel_err"],
                                         "agreement": facts["export_agreement"], "n": len(inputs)})
        if facts.get("onnx_error"):
            log(f"{name}: ncnn: made from TorchScript; the ONNX path failed: {facts['onnx_error']}")
        size, gz = ncnn_sizes(path)
        return {**_entry(path), "size_bytes": size, "size_gzip_bytes": gz, "files": [path.name, path.with_suffix(".bin").name],
                **{k: v for k, v in facts.items() if k != "suspicious" or v}}

    return _guarded("ncnn", export, log, name)


def ncnn_sizes(param: Path) -> tuple[int, int]:
    """(bytes, gzip bytes) of what a device loads: the .param and its .bin."""
    blob = param.read_bytes() + param.with_suffix(".bin").read_bytes()
    return len(blob), len(gzip.compress(blob, compresslevel=9, mtime=0))

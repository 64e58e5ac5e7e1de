"""Make each variant (a chain of compression steps) and export it to deployable artifacts.

Writes `variants/<name>/model.onnx`, `model.tflite` and `variant.json` (parent, steps, params,
sizes, MACs, export errors, and per artifact the precision its runtime really computes in, read
from the exported graph by `edgebench.precision`). A variant whose step or export fails is kept
with its error, so its records say why; the sweep goes on.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgebench.config import Experiment, Variant, step_to_dict
from edgebench.errors import EdgebenchError
from edgebench.precision import inspect_artifact, took

# What `static_fields` copies from an artifact's inspection into every record.
PRECISION_FIELDS = ("compute_precision", "weight_precision", "precision_note", "precision_ops", "precision_source")

PRECISION_OF = {"fp32": "fp32", "fp16": "fp16", "int8_dynamic": "int8", "int8_static": "int8"}
BYTES_PER_WEIGHT = {"fp32": 4, "fp16": 2, "int8": 1}
TFLITE_FP32_TOLERANCE = 1e-4
TFLITE_BROKEN_REL_ERR = 1.0  # ‖Δlogits‖ ≥ ‖logits‖: nothing of the model is left


@dataclass
class BuiltVariant:
    """What the runners need of a variant: its artifacts and the facts records carry."""

    name: str
    dir: Path
    info: dict = field(default_factory=dict)  # the content of variant.json
    pending: Any = None  # a TFLite export still running in the worker (export_worker.Job)

    def finish(self, log) -> BuiltVariant:
        """Wait for an export still running in the background; then write variant.json."""
        if self.pending is not None:
            self.info["artifacts"]["tflite"], seconds = self.pending.result(log, self.name)
            # The export's own time; it overlapped the next variants' compression.
            self.info["timings_s"]["tflite"] = round(seconds, 2)
            self.info["timings_s"]["tflite_in_background"] = True
            if not self.info["artifacts"]["tflite"].get("error"):
                _inspect_precision(self.info, "tflite", self.dir / "model.tflite", log)
            self.pending = None
            _write_info(self.dir, self.info)
        return self

    @property
    def error(self) -> str | None:
        return self.info.get("error")

    def artifact(self, fmt: str) -> tuple[Path | None, str | None]:
        """(path, None) when the format was exported, else (None, why not)."""
        if self.error:
            return None, self.error
        art = self.info.get("artifacts", {}).get(fmt)
        if art is None:
            return None, f"no {fmt} artifact was made"
        if art.get("error"):
            return None, art["error"]
        return self.dir / art["file"], None

    def static_fields(self, fmt: str) -> dict:
        art = self.info.get("artifacts", {}).get(fmt) or {}
        return {
            "parent": self.info.get("parent"),
            "steps": self.info.get("steps", []),
            "format": fmt,
            "precision": self.info.get("precision"),  # what was asked; compute_precision: what runs
            **{key: art.get(key) for key in PRECISION_FIELDS},
            "size_bytes": art.get("size_bytes"),
            "size_gzip_bytes": art.get("size_gzip_bytes"),
            "export_rel_err": art.get("export_rel_err"),
            "params": self.info.get("params"),
            "nonzero_params": self.info.get("nonzero_params"),
            "weight_bytes": self.info.get("weight_bytes"),
            "macs": self.info.get("macs"),
            "activation_bytes": self.info.get("activation_bytes"),
            "torch_accuracy": self.info.get("torch_accuracy"),
            **{k: v for k, v in self.info.get("notes", {}).items() if k not in ("steps",)},
        }


def export_scheme(variant: Variant) -> str:
    """The quantization the exporters apply: that of the last step that names one."""
    scheme = "fp32"
    for step in variant.steps:
        scheme = getattr(step, "export_scheme", None) or scheme
    return scheme


def _quantize_options(variant: Variant) -> dict:
    for step in reversed(variant.steps):
        if getattr(step, "export_scheme", None):
            return {"per_channel": getattr(step, "per_channel", False), "method": getattr(step, "calibration", "minmax")}
    return {}


def build_variant(exp: Experiment, variant: Variant, baseline, data, run_dir: Path, formats: set[str], log,
                  worker=None) -> BuiltVariant:
    """Apply the steps to a copy of the baseline, export it, write variant.json.

    With a `worker` (export_worker.TfliteWorker) the TFLite export runs there while the caller
    goes on; the variant is complete, and its variant.json written, after `finish()`.
    """
    from edgebench.compress import StepContext
    from edgebench.export import artifact_sizes, export_onnx, onnx_costs, quantize_onnx, verify_onnx
    from edgebench.models import count_params
    from edgebench.train import evaluate

    vdir = run_dir / "variants" / variant.name
    vdir.mkdir(parents=True, exist_ok=True)
    scheme = export_scheme(variant)
    info: dict = {
        "name": variant.name,
        "parent": variant.parent,
        "steps": [step_to_dict(s) for s in variant.steps],
        "export_scheme": scheme,
        "precision": PRECISION_OF[scheme],
        "artifacts": {},
        "timings_s": {},
    }
    ctx = StepContext(data=data, train=exp.train, seed=exp.seed, teacher=baseline, model_config=exp.model, log=log)
    model = baseline
    t0 = time.perf_counter()
    try:
        for step in variant.steps:
            log(f"{variant.name}: {step.method} {json.dumps(step_to_dict(step))}")
            model = step.apply(model, ctx)
    except Exception as exc:  # noqa: BLE001 - a failing step is this variant's error, not the sweep's
        reason = str(exc) if isinstance(exc, EdgebenchError) else f"{type(exc).__name__}: {exc}"
        info["error"] = f"step failed: {reason}"
        log(f"{variant.name}: {info['error']}")
        _write_info(vdir, info)
        return BuiltVariant(variant.name, vdir, info)
    info["timings_s"]["steps"] = round(time.perf_counter() - t0, 2)
    params, nonzero = count_params(model)
    info.update(params=params, nonzero_params=nonzero, notes=ctx.notes)
    info["weight_bytes"] = params * BYTES_PER_WEIGHT[info["precision"]]
    info["torch_accuracy"] = evaluate(model, data.x_test, data.y_test)

    t0 = time.perf_counter()
    float_onnx = vdir / "float.onnx"
    try:
        export_onnx(model, data.x_test[:1], float_onnx)
        float_err = verify_onnx(float_onnx, model, data.x_test[:128])
        costs = onnx_costs(float_onnx)
        info["macs"] = costs["macs"]
        info["activation_bytes"] = costs["activation_elements"] * BYTES_PER_WEIGHT[info["precision"]]
        if "onnx" in formats:
            path = quantize_onnx(float_onnx, vdir / "model.onnx", scheme, data.x_calib, **_quantize_options(variant))
            size, gz = artifact_sizes(path)
            info["artifacts"]["onnx"] = {"file": path.name, "size_bytes": size, "size_gzip_bytes": gz,
                                         "export_rel_err": float_err}  # fmt: skip
            _inspect_precision(info, "onnx", path, log)
    except EdgebenchError as exc:
        info["artifacts"]["onnx"] = {"error": str(exc)}
        log(f"{variant.name}: {exc}")
    finally:
        float_onnx.unlink(missing_ok=True)
    info["timings_s"]["onnx"] = round(time.perf_counter() - t0, 2)

    if "tflite" in formats and worker is not None:
        per_channel = _quantize_options(variant).get("per_channel", False)
        job = worker.submit(model, data, vdir / "model.tflite", scheme, per_channel)
        if job is not None:
            return BuiltVariant(variant.name, vdir, info, pending=job)
    if "tflite" in formats:
        t0 = time.perf_counter()
        info["artifacts"]["tflite"] = _export_tflite(
            model, data, vdir / "model.tflite", scheme, _quantize_options(variant).get("per_channel", False), log, variant.name
        )
        info["timings_s"]["tflite"] = round(time.perf_counter() - t0, 2)
        if not info["artifacts"]["tflite"].get("error"):
            _inspect_precision(info, "tflite", vdir / "model.tflite", log)
    _write_info(vdir, info)
    return BuiltVariant(variant.name, vdir, info)


def _export_tflite(model, data, path: Path, scheme: str, per_channel: bool, log, name: str) -> dict:
    from edgebench.export import artifact_sizes

    try:
        try:
            from edgebench.export_tflite import export_tflite, verify_tflite
        except ImportError as exc:
            raise EdgebenchError(f"unavailable: TFLite export is not installed ({exc})") from None
        export_tflite(model, data.x_test[:1], path, scheme=scheme, calibration=data.x_calib, per_channel=per_channel)
        check = verify_tflite(path, model, data.x_test[:128])
        # A float export must follow torch; a mismatch is reported, never hidden.
        if scheme == "fp32" and not check["logit_rel_err"] <= TFLITE_FP32_TOLERANCE:
            raise EdgebenchError(f"TFLite export does not match torch: relative error {check['logit_rel_err']:.2e} "
                                 f"> {TFLITE_FP32_TOLERANCE:.0e} on {check['n']} test inputs")
        if not np.isfinite(check["logit_rel_err"]) or check["logit_rel_err"] > TFLITE_BROKEN_REL_ERR:
            # Quantization error is expected; outputs this far from torch mean a broken model.
            raise EdgebenchError(f"TFLite {scheme} export is broken: relative error {check['logit_rel_err']:.2e}, "
                                 f"top-1 agreement {check['agreement']:.0%} with torch on {check['n']} test inputs")
    except EdgebenchError as exc:
        log(f"{name}: tflite: {exc}")
        return {"error": str(exc)}
    except Exception as exc:  # noqa: BLE001
        log(f"{name}: tflite: {type(exc).__name__}: {exc}")
        return {"error": f"TFLite export failed: {type(exc).__name__}: {exc}"}
    size, gz = artifact_sizes(path)
    return {"file": path.name, "size_bytes": size, "size_gzip_bytes": gz,
            "export_rel_err": check["logit_rel_err"], "export_agreement": check["agreement"]}


def _inspect_precision(info: dict, fmt: str, path: Path, log) -> None:
    """Add what the runtime really computes in to the artifact's entry; never fails the variant.

    Measured here: 5-20 ms per ONNX artifact (one onnxruntime session, graph saved and read
    back) and 1-20 ms per TFLite artifact on the tiny test nets, once onnx/onnxruntime are
    imported; the time is kept in `timings_s["precision_<fmt>"]`.
    """
    t0 = time.perf_counter()
    found = inspect_artifact(path, fmt, asked=info.get("export_scheme"))
    info["artifacts"][fmt].update(found)
    info["timings_s"][f"precision_{fmt}"] = round(time.perf_counter() - t0, 3)
    if found["compute_precision"] is None or took(info.get("export_scheme"), found["compute_precision"]) is False:
        log(f"{info['name']}: {fmt}: {found['precision_note']}")


def _write_info(vdir: Path, info: dict) -> None:
    tmp = vdir / "variant.json.tmp"
    tmp.write_text(json.dumps(info, indent=2, default=str))
    tmp.replace(vdir / "variant.json")


def load_variant(run_dir: Path, name: str, log=lambda _msg: None) -> BuiltVariant | None:
    """A variant already built in this run (for --resume), if it built and its files are all there.

    A variant whose build failed (`error` in variant.json) gives None, so a resumed run builds
    it again: resume retries errors. An artifact written before precision inspection existed
    is inspected now, so its records carry `compute_precision` like the others.

    >>> load_variant(Path("results/20261128T181500Z-3fa9c1"), "int8")  # doctest: +SKIP
    BuiltVariant(name='int8', ...)
    """
    vdir = run_dir / "variants" / name
    path = vdir / "variant.json"
    if not path.exists():
        return None
    info = json.loads(path.read_text())
    if info.get("error"):
        return None
    artifacts = info.get("artifacts", {})
    for art in artifacts.values():
        if art.get("file") and not (vdir / art["file"]).exists():
            return None
    missing = [fmt for fmt, art in artifacts.items() if art.get("file") and "compute_precision" not in art]
    for fmt in missing:
        info.setdefault("timings_s", {})
        _inspect_precision(info, fmt, vdir / artifacts[fmt]["file"], log)
    if missing:
        _write_info(vdir, info)
    return BuiltVariant(name, vdir, info)

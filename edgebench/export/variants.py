"""Make each variant (a chain of compression steps) and export it to deployable artifacts.

Writes `variants/<name>/model.onnx`, `model.tflite` and `variant.json` (parent, steps, params,
sizes, MACs, export errors, and per artifact the precision its runtime really computes in, read
from the exported graph by `edgebench.export.precision`). A variant whose step or export fails is kept
with its error, so its records say why; the sweep goes on. A variant quantized at export keeps its
float model as `float.onnx` (the reference of `edgebench explain` and `keep_float = "auto:K"`).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgebench.config import Experiment, Variant, step_to_dict
from edgebench.errors import EdgebenchError
from edgebench.export.artifacts import ExportRequest
from edgebench.export.precision import inspect_artifact, took
from edgebench.runtimes import FORMATS, resolve

# What `static_fields` copies from an artifact's inspection into every record.
PRECISION_FIELDS = ("compute_precision", "weight_precision", "precision_note", "precision_ops", "precision_source")

PRECISION_OF = {"fp32": "fp32", "fp16": "fp16", "int8_dynamic": "int8", "int8_static": "int8"}
BYTES_PER_WEIGHT = {"fp32": 4, "fp16": 2, "int8": 1}


@dataclass
class BuiltVariant:
    """What the runners need of a variant: its artifacts and the facts records carry."""

    name: str
    dir: Path
    info: dict = field(default_factory=dict)  # the content of variant.json
    pending: Any = None  # an export still running in the worker (export_worker.Job)

    def finish(self, log) -> BuiltVariant:
        """Wait for an export still running in the background; then write variant.json."""
        if self.pending is not None:
            fmt = self.pending.fmt
            self.info["artifacts"][fmt], seconds = self.pending.result(log, self.name)
            # The export's own time; it overlapped the next variants' compression.
            self.info["timings_s"][fmt] = round(seconds, 2)
            self.info["timings_s"][f"{fmt}_in_background"] = True
            if not self.info["artifacts"][fmt].get("error"):
                _inspect_precision(self.info, fmt, self.pending.path, log)
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
            # `quantize keep_float`: the modules this artifact keeps in float (mixed precision)
            **({"kept_float": art["kept_float"]} if art.get("kept_float") else {}),
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
            return {"per_channel": getattr(step, "per_channel", False), "calibration": getattr(step, "calibration", "minmax"),
                    "keep_float": getattr(step, "keep_float", ())}
    return {}


def build_variant(exp: Experiment, variant: Variant, baseline, data, run_dir: Path, formats: set[str], log,
                  worker=None, keep=None) -> BuiltVariant:
    """Apply the steps to a copy of the baseline, export it, write variant.json.

    Each format's exporter (`edgebench.runtimes.FORMATS`, `edgebench.export.artifacts`) makes its
    file. With a `worker` (export_worker.ExportWorker) a format marked `background` (TFLite)
    is exported there while the caller goes on; the variant is complete, and its variant.json
    written, after `finish()`. `keep(info)`, asked once the steps ran and the torch accuracy
    is known, may answer a reason not to export at all (the search's pruning): the variant is
    then kept with `pruned` and no artifact.
    """
    from edgebench.compress import StepContext
    from edgebench.export.onnx import export_onnx, onnx_costs, verify_onnx
    from edgebench.model.factories import count_params
    from edgebench.model.train import evaluate_on

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
    info["torch_metric"] = evaluate_on(model, data)  # the task's metric in torch, on the test split
    info["output_names"] = model_output_names(model, data.x_test[:1])
    if data.task.name == "classify":
        info["torch_accuracy"] = info["torch_metric"]
    why = keep(info) if keep is not None else None
    if why:
        info.update(pruned=why, error=f"not exported: {why}")
        _write_info(vdir, info)
        return BuiltVariant(variant.name, vdir, info)

    t0 = time.perf_counter()
    float_onnx = vdir / "float.onnx"
    request = ExportRequest(x_test=data.x_test, x_calib=data.x_calib, scheme=scheme, **_quantize_options(variant))
    try:
        # Every variant has a float ONNX export: its MACs come from it, and the ONNX formats
        # are made from it. A model that cannot be exported to ONNX still tries the others.
        export_onnx(model, data.x_test[:1], float_onnx, modules_out=vdir / "modules.json")
        float_err = verify_onnx(float_onnx, model, data.x_test[:128])
        costs = onnx_costs(float_onnx)
        info["macs"] = costs["macs"]
        info["activation_bytes"] = costs["activation_elements"] * BYTES_PER_WEIGHT[info["precision"]]
        request = dataclasses.replace(request, float_onnx=float_onnx, float_onnx_rel_err=float_err)
    except EdgebenchError as exc:
        info["float_onnx_error"] = str(exc)
        log(f"{variant.name}: {exc}")
    info["timings_s"]["float_onnx"] = round(time.perf_counter() - t0, 2)
    pending = None
    try:
        for fmt in sorted(formats):
            spec = FORMATS[fmt]
            path = vdir / f"model{spec.suffix}"
            if spec.onnx_based and request.float_onnx is None:
                info["artifacts"][fmt] = {"error": info["float_onnx_error"]}
                continue
            if spec.background and worker is not None and pending is None:
                pending = worker.submit(fmt, model, request, path)
                if pending is not None:
                    continue
            t0 = time.perf_counter()
            info["artifacts"][fmt] = resolve(spec.exporter)(model, request, path, log, variant.name)
            info["timings_s"][fmt] = round(time.perf_counter() - t0, 2)
            if not info["artifacts"][fmt].get("error"):
                _inspect_precision(info, fmt, path, log)
    finally:
        if scheme == "fp32":  # else kept: the float model behind the quantized artifacts (`edgebench explain`)
            float_onnx.unlink(missing_ok=True)
    if pending is not None:
        return BuiltVariant(variant.name, vdir, info, pending=pending)
    _write_info(vdir, info)
    return BuiltVariant(variant.name, vdir, info)


def model_output_names(model, sample) -> list[str]:
    """The names every artifact's outputs are reported under (the ONNX graph's): whatever a
    runtime calls them (LiteRT: serving_default_output_0), records use these."""
    import torch

    from edgebench.tasks.arrays import call, output_names, to_torch

    with torch.no_grad():
        return output_names(call(model.eval(), to_torch(sample)))


def _inspect_precision(info: dict, fmt: str, path: Path, log) -> None:
    """Add what the runtime really computes in to the artifact's entry; never fails the variant.

    Measured here: 5-20 ms per ONNX artifact (one onnxruntime session, graph saved and read
    back) and 1-20 ms per TFLite artifact on the tiny test nets, once onnx/onnxruntime are
    imported; the time is kept in `timings_s["precision_<fmt>"]`.
    """
    t0 = time.perf_counter()
    found = inspect_artifact(path, fmt, asked=info.get("export_scheme"))
    kept = info["artifacts"][fmt].get("kept_float")
    if kept and found.get("precision_note"):  # mixed on purpose, not an int8 that did not take
        found["precision_note"] = f"keep_float kept {', '.join(m or '(top level)' for m in kept)} in float; " + \
            found["precision_note"].replace("partly took: ", "")
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

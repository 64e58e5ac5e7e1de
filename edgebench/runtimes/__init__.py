"""Runtimes: what runs an artifact, on the host and on a device. One `Runtime` each, one registry.

A runtime names its artifact format (an exporter makes it from a variant and verifies it
against torch; several runtimes may share a format: onnxruntime and OpenVINO both read the
variant's .onnx), the packages it needs on the host and on a device, how the precision it
computes in is read, and its runner adapter: a file in `edgebench/device/` (`rt_<name>.py`)
that the runner imports on the device with nothing but the standard library, numpy and the
runtime. Adding a runtime is two files (the adapter and its declaration here) and a line in
the `RUNTIMES` table (`edgebench.registry`, where experiment files are validated against it).

    >>> from edgebench.runtimes import RUNTIMES, runtime
    >>> runtime("openvino").format
    'onnx'
    >>> sorted(RUNTIMES)
    ['executorch', 'ncnn', 'onnxruntime', 'openvino', 'tflite']
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgebench.registry import RUNTIMES  # the table of runtime modules

DEVICE_DIR = Path(__file__).resolve().parent.parent / "device"

@dataclass(frozen=True)
class Format:
    """An artifact format: its file, the exporter that makes it from a variant's model and
    checks it against torch (`edgebench.export.artifacts`: one signature for all), and the static
    inspection of the precision its graph asks for. References are `module:function` strings,
    imported only when used, so declaring a format costs nothing. `onnx_based`: made from the
    variant's float ONNX export; `background`: slow enough to export in the worker process
    while the next variant is compressed (edgebench.export.worker)."""

    name: str
    suffix: str
    exporter: str  # "module:function"(model, ExportRequest, path, log, name) -> variant.json entry
    inspector: str  # "module:function"(path, asked) -> precision fields
    inspected_as: str  # the runtime whose view of the graph the inspector gives
    onnx_based: bool = False
    background: bool = False
    exporter_needs: tuple[str, ...] = ()  # modules the exporter imports (an extra), warmed in the worker
    # Files beside the artifact that a device loads with it (ncnn: the .bin of a .param): they
    # travel together, in one folder, under the artifact's name.
    side_files: tuple[str, ...] = ()


FORMATS = {
    "onnx": Format("onnx", ".onnx", "edgebench.export.artifacts:onnx_artifact", "edgebench.export.precision_onnx:inspect_onnx",
                   inspected_as="onnxruntime", onnx_based=True),
    "tflite": Format("tflite", ".tflite", "edgebench.export.artifacts:tflite_artifact",
                     "edgebench.export.precision_tflite:inspect_tflite", inspected_as="tflite", background=True,
                     exporter_needs=("litert_torch",)),
    "pte": Format("pte", ".pte", "edgebench.export.artifacts_mobile:pte_artifact",
                  "edgebench.export.precision_mobile:inspect_pte", inspected_as="executorch", background=True,
                  exporter_needs=("executorch.exir",)),
    "ncnn": Format("ncnn", ".param", "edgebench.export.artifacts_mobile:ncnn_artifact",
                   "edgebench.export.precision_mobile:inspect_ncnn", inspected_as="ncnn", onnx_based=True,
                   side_files=(".bin",)),
}


@dataclass(frozen=True)
class OnDemand:
    """A runtime that a prepared emulated device (the qemu rootfs) does not have built in: its
    aarch64 wheels are installed the first time a profile that lists it is prepared."""

    requirements: tuple[str, ...]  # pip requirements (aarch64 wheels, no dependencies)
    python: str = "3.11"  # "3.13": wheels for Python >= 3.12 need a Debian trixie tree beside bookworm's
    module: str = ""  # what a probe imports there (default: the runtime's module)
    distribution: str = ""  # whose version it reports (default: the runtime's distribution)


@dataclass(frozen=True)
class Runtime:
    """One runtime. `distribution` is its pip name (versions and install hints), `module` what
    a device must import, `device_requirement` the pin a prepared device (the qemu rootfs)
    installs, `precision_from` "artifact" (read from the exported graph on the host) or
    "runner" (the runner reads back what runs on the device: its adapter's `executed()`,
    turned into precision fields by `executed_reader`, or already fields when that is None)."""

    name: str
    format: str
    distribution: str
    module: str
    install_hint: str
    device_requirement: str
    precision_from: str = "artifact"
    executed_reader: str | None = None  # "module:function"(executed, artifact, asked) -> fields
    description: str = ""
    # "module:function"(arch, cpu_features) -> (precision, why): what an fp32 model computes in
    # by default on such a CPU, for runtimes that choose by CPU (OpenVINO: bf16 on AVX-512 BF16).
    float_default: str | None = None
    on_demand: OnDemand | None = None  # not in the qemu rootfs's base build: installed on first use
    # Another package that provides the runtime on a device, (module, distribution): ExecuTorch's
    # torch-free executorch-numpy-runtime. `edgebench targets` reports it when the first is missing.
    alternative: tuple[str, str] | None = None
    # Modules its runner adapter imports on a device besides numpy and the runtime: only where the
    # runtime itself needs them (ExecuTorch's Python runtime links libtorch: torch).
    device_imports: tuple[str, ...] = ()

    @property
    def adapter(self) -> Path:
        """The runner adapter, staged beside the runner on a device."""
        return DEVICE_DIR / f"rt_{self.name}.py"

    @property
    def artifact_format(self) -> Format:
        return FORMATS[self.format]

    def host_version(self) -> str | None:
        """The installed version of this runtime on this machine, or None."""
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version(self.distribution)
        except PackageNotFoundError:
            return None

    def fp32_runs_as(self, arch: str | None, cpu_features: list[str] | None) -> tuple[str, str]:
        """(precision, why) an fp32 model computes in by default on a CPU of this arch and features.

        >>> runtime("openvino").fp32_runs_as("x86_64", ["avx2", "avx512f", "avx512_bf16"])
        ('bf16', 'avx512_bf16: the CPU plugin picks bf16 for fp32 models by default')
        >>> runtime("onnxruntime").fp32_runs_as("aarch64", ["asimdhp"])[0]
        'fp32'
        """
        if self.float_default is None:
            return "fp32", f"{self.name} computes an fp32 model in fp32 on every CPU"
        return resolve(self.float_default)(arch or "", list(cpu_features or ()))

    def inspector(self) -> Callable:
        return resolve(self.artifact_format.inspector)

    def device_precision(self, executed: dict | None, artifact: Path | None, asked: str | None) -> dict | None:
        """Precision fields from what the runner read back on the device; None when it read
        nothing and the host's reading of the artifact stands (it is this runtime's own), or
        fields that say nothing was read (the artifact's reading is another runtime's)."""
        if self.precision_from != "runner":
            return None
        if executed and not executed.get("error"):
            if self.executed_reader is None:
                return executed
            return resolve(self.executed_reader)(executed, artifact, asked)
        if self.artifact_format.inspected_as == self.name:
            return None
        why = (executed or {}).get("error") or "the runner read back nothing"
        return {"compute_precision": None, "precision_ops": {}, "precision_source": None,
                "precision_note": f"precision not read on the device: {why}"}


def register(rt: Runtime) -> Runtime:
    if rt.format not in FORMATS:
        raise ValueError(f"runtime {rt.name}: unknown format {rt.format!r}")
    return RUNTIMES.register(rt.name, rt)


def runtime(name: str) -> Runtime:
    """The Runtime called `name` (a ConfigError naming the nearest one otherwise)."""
    return RUNTIMES.get(name)


def format_of(name: str) -> str:
    return runtime(name).format


def resolve(ref: str) -> Callable:
    """`"package.module:function"` -> the function (imported now)."""
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def runner_files(name: str) -> list[Path]:
    """The files a device needs to run `name`: the runner, its helpers and the adapter. They
    are staged together, under these names, in one directory."""
    return [DEVICE_DIR / "runner.py", DEVICE_DIR / "runner_facts.py", DEVICE_DIR / "timing.py", runtime(name).adapter]

"""The runtime registry's contract: every registered runtime, on a tiny trained user net
(depthwise and grouped convs, Hardswish, SiLU, a residual add), exported by its format's
exporter, runs through the real runner on local (and on emulated aarch64 where the rootfs is
prepared) and predicts what torch predicts."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import fp32_runs_as  # noqa: E402

from edgebench.runtimes import FORMATS, RUNTIMES, resolve, runner_files  # noqa: E402
from edgebench.targets import RunOptions, load_profile, open_target  # noqa: E402

ALL = RUNTIMES.names()
OPTIONS = RunOptions(threads=1, warmup=2, min_runs=10, min_seconds=0.0, max_seconds=5.0, timeout_s=120)


def _installed(name: str) -> bool:
    return importlib.util.find_spec(RUNTIMES.get(name).module.split(".")[0]) is not None


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One trained TinyNet exported once per format; the eval set and torch's predictions."""
    from tiny_nets import tiny_data, trained_tiny

    from edgebench.export.artifacts import ExportRequest
    from edgebench.export.onnx import export_onnx

    folder = tmp_path_factory.mktemp("rt")
    data = tiny_data()
    model = trained_tiny(data)
    np.savez(folder / "eval.npz", x=data.x_test, y=data.y_test)
    with torch.no_grad():
        want = model(torch.from_numpy(data.x_test)).argmax(1).numpy()
    files, why = {}, {}
    export_onnx(model, data.x_test[:1], folder / "float.onnx")
    request = ExportRequest(data.x_test, data.x_calib, float_onnx=folder / "float.onnx")
    for fmt in sorted({RUNTIMES.get(r).format for r in ALL}):
        path = folder / f"model{FORMATS[fmt].suffix}"
        entry = resolve(FORMATS[fmt].exporter)(model, request, path, print, "tiny")
        if entry.get("error"):  # the format's exporter is an extra (tflite) not installed here
            assert entry["error"].startswith("unavailable"), entry["error"]
            why[fmt] = entry["error"]
        else:
            parts = [path, *(path.with_suffix(s) for s in FORMATS[fmt].side_files)]  # ncnn: .param + .bin
            assert entry["file"] == path.name and entry["size_bytes"] == sum(p.stat().st_size for p in parts)
            files[fmt] = path
    return files, why, folder / "eval.npz", want


def test_every_runtime_declares_what_it_needs():
    for name in ALL:
        rt = RUNTIMES.get(name)
        assert rt.format in FORMATS, name
        assert rt.adapter.is_file(), f"{name}: no runner adapter {rt.adapter}"
        assert all(p.is_file() for p in runner_files(name))
        assert rt.module and rt.distribution and rt.install_hint and rt.device_requirement
        assert rt.precision_from in ("artifact", "runner")
        if rt.precision_from == "artifact":
            assert callable(rt.inspector())


def _check(result: dict, name: str, want: np.ndarray, artifact: Path | None = None) -> None:
    assert result["status"] == "ok", result.get("error")
    assert result["runtime"] == name and result["runtime_version"]
    assert len(result["latency_samples_ms"]) >= OPTIONS.min_runs and min(result["latency_samples_ms"]) > 0
    from edgebench.device.runner import decode_outputs

    got = decode_outputs(result)[0].argmax(1)  # runner 3: every output back; logits first
    assert (got == want).mean() >= 0.98, f"{name}: predictions differ from torch's"
    assert result["n_eval"] == len(want)
    if RUNTIMES.get(name).precision_from == "runner":  # read back on the device, for an fp32 model
        fields = RUNTIMES.get(name).device_precision(result["executed"], artifact, "fp32")
        # What an fp32 model computes in is the device CPU's call (OpenVINO: bf16 on AVX-512
        # BF16, f16 on ARMv8.2): expected from the features the runner read there.
        expected, why = fp32_runs_as(name, result["machine"])
        assert result["machine"].get("cpu_features") is not None, result["machine"]
        assert fields["compute_precision"] == expected, (why, result["executed"])


@pytest.mark.parametrize("name", ALL)
def test_every_runtime_runs_on_local(exported, name):
    files, why, data, want = exported
    fmt = RUNTIMES.get(name).format
    if fmt not in files or not _installed(name):
        pytest.skip(f"{name}: not installed here ({why.get(fmt) or RUNTIMES.get(name).install_hint})")
    target = open_target(load_profile("local"))
    assert name in target.check().runtimes
    _check(target.measure(files[fmt], data, name, OPTIONS), name, want, files[fmt])


@pytest.mark.qemu
@pytest.mark.parametrize("name", ALL)
def test_every_runtime_runs_on_emulated_aarch64(exported, name):
    from edgebench.hosts import qemu_rootfs

    if qemu_rootfs.rootfs_path() is None:
        pytest.skip("the aarch64 rootfs is not prepared (edgebench targets --prepare qemu-aarch64)")
    files, why, data, want = exported
    fmt = RUNTIMES.get(name).format
    if fmt not in files:
        pytest.skip(f"{name}: its exporter is not installed here ({why.get(fmt)})")
    profile = load_profile("qemu-aarch64")
    if name not in profile.runtimes:
        pytest.fail(f"the qemu-aarch64 profile does not list {name}")
    target = open_target(profile)
    try:
        if target.needs_prepare():  # a runtime the rootfs installs on first use (ExecuTorch, ncnn)
            target.prepare(log=print)
        result = target.measure(files[fmt], data, name, OPTIONS)
    finally:
        target.close()
    assert result.get("emulated", True)
    _check(result, name, want, files[fmt])


def test_an_unknown_runtime_names_the_known_ones():
    from edgebench.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown runtime 'openvin'.*did you mean \"openvino\""):
        RUNTIMES.get("openvin")


def test_a_runner_without_the_adapter_says_unavailable(tmp_path, exported):
    """A device where only the runner and its helpers were staged (no adapter): exit 3, one clear line."""
    import json
    import shutil
    import subprocess
    import sys

    files, _, data, _ = exported
    for f in runner_files("onnxruntime")[:-1]:  # everything but the adapter
        shutil.copy(f, tmp_path / Path(f).name)
    proc = subprocess.run([sys.executable, str(tmp_path / "runner.py"), "--model", str(files["onnx"]),
                           "--data", str(data), "--runtime", "onnxruntime"], capture_output=True, text=True)
    assert proc.returncode == 3
    assert "no adapter for runtime 'onnxruntime' (rt_onnxruntime.py not staged)" in json.loads(proc.stdout)["error"]


@pytest.mark.qemu
def test_onnxruntime_reports_the_fp16_kernels_an_armv82_core_really_runs(exported, tmp_path):
    """The same fp16 .onnx: cast back to fp32 on a Cortex-A72 (and on x86), computed in fp16
    on a Cortex-A76 — read on the device from the kernels it ran, not from the host's graph."""
    from edgebench.export.onnx import quantize_onnx
    from edgebench.hosts import qemu_rootfs

    if qemu_rootfs.rootfs_path() is None:
        pytest.skip("the aarch64 rootfs is not prepared (edgebench targets --prepare qemu-aarch64)")
    files, _, data, _ = exported
    with np.load(data) as d:
        calib = d["x"][:16]
    fp16 = quantize_onnx(files["onnx"], tmp_path / "fp16.onnx", "fp16", calib)
    ort = RUNTIMES.get("onnxruntime")
    seen = {}
    for name in ("local", "qemu-aarch64", "qemu-aarch64-a76"):
        target = open_target(load_profile(name))
        try:
            result = target.measure(fp16, data, "onnxruntime", OPTIONS)
        finally:
            target.close()
        assert result["status"] == "ok", result.get("error")
        fields = ort.device_precision(result["executed"], fp16, "fp16")
        assert fields["weight_precision"] == "fp16" and "profiled" in fields["precision_source"]
        seen[name] = fields["compute_precision"]
    # onnxruntime has fp16 kernels only for ARMv8.2 fp16 arithmetic (asimdhp): read this machine's.
    from edgebench.device.runner_facts import machine_facts

    here = machine_facts()
    local = "fp16" if here["arch"] == "aarch64" and "asimdhp" in (here["cpu_features"] or ()) else "fp32"
    assert seen == {"local": local, "qemu-aarch64": "fp32", "qemu-aarch64-a76": "fp16"}, here["cpu_features"]

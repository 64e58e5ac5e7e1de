"""ExecuTorch and ncnn on emulated aarch64: the Pi 4's Cortex-A72 (qemu-aarch64, ARMv8.0) and the
Pi 5's Cortex-A76 (qemu-aarch64-a76, ARMv8.2 fp16 arithmetic), through the real runner.

Both runtimes are installed into the shared rootfs on first use (edgebench.hosts.qemu_addons):
ncnn into its Python 3.11, ExecuTorch as the torch-free executorch-numpy-runtime in a Python
3.13 tree. What was measured and is held here: ncnn with fp16 options computes in fp16 on the
A76 and in fp32 on the A72 (fp16 storage only); an fp16 `.pte` is "unavailable" on the A72
(XNNPACK has no fp16 kernels without asimdhp) and runs on the A76; an int8 `.pte` answers on
both cores as on this machine. Few inputs: every run is emulated.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgebench.config.measure_settings import Measure
from edgebench.hosts import qemu_rootfs
from edgebench.runtimes import runtime
from edgebench.targets import load_profile, open_target

pytestmark = pytest.mark.qemu
A72, A76 = "qemu-aarch64", "qemu-aarch64-a76"
N_INPUTS = 32
OPTIONS = Measure(warmup=1, min_runs=3, min_seconds=0.0, max_seconds=5.0, timeout_s=600)


@pytest.fixture(scope="module")
def targets():
    if not qemu_rootfs.qemu_binary():
        pytest.skip("qemu-aarch64-static is not installed (apt-get install qemu-user-static)")
    if qemu_rootfs.rootfs_path() is None:
        pytest.skip("the aarch64 rootfs is not prepared (edgebench targets --prepare qemu-aarch64)")
    opened = {name: open_target(load_profile(name)) for name in (A72, A76)}
    for target in opened.values():
        if target.needs_prepare():  # ExecuTorch's and ncnn's device packages, on first use
            target.prepare(log=print)
    yield opened
    for target in opened.values():
        target.close()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    pytest.importorskip("executorch.exir")
    pytest.importorskip("ncnn")
    pytest.importorskip("pnnx")
    from tiny_nets import tiny_data, trained_tiny

    from edgebench.export.artifacts import ExportRequest
    from edgebench.export.artifacts_mobile import ncnn_artifact, pte_artifact
    from edgebench.export.onnx import export_onnx

    folder = tmp_path_factory.mktemp("mobileq")
    data = tiny_data()
    model = trained_tiny(data)
    x = data.x_test[:N_INPUTS]
    np.savez(folder / "eval.npz", x=x, y=data.y_test[:N_INPUTS])
    export_onnx(model, x[:1], folder / "float.onnx")
    files = {}
    for scheme in ("fp32", "fp16", "int8_static"):
        request = ExportRequest(x, data.x_calib, scheme=scheme, float_onnx=folder / "float.onnx")
        for exporter, fmt in ((pte_artifact, "pte"), (ncnn_artifact, "param")):
            path = folder / f"{scheme}.{fmt}"
            entry = exporter(model, request, path, print, scheme)
            if not entry.get("error"):
                files[scheme, fmt] = path
    assert {("fp32", "pte"), ("fp16", "pte"), ("int8_static", "pte"), ("fp32", "param"), ("fp16", "param")} <= set(files)
    return files, folder / "eval.npz"


def _answers(result: dict) -> np.ndarray:
    from edgebench.device.runner import decode_outputs

    assert result["status"] == "ok", result.get("error")
    return decode_outputs(result)[0].argmax(1)


def test_ncnn_computes_fp16_only_on_the_core_with_fp16_arithmetic(targets, artifacts):
    files, data = artifacts
    seen = {}
    for name, target in targets.items():
        result = target.measure(files["fp16", "param"], data, "ncnn", OPTIONS)
        assert result["emulated"] and result["runtime_settings"]["use_fp16_arithmetic"] is True
        _answers(result)
        seen[name] = runtime("ncnn").device_precision(result["executed"], files["fp16", "param"], "fp16")
    assert seen[A76]["compute_precision"] == "fp16"
    assert seen[A72]["compute_precision"] == "fp32" and "no ARMv8.2 asimdhp" in seen[A72]["precision_note"]


def test_an_fp16_program_is_unavailable_without_arm_fp16_and_runs_with_it(targets, artifacts):
    files, data = artifacts
    a72 = targets[A72].measure(files["fp16", "pte"], data, "executorch", OPTIONS)
    assert a72["status"] == "error" and a72["error"].startswith("unavailable") and "asimdhp" in a72["error"]
    a76 = targets[A76].measure(files["fp16", "pte"], data, "executorch", OPTIONS)
    assert a76["runtime_settings"]["flavor"] == "executorch-numpy-runtime"
    assert len(_answers(a76)) == N_INPUTS


def test_an_int8_program_answers_on_emulated_arm_as_on_this_machine(targets, artifacts):
    from edgebench.targets import load_profile as load

    files, data = artifacts
    local = open_target(load("local"))
    try:
        here = _answers(local.measure(files["int8_static", "pte"], data, "executorch", OPTIONS))
    finally:
        local.close()
    for name, target in targets.items():
        result = target.measure(files["int8_static", "pte"], data, "executorch", OPTIONS)
        assert (_answers(result) == here).mean() >= 0.95, name
        fields = runtime("executorch").device_precision(result.get("executed"), files["int8_static", "pte"], "int8_static")
        # No ETDump in the torch-free runtime: the export's reading, and the versions, are said.
        assert fields["compute_precision"] == "int8" and "run by 1.3" in fields["precision_note"], fields
        # TinyNet's `mean(dim=(2, 3))` stays on a portable kernel (XNNPACK 1.5.1 does not take it): named.
        delegation = fields["delegation"]
        assert 0 < delegation["share"] <= 1 and all(op in fields["precision_note"] for op in delegation["fallback_ops"])

"""OpenVINO on emulated aarch64: the Pi 4's Cortex-A72 (qemu-aarch64) and the Pi 5's Cortex-A76
(qemu-aarch64-a76), through the real runner in the shared rootfs.

What was measured (openvino 2026.4.1, qemu 7.2) and is held here: on the A72 (ARMv8.0, no fp16
arithmetic, no dot-product) an fp32 model runs in fp32 (acl_f32) and a QDQ int8 model compiles
and runs with part of its layers on int8 kernels (acl_I8) and the rest in fp32, so it says
"mixed"; on the A76 (ARMv8.2) the int8 layers run (acl_I8) beside f16 ones, and an fp32 model
runs in fp16 by default (acl_f16) unless `inference_precision=f32` is asked. Each core sees its
own MIDR and cpuinfo (the rootfs's per-core view). Accuracy matches onnxruntime's on the same
artifact and inputs. Small models and few inputs: every run is emulated.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess

import numpy as np
import pytest

from edgebench.config.measure_settings import Measure
from edgebench.hosts import qemu_rootfs
from edgebench.runtimes import DEVICE_DIR
from edgebench.targets import load_profile, open_target

pytestmark = pytest.mark.qemu
N_INPUTS = 48
A72, A76 = "qemu-aarch64", "qemu-aarch64-a76"
# Read at import (collection), before conftest points EDGEBENCH_CACHE at a private folder.
PREPARED = qemu_rootfs.default_rootfs()
OPTIONS = Measure(warmup=1, min_runs=3, min_seconds=0.0, max_seconds=5.0, timeout_s=300)


@pytest.fixture(scope="module")
def rootfs():
    if not qemu_rootfs.qemu_binary():
        pytest.fail("qemu-aarch64-static is not installed: apt-get install qemu-user-static")
    return qemu_rootfs.prepare(log=print, dest=PREPARED)  # instant when it is prepared


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    """A tiny CNN as fp32 and QDQ int8 .onnx, and inputs whose labels make accuracy ~0.5."""
    pytest.importorskip("onnxruntime")
    import onnxruntime as ort

    from edgebench.export.onnx import quantize_onnx
    from edgebench.testing import onnx_cnn

    folder = tmp_path_factory.mktemp("ovq")
    rng = np.random.default_rng(0)
    onnx_cnn(folder / "fp32.onnx", convs=2, side=12, width=8)
    quantize_onnx(folder / "fp32.onnx", folder / "int8.onnx", "int8_static",
                  rng.standard_normal((32, 1, 12, 12)).astype(np.float32))
    x = rng.standard_normal((N_INPUTS, 1, 12, 12)).astype(np.float32)
    predicted = ort.InferenceSession(str(folder / "fp32.onnx")).run(None, {"x": x})[0].argmax(1)
    # Half the labels agree with the model, half are random: a runtime computing something else
    # shows as another accuracy.
    y = np.where(np.arange(N_INPUTS) % 2 == 0, predicted, rng.integers(0, 10, N_INPUTS))
    np.savez(folder / "inputs.npz", x=x, y=y.astype(np.int64))
    return {"fp32": folder / "fp32.onnx", "int8": folder / "int8.onnx", "data": folder / "inputs.npz"}


@pytest.fixture(scope="module")
def results(rootfs, models) -> dict:
    """(profile, model, runtime) -> the runner's document, each run once for the module."""
    cache: dict = {}

    def get(profile: str, model: str, runtime: str = "openvino", **runtime_options) -> dict:
        key = (profile, model, runtime, *sorted(runtime_options.items()))
        if key not in cache:
            loaded = load_profile(profile)
            if runtime_options:
                loaded = dataclasses.replace(loaded, runtime={**loaded.runtime, runtime: runtime_options})
            target = open_target(loaded)
            try:
                cache[key] = target.measure(models[model], models["data"], runtime, OPTIONS.for_target(target.profile))
            finally:
                target.close()
        return cache[key]

    return get


def _ok(result: dict) -> dict:
    assert result["status"] == "ok", result.get("error")
    assert result["machine"]["arch"] == "aarch64" and result["emulated"] is True
    assert result["n_eval"] == N_INPUTS
    return result["executed"]


def _logits(result: dict) -> np.ndarray:
    from edgebench.device.runner import decode_outputs

    return decode_outputs(result)[0]


def _guest(rootfs, cpu: str, args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(qemu_rootfs.guest_command(rootfs, args, cpu=cpu), capture_output=True,
                          text=True, timeout=timeout)


def test_the_profiles_emulate_a_pi4_and_a_pi5_core():
    a72, a76 = load_profile(A72), load_profile(A76)
    assert a72.host.cpu == "cortex-a72" and a76.host.cpu == "cortex-a76"
    for profile in (a72, a76):
        assert {"onnxruntime", "tflite", "openvino"} <= set(profile.runtimes)


@pytest.mark.parametrize(("cpu", "part", "midr", "dot"), [
    ("cortex-a72", "0xd08", "0x00000000410fd083", False),
    ("cortex-a76", "0xd0b", "0x00000000414fd0b1", True),
])  # fmt: skip
def test_each_core_sees_its_own_cpuinfo_midr_and_hwcaps(rootfs, cpu, part, midr, dot):
    # The adapter's dot-product test reads AT_HWCAP, which qemu sets by -cpu; MIDR and cpuinfo
    # come from the core's view of the rootfs (a mismatched MIDR crashed OpenVINO's int8: SIGILL).
    script = ("import json, sys; sys.path.insert(0, sys.argv[1]); import rt_openvino; "
              "print(json.dumps({'cpuinfo': open('/proc/cpuinfo').read(), 'dot': rt_openvino.has_dot_product(), "
              "'midr': open('/sys/devices/system/cpu/cpu0/regs/identification/midr_el1').read().strip()}))")
    proc = _guest(rootfs, cpu, ["-c", script, str(DEVICE_DIR)])
    assert proc.returncode == 0, proc.stderr[-500:]
    facts = json.loads(proc.stdout.strip().splitlines()[-1])
    assert f"CPU part\t: {part}" in facts["cpuinfo"] and cpu in facts["cpuinfo"]
    assert facts["midr"] == midr
    assert facts["dot"] is dot
    assert ("asimddp" in facts["cpuinfo"]) is dot


def test_a72_runs_fp32_in_fp32(results):
    executed = _ok(results(A72, "fp32"))
    assert executed["compute_precision"] == "fp32"
    assert "acl_f32" in executed["precision_note"] and "f16" not in executed["precision_note"]


def test_a72_runs_int8_layers_without_the_dot_product_and_says_mixed(results):
    # Measured: the QDQ model compiles on the A72 too (no "unavailable"); OpenVINO's ARM plugin
    # runs some layers on int8 kernels and the rest in fp32, and the record says so.
    executed = _ok(results(A72, "int8"))
    assert executed["precision_ops"].get("int8", 0) >= 1, executed
    assert executed["compute_precision"] in ("int8", "mixed")
    assert set(executed["precision_ops"]) <= {"int8", "fp32"}, "an A72 has no fp16 arithmetic"
    assert "_I8" in executed["precision_note"]


def test_a76_runs_int8_on_int8_kernels(results):
    executed = _ok(results(A76, "int8"))
    assert executed["precision_ops"].get("int8", 0) >= 1, executed
    assert executed["compute_precision"] in ("int8", "mixed")
    assert "acl_I8" in executed["precision_note"]


def test_a76_reports_the_fp16_that_an_fp32_model_runs_in(results):
    executed = _ok(results(A76, "fp32"))
    assert executed["compute_precision"] == "fp16", executed
    assert "acl_f16" in executed["precision_note"]
    assert "inference_precision=f16" in executed["precision_source"]


def test_a76_fp32_when_the_profile_asks_for_it(results):
    # [runtime.openvino] inference_precision = "f32" in a profile: the runner's --runtime-option.
    executed = _ok(results(A76, "fp32", inference_precision="f32"))
    assert executed["compute_precision"] == "fp32" and "acl_f32" in executed["precision_note"]


@pytest.mark.parametrize("profile", [A72, A76])
@pytest.mark.parametrize("model", ["fp32", "int8"])
def test_accuracy_matches_onnxruntime_on_the_same_artifact(results, profile, model):
    ov, ort = results(profile, model), results(profile, model, "onnxruntime")
    _ok(ov)
    assert ort["status"] == "ok", ort.get("error")
    assert 0.1 < ort["accuracy"] < 1.0
    assert abs(ov["accuracy"] - ort["accuracy"]) <= 0.005, (ov["accuracy"], ort["accuracy"])
    agree = (_logits(ov).argmax(1) == _logits(ort).argmax(1)).mean()
    assert agree >= 0.95, agree
    if model == "fp32" and profile == A72:  # fp32 on both sides: the same numbers
        np.testing.assert_allclose(_logits(ov), _logits(ort), rtol=1e-3, atol=1e-4)

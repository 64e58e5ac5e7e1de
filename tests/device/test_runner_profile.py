"""`runner.py --profile-runs N`: per-node time on the target (onnxruntime, OpenVINO; tflite says
it cannot), through the runner directly, the local target, an ssh target (the loopback sshd) and
qemu-aarch64."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgebench.config.measure_settings import Measure
from edgebench.device import runner
from edgebench.hosts import qemu_rootfs
from edgebench.runtimes import DEVICE_DIR
from edgebench.targets import load_profile, open_target

RUNNER_PATH = DEVICE_DIR / "runner.py"
WARMUP, RUNS = 5, 30
# Read at import (collection), before conftest points EDGEBENCH_CACHE at a private folder.
ROOTFS = qemu_rootfs.rootfs_path()


@pytest.fixture(scope="module")
def cnn(tmp_path_factory) -> dict[str, Path]:
    """The demo-size CNN (3 convs, 16 channels, 32x32) in fp32 and QDQ int8, and its inputs."""
    from edgebench.export.onnx import quantize_onnx
    from edgebench.testing import onnx_cnn

    folder = tmp_path_factory.mktemp("profile")
    x = np.random.default_rng(0).standard_normal((16, 1, 32, 32)).astype(np.float32)
    np.savez(folder / "inputs.npz", x=x, y=np.zeros(16, np.int64))
    onnx_cnn(folder / "fp32.onnx", convs=3)
    quantize_onnx(folder / "fp32.onnx", folder / "int8.onnx", "int8_static", x)
    return {"fp32": folder / "fp32.onnx", "int8": folder / "int8.onnx", "data": folder / "inputs.npz"}


def run_runner(*args: str) -> tuple[int, dict]:
    proc = subprocess.run([sys.executable, str(RUNNER_PATH), *args], capture_output=True, text=True, timeout=120)
    return proc.returncode, json.loads(proc.stdout)


def profile_of(cnn, variant: str, runtime: str) -> dict:
    code, doc = run_runner("--model", str(cnn[variant]), "--data", str(cnn["data"]), "--runtime", runtime,
                           "--profile-runs", str(RUNS), "--warmup", str(WARMUP))  # fmt: skip
    assert code == 0 and doc["status"] == "ok", doc.get("error")
    assert set(doc) == {"status", "runner_version", "runtime", "runtime_version", "threads", "profile", "machine"}
    return doc["profile"]


def check_profile(p: dict, runtime: str) -> None:
    assert set(p) == {"nodes", "runs", "dropped", "measured", "source", "profiled_run_ms"}
    assert p["runs"] == RUNS and p["dropped"] == WARMUP and p["measured"] is True
    assert p["source"].startswith(runtime + " ")
    assert p["nodes"] and all(set(n) == {"name", "op", "kernel", "precision", "ms"} for n in p["nodes"])
    assert all(n["ms"] >= 0 for n in p["nodes"])
    assert len({n["name"] for n in p["nodes"]}) == len(p["nodes"])
    assert {n["precision"] for n in p["nodes"]} <= {"fp32", "fp16", "bf16", "int8", None}
    total = sum(n["ms"] for n in p["nodes"])
    # The nodes run inside the profiled runs, so their times cannot add up to much more than
    # the runs' wall time (OpenVINO's whole-µs counters can add ~0.2 µs a node). How much of
    # the run they cover depends on how busy the machine is (measured: 30-60 % quiet, 20 %
    # with both cores loaded): that verdict is benchmarks/profile_coverage.py's, not a test's.
    assert 0 < total <= 1.2 * p["profiled_run_ms"] + 0.001 * len(p["nodes"]), (total, p["profiled_run_ms"])


def test_onnxruntime_times_each_node(cnn):
    fp32, int8 = profile_of(cnn, "fp32", "onnxruntime"), profile_of(cnn, "int8", "onnxruntime")
    for p in (fp32, int8):
        check_profile(p, "onnxruntime")
    assert "Conv" in {n["op"] for n in fp32["nodes"]}
    assert {n["precision"] for n in fp32["nodes"] if n["op"] == "Conv"} == {"fp32"}
    convs = [n for n in int8["nodes"] if n["op"] == "QLinearConv"]
    assert len(convs) == 3 and all(n["precision"] == "int8" for n in convs)
    # Execution order: the input is quantized first, the logits dequantized last.
    assert int8["nodes"][0]["op"] == "QuantizeLinear" and int8["nodes"][-1]["op"] == "DequantizeLinear"


def test_onnxruntime_profile_precision_from_op_and_types():
    from edgebench.device.rt_onnxruntime import _precision

    assert _precision({"op_name": "Conv", "input_type_shape": [{"float": [1]}]}) == "fp32"
    assert _precision({"op_name": "Conv", "input_type_shape": [{"float16": [1]}]}) == "fp16"
    assert _precision({"op_name": "MatMulInteger", "input_type_shape": [{"float": [1]}]}) == "int8"
    assert _precision({"op_name": "QLinearAdd", "input_type_shape": []}) == "int8"
    assert _precision({"op_name": "Transpose", "input_type_shape": [{"uint8": [1]}]}) == "int8"
    assert _precision({"op_name": "Shape"}) is None


def test_openvino_times_each_executed_node(cnn):
    pytest.importorskip("openvino", reason="openvino is not installed")
    fp32, int8 = profile_of(cnn, "fp32", "openvino"), profile_of(cnn, "int8", "openvino")
    for p in (fp32, int8):
        check_profile(p, "openvino")
        assert all(n["kernel"] for n in p["nodes"])
    assert "Convolution" in {n["op"] for n in fp32["nodes"]}
    assert "int8" not in {n["precision"] for n in fp32["nodes"]}
    assert "int8" in {n["precision"] for n in int8["nodes"] if n["op"] == "Convolution"}


def test_openvino_precision_from_exec_type():
    from edgebench.device.rt_openvino import exec_precision

    assert exec_precision("jit_avx2_FP32") == exec_precision("brgconv_avx2_f32") == "fp32"
    assert exec_precision("jit_avx2_I8") == exec_precision("acl_i8") == exec_precision("jit_uni_u8") == "int8"
    assert exec_precision("acl_f16") == exec_precision("jit_FP16") == "fp16"
    assert exec_precision("brgconv_avx512_bf16") == "bf16"
    assert exec_precision("undef") is None


def test_tflite_says_it_has_no_per_op_profiler(cnn):
    adapter = runner.load_adapter("tflite")
    assert not hasattr(adapter.Model, "profile")
    why = runner.profile_unavailable(adapter, "tflite")
    assert why.startswith("tflite has no per-op profiler in the Python interpreter")
    assert runner.profile_unavailable(runner.load_adapter("onnxruntime"), "onnxruntime") is None
    pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is not installed")
    # The decision comes before loading: any file will do.
    code, doc = run_runner("--model", str(cnn["fp32"]), "--data", str(cnn["data"]), "--runtime", "tflite",
                           "--profile-runs", "5")  # fmt: skip
    assert code == runner.EXIT_UNAVAILABLE
    assert doc == {"status": "error", "machine": doc["machine"],
                   "error": "unavailable: tflite has no per-op profiler in the Python interpreter "
                            "(the host estimates per-layer time from MACs)"}  # fmt: skip


def test_negative_profile_runs_is_an_error(cnn):
    code, doc = run_runner("--model", str(cnn["fp32"]), "--data", str(cnn["data"]), "--runtime", "onnxruntime",
                           "--profile-runs", "-1")  # fmt: skip
    assert code == runner.EXIT_ERROR and "--profile-runs" in doc["error"]


def test_the_local_target_passes_profile_runs_to_the_runner(cnn):
    target = open_target(load_profile("local"))
    result = target.measure(cnn["fp32"], cnn["data"], "onnxruntime", Measure(warmup=WARMUP, timeout_s=120),
                            extra_args=["--profile-runs", "20"])  # fmt: skip
    assert result["status"] == "ok", result.get("error")
    assert "latency_samples_ms" not in result
    assert result["profile"]["runs"] == 20 and result["profile"]["dropped"] == WARMUP
    assert "Conv" in {n["op"] for n in result["profile"]["nodes"]}


def test_an_ssh_target_profiles_on_the_device(cnn, sshd, tmp_path):
    target = open_target(load_profile(sshd.write_profile(tmp_path / "pi.toml")))
    try:
        result = target.measure(cnn["int8"], cnn["data"], "onnxruntime", Measure(warmup=WARMUP, timeout_s=120),
                                extra_args=["--profile-runs", "20"])  # fmt: skip
    finally:
        target.close()
    assert result["status"] == "ok", result.get("error")
    assert result["profile"]["runs"] == 20 and result["profile"]["source"].startswith("onnxruntime ")
    assert "QLinearConv" in {n["op"] for n in result["profile"]["nodes"]}


@pytest.mark.qemu
def test_onnxruntime_profile_on_qemu_aarch64(cnn):
    rootfs = ROOTFS
    if rootfs is None or not qemu_rootfs.qemu_binary():
        pytest.skip("no prepared qemu-aarch64 rootfs (python -m edgebench.hosts.qemu_rootfs)")
    profile = load_profile("qemu-aarch64")
    profile = dataclasses.replace(profile, host=dataclasses.replace(profile.host, rootfs=str(rootfs)))
    target = open_target(profile)
    options = Measure(warmup=2, timeout_s=300).for_target(target.profile)
    result = target.measure(cnn["int8"], cnn["data"], "onnxruntime", options, extra_args=["--profile-runs", "3"])
    assert result["status"] == "ok", result.get("error")
    assert result["emulated"] is True and result["machine"]["arch"] == "aarch64"
    p = result["profile"]
    assert p["runs"] == 3 and p["dropped"] == 2
    assert "QLinearConv" in {n["op"] for n in p["nodes"]}
    assert all(n["ms"] >= 0 for n in p["nodes"])
    assert sum(n["ms"] for n in p["nodes"]) <= 1.2 * p["profiled_run_ms"]

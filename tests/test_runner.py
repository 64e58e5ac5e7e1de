"""The runner: real onnxruntime runs on a tiny ONNX graph; its import discipline; its errors."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgebench.targets import RUNNER_PATH, RunOptions, load_profile, open_target

STDLIB = set(sys.stdlib_module_names)


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory) -> tuple[Path, Path]:
    """A 4-class linear classifier on 2x2 inputs, built with onnx.helper (no torch)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 4)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("MatMul", ["f", "w"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = folder / "tiny.onnx"
    onnx.save(model, path)
    x = rng.standard_normal((50, 1, 2, 2)).astype(np.float32)
    y = (x.reshape(50, 4) @ w).argmax(1)
    y[:5] = (y[:5] + 1) % 4  # five wrong labels: accuracy must come out as 0.9
    np.savez(folder / "eval.npz", x=x, y=y)
    return path, folder / "eval.npz"


def run_runner(*args: str) -> tuple[int, dict]:
    proc = subprocess.run([sys.executable, str(RUNNER_PATH), *args], capture_output=True, text=True, timeout=60)
    return proc.returncode, json.loads(proc.stdout)


def test_runner_measures_and_scores(tiny_onnx):
    model, data = tiny_onnx
    code, doc = run_runner("--model", str(model), "--data", str(data), "--runtime", "onnxruntime",
                           "--warmup", "3", "--min-runs", "50", "--min-seconds", "0.05")  # fmt: skip
    assert code == 0 and doc["status"] == "ok"
    assert len(doc["latency_samples_ms"]) >= 50
    assert all(s > 0 for s in doc["latency_samples_ms"])
    assert doc["accuracy"] == pytest.approx(0.9)
    assert doc["logits_shape"] == [50, 4]
    assert doc["machine"]["arch"] and doc["runtime_version"]
    assert doc["cpu_time_s"] > 0


def test_local_target_reports_the_runners_own_peak_rss(tiny_onnx):
    model, data = tiny_onnx
    result = open_target(load_profile("local")).measure(model, data, "onnxruntime", RunOptions(min_runs=5, min_seconds=0))
    assert result["status"] == "ok"
    assert 10 < result["peak_rss_mb"] < 2000


def test_missing_model_file_is_an_error_document(tiny_onnx, tmp_path):
    _, data = tiny_onnx
    code, doc = run_runner("--model", str(tmp_path / "nope.onnx"), "--data", str(data), "--runtime", "onnxruntime")
    assert code == 1 and doc["status"] == "error" and "nope.onnx" in doc["error"]


def test_missing_runtime_says_unavailable_and_how_to_install(tiny_onnx, tmp_path):
    model, data = tiny_onnx
    # A Python in which onnxruntime cannot be imported, as on a device without it.
    code = (f"import sys, runpy; sys.modules['onnxruntime'] = None; "
            f"sys.argv = ['runner', '--model', {str(model)!r}, '--data', {str(data)!r}, '--runtime', 'onnxruntime']; "
            f"runpy.run_path({str(RUNNER_PATH)!r}, run_name='__main__')")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    doc = json.loads(proc.stdout)
    assert proc.returncode == 3
    assert doc["error"].startswith("unavailable: onnxruntime is not installed (pip install onnxruntime)")


def test_timeout_becomes_an_error(tiny_onnx):
    model, data = tiny_onnx
    options = RunOptions(min_runs=10**9, min_seconds=100, max_seconds=100, timeout_s=2)
    result = open_target(load_profile("local")).measure(model, data, "onnxruntime", options)
    assert result["status"] == "error" and "timed out after 2 s" in result["error"]


def test_runner_imports_only_stdlib_numpy_and_runtimes():
    tree = ast.parse(RUNNER_PATH.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported - STDLIB - {"__future__"} <= {"numpy", "onnxruntime", "ai_edge_litert"}

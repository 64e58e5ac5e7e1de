"""The runner: real onnxruntime runs on a tiny ONNX graph; its import discipline; its errors."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgebench.config.measure_settings import Measure
from edgebench.runtimes import DEVICE_DIR
from edgebench.targets import load_profile, open_target

RUNNER_PATH = DEVICE_DIR / "runner.py"

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
    assert [o["shape"] for o in doc["outputs"]] == [[50, 4]] and doc["outputs"][0]["dtype"] == "float32"
    assert doc["machine"]["arch"] and doc["runtime_version"]
    assert doc["cpu_time_s"] > 0


def test_local_target_reports_the_runners_own_peak_rss(tiny_onnx):
    model, data = tiny_onnx
    result = open_target(load_profile("local")).measure(model, data, "onnxruntime", Measure(min_runs=5, min_seconds=0))
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
    options = Measure(min_runs=10**9, min_seconds=100, max_seconds=100, timeout_s=2)
    result = open_target(load_profile("local")).measure(model, data, "onnxruntime", options)
    assert result["status"] == "error" and "timed out after 2 s" in result["error"]


def test_runner_imports_only_stdlib_numpy_and_runtimes():
    """Every file staged on a device: the runner, its helpers, each adapter (its own runtime)."""
    from edgebench.runtimes import RUNTIMES

    siblings = {p.stem for p in RUNNER_PATH.parent.glob("*.py")}
    allowed = {"numpy", "__future__", *siblings} | {rt.module.split(".")[0] for _, rt in RUNTIMES.items()}
    # What a runtime itself needs there (ExecuTorch: torch), and another package providing it.
    allowed |= {m for _, rt in RUNTIMES.items() for m in (*rt.device_imports, *(rt.alternative or ())[:1])}
    for path in RUNNER_PATH.parent.glob("*.py"):
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported.add(node.module.split(".")[0])
        assert imported - STDLIB <= allowed, path.name


def test_memory_is_read_per_phase_and_the_accuracy_pass_is_not_the_footprint(tmp_path, tiny_onnx):
    """A big eval set raises the accuracy pass's peak, not the batch-1 inference footprint."""
    model, _ = tiny_onnx
    n = 2_000_000  # 32 MB of inputs and 32 MB of logits during the accuracy pass
    x = np.zeros((n, 1, 2, 2), dtype=np.float32)
    np.savez(tmp_path / "big.npz", x=x, y=np.zeros(n, dtype=np.int64))
    code, doc = run_runner("--model", str(model), "--data", str(tmp_path / "big.npz"), "--runtime", "onnxruntime",
                           "--warmup", "3", "--min-runs", "20", "--min-seconds", "0")
    assert code == 0 and doc["status"] == "ok"
    assert "memory_note" not in doc  # the high-water mark could be reset between phases here
    assert doc["peak_rss_mb"] == doc["peak_rss_inference_mb"]
    assert doc["rss_before_load_mb"] <= doc["rss_after_load_mb"] <= doc["peak_rss_inference_mb"] + 1
    assert doc["peak_rss_eval_mb"] > doc["peak_rss_inference_mb"] + 50
    assert doc["peak_rss_inference_mb"] < 200  # the eval set is not in it
    assert doc["load_s"] > 0 and doc["first_inference_ms"] > 0 and doc["import_s"] > 0
    assert doc["n_eval"] == n and doc["eval_batch"] == 64


def test_run_conditions_are_read_or_say_why_not(tiny_onnx):
    model, data = tiny_onnx
    code, doc = run_runner("--model", str(model), "--data", str(data), "--runtime", "onnxruntime",
                           "--min-runs", "5", "--min-seconds", "0", "--no-eval")
    conditions = doc["conditions"]
    for when in ("before", "after"):
        readings = conditions[when]
        assert set(readings) == {"cpu_mhz", "temp_c", "throttled", "load_avg_1m"}
        assert readings["load_avg_1m"] is not None  # Linux always has it
        for key in ("temp_c", "throttled"):
            assert (readings[key] is None) == (key in conditions["unreadable"])
        assert (readings["cpu_mhz"]["cur"] is None) == ("cpu_mhz" in conditions["unreadable"] and
                                                       "no clock" in conditions["unreadable"]["cpu_mhz"])
    assert "n_eval" not in doc and "peak_rss_eval_mb" not in doc  # --no-eval: latency only


def test_the_runner_waits_until_the_device_is_cool(tmp_path, monkeypatch):
    """A hot device is waited for (bounded), and the record says how long.

    No thermal zone exists on this VM, so a zone file stands in for the kernel's and a
    thread cools it down."""
    import threading

    from edgebench.device import runner_facts as runner

    zone = tmp_path / "thermal_zone0"
    zone.mkdir()
    (zone / "temp").write_text("75000\n")
    monkeypatch.setattr(runner, "THERMAL_GLOB", str(tmp_path / "thermal_zone[0-9]*/temp"))
    cool = threading.Timer(0.6, lambda: (zone / "temp").write_text("55000\n"))
    cool.start()
    waited = runner.wait_until_cool(60.0, timeout_s=10, poll_s=0.05)
    cool.join()
    assert waited["cooled"] is True and 0.5 <= waited["waited_s"] < 5 and waited["temp_c"] == 55.0
    (zone / "temp").write_text("90000\n")
    hot = runner.wait_until_cool(60.0, timeout_s=0.3, poll_s=0.05)
    assert hot["cooled"] is False and hot["waited_s"] >= 0.3  # bounded: it gives up and says so
    monkeypatch.setattr(runner, "THERMAL_GLOB", str(tmp_path / "none*/temp"))
    assert runner.wait_until_cool(60.0, 1)["why"].startswith("cannot wait")


@pytest.mark.parametrize("text", [
    '[host]\ntransport = "ssh"\nhost = "pi.example"\n[measure]\nmax_temp_c = 60\n',
    'transport = "ssh"\nhost = "pi.example"\nmax_temp_c = 60\n',  # the older flat form still loads
])
def test_a_profiles_max_temp_reaches_the_runner(tmp_path, text):
    profile = tmp_path / "pi.toml"
    profile.write_text(f'name = "pi"\n{text}')
    args = Measure().for_target(load_profile(profile)).runner_args()
    assert args[args.index("--max-temp-c") + 1] == "60.0" and "--cool-timeout-s" in args
    assert "--max-temp-c" not in Measure().for_target(load_profile("local")).runner_args()


def test_the_runners_defaults_are_the_measurement_defaults():
    from edgebench.device.runner import parse_args

    args = vars(parse_args(["--model", "m", "--data", "d", "--runtime", "onnxruntime"]))
    expected = Measure()
    for key in ("threads", "warmup", "min_runs", "min_seconds", "max_seconds", "cool_timeout_s"):
        assert args[key] == getattr(expected, key), key
    assert args["limit"] == expected.eval_limit and not args["no_eval"] == expected.evaluate


def test_ab_mode_times_two_artifacts_interleaved_in_one_process(tiny_onnx, tmp_path):
    """`--compare-model`: both artifacts timed in alternating blocks, latency only."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model, data = tiny_onnx
    # The same classifier behind 200 extra Relu/Neg pairs: same weights and MACs, more work.
    w = numpy_helper.to_array(onnx.load(model).graph.initializer[0])
    nodes = [helper.make_node("Flatten", ["x"], ["f0"])]
    for i in range(200):
        nodes += [helper.make_node("Neg", [f"f{i}"], [f"n{i}"]), helper.make_node("Neg", [f"n{i}"], [f"f{i + 1}"])]
    nodes.append(helper.make_node("MatMul", ["f200", "w"], ["y"]))
    graph = helper.make_graph(nodes, "slow", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
                              [numpy_helper.from_array(w, "w")])
    slow = tmp_path / "slow.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), slow)
    result = open_target(load_profile("local")).measure(
        model, data, "onnxruntime", Measure(min_runs=50, min_seconds=0.05, evaluate=False), compare=(slow, data))
    assert result["status"] == "ok"
    fast, slower = result["latency_samples_ms"], result["compare_samples_ms"]
    assert len(fast) >= 50 and len(slower) >= 50
    assert min(slower) > 3 * min(fast)  # 400 extra ops on 4 floats each cost far more than one MatMul
    assert "accuracy" not in result and "n_eval" not in result

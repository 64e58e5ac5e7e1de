"""`edgebench profile`: shares of measured node time scaled to the clean p50, per module; the
MAC-share estimate where a runtime has no op profiler; per-module differences."""

from __future__ import annotations

import pytest

from edgebench.analyze.profile import aggregate, diff, estimate_from_macs


def test_shares_of_node_time_are_scaled_to_the_clean_p50():
    nodes = [{"name": "a", "op": "Conv", "kernel": "k1", "precision": "fp32", "ms": 3.0},
             {"name": "b", "op": "Gemm", "kernel": "k2", "precision": "fp32", "ms": 1.0},
             {"name": "a", "op": "Relu", "kernel": None, "precision": None, "ms": 1.0}]
    rows = aggregate(nodes, None, p50_ms=0.5)  # profiling inflated 10x: only shares are kept
    assert [r["module"] for r in rows] == ["a", "b"]
    assert rows[0]["share"] == pytest.approx(0.8) and rows[0]["ms"] == pytest.approx(0.4)
    assert rows[0]["ops"] == ["Conv", "Relu"] and rows[0]["precision"] == "fp32"
    assert sum(r["ms"] for r in rows) == pytest.approx(0.5)


def test_without_a_profiler_the_estimate_is_the_mac_share():
    mapping = {"modules": {"features.0": {"macs": 300, "ops": ["Conv"]}, "fc": {"macs": 100, "ops": ["Gemm"]},
                           "pool": {"macs": 0, "ops": ["GlobalAveragePool"]}}}
    rows = estimate_from_macs(mapping, p50_ms=2.0)
    assert [(r["module"], r["ms"]) for r in rows] == [("features.0", 1.5), ("fc", 0.5)]
    assert estimate_from_macs(None, 2.0) == []


def test_the_difference_names_what_got_faster_and_what_appeared():
    before = {"rows": [{"module": "features.3", "ms": 0.10}, {"module": "fc", "ms": 0.02}]}
    after = {"rows": [{"module": "features.3", "ms": 0.02}, {"module": "fc", "ms": 0.02},
                      {"module": "(quantize/dequantize)", "ms": 0.01}]}
    rows = diff(after, before)
    assert rows[0]["module"] == "features.3" and rows[0]["delta_ms"] == pytest.approx(-0.08)
    assert {r["module"]: r["delta_ms"] for r in rows}["(quantize/dequantize)"] == pytest.approx(0.01)


@pytest.mark.slow
def test_profile_of_a_run_names_the_modules_and_what_changed(tmp_path):
    """A real run (onnxruntime, and OpenVINO where installed): per-module rows on the user's
    module paths, int8's Q/DQ cost in its own row, slim's convs smaller than the baseline's."""
    import importlib.util
    import json
    import subprocess
    import sys
    from pathlib import Path

    from conftest import write_experiment

    runtimes = ["onnxruntime"] + (["openvino"] if importlib.util.find_spec("openvino") else [])
    exp = write_experiment(tmp_path, variants="""
[[variant]]
name = "int8"
steps = [{ method = "quantize", scheme = "int8_static" }]

[[variant]]
name = "slim"
steps = [{ method = "prune", kind = "structured", ratio = 0.5 }]
""", **{'runtimes = ["onnxruntime"]': f"runtimes = {json.dumps(runtimes)}"})
    cli = [sys.executable, "-m", "edgebench"]
    run = subprocess.run([*cli, "run", str(exp), "--out", str(tmp_path / "runs"), "--json", "--quiet"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    run_dir = Path(json.loads(run.stdout)["run_dir"])  # --out was absolute
    proc = subprocess.run([*cli, "profile", str(run_dir), "--against", "parent", "--runs", "20", "--json"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    docs = {(d["variant"], d["runtime"]): d for d in json.loads(proc.stdout)}
    assert {(v, rt) for v in ("baseline", "int8", "slim") for rt in runtimes} <= set(docs)
    for rt in runtimes:
        base, int8, slim = (docs[(v, rt)] for v in ("baseline", "int8", "slim"))
        assert all(d["status"] == "ok" and d["measured"] and d["module_map"] for d in (base, int8, slim))
        assert sum(r["ms"] for r in base["rows"]) == pytest.approx(base["p50_ms"])  # shares of the clean p50
        modules = {r["module"] for r in base["rows"]}
        assert {"features.0.0", "classifier"} <= modules, modules  # demo_cnn's own attribute paths
        # No timing assertion (a tiny net on a shared machine); the diff pairs the same modules.
        changes = {r["module"]: r for r in diff(slim, base)}
        assert {"features.0.0", "classifier"} <= set(changes)
        assert all(r["before_ms"] > 0 and r["after_ms"] > 0 for m, r in changes.items() if m.startswith("features."))
        assert any(r["module"] == "(quantize/dequantize)" and r["ms"] > 0 for r in int8["rows"])
        assert any("int8" in r["precision"] for r in int8["rows"])
        assert (run_dir / "profiles" / f"slim__local__{rt}.json").is_file()

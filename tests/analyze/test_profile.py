"""`edgebench profile` and `[run] profile`: per-module tables from a real run, per-module
differences, the rows scripts read (--json), the record's link to its profile file."""

from __future__ import annotations

import pytest

from edgebench.analyze.profile import diff


def test_the_difference_names_what_got_faster_and_what_appeared():
    before = {"rows": [{"module": "features.3", "ms": 0.10}, {"module": "fc", "ms": 0.02}]}
    after = {"rows": [{"module": "features.3", "ms": 0.02}, {"module": "fc", "ms": 0.02},
                      {"module": "(quantize/dequantize)", "ms": 0.01}]}
    rows = diff(after, before)
    assert rows[0]["module"] == "features.3" and rows[0]["delta_ms"] == pytest.approx(-0.08)
    assert {r["module"]: r["delta_ms"] for r in rows}["(quantize/dequantize)"] == pytest.approx(0.01)


@pytest.mark.slow
def test_profile_of_a_run_names_the_modules_and_what_changed(tmp_path):
    """A real run with `[run] profile` (onnxruntime, tflite, and OpenVINO where installed):
    each record links its profile; per-module rows on the user's module paths; int8's Q/DQ cost
    in its own row; TFLite labelled an estimate; `edgebench profile --against --json` after it."""
    import importlib.util
    import json
    import subprocess
    import sys
    from pathlib import Path

    from conftest import write_experiment

    runtimes = ["onnxruntime", "tflite"] + (["openvino"] if importlib.util.find_spec("openvino") else [])
    exp = write_experiment(tmp_path, variants="""
[[variant]]
name = "int8"
steps = [{ method = "quantize", scheme = "int8_static" }]

[[variant]]
name = "slim"
steps = [{ method = "prune", kind = "structured", ratio = 0.5 }]
""", **{'runtimes = ["onnxruntime"]': f"runtimes = {json.dumps(runtimes)}\nprofile = 20"})
    cli = [sys.executable, "-m", "edgebench"]
    run = subprocess.run([*cli, "run", str(exp), "--out", str(tmp_path / "runs"), "--json", "--quiet"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    run_dir = Path(json.loads(run.stdout)["run_dir"])  # --out was absolute
    records = [json.loads(line) for line in (run_dir / "records.jsonl").read_text().splitlines()]
    assert len(records) == 3 * len(runtimes) and all(r["status"] == "ok" for r in records)
    docs = {}
    for record in records:  # every record links its profile file, written during the run
        doc = json.loads((run_dir / record["profile"]).read_text())
        assert doc["status"] == "ok", doc
        docs[(record["variant"], record["runtime"])] = doc
        assert doc["measured"] == (record["runtime"] != "tflite")
        if record["runtime"] == "tflite":
            assert "estimated" in record["profile_note"] and "not measured" in doc["label"]
    for rt in [r for r in runtimes if r != "tflite"]:
        base, int8, slim = (docs[(v, rt)] for v in ("baseline", "int8", "slim"))
        assert all(d["module_map"] and d["runs"] == 20 for d in (base, int8, slim))
        assert sum(r["ms"] for r in base["rows"]) == pytest.approx(base["p50_ms"])  # shares of the clean p50
        modules = {r["module"] for r in base["rows"]}
        assert {"features.0.0", "classifier"} <= modules, modules  # demo_cnn's own attribute paths
        # No timing assertion (a tiny net on a shared machine); the diff pairs the same modules.
        changes = {r["module"]: r for r in diff(slim, base)}
        assert {"features.0.0", "classifier"} <= set(changes)
        assert all(r["before_ms"] > 0 and r["after_ms"] > 0 for m, r in changes.items() if m.startswith("features."))
        if rt == "onnxruntime":
            # onnxruntime runs QuantizeLinear as a node of its own on every CPU; OpenVINO may not
            # (measured: with AVX-512 VNNI it folds the input's quantization into the first int8
            # convolution and runs no separate FakeQuantize; on AVX2 it ran one), so only the
            # int8 rows are a CPU-independent fact there.
            assert any(r["module"] == "(quantize/dequantize)" and r["ms"] > 0 for r in int8["rows"])
        assert any("int8" in r["precision"] for r in int8["rows"])
    proc = subprocess.run([*cli, "profile", str(run_dir), "--variant", "slim", "--runtime", "onnxruntime",
                           "--against", "parent", "--runs", "10", "--json"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(proc.stdout)
    assert {(r["variant"], r["runtime"]) for r in rows} == {("slim", "onnxruntime"), ("baseline", "onnxruntime")}
    assert all(r["status"] == "ok" and r["approximate"] is False and r["time_ms"] > 0 for r in rows)
    assert "features.0.0" in {r["module"] for r in rows if r["variant"] == "slim"}
    assert "Where the time goes" in (run_dir / "report.md").read_text()

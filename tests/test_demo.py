"""The built-in demo, run as a user runs it, holds the project's promises on this machine.

One `edgebench run` of the demo (local target, onnxruntime and TFLite), then the thresholds
the compressor issue set, each measured in the same run, so machine noise cancels in ratios.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgebench.records import FIELDS, read_records

pytestmark = [pytest.mark.slow, pytest.mark.tflite]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("demo")
    proc = subprocess.run([sys.executable, "-m", "edgebench", "run", "--out", str(out), "--json"],
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = Path(json.loads(proc.stdout)["run_dir"])
    records = read_records(run_dir / "records.jsonl")
    return {"dir": run_dir, "by": {(r["variant"], r["runtime"]): r for r in records}, "records": records}


def ratio(demo, variant: str, key: str, runtime: str = "onnxruntime") -> float:
    by = demo["by"]
    return _get(by[(variant, runtime)], key) / _get(by[("baseline", runtime)], key)


def drop(demo, variant: str, runtime: str = "onnxruntime") -> float:
    """Accuracy drop against the baseline, in points."""
    by = demo["by"]
    return 100 * (by[("baseline", runtime)]["accuracy"] - by[(variant, runtime)]["accuracy"])


def _get(record: dict, key: str) -> float:
    value = record
    for part in key.split("."):
        value = value[part]
    return value


def test_every_record_is_ok_and_complete(demo):
    assert len(demo["records"]) == 2 * 20  # baseline + 19 variants, on two runtimes
    for r in demo["records"]:
        assert r["status"] == "ok", (r["variant"], r["runtime"], r["error"])
        assert set(FIELDS) <= set(r)
    for name in ("report.html", "report.md", "records.csv", "manifest.json"):
        assert (demo["dir"] / name).is_file()


def test_baseline_is_accurate_and_big_enough_to_time(demo):
    base = demo["by"][("baseline", "onnxruntime")]
    assert base["accuracy"] >= 0.95
    # ~5 us is the fixed cost of an onnxruntime call here: the model must dwarf it.
    assert base["latency_ms"]["p50"] >= 20 * 0.005


def test_linear_quantization(demo):
    assert ratio(demo, "int8", "size_bytes") <= 0.35
    assert drop(demo, "int8") <= 1.0
    assert demo["by"][("int8", "onnxruntime")]["logit_rel_err"] <= 0.03
    assert ratio(demo, "fp16", "size_bytes") <= 0.6
    assert drop(demo, "fp16") <= 0.2


def test_pruning(demo):
    sparse = demo["by"][("sparse80", "onnxruntime")]
    assert sparse["nonzero_params"] <= 0.22 * sparse["params"]
    assert ratio(demo, "sparse80", "size_gzip_bytes") <= 0.45
    assert drop(demo, "sparse80") <= 1.5
    assert ratio(demo, "slim50", "macs") <= 0.55
    assert ratio(demo, "slim50", "latency_ms.p50") <= 0.85
    assert drop(demo, "slim50") <= 2.0


def test_clustering_and_low_rank(demo):
    assert ratio(demo, "kmeans4", "size_gzip_bytes") <= 0.4
    assert drop(demo, "kmeans4") <= 1.5
    for variant in ("lowrank-svd", "lowrank-tucker2"):
        assert ratio(demo, variant, "params") <= 0.6
        assert drop(demo, variant) <= 2.0


def test_distillation_and_compact_students(demo):
    by = demo["by"]
    for kd, twin in (("kd-logits", "kd-logits-nokd"), ("kd-feature", "kd-logits-nokd"),
                     ("kd-relation", "kd-logits-nokd"), ("compact-mobilenet", "compact-mobilenet-nokd"),
                     ("compact-shufflenet", "compact-shufflenet-nokd")):  # fmt: skip
        gap = 100 * (by[(twin, "onnxruntime")]["accuracy"] - by[(kd, "onnxruntime")]["accuracy"])
        assert gap <= 0.5, (kd, gap)
    for student in ("compact-mobilenet", "compact-shufflenet"):
        assert ratio(demo, student, "params") <= 0.5
        assert drop(demo, student) <= 3.0


def test_tflite_matches_torch(demo):
    by = demo["by"]
    base = by[("baseline", "tflite")]
    assert base["export_rel_err"] < 1e-4
    assert abs(base["accuracy"] - base["torch_accuracy"]) <= 0.005
    for (variant, runtime), r in by.items():
        if runtime == "tflite":  # every TFLite variant is a working model
            assert r["accuracy"] >= by[(variant, "onnxruntime")]["accuracy"] - 0.03, variant


def test_the_gate_catches_a_budget_the_demo_breaks(demo, tmp_path):
    budget = tmp_path / "budget.toml"
    budget.write_text('[[budget]]\nvariant = "int8"\nmax_size_bytes = 1000\n')
    proc = subprocess.run([sys.executable, "-m", "edgebench", "check", str(demo["dir"]), "--budget", str(budget)],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 1
    line = next(ln for ln in proc.stdout.splitlines() if "FAIL" in ln and "int8" in ln)
    size = demo["by"][("int8", "onnxruntime")]["size_bytes"]
    assert "size_bytes" in line and "1,000" in line.replace("1000", "1,000")
    assert f"{size:,}" in line or str(size) in line

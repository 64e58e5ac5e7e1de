"""edgebench.measure.profiling: shares of measured node time scaled to the clean p50, per module; the
MAC-share estimate where a runtime has no op profiler, labelled; failures as documents; the
flat rows scripts read."""

from __future__ import annotations

import pytest

from edgebench.measure.profiling import (
    APPROXIMATE,
    _from_result,
    aggregate,
    estimate_from_macs,
    json_rows,
)


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



def test_a_runner_answer_becomes_measured_rows_an_estimate_or_an_error():
    mapping = {"nodes": {}, "modules": {"conv": {"macs": 90, "ops": ["Conv"]}, "fc": {"macs": 10, "ops": ["Gemm"]}}}
    nodes = [{"name": "n0", "op": "Conv", "ms": 2.0}, {"name": "n1", "op": "Gemm", "ms": 2.0}]
    ok = _from_result({"status": "ok", "profile": {"nodes": nodes, "profiled_run_ms": 5.0, "runs": 10, "source": "x"}},
                      None, p50=1.0)
    assert ok["measured"] and ok["inflation"] == pytest.approx(5.0) and ok["coverage"] == pytest.approx(0.8)
    assert sum(r["ms"] for r in ok["rows"]) == pytest.approx(1.0)
    est = _from_result({"status": "unavailable", "error": "tflite: no per-op profiler in the Python interpreter"},
                       mapping, p50=1.0)
    assert est["status"] == "ok" and not est["measured"] and est["label"] == APPROXIMATE
    assert [r["module"] for r in est["rows"]] == ["conv", "fc"]
    failed = _from_result({"status": "error", "error": "runner died"}, mapping, p50=1.0)
    assert failed["status"] == "error" and "runner died" in failed["error"]


def test_json_rows_name_every_field_scripts_read():
    doc = {"variant": "v", "target": "t", "runtime": "tflite", "status": "ok", "measured": False, "emulated": True,
           "rows": [{"module": "conv", "ops": ["Conv"], "ms": 0.5, "share": 1.0, "precision": ""}]}
    (row,) = json_rows(doc)
    assert {"variant", "target", "runtime", "module", "op_types", "time_ms", "share", "precision",
            "approximate"} <= set(row)
    assert row["approximate"] is True and row["emulated"] is True and row["precision"] is None
    (err,) = json_rows({"variant": "v", "target": "t", "runtime": "r", "status": "error", "error": "gone"})
    assert err["status"] == "error" and err["module"] is None and err["error"] == "gone"

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

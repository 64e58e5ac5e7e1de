"""Latency beside the baseline: paired rounds with the real runner and onnxruntime, rounds added
until the ratio is precise, the records' intervals; the statistics on known numbers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from edgebench.config.measure_settings import Measure
from edgebench.export.variants import BuiltVariant
from edgebench.measure.latency import (
    latency_ratio,
    p50_interval,
    paired_ratio,
    stop_reason,
    unpaired_ratio,
)
from edgebench.measure.rounds import make_measured_record, measure_rounds
from edgebench.targets import load_profile, open_target
from edgebench.testing import onnx_cnn

QUICK = {"warmup": 3, "min_runs": 30, "min_seconds": 0.03, "rounds": 3}


@pytest.fixture(scope="module")
def three(tmp_path_factory) -> tuple[Path, list[BuiltVariant]]:
    """A run folder with a baseline, a byte-identical copy and a slower model (ELU after 3 convs)."""
    run = tmp_path_factory.mktemp("run")
    rng = np.random.default_rng(0)
    np.savez(run / "eval.npz", x=rng.standard_normal((8, 1, 8, 8)).astype(np.float32), y=rng.integers(0, 10, 8))
    variants = []
    for name, slow in (("baseline", 0), ("copy", 0), ("slower", 3)):
        vdir = run / "variants" / name
        vdir.mkdir(parents=True)
        facts = onnx_cnn(vdir / "model.onnx", convs=3, slow=slow, side=8, width=8)
        info = {"name": name, "artifacts": {"onnx": {"file": "model.onnx", "size_bytes": facts["size_bytes"]}}}
        (vdir / "variant.json").write_text(json.dumps(info))
        variants.append(BuiltVariant(name, vdir, info))
    return run, variants


def measured(run: Path, variants: list[BuiltVariant], options: Measure, reference=None) -> dict[str, tuple]:
    target = open_target(load_profile("local"))
    log: list[str] = []
    try:
        out = [(v.name, result) for v, result in measure_rounds(variants, target, "onnxruntime", options, run,
                                                                  log.append, reference)]
    finally:
        target.close()
    return {name: (result, make_measured_record(next(v for v in variants if v.name == name),
                                                load_profile("local"), "onnxruntime", result, options, run, "t"))
            for name, result in out} | {"_order": [n for n, _ in out], "_log": log}  # type: ignore[dict-item]


def test_each_variant_is_timed_beside_the_baseline_and_carries_its_ratio_with_an_interval(three):
    run, variants = three
    out = measured(run, variants, Measure(**QUICK, precision=0.5, max_rounds=3))
    assert out["_order"][0] == "baseline"  # the others are compared with it
    base = out["baseline"][1]
    assert base["latency_ratio"]["reference"] and base["latency_ratio"]["ci95"] == [1.0, 1.0]
    assert "ratio" not in base["latency_rounds"][0]  # the baseline is timed alone
    for name in ("copy", "slower"):
        record = out[name][1]
        assert record["status"] == "ok" and record["rounds"] == 3
        ratio = record["latency_ratio"]
        assert ratio["paired"] and ratio["rounds"] == 3 and ratio["stopped_by"] in ("precision", "max_rounds")
        assert ratio["ci95"][0] <= ratio["value"] <= ratio["ci95"][1]
        assert all(r["ratio"] > 0 for r in record["latency_rounds"])
        low, high = record["latency_p50_ci95"]
        assert low <= math.exp(np.mean(np.log([r["p50"] for r in record["latency_rounds"]]))) <= high
        # The record is the variant's own run: memory, first inference and accuracy are still there.
        assert record["peak_rss_mb"] > 0 and record["first_inference_ms"] > 0 and record["accuracy"] is not None
        assert record["cpu_time_s"] > 0 and "compare_samples_ms" not in out[name][0]


def test_rounds_are_added_until_max_rounds_when_the_ratio_is_not_precise_enough(three):
    run, variants = three
    out = measured(run, variants, Measure(**QUICK, precision=1e-6, max_rounds=4))
    assert out["baseline"][1]["rounds"] == 3  # its ratio is 1 by definition: no rounds added
    for name in ("copy", "slower"):
        assert out[name][1]["rounds"] == 4 and out[name][1]["latency_ratio"]["stopped_by"] == "max_rounds"
    assert any("not yet within" in line for line in out["_log"])


def test_a_variants_runner_time_caps_its_rounds(three):
    run, variants = three
    out = measured(run, variants, Measure(**QUICK, precision=1e-6, max_rounds=50, max_seconds=0.01))
    assert out["copy"][1]["rounds"] == 3 and out["copy"][1]["latency_ratio"]["stopped_by"] == "max_seconds"


def test_unpaired_rounds_compare_over_processes_and_a_resumed_run_pairs_with_the_baseline(three):
    run, variants = three
    alone = measured(run, variants, Measure(**QUICK, paired=False))
    ratio = alone["copy"][1]["latency_ratio"]
    assert ratio["paired"] is False and ratio["stopped_by"] == "rounds" and len(ratio["ci95"]) == 2
    assert "ratio" not in alone["copy"][1]["latency_rounds"][0]
    resumed = measured(run, variants[1:], Measure(**QUICK, precision=0.5, max_rounds=3), reference=variants[0])
    assert resumed["_order"] == ["copy", "slower"] and resumed["copy"][1]["latency_ratio"]["paired"]


def test_the_ratio_statistics_on_known_numbers():
    ratio = paired_ratio([1.10, 1.12, 1.08, 1.10])
    logs = np.log([1.10, 1.12, 1.08, 1.10])
    from scipy import stats

    low, high = stats.t.interval(0.95, 3, loc=logs.mean(), scale=stats.sem(logs))
    assert ratio["value"] == pytest.approx(math.exp(logs.mean()))
    assert ratio["ci95"] == pytest.approx([math.exp(low), math.exp(high)])
    assert latency_ratio([{"ratio": 1.01, "p50": 1}, {"ratio": 0.99, "p50": 1}], "precision", 0.03)["significant"] is False
    assert unpaired_ratio([2.0, 2.2, 1.8], [1.0, 1.1, 0.9])["value"] == pytest.approx(2.0, rel=0.01)
    assert p50_interval([0.1]) is None
    # One round's ratio cannot say how sure it is; a fixed number of rounds stops at `rounds`.
    assert paired_ratio([1.2])["ci95"] is None
    assert stop_reason([{"ratio": 1.0}] * 3, 1.0, Measure(precision=0.0)) == "rounds"
    assert stop_reason([{"ratio": 1.0}, {"ratio": 1.3}, {"ratio": 0.8}], 1.0, Measure()) is None

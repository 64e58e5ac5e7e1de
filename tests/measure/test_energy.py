"""Energy estimates: the Horowitz op-count model, CPU time × power, RAPL and the choice between them."""

from __future__ import annotations

import pytest

from edgebench.measure import energy
from edgebench.targets import Power

RECORD = {"macs": 1_000_000, "weight_bytes": 40_000, "precision": "fp32", "cpu_time_s": 0.5,
          "latency_ms": {"n": 1000, "mean": 0.5}, "emulated": False, "machine": {"cpu_count": 4}}


def test_op_count_uses_horowitz_numbers():
    # 1e6 MACs × (3.7 + 0.9) pJ + 10,000 words × 640 pJ = 4.6e6 + 6.4e6 pJ = 0.011 mJ.
    assert energy.op_count_mj(1e6, 40_000, "fp32") == pytest.approx(0.011)
    assert energy.op_count_mj(1e6, 0, "int8") == pytest.approx(0.23e-3)
    assert energy.op_count_mj(1e6, 0, "fp16") == pytest.approx(1.5e-3)
    assert energy.op_count_mj(0, 4, "fp32", activation_bytes=4) == pytest.approx(1280e-9)
    with pytest.raises(ValueError):
        energy.op_count_mj(1, 1, "int4")


def test_core_scope_is_cpu_time_times_the_power_of_a_busy_core():
    e = energy.estimate(RECORD, Power(idle_w=0.0, active_w=6.4, scope="core", source="datasheet"))
    assert e["value"] == pytest.approx(3.2)  # 0.5 ms of CPU × 6.4 W
    assert e["power_model_mj"] == pytest.approx(3.2) and e["above_idle_mj"] == pytest.approx(3.2)
    assert e["op_count_mj"] == pytest.approx(0.011)
    assert (e["watts"], e["scope"], e["source"]) == (6.4, "core", "datasheet")
    assert "6.4 W per busy core" in e["model"] and "datasheet" in e["model"]
    assert e["rapl_mj"] is None and e["measured"] is False
    assert energy.label(e) == "estimate: time x 6.4 W per busy core (datasheet)"


def test_board_scope_is_wall_time_times_the_boards_power_not_per_core():
    """A Pi's active_w is the whole board with all 4 cores busy: one busy thread for 0.5 ms
    costs 0.5 ms × (2.7 + 3.7 × 1/4) W, not 0.5 ms × 6.4 W × threads."""
    board = Power(idle_w=2.7, active_w=6.4, scope="board", source="USB meter")
    e = energy.estimate(RECORD, board)
    assert e["value"] == pytest.approx(0.5 * (2.7 + 3.7 / 4))
    assert e["above_idle_mj"] == pytest.approx(0.5 * 3.7 / 4)
    assert (e["watts"], e["idle_w"], e["scope"]) == (6.4, 2.7, "board")
    # Four threads busy for the same wall time: the whole board's active power, and no more.
    four = energy.estimate({**RECORD, "cpu_time_s": 2.0}, board)
    assert four["value"] == pytest.approx(0.5 * 6.4)
    assert energy.estimate({**RECORD, "cpu_time_s": 4.0}, board)["value"] == pytest.approx(0.5 * 6.4)
    assert energy.label(e) == "estimate: time x 2.7-6.4 W board (USB meter)"


def test_op_count_prices_what_computed_not_what_was_asked():
    fp16_that_ran_fp32 = {**RECORD, "precision": "fp16", "compute_precision": "fp32"}
    assert energy.estimate(fp16_that_ran_fp32, None)["precision"] == "fp32"
    assert energy.estimate({**RECORD, "precision": "int8", "compute_precision": "mixed"}, None)["precision"] == "fp32"
    assert energy.estimate({**RECORD, "precision": "int8", "compute_precision": "int8-dynamic"}, None)["precision"] == "int8"
    assert energy.estimate({**RECORD, "precision": "fp16"}, None)["precision"] == "fp16"


def test_no_power_profile_falls_back_to_op_count_by_precision():
    e = energy.estimate({**RECORD, "precision": "int8", "weight_bytes": None, "params": 10_000}, Power())
    # int8 weights: 10,000 params × 1 B → 2,500 words.
    assert e["value"] == pytest.approx((1e6 * 0.23 + 2_500 * 640) / 1e9)
    assert e["model"].startswith("op-count int8") and "Horowitz" in e["model"]
    assert energy.estimate(RECORD, None)["model"].startswith("op-count")


def test_emulated_uses_op_count_and_says_why():
    e = energy.estimate({**RECORD, "emulated": True}, Power(active_w=6.4))
    assert e["power_model_mj"] is None and e["value"] == pytest.approx(0.011) and e["watts"] is None
    assert "emulated" in e["model"]


def test_rapl_reading_wins_when_present():
    e = energy.estimate({**RECORD, "rapl_uj": 2_000_000}, Power(active_w=6.4))
    assert e["value"] == pytest.approx(2.0) and e["model"].startswith("rapl") and e["measured"]
    assert energy.label(e).startswith("measured")


def test_nothing_to_estimate_from():
    e = energy.estimate({"status": "ok"}, Power())
    assert e["value"] is None and e["model"].startswith("none")


def test_rapl_absent_here_or_readable(tmp_path, monkeypatch):
    """One reader for the runner and the host (the runner's): packages only, a wrap undone."""
    from edgebench.device import runner_facts

    reading = energy.read_rapl_uj()
    assert energy.rapl_available() == (reading is not None)
    # A fake powercap tree: package counters are summed, sub-domains are not, a wrap is undone.
    for name, value in (("intel-rapl:0", 1000), ("intel-rapl:1", 500), ("intel-rapl:0:0", 99999)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "energy_uj").write_text(f"{value}\n")
        (tmp_path / name / "max_energy_range_uj").write_text("10000\n")
    monkeypatch.setattr(runner_facts, "RAPL_GLOB", str(tmp_path / "intel-rapl:*/energy_uj"))
    assert energy.read_rapl_uj() == 1500 and energy.rapl_available()
    assert energy.rapl_mj_between(1000, 3000, 2) == pytest.approx(1.0)
    assert energy.rapl_mj_between(19_000, 1000, 1) == pytest.approx(2.0)  # wrapped at 20,000
    assert energy.rapl_mj_between(None, 1000, 1) is None
    assert runner_facts.rapl_delta_uj(19_000, 1000) == 2000


def test_the_runner_reads_rapl_around_the_timed_loop_only(tmp_path, monkeypatch):
    """Warm-up calls must not count: the energy is that of the timed samples the record divides by."""
    from edgebench.device import runner_facts, timing

    counter = tmp_path / "intel-rapl:0"
    counter.mkdir()
    (counter / "energy_uj").write_text("0")
    monkeypatch.setattr(runner_facts, "RAPL_GLOB", str(tmp_path / "intel-rapl:*/energy_uj"))
    calls = []

    def call():  # every call adds 10 µJ to the fake package counter
        calls.append(1)
        (counter / "energy_uj").write_text(str(10 * len(calls)))

    samples, _, rapl = timing.measure_latency(call, warmup=7, min_runs=5, min_seconds=0.0, max_seconds=5.0)
    assert len(samples) == 5 and len(calls) == 12
    assert rapl == 50

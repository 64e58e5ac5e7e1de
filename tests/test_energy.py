"""Energy estimates: the Horowitz op-count model, CPU time × power, RAPL and the choice between them."""

from __future__ import annotations

import pytest

from edgebench import energy
from edgebench.targets import Power

RECORD = {"macs": 1_000_000, "weight_bytes": 40_000, "precision": "fp32", "cpu_time_s": 0.5,
          "latency_ms": {"n": 1000}, "emulated": False}


def test_op_count_uses_horowitz_numbers():
    # 1e6 MACs × (3.7 + 0.9) pJ + 10,000 words × 640 pJ = 4.6e6 + 6.4e6 pJ = 0.011 mJ.
    assert energy.op_count_mj(1e6, 40_000, "fp32") == pytest.approx(0.011)
    assert energy.op_count_mj(1e6, 0, "int8") == pytest.approx(0.23e-3)
    assert energy.op_count_mj(1e6, 0, "fp16") == pytest.approx(1.5e-3)
    assert energy.op_count_mj(0, 4, "fp32", activation_bytes=4) == pytest.approx(1280e-9)
    with pytest.raises(ValueError):
        energy.op_count_mj(1, 1, "int4")


def test_cpu_time_times_active_power_is_primary():
    e = energy.estimate(RECORD, Power(idle_w=2.7, active_w=6.4, source="datasheet"))
    assert e["value"] == pytest.approx(3.2)  # 0.5 ms of CPU × 6.4 W
    assert e["cpu_time_mj"] == pytest.approx(3.2)
    assert e["cpu_time_above_idle_mj"] == pytest.approx(0.5 * 3.7)
    assert e["op_count_mj"] == pytest.approx(0.011)
    assert e["model"].startswith("cpu_time x active_w") and "6.4 W" in e["model"] and "datasheet" in e["model"]
    assert e["rapl_mj"] is None and e["measured"] is False


def test_no_power_profile_falls_back_to_op_count_by_precision():
    e = energy.estimate({**RECORD, "precision": "int8", "weight_bytes": None, "params": 10_000}, Power())
    # int8 weights: 10,000 params × 1 B → 2,500 words.
    assert e["value"] == pytest.approx((1e6 * 0.23 + 2_500 * 640) / 1e9)
    assert e["model"].startswith("op-count int8") and "Horowitz" in e["model"]
    assert energy.estimate(RECORD, None)["model"].startswith("op-count")


def test_emulated_uses_op_count_and_says_why():
    e = energy.estimate({**RECORD, "emulated": True}, Power(active_w=6.4))
    assert e["cpu_time_mj"] is None and e["value"] == pytest.approx(0.011)
    assert "emulated" in e["model"]


def test_rapl_reading_wins_when_present():
    e = energy.estimate({**RECORD, "rapl_uj": 2_000_000}, Power(active_w=6.4))
    assert e["value"] == pytest.approx(2.0) and e["model"].startswith("rapl") and e["measured"]


def test_nothing_to_estimate_from():
    e = energy.estimate({"status": "ok"}, Power())
    assert e["value"] is None and e["model"].startswith("none")


def test_rapl_absent_here_or_readable(tmp_path, monkeypatch):
    reading = energy.read_rapl_uj()
    assert energy.rapl_available() == (reading is not None)
    # A fake powercap tree: package counters are summed, sub-domains are not, a wrap is undone.
    for name, value in (("intel-rapl:0", 1000), ("intel-rapl:1", 500), ("intel-rapl:0:0", 99999)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "energy_uj").write_text(f"{value}\n")
        (tmp_path / name / "max_energy_range_uj").write_text("10000\n")
    monkeypatch.setattr(energy, "RAPL_GLOB", str(tmp_path / "intel-rapl:*/energy_uj"))
    assert energy.read_rapl_uj() == 1500 and energy.rapl_available()
    assert energy.rapl_mj_between(1000, 3000, 2) == pytest.approx(1.0)
    assert energy.rapl_mj_between(19_000, 1000, 1) == pytest.approx(2.0)  # wrapped at 20,000
    assert energy.rapl_mj_between(None, 1000, 1) is None

"""The report's board section: per-board p50 and the spread of a class, boards taken out."""

from __future__ import annotations

from edgebench.analyze.boards import boards_markdown, spread_rows


def test_a_variant_measured_on_two_boards_shows_each_and_the_ratio():
    rounds = [{"board": "pi-a", "p50": 1.0}, {"board": "pi-b", "p50": 1.2}, {"board": "pi-a", "p50": 1.1}]
    records = [{"status": "ok", "variant": "v", "target": "rpi4", "runtime": "onnxruntime", "latency_rounds": rounds},
               {"status": "ok", "variant": "w", "target": "pi-a", "runtime": "onnxruntime",
                "latency_rounds": [{"board": "pi-a", "p50": 1.0}]}]
    (row,) = spread_rows(records)  # one board: no spread to show
    assert row[:3] == ["v", "rpi4", "onnxruntime"] and "pi-a 1.05 (2 rounds)" in row[3] and row[4] == "1.143x"
    lines = boards_markdown(records, {"pool": {"removed": {"pi-c": "ssh: connection refused"}}})
    assert "- pi-c: taken out of the pool during the run: ssh: connection refused" in lines
    assert boards_markdown(records[1:], {}) == []

"""Latency intervals where people look: ties on the Pareto front, the table's `× baseline`."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from edgebench.analyze import best_variants, pareto_front
from edgebench.analyze.intervals import BOUNDS, intervals_of, latency_bounds, ratio_text


def table(rows: list[tuple]) -> pd.DataFrame:
    """(variant, size_bytes, p50, ratio, ci) rows of one target/runtime; the baseline first."""
    out = []
    for variant, size, p50, ratio, ci in rows:
        out.append({"variant": variant, "target": "local", "runtime": "onnxruntime", "status": "ok",
                    "size_bytes": size, "accuracy": 0.98, "latency_ms.p50": p50, "latency_ratio.value": ratio,
                    "latency_ratio.ci95": ci, "latency_ratio.significant": None if ci is None else not ci[0] <= 1 <= ci[1],
                    "latency_ratio.reference": variant == "baseline"})
    return latency_bounds(pd.DataFrame(out))


def test_a_speed_difference_inside_the_intervals_does_not_dominate():
    df = table([("baseline", 400, 0.100, 1.0, [1.0, 1.0]),
                ("kd-logits", 100, 0.052, 0.52, [0.50, 0.54]),
                ("kd-logits-nokd", 100, 0.050, 0.50, [0.48, 0.53]),  # "4 % faster": inside the intervals
                ("slim50", 120, 0.040, 0.40, [0.39, 0.41])])  # bigger, but really faster
    metrics = ["size_bytes", "latency_ms.p50"]
    by_point = dict(zip(df["variant"], pareto_front(df, metrics), strict=True))
    assert not by_point["kd-logits"]  # on the points alone, its twin beats it by noise
    with_ties = dict(zip(df["variant"], pareto_front(df, metrics, intervals=intervals_of(df)), strict=True))
    assert with_ties == {"baseline": False, "kd-logits": True, "kd-logits-nokd": True, "slim50": True}
    best = best_variants(df, max_drop=0.01).iloc[0]
    assert best["fastest"] == "slim50" and best["smallest"] in ("kd-logits", "kd-logits-nokd")
    df.loc[df["variant"].eq("slim50"), "latency_ms.p50"] = 0.049  # now tied with the students
    df.loc[df["variant"].eq("slim50"), ["latency_ratio.value"]] = 0.49
    df.loc[df["variant"].eq("slim50"), BOUNDS] = [0.047, 0.051]
    assert best_variants(df, max_drop=0.01).iloc[0]["fastest"] == "slim50 (tied: kd-logits-nokd, kd-logits)"


def brute_force(cost_low: np.ndarray, cost_high: np.ndarray) -> np.ndarray:
    n = len(cost_low)
    front = np.ones(n, dtype=bool)
    for i, j in itertools.permutations(range(n), 2):
        if all(cost_low[i] <= cost_high[j]) and any(cost_high[i] < cost_low[j]):
            front[j] = False
    return front


@pytest.mark.parametrize("seed", range(30))
def test_the_front_with_intervals_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 12))
    size = rng.integers(1, 5, n).astype(float)  # ties on size happen
    p50 = rng.uniform(0.5, 1.5, n)
    half = rng.choice([0.0, 0.05, 0.2], n)
    df = pd.DataFrame({"status": "ok", "target": "t", "runtime": "r", "size_bytes": size, "latency_ms.p50": p50,
                       "low": p50 - half, "high": p50 + half})
    got = pareto_front(df, ["size_bytes", "latency_ms.p50"], intervals={"latency_ms.p50": ("low", "high")})
    low = np.column_stack([size, p50 - half])
    high = np.column_stack([size, p50 + half])
    assert got.tolist() == brute_force(low, high).tolist()


def test_ratio_text_marks_what_is_not_significant_and_what_was_measured_apart():
    assert ratio_text({"value": 0.5, "ci95": [0.48, 0.52], "significant": True}) == "0.500 [0.480–0.520]"
    assert ratio_text({"value": 1.0, "ci95": [0.9, 1.1], "significant": False, "paired": False}) \
        == "1.00 [0.900–1.10] n.s. apart"
    assert ratio_text({"value": 1.0, "reference": True}) == "1 (reference)"
    assert ratio_text(None) == "—"


def test_compare_gives_latency_its_interval_from_the_rounds(tmp_path):
    import json

    from edgebench.analyze.compare import compare_runs

    def run(name: str, p50s: list[float], ratio: float) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        record = {"variant": "int8", "target": "local", "runtime": "onnxruntime", "status": "ok",
                  "latency_ms": {"p50": float(np.median(p50s))}, "latency_rounds": [{"p50": v} for v in p50s],
                  "latency_ratio": {"value": ratio, "sd": 0.01, "rounds": 3, "ci95": [ratio * 0.97, ratio * 1.03]}}
        (folder / "records.jsonl").write_text(json.dumps(record) + "\n")
        return folder

    a = run("a", [0.050, 0.060, 0.045], 0.56)
    b = run("b", [0.052, 0.058, 0.047], 0.62)
    rows = {r["metric"]: r for r in compare_runs(a, b)}
    p50, ratio = rows["latency_ms.p50"], rows["latency_ratio.value"]
    assert p50["ci95"][0] < 1.0 < p50["ci95"][1] and p50["significant"] is False  # the runs' own spread
    assert ratio["ratio"] == pytest.approx(0.62 / 0.56) and ratio["significant"] is True  # beside the baseline: sure

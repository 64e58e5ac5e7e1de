"""The gate adds up its evidence: a shift of the whole run, runtime upgrades under identical
artifacts, and baselines with nothing to compare against."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from edgebench import cli, testing
from edgebench.analyze.shift import ab_shifts, stored_shifts

VARIANTS = ["baseline", "int8", "fp16", "int8-dynamic", "qat-int8", "sparse80", "slim50", "kmeans4",
            "deep-compression", "lowrank-svd", "lowrank-tucker2", "kd-logits", "kd-logits-nokd", "kd-feature",
            "kd-relation", "compact-mobilenet", "compact-shufflenet"]


def noisy_run(seed: int, rounds: int = 3) -> list[dict]:
    """A demo-sized run as noisy as one on a shared 2-core machine: 17 variants, `rounds` runner
    processes each, a process bimodal (1 in 3 lands ~25 % slow) with 5 % more spread besides —
    a per-variant sd of the log per-round statistic of ~15 %."""
    rng = np.random.default_rng(seed)
    records = []
    for i, name in enumerate(VARIANTS):
        level = 0.05 * (1 + 0.1 * i)
        per_round = [level * rng.lognormal(0, 0.05) * (1.25 if rng.random() < 1 / 3 else 1.0) for _ in range(rounds)]
        records.append({"variant": name, "target": "local", "runtime": "onnxruntime", "format": "onnx",
                        "status": "ok", "size_bytes": 100_000 + i, "params": 1000, "macs": 10_000,
                        "accuracy": 0.98, "n_eval": 360,
                        "latency_ms": {"p50": float(np.median(per_round)), "min": min(per_round), "n": 100 * rounds},
                        "latency_rounds": [{"n": 100, "p10": v, "p25": v, "p50": v, "min": v} for v in per_round],
                        "machine": {"cpu": "Test CPU", "runtime_version": "1.32.0", "threads": 1}})
    return records


def scaled(records: list[dict], factor: float) -> list[dict]:
    """Every latency × factor: summaries and every round."""
    out = json.loads(json.dumps(records))
    for r in out:
        r["latency_ms"] = {k: (v if k == "n" else v * factor) for k, v in r["latency_ms"].items()}
        r["latency_rounds"] = [{k: (v if k == "n" else v * factor) for k, v in x.items()} for x in r["latency_rounds"]]
    return out


def write(folder: Path, records: list[dict]) -> Path:
    folder.mkdir(parents=True)
    (folder / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (folder / "manifest.json").write_text(json.dumps({"run_id": folder.name, "versions": {"onnxruntime": "1.32.0"}}))
    return folder


def gate(argv: list[str], capsys) -> tuple[int, str]:
    code = cli.main(["check", *argv])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_a_uniform_15_percent_slowdown_fails_as_a_whole_run_though_each_variant_alone_is_unsure(tmp_path, capsys):
    run = write(tmp_path / "run", noisy_run(seed=0))
    slower = write(tmp_path / "slower", scaled(noisy_run(seed=0), 1.15))
    code, out = gate([str(slower), "--baseline", str(run), "--no-remeasure"], capsys)
    assert code == 1, out
    fails = [line for line in out.splitlines() if line.startswith("FAIL:")]
    assert len(fails) == 1 and fails[0].startswith("FAIL: (whole run) on local/onnxruntime: latency shift"), out
    assert "×1.150" in fails[0] and "each variant alone:" in fails[0]
    assert "unsure" in fails[0] and "17 variants" in fails[0]
    code, out = gate([str(write(tmp_path / "same", scaled(noisy_run(seed=0), 1.0))), "--baseline", str(run),
                      "--no-remeasure"], capsys)
    assert code == 0 and "(whole run)" in out and "×1.000" in out, out


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_the_same_models_in_another_noisy_run_show_no_shift(tmp_path, capsys, seed):
    run = write(tmp_path / "run", noisy_run(seed=0))
    other = write(tmp_path / "other", noisy_run(seed=seed))
    # (a variant alone may still cry wolf on bimodal rounds: that is its own check's business)
    assert cli.main(["--json", "check", str(other), "--baseline", str(run), "--no-remeasure"]) in (0, 1)
    doc = json.loads(capsys.readouterr().out)
    (whole,) = [c for c in doc["checks"] if c["variant"] == "(whole run)"]
    assert whole["verdict"] == "ok", whole


def test_a_slow_spell_over_one_whole_round_widens_the_interval_instead_of_failing():
    rng = np.random.default_rng(0)
    names = [f"v{i}" for i in range(10)]
    base = {n: [1.0 + 0.1 * i + rng.normal(0, 0.005) for _ in range(3)] for i, n in enumerate(names)}
    spell = {n: [v * (1.3 if r == 1 else 1.0) for r, v in enumerate(base[n])] for n in names}  # round 2: all slow
    values = {(n, "local", "ort"): (base[n], spell[n]) for n in names}
    shift = stored_shifts(values, effect=0.10, alpha=0.01)[0]
    assert shift.verdict != "FAIL" and shift.ci95[0] < 1.0 < shift.ci95[1]
    # The same evidence as a uniform +10 % in every round: a shift, narrow.
    values = {(n, "local", "ort"): (base[n], [v * 1.1 for v in base[n]]) for n in names}
    assert stored_shifts(values, effect=0.05, alpha=0.01)[0].verdict == "FAIL"


def test_ab_shift_over_rounds_of_pairs():
    rng = np.random.default_rng(1)
    values = {(f"v{i}", "local", "ort"): [math.log(1.15) + rng.normal(0, 0.05) for _ in range(4)] for i in range(6)}
    shift = ab_shifts(values, effect=0.10, alpha=0.01)[0]
    assert shift.verdict == "FAIL" and shift.variants == 6 and shift.ci95[0] > 1.0
    assert ab_shifts(dict(list(values.items())[:2]), effect=0.10, alpha=0.01) == []  # two variants: their own checks


def test_identical_artifacts_on_another_runtime_version_are_judged_on_stored_numbers(tmp_path, capsys):
    models = {name: {"convs": 3} for name in ("baseline", "int8", "fp16")}
    reference = testing.write_run(tmp_path / "ref", models, side=8)
    upgraded = testing.write_run(tmp_path / "new", models, side=8, versions={"onnxruntime": "9.9.9"})
    records = [json.loads(line) for line in (upgraded / "records.jsonl").read_text().splitlines()]
    for r in records:  # the new runtime is 15 % slower on every model
        r["latency_rounds"] = [{k: (v if k == "n" else v * 1.15) for k, v in x.items()} for x in r["latency_rounds"]]
    (upgraded / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    code, out = gate([str(upgraded), "--baseline", str(reference)], capsys)
    assert code == 1, out
    first = out.splitlines()[0]
    assert first.startswith("mode: stored samples — identical artifacts but runtime_version "), first
    assert "→ 9.9.9" in first and "stored numbers are compared" in first
    assert any(line.startswith("FAIL: (whole run) on local/onnxruntime") for line in out.splitlines()), out


@pytest.mark.parametrize("content", ["", '{"variant": "baseline", "target": "lo'])
def test_a_baseline_with_no_readable_record_is_bad_input(tmp_path, capsys, content):
    run = write(tmp_path / "run", noisy_run(seed=0))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "records.jsonl").write_text(content)
    code, out = gate([str(run), "--baseline", str(empty)], capsys)
    assert code == 2 and len(out.strip().splitlines()) == 1 and "no readable record" in out, out
    saved = tmp_path / "empty.json"
    saved.write_text(json.dumps({"kind": "edgebench-baseline", "entries": []}))
    code, out = gate([str(run), "--baseline", str(saved)], capsys)
    assert code == 2 and "no entries" in out, out

"""The regression gate (`edgebench check`) on records written here, and `edgebench compare`.

Stored mode: these runs have no artifacts, so latency is judged on their per-round statistics.
A/B re-measuring with real artifacts and the real runner is in test_gate_remeasure.py.
"""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import numpy as np
import pytest

from edgebench import cli
from edgebench.analyze import compare
from edgebench.analyze.latency_gate import decided, paired_test, pooled_log_variance, stored_test
from edgebench.measure.records import latency_summary, round_summary

VERSIONS = {"torch": "2.13.0", "onnx": "1.23.2", "onnxscript": "0.7.2", "onnxruntime": "1.32.0",
            "litert-torch": "0.10.0", "ai-edge-litert": "2.3.0", "torchao": "0.14.0", "numpy": "2.3.0",
            "python": "3.11.9", "edgebench": "0.1.0"}


def make_record(variant: str = "baseline", *, speed: float = 1.0, seed: int = 0, rounds: int = 3,
                size_bytes: int = 400_000, macs: int = 2_000_000, accuracy: float | None = 0.98,
                status: str = "ok", error: str | None = None, **fields) -> dict:
    """A record as the pipeline writes it: `rounds` runner processes of 100 samples each; each
    process has its own level (lognormal, 2 %: what one process adds), samples only above it."""
    rng = np.random.default_rng(seed * 1000 + zlib.crc32(variant.encode()) % 1000)
    level = (1.0 if variant == "baseline" else 0.7) * speed
    per_round = [level * rng.lognormal(0, 0.02) * (1 + rng.exponential(0.05, 100)) for _ in range(rounds)]
    samples = [float(s) for r in per_round for s in r]
    record = {
        "schema_version": 1, "run_id": "20261203T101500Z-3fa9c1", "variant": variant, "target": "local",
        "runtime": "onnxruntime", "format": "onnx", "status": status, "error": error,
        "size_bytes": size_bytes, "size_gzip_bytes": int(size_bytes * 0.9), "params": 100_000, "macs": macs,
        "latency_ms": latency_summary(samples), "latency_samples_ms": samples,
        "latency_rounds": [round_summary(list(r)) for r in per_round], "rounds": rounds,
        "accuracy": accuracy, "n_eval": 360, "agreement": 1.0, "peak_rss_mb": 80.0,
        "machine": {"arch": "x86_64", "system": "Linux", "cpu": "Test CPU", "runtime_version": "1.32.0", "threads": 1},
    }
    if status != "ok":
        for key in ("size_bytes", "latency_ms", "latency_samples_ms", "latency_rounds", "accuracy"):
            record[key] = None
    record.update(fields)
    return record


def two_variants(seed: int = 0, speed: float = 1.0, **fields) -> list[dict]:
    """The model ("baseline") and an int8 variant at 0.7x its latency; `fields` set on both."""
    records = [make_record("baseline", seed=seed, speed=speed),
               make_record("int8", seed=seed, speed=speed, size_bytes=110_000, accuracy=0.975)]
    return [{**r, **fields} for r in records]


def scaled(record: dict, factor: float) -> dict:
    """Every latency of a record × factor: samples, summary and per-round statistics."""
    out = json.loads(json.dumps(record))
    out["latency_samples_ms"] = [s * factor for s in out["latency_samples_ms"]]
    out["latency_ms"] = {k: (v if k == "n" else v * factor) for k, v in out["latency_ms"].items()}
    out["latency_rounds"] = [{k: (v if k == "n" else v * factor) for k, v in r.items()} for r in out["latency_rounds"]]
    return out


def write_run(folder: Path, records: list[dict], versions: dict | None = None) -> Path:
    """A run folder holding `records` and a manifest (no artifacts: stored mode)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "records.jsonl", "w") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    (folder / "manifest.json").write_text(json.dumps({
        "run_id": folder.name, "git": {"commit": "3fa9c1d", "dirty": False},
        "versions": VERSIONS if versions is None else versions, "experiment": {"run": {"threads": 1}}}))
    return folder


def gate(argv: list[str], capsys) -> tuple[int, str]:
    """`edgebench check ...` in this process: exit status and everything printed."""
    code = cli.main(["check", *argv])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def fail_lines(out: str, metric: str = "") -> list[str]:
    return [line for line in out.splitlines() if line.startswith("FAIL:") and metric in line]


@pytest.fixture
def run(tmp_path):
    return write_run(tmp_path / "run", two_variants())


# --- latency in stored mode ----------------------------------------------------------------------

def test_every_latency_15_percent_slower_fails_in_stored_mode(tmp_path, run, capsys):
    # Model and variants alike, so a rule relative to the run's own model cannot see it.
    slower = write_run(tmp_path / "slower", [scaled(r, 1.15) for r in two_variants()])
    saved = tmp_path / "main.json"
    assert gate([str(run), "--save-baseline", str(saved)], capsys)[0] == 0
    for baseline, extra, why in ((run, ["--no-remeasure"], "--no-remeasure"),
                                 (run, [], "no onnx artifact of the reference run on disk"),
                                 (saved, [], "the baseline is a saved JSON")):
        code, out = gate([str(slower), "--baseline", str(baseline), *extra], capsys)
        assert code == 1, out
        assert out.splitlines()[0].startswith(f"mode: stored samples — {why}"), out
        fails = fail_lines(out, "latency_ms.min")
        assert len(fails) == 2 and {f.split()[1] for f in fails} == {"baseline", "int8"}
        line = next(f for f in fails if f.startswith("FAIL: int8 on local/onnxruntime: latency_ms.min = "))
        base = math.exp(np.mean([math.log(r["min"]) for r in two_variants()[1]["latency_rounds"]]))
        assert f"(limit baseline {base:.4g} +10% & p<0.01)" in line and f"= {base * 1.15:.4g} " in line
        assert "+15.0%" in line and "pooled sd" in line


def test_a_run_against_itself_and_its_saved_baseline_passes(tmp_path, run, capsys):
    saved = tmp_path / "main.json"
    code, out = gate([str(run), "--save-baseline", str(saved), "--baseline", str(run)], capsys)
    assert code == 0, out
    code, out = gate([str(run), "--baseline", str(saved)], capsys)
    assert code == 0, out
    assert "latency_ms.min" in out and "+0.0%" in out


def test_same_model_measured_again_passes_in_stored_mode(tmp_path, run, capsys):
    for seed in range(1, 6):  # other processes, other luck: 2 % per round, no machine drift
        other = write_run(tmp_path / f"other{seed}", two_variants(seed=seed))
        code, out = gate([str(other), "--baseline", str(run)], capsys)
        assert code == 0, out


def test_a_faster_reference_model_does_not_fail_an_unchanged_variant(tmp_path, run, capsys):
    records = two_variants(seed=1)
    records[0] = make_record("baseline", seed=1, speed=0.7, macs=1_500_000)
    code = cli.main(["--json", "check", str(write_run(tmp_path / "new", records)), "--baseline", str(run)])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0, doc
    verdicts = {(c["variant"], c["metric"]): c["verdict"] for c in doc["checks"]}
    assert verdicts[("baseline", "latency_ms.min")] == "better" and verdicts[("baseline", "macs")] == "better"
    assert verdicts[("int8", "latency_ms.min")] == "ok"


def test_records_without_per_round_statistics_are_judged_by_the_effect_alone(tmp_path, capsys):
    old = [{k: v for k, v in r.items() if k not in ("latency_rounds", "latency_samples_ms")} for r in two_variants()]
    base = write_run(tmp_path / "old", old)
    slower = write_run(tmp_path / "slower", [scaled(r, 1.2) for r in two_variants(seed=1)])
    code, out = gate([str(slower), "--baseline", str(base)], capsys)
    assert code == 1 and fail_lines(out, "latency_ms.min")
    assert all("no per-round statistics: effect alone" in line for line in fail_lines(out, "latency_ms"))


def test_old_baseline_json_with_samples_still_loads(tmp_path, capsys):
    entries = [{**{k: r[k] for k in ("variant", "target", "runtime", "size_bytes", "params", "macs", "accuracy")},
                "latency_ms": {k: r["latency_ms"][k] for k in ("p50", "p90", "min", "n")},
                "latency_samples_ms": r["latency_samples_ms"][:200]} for r in two_variants()]
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"kind": "edgebench-baseline", "schema_version": 1, "entries": entries}))
    code, out = gate([str(write_run(tmp_path / "same", two_variants(seed=1))), "--baseline", str(path)], capsys)
    assert code == 0, out
    assert "the baseline records no package versions" in out


# --- nothing passes unseen -------------------------------------------------------------------------

@pytest.mark.parametrize("field, value, metric", [
    ("accuracy", None, "accuracy"), ("accuracy", float("nan"), "accuracy"),
    ("size_bytes", None, "size_bytes"), ("macs", float("nan"), "macs"),
    ("latency", "nan", "latency_ms.min"), ("latency", "missing", "latency_ms.min"),
])
def test_a_metric_missing_or_nan_in_the_run_fails_its_check(tmp_path, run, capsys, field, value, metric):
    records = two_variants(seed=1)
    if field == "latency":
        records[1]["latency_rounds"] = records[1]["latency_samples_ms"] = None
        records[1]["latency_ms"] = {"p50": float("nan"), "min": float("nan")} if value == "nan" else None
    else:
        records[1][field] = value
    code, out = gate([str(write_run(tmp_path / "new", records)), "--baseline", str(run)], capsys)
    assert code == 1, out
    (line,) = fail_lines(out, f": {metric} = ")
    assert line.startswith(f"FAIL: int8 on local/onnxruntime: {metric} = ") and "missing or NaN in this run" in line


def test_errors_missing_and_new_variants(tmp_path, run, capsys):
    records = two_variants(seed=1)
    records[1] = make_record("int8", status="error", error="TargetError: ssh: connection refused")
    code, out = gate([str(write_run(tmp_path / "broken", records)), "--baseline", str(run)], capsys)
    assert code == 1 and "connection refused" in fail_lines(out, "status")[0]
    code, out = gate([str(write_run(tmp_path / "only", two_variants(seed=1)[:1])), "--baseline", str(run)], capsys)
    assert code == 1 and "not in this run" in fail_lines(out)[0]
    new_ok = two_variants(seed=1) + [make_record("fp16", seed=1)]
    code, out = gate([str(write_run(tmp_path / "new_ok", new_ok)), "--baseline", str(run)], capsys)
    assert code == 0 and any(line.startswith("fp16 ") and " new" in line for line in out.splitlines()), out
    new_error = two_variants(seed=1) + [make_record("int4", status="error", error="StepError: no int4 here")]
    code, out = gate([str(write_run(tmp_path / "new_err", new_error)), "--baseline", str(run)], capsys)
    assert code == 1
    assert fail_lines(out)[0].startswith("FAIL: int4 on local/onnxruntime: status = error") and "int4 here" in out


def test_an_error_known_from_the_baseline_is_shown_not_failed(tmp_path, capsys):
    records = two_variants() + [make_record("int4", status="error", error="StepError: no int4 here")]
    base = write_run(tmp_path / "base", records)
    code, out = gate([str(write_run(tmp_path / "new", records)), "--baseline", str(base)], capsys)
    assert code == 0 and any(" known " in line and line.startswith("int4") for line in out.splitlines()), out


def test_accuracy_on_another_n_eval_is_flagged_not_compared(tmp_path, run, capsys):
    code, out = gate([str(write_run(tmp_path / "new", two_variants(seed=1, n_eval=100, accuracy=0.9))),
                      "--baseline", str(run)], capsys)
    assert code == 0, out  # not compared: neither passed nor failed
    flagged = [line for line in out.splitlines() if line.startswith("unsure:") and ": accuracy = " in line]
    assert len(flagged) == 2 and "measured on 100 inputs, the baseline on 360" in flagged[0]
    assert "2 unsure" in out.splitlines()[-1]


def test_footprint_across_exporter_versions_is_flagged_and_said_first(tmp_path, run, capsys):
    newer = {**VERSIONS, "onnx": "1.24.0"}
    grown = write_run(tmp_path / "new", two_variants(seed=1, size_bytes=420_000), versions=newer)
    code, out = gate([str(grown), "--baseline", str(run)], capsys)
    lines = out.splitlines()
    assert code == 0, out
    assert lines[0].startswith("mode: stored samples") and "onnx 1.23.2 → 1.24.0" in lines[1]
    assert any(line.startswith("unsure: baseline on local/onnxruntime: size_bytes") for line in lines)
    same_versions = write_run(tmp_path / "same", two_variants(seed=1, size_bytes=420_000))
    assert gate([str(same_versions), "--baseline", str(run)], capsys)[0] == 1  # +5 %: a regression


def test_machine_runtime_and_threads_differences_come_first(tmp_path, run, capsys):
    machine = {"arch": "x86_64", "cpu": "Other CPU", "runtime_version": "1.33.0", "threads": 2}
    other = write_run(tmp_path / "new", two_variants(seed=1, machine=machine),
                      versions={**VERSIONS, "onnxruntime": "1.33.0", "numpy": "2.4.0"})
    code, out = gate([str(other), "--baseline", str(run)], capsys)
    head = "\n".join(out.splitlines()[:5])
    assert "cpu Test CPU → Other CPU" in head and "runtime_version 1.32.0 → 1.33.0" in head and "threads 1 → 2" in head
    assert "numpy 2.3.0 → 2.4.0" in head and "onnxruntime 1.32.0 → 1.33.0" in head


def test_more_macs_fails_on_footprint(tmp_path, capsys):
    base = write_run(tmp_path / "base", two_variants(macs=1_500_000))
    code, out = gate([str(write_run(tmp_path / "new", two_variants(seed=1))), "--baseline", str(base)], capsys)
    assert code == 1
    assert any("macs" in line and "1,500,000" in line and "2,000,000" in line for line in fail_lines(out))


# --- bad input is exit 2, one line --------------------------------------------------------------------

@pytest.mark.parametrize("text, message", [
    ("{not json", "not valid JSON"),
    ('{"kind": "something-else", "entries": []}', "not an edgebench baseline"),
    ('{"kind": "edgebench-baseline", "entries": {}}', "'entries' is not a list"),
    ('{"kind": "edgebench-baseline", "entries": [{"variant": "int8"}]}', "entries[0] is not an entry"),
    ('{"kind": "edgebench-baseline", "entries": [{"variant": "int8", "target": "local", "runtime": "onnxruntime", '
     '"size_bytes": "big"}]}', 'int8/local/onnxruntime: size_bytes = "big" is not a number'),
    ('{"kind": "edgebench-baseline", "entries": [{"variant": "int8", "target": "local", "runtime": "onnxruntime", '
     '"latency_rounds": 3}]}', "latency_rounds = 3 is not a list of per-round statistics"),
])
def test_a_malformed_baseline_file_exits_2_naming_file_and_problem(tmp_path, run, capsys, text, message):
    path = tmp_path / "baseline.json"
    path.write_text(text)
    code, out = gate([str(run), "--baseline", str(path)], capsys)
    assert code == 2, out
    assert message in out and str(path) in out and "Traceback" not in out and len(out.strip().splitlines()) == 1


def test_a_malformed_run_or_baseline_run_exits_2(tmp_path, run, capsys):
    bad_line = write_run(tmp_path / "bad_line", two_variants())
    with open(bad_line / "records.jsonl", "a") as f:
        f.write("garbage\n" + json.dumps(make_record("fp16")) + "\n")
    bad_manifest = write_run(tmp_path / "bad_manifest", two_variants())
    (bad_manifest / "manifest.json").write_text("{")
    for argv in ([str(bad_line), "--baseline", str(run)], [str(run), "--baseline", str(bad_line)],
                 [str(bad_manifest), "--baseline", str(run)], [str(run), "--baseline", str(bad_manifest)],
                 [str(run), "--baseline", str(tmp_path / "missing.json")], [str(tmp_path / "nope"), "--baseline", str(run)]):
        code, out = gate(argv, capsys)
        assert code == 2 and len(out.strip().splitlines()) == 1 and "Traceback" not in out, (argv, out)


def write_budget(tmp_path: Path, text: str | bytes) -> str:
    path = tmp_path / "budget.toml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(path)


@pytest.mark.parametrize("text, message", [
    ('[[budget]]\nvariant = "*"\nmax_latency_p90 = 2.0\n', 'did you mean "max_latency_p90_ms"'),
    ('[[budget]]\nmax_size_bytes = "big"\n', "max_size_bytes"),
    ("not toml [", "not valid TOML"),
    (b"\xff\xfe\x00garbage", "budget"),
])
def test_a_malformed_budget_exits_2_with_one_line(tmp_path, run, capsys, text, message):
    code, out = gate([str(run), "--budget", write_budget(tmp_path, text)], capsys)
    assert code == 2 and message in out and "Traceback" not in out and len(out.strip().splitlines()) == 1


def test_nothing_to_check_is_exit_2(run, capsys):
    assert gate([str(run)], capsys)[0] == 2


# --- budgets, output ---------------------------------------------------------------------------------

def test_budget_broken_names_variant_metric_limit_value(tmp_path, run, capsys):
    budget = write_budget(tmp_path, '[[budget]]\nvariant = "int8*"\ntarget = "local"\n'
                                    'max_size_bytes = 60_000\nmin_accuracy = 0.95\n')
    code, out = gate([str(run), "--budget", budget], capsys)
    assert code == 1 and out.splitlines()[0] == "mode: budgets only (no --baseline)"
    (line,) = fail_lines(out)
    assert "int8" in line and "local" in line and "size_bytes" in line and "60,000" in line and "110,000" in line


def test_budget_on_a_nan_metric_fails_and_a_budget_matching_nothing_fails(tmp_path, capsys):
    records = two_variants()
    records[1]["peak_rss_mb"] = float("nan")
    run = write_run(tmp_path / "run", records)
    code, out = gate([str(run), "--budget", write_budget(tmp_path, '[[budget]]\nmax_peak_rss_mb = 150\n')], capsys)
    assert code == 1 and "missing or NaN" in fail_lines(out, "peak_rss_mb")[0]
    code, out = gate([str(run), "--budget", write_budget(tmp_path, '[[budget]]\nvariant = "int4*"\nmax_size_bytes = 1\n')],
                     capsys)
    assert code == 1 and "matches no record" in out


def test_json_and_markdown_say_the_mode(tmp_path, run, capsys):
    md = tmp_path / "gate.md"
    code = cli.main(["--json", "check", str(run), "--baseline", str(run), "--markdown", str(md)])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0 and doc["passed"] and doc["mode"].startswith("mode: stored samples")
    assert {c["metric"] for c in doc["checks"]} >= {"macs", "accuracy", "latency_ms.min"}
    assert "mode: stored samples" in md.read_text() and "| int8 |" in md.read_text()


def test_save_baseline_keeps_what_the_gate_compares(tmp_path, capsys):
    records = two_variants() + [make_record("int4", status="error", error="StepError: no")]
    saved = tmp_path / "main.json"
    assert gate([str(write_run(tmp_path / "run", records)), "--save-baseline", str(saved)], capsys)[0] == 0
    doc = json.loads(saved.read_text())
    assert doc["versions"] == VERSIONS and len(doc["entries"]) == 3
    entry = doc["entries"][1]
    assert len(entry["latency_rounds"]) == 3 and entry["n_eval"] == 360 and entry["machine"]["threads"] == 1
    assert "latency_samples_ms" not in entry and doc["entries"][2]["status"] == "error"


def test_latency_stat_option(tmp_path, run, capsys):
    slower = write_run(tmp_path / "slower", [scaled(r, 1.15) for r in two_variants()])
    code, out = gate([str(slower), "--baseline", str(run), "--latency-stat", "p25"], capsys)
    assert code == 1 and len(fail_lines(out, "latency_ms.p25")) == 2
    assert gate([str(slower), "--baseline", str(run), "--latency-effect", "0.2"], capsys)[0] == 0


def test_compare_shows_ratios(tmp_path, capsys):
    a = write_run(tmp_path / "a", two_variants())
    b = write_run(tmp_path / "b", two_variants(seed=2, speed=2.0))
    assert cli.main(["compare", str(a), str(b)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("baseline") and "latency_ms.p50" in x)
    variant, where, metric, a_value, b_value, ratio, interval = line.split()  # B/A and its 95 % interval over rounds
    assert 1.8 < float(ratio) < 2.2 and all(1.6 < float(x) < 2.4 for x in interval.split("–"))
    assert {r["metric"] for r in compare.compare_runs(a, b)} >= {"size_bytes", "accuracy"}


# --- the tests themselves --------------------------------------------------------------------------

def test_paired_test_needs_both_significance_and_effect():
    rng = np.random.default_rng(3)
    ref = list(0.4 * rng.lognormal(0, 0.01, 8))
    assert paired_test(ref, [r * 1.2 for r in ref[::-1]], effect=0.10, alpha=0.01).verdict == "FAIL"
    assert paired_test(ref, [r * 1.05 for r in ref[::-1]], effect=0.10, alpha=0.01).verdict == "ok"  # too small
    assert paired_test(ref, [r * 0.8 for r in ref[::-1]], effect=0.10, alpha=0.01).verdict == "better"
    noisy = [0.4, 0.8, 0.4, 0.4]  # +50 % in one round of four: large, not significant
    result = paired_test([0.4] * 4, [0.8, 0.4, 0.8, 0.4], effect=0.10, alpha=0.01)
    assert result.verdict == "unsure" and result.p > 0.01 and paired_test(noisy, noisy, 0.1, 0.01).verdict == "ok"


def test_stopping_rule_stops_when_clear_and_not_before():
    same = [1.0, 1.001, 0.999, 1.0]
    assert decided(same, same[::-1], effect=0.10, alpha=0.01)  # clearly no regression
    assert decided(same, [v * 1.3 for v in same], effect=0.10, alpha=0.01)  # clearly one
    assert not decided([1.0, 1.3, 1.0, 1.3], [1.3, 1.0, 1.3, 1.0], effect=0.10, alpha=0.01)  # noise: measure on


def test_stored_test_pools_the_spread_of_every_variant():
    var, df = pooled_log_variance([[1.0, 1.02, 0.98], [0.7, 0.71, 0.69], [2.0, 2.04, 1.96]])
    assert df == 6 and 0.015 < math.sqrt(var) < 0.025
    assert stored_test([1.0, 1.02, 0.98], [1.15, 1.17, 1.13], var, df, 0.10, 0.01).verdict == "FAIL"
    assert stored_test([1.0, 1.02, 0.98], [1.02, 1.0, 1.01], var, df, 0.10, 0.01).verdict == "ok"
    wide, wide_df = pooled_log_variance([[1.0, 1.5, 0.7], [0.7, 1.0, 0.5]])
    assert stored_test([1.0, 1.5, 0.7], [1.2, 1.8, 0.85], wide, wide_df, 0.10, 0.01).verdict == "unsure"

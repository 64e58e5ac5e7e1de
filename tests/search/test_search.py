"""`edgebench search`: budgets as constraints, the best kept (not the first), trials as ordinary
records, pruning before export, a killed search resumed without repeating trials, bad input
exit 2 before any work."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("optuna", reason="Optuna is not installed (pip install 'edgebench[search]')")

from conftest import write_experiment  # noqa: E402

CLI = [sys.executable, "-m", "edgebench"]
# A small space: cheap trials on the tiny experiment (no low-rank: its convs are too small).
SPACE = """
[search.space.prune]
kinds = ["none", "structured", "unstructured"]
ratio = [0.2, 0.6]
finetune_epochs = [0, 1]
skip_sensitive = [false]
[search.space.lowrank]
use = [false]
[search.space.quantize]
schemes = ["none", "fp16", "int8_static"]
"""


def _search(exp: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "search", str(exp), "--json", *args], capture_output=True, text=True, timeout=timeout)


def test_the_best_within_budgets_is_kept_not_the_first():
    import optuna

    from edgebench.search.study import best_trial

    def trial(number, value, constraints):
        t = optuna.trial.create_trial(value=value, user_attrs={"constraints": constraints})
        t.number = number
        return t

    done = [trial(0, 5.0, [-1.0]), trial(1, 1.0, [0.5]), trial(2, 3.0, [-0.1, -2.0]), trial(3, 4.0, [0.0])]
    assert best_trial(done).number == 2  # 1 is faster but breaks a budget; 0 passed first
    assert best_trial([trial(0, 1.0, [0.1])]) is None


@pytest.mark.parametrize(("args", "message"), [
    (["--minimize", "speed"], "--minimize speed: choose from latency, size, energy"),
    (["--max-drop", "-1"], "--max-drop must be >= 0"),
    (["--target", "no-such-board"], "no-such-board"),
])
def test_bad_settings_exit_2_before_any_work(tmp_path, args, message):
    exp = write_experiment(tmp_path)
    proc = subprocess.run([*CLI, "search", str(exp), "--out", str(tmp_path / "r"), *args],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert not (tmp_path / "r").exists()


def test_a_wrong_space_is_one_line(tmp_path):
    exp = write_experiment(tmp_path, variants='[search.space.prune]\nratio = [0.5, 1.5]\n')
    proc = subprocess.run([*CLI, "search", str(exp)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "[search.space.prune]: ratio must be [low, high] within [0, 0.95], got [0.5, 1.5]" in proc.stderr


@pytest.mark.slow
def test_a_search_measures_trials_as_records_and_resumes_after_a_kill(tmp_path):
    exp = write_experiment(tmp_path, variants=SPACE)
    runs = tmp_path / "runs"
    # Killed once the baseline and one trial are measured; resumed to 7 trials in all.
    proc = subprocess.Popen([*CLI, "search", str(exp), "--trials", "7", "--max-drop", "3", "--out", str(runs)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        found = list(runs.glob("*/records.jsonl"))
        if found and sum(1 for line in found[0].read_text().splitlines() if '"trial"' in line) >= 1:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.2)
    proc.wait(30)
    (run_dir,) = runs.iterdir()
    measured_before = [json.loads(x) for x in (run_dir / "records.jsonl").read_text().splitlines()]
    again = subprocess.run([*CLI, "search", "--resume", str(run_dir), "--json"], capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    out = json.loads(again.stdout)
    assert set(out) >= {"run_dir", "best", "pareto", "trials", "device_trials", "device_seconds"}
    assert out["trials"] == 7 and out["device_trials"] <= 7 and out["device_seconds"] > 0
    records = [json.loads(x) for x in (run_dir / "records.jsonl").read_text().splitlines()]
    assert records[: len(measured_before)] == measured_before  # nothing measured before was redone
    trials = [r["trial"] for r in records if "trial" in r]
    assert len(trials) == len(set(trials))  # no trial measured twice
    assert [r["variant"] for r in records].count("baseline") == 1
    best = out["best"]
    assert best["metrics"]["accuracy_drop_pt"] <= 3 and best["margins"]["accuracy_drop_pt"] >= 0
    base = records[0]
    within = sorted(r["latency_ms"]["p50"] for r in records
                    if r.get("trial") is not None and r["status"] == "ok" and (base["accuracy"] - r["accuracy"]) * 100 <= 3)
    confirmed = out["confirmed_p50_ms"]
    if confirmed:  # the top three within budget measured again with the baseline; the best is theirs
        assert "baseline" in confirmed and best["variant"] in confirmed
        # chosen on its ratio to the baseline timed beside it (the run's statistics), with its interval
        ratios = out["confirmed_ratio"]
        assert set(ratios) == set(confirmed) and ratios["baseline"]["value"] == 1.0
        assert ratios[best["variant"]]["value"] == min(r["value"] for k, r in ratios.items() if k != "baseline")
        assert all(len(r["ci95"]) == 2 for k, r in ratios.items() if k != "baseline")
        assert best["metrics"]["p50_ms"] in within[:3] or best["variant"] == "baseline"
    else:  # fewer than two candidates: the fastest measured within the budget
        assert best["metrics"]["p50_ms"] in {*within[:1], base["latency_ms"]["p50"]}
    assert (run_dir / "plots" / "search.png").is_file() and (run_dir / "report.html").is_file()
    assert f"Best within budgets: **{best['variant']}**" in (run_dir / "report.md").read_text()
    assert json.loads((run_dir / "search.json").read_text())["trials"] == 7


@pytest.mark.slow
def test_trials_that_break_the_budget_in_torch_are_never_exported(tmp_path):
    exp = write_experiment(tmp_path, variants="""
[search.space.prune]
kinds = ["structured"]
ratio = [0.9, 0.95]
finetune_epochs = [0, 0]
skip_sensitive = [false]
[search.space.lowrank]
use = [false]
[search.space.quantize]
schemes = ["none"]
""")
    proc = _search(exp, "--trials", "3", "--max-drop", "0", "--out", str(tmp_path / "runs"))
    assert proc.returncode == 1, proc.stderr[-2000:]  # nothing met the budget
    out = json.loads(proc.stdout)
    assert out["best"] is None and out["pruned_before_export"] == 3 and out["device_trials"] == 0
    run_dir = Path(out["run_dir"])
    assert not list(run_dir.glob("variants/trial-*/model.onnx"))


def test_a_grid_space_lists_every_point_and_an_open_one_is_refused():
    from edgebench.errors import ConfigError
    from edgebench.search.space import grid, make_space

    space = make_space({"prune": {"kinds": ["structured"], "ratio": [0.25, 0.75], "ratio_step": 0.25,
                                  "finetune_epochs": [1, 2], "lr_scale": [1.0, 1.0], "skip_sensitive": [False]},
                        "lowrank": {"use": [False]}, "quantize": {"schemes": ["none", "fp16", "int8_static"]}})
    points = grid(space)
    assert points["prune_ratio"] == [0.25, 0.5, 0.75] and points["prune_epochs"] == [1, 2]
    assert len(points["quantize"]) * len(points["prune_ratio"]) * len(points["prune_epochs"]) == 18
    with pytest.raises(ConfigError, match="ratio_step"):
        grid(make_space({}))
    with pytest.raises(ConfigError, match="skip_sensitive must be a list of false and shares"):
        make_space({"prune": {"skip_sensitive": [2]}})


@pytest.mark.slow
def test_max_device_trials_stops_the_search_there(tmp_path):
    exp = write_experiment(tmp_path, variants=SPACE)
    proc = _search(exp, "--trials", "12", "--max-device-trials", "2", "--max-drop", "50", "--out", str(tmp_path / "runs"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["device_trials"] == 2 and out["trials"] < 12
    records = [json.loads(x) for x in (Path(out["run_dir"]) / "records.jsonl").read_text().splitlines()]
    assert sum(1 for r in records if r.get("trial") is not None) == 2

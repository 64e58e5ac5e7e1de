"""The device pool end to end: a real Dask scheduler and one `edgebench worker` per device as
separate processes, over TLS (tests/pool/conftest.py), two loopback sshd "devices" (each runner
pinned to its own core), a 6-variant experiment through the pool, a worker killed with SIGKILL
mid-run, and --resume."""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import time
from collections import defaultdict
from pathlib import Path

import pytest

pytest.importorskip("distributed", reason="dask distributed is not installed (pip install 'edgebench[pool]')")

from conftest import write_experiment  # noqa: E402
from sshd import free_port, loopback_sshd  # noqa: E402

from .conftest import CLI, stop, wait_for_workers  # noqa: E402

SIX = """
[[variant]]
name = "int8"
steps = [{ method = "quantize", scheme = "int8_static" }]

[[variant]]
name = "fp16"
steps = [{ method = "quantize", scheme = "fp16" }]

[[variant]]
name = "dyn"
steps = [{ method = "quantize", scheme = "int8_dynamic" }]

[[variant]]
name = "sparse"
steps = [{ method = "prune", kind = "unstructured", ratio = 0.5, finetune_epochs = 0 }]

[[variant]]
name = "slim"
steps = [{ method = "prune", kind = "structured", ratio = 0.5, finetune_epochs = 0 }]
"""


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "records.jsonl").read_text().splitlines() if line.strip()]


def _no_overlap(records: list[dict]) -> None:
    """No two timed windows overlap on one board (from each round's measured_at)."""
    windows = defaultdict(list)
    for r in records:
        if r["status"] == "ok":
            for rnd in r["latency_rounds"]:
                at = rnd["measured_at"]
                windows[rnd["board"]].append((dt.datetime.fromisoformat(at["start"]), dt.datetime.fromisoformat(at["end"])))
    assert set(windows) <= {"pi-a", "pi-b"} and windows
    for board, spans in windows.items():
        spans.sort()
        for (_s0, e0), (s1, _e1) in zip(spans, spans[1:]):
            assert e0 <= s1, f"two measurements overlapped on {board}: {e0} > {s1}"


def test_a_six_variant_run_through_the_pool_survives_a_killed_worker(pool, tmp_path):
    exp = write_experiment(tmp_path, variants=SIX, **{'targets = ["local"]': 'targets = ["pi-a", "pi-b"]\nrounds = 2',
                                                      "min_runs = 20": "min_runs = 200"})
    runs = tmp_path / "runs"
    run = subprocess.Popen([*CLI, "run", str(exp), *pool["cluster"], "--out", str(runs), "--json"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = False
    deadline = time.monotonic() + 600
    while run.poll() is None and time.monotonic() < deadline:
        done = list(runs.glob("*/records.jsonl"))
        if not killed and done and any(r["target"] == "pi-a" for r in _records(done[0].parent)):
            pool["workers"]["pi-a"].send_signal(signal.SIGKILL)  # mid-run: pi-a has jobs queued
            killed = True
        time.sleep(0.2)
    out, err = run.communicate(timeout=60)
    assert killed, "the run finished before a pi-a record appeared"
    assert out.strip(), err[-3000:]
    run_dir = Path(json.loads(out)["run_dir"])
    records = _records(run_dir)
    keys = [(r["variant"], r["target"], r["runtime"]) for r in records]
    assert len(keys) == len(set(keys)) == 12, keys  # every (variant, device, runtime) exactly once
    lost = [r for r in records if r["status"] != "ok"]
    assert all(r["target"] == "pi-a" and r["error"].startswith("lost") for r in lost), lost
    assert all(r["board"] == r["target"] and r["measured_at"]["start"] < r["measured_at"]["end"]
               for r in records if r["status"] == "ok")
    _no_overlap(records)
    if lost:  # the killed board comes back; --resume measures only what was lost
        pool["start_worker"]("pi-a")
        wait_for_workers(pool["address"], pool["tls"], 2)
        again = subprocess.run([*CLI, "run", "--resume", str(run_dir), *pool["cluster"], "--json"],
                               capture_output=True, text=True, timeout=600)
        assert again.returncode == 0, again.stderr[-3000:]
        from edgebench.measure.records import latest, read_records

        final = latest(read_records(run_dir / "records.jsonl"))
        assert len(final) == 12 and all(r["status"] == "ok" for r in final)
        assert len(_records(run_dir)) == 12 + len(lost)  # the lost lines stay as history, nothing doubled
        _no_overlap(final)


def test_a_class_target_spreads_rounds_over_its_boards_and_profiles_there(both_boards, tmp_path):
    pool = both_boards
    exp = write_experiment(tmp_path, **{'targets = ["local"]': 'targets = ["loop"]\nrounds = 2\nprofile = 5'})
    run = subprocess.run([*CLI, "run", str(exp), *pool["cluster"], "--out", str(tmp_path / "runs"), "--json"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    run_dir = Path(json.loads(run.stdout)["run_dir"])
    records = _records(run_dir)
    assert {r["target"] for r in records} == {"loop"} and len(records) == 3
    boards = {rnd["board"] for r in records for rnd in r["latency_rounds"]}
    assert boards == {"pi-a", "pi-b"}  # 6 rounds sent at once, two free boards: both took some
    _no_overlap(records)
    for r in records:  # each variant timed beside the baseline in its rounds, on whichever board took them
        ratio = r["latency_ratio"]
        assert ratio["reference"] if r["variant"] == "baseline" else (ratio["paired"] and ratio["rounds"] == 2
                                                                      and all(x["ratio"] > 0 for x in r["latency_rounds"]))
    report = (run_dir / "report.md").read_text()
    assert "### Boards (device pool)" in report and "slowest / fastest" in report
    # [run] profile through the pool: each record links a profile measured on a board of the class
    for r in records:
        doc = json.loads((run_dir / r["profile"]).read_text())
        assert doc["status"] == "ok" and doc["measured"] and doc["rows"], doc.get("error")
    # edgebench profile --cluster: the same on the board that measured the record
    again = subprocess.run([*CLI, "profile", str(run_dir), "--variant", "int8", *pool["cluster"], "--runs", "5", "--json"],
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    rows = json.loads(again.stdout)
    assert rows and all(row["status"] == "ok" and row["variant"] == "int8" and not row["approximate"] for row in rows)


def test_a_board_that_stops_answering_leaves_the_pool_and_its_rounds_go_to_another(pool, tmp_path):
    """Class "flaky": pi-c on its own sshd, pi-d on pi-b's. pi-c's sshd stops after its worker
    joined: its first round fails to connect, pi-c is retired with the reason, every round is
    measured on pi-d, nothing is lost or doubled."""
    boards = {}
    with loopback_sshd(tmp_path / "sshd-c") as server:
        boards["pi-c"] = server.write_profile(tmp_path / "pi-c.toml")
        flaky = [pool["start_worker"]("pi-c", boards["pi-c"], "flaky"),
                 pool["start_worker"]("pi-d", pool["folder"] / "pi-b.toml", "flaky")]
        wait_for_workers(pool["address"], pool["tls"], 4)
    try:  # pi-c's sshd is gone now
        exp = write_experiment(tmp_path, **{'targets = ["local"]': 'targets = ["flaky"]\nrounds = 2'})
        run = subprocess.run([*CLI, "run", str(exp), *pool["cluster"], "--out", str(tmp_path / "runs"),
                              "--json"], capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr[-3000:]
        run_dir = Path(json.loads(run.stdout)["run_dir"])
        records = _records(run_dir)
        assert len(records) == 3 and all(r["status"] == "ok" and r["board"] == "pi-d" for r in records)
        assert any(r.get("retried_after") == ["pi-c"] for r in records)
        manifest = json.loads((run_dir / "manifest.json").read_text())
        assert "pi-c" in manifest["pool"]["removed"]
        assert "pi-c: taken out of the pool during the run" in (run_dir / "report.md").read_text()
    finally:
        for proc in flaky:
            stop(proc)


def test_an_unknown_target_is_a_config_error_before_any_work(pool, tmp_path):
    exp = write_experiment(tmp_path, **{'targets = ["local"]': 'targets = ["pi-z"]'})
    run = subprocess.run([*CLI, "run", str(exp), *pool["cluster"], "--out", str(tmp_path / "runs")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert "target 'pi-z': no worker in the pool serves it (boards and classes: loop, pi-a, pi-b)" in run.stderr
    assert not (tmp_path / "runs").exists()


def test_no_scheduler_and_an_unreachable_device_are_one_line_each_exit_2(tmp_path, sshd):
    exp = write_experiment(tmp_path)
    run = subprocess.run([*CLI, "run", str(exp), "--cluster", f"tcp://127.0.0.1:{free_port()}", "--out", str(tmp_path / "r")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "no Dask scheduler answers there" in run.stderr and not (tmp_path / "r").exists()
    profile = sshd.write_profile(tmp_path / "gone.toml", port=free_port())  # nothing listens there
    worker = subprocess.run([*CLI, "worker", "--scheduler", "tcp://127.0.0.1:1", "--target", str(profile)],
                            capture_output=True, text=True, timeout=120)
    assert worker.returncode == 2 and worker.stderr.startswith("edgebench: error: target 'gone' is not usable")

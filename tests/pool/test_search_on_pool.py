"""`edgebench search --cluster`: trials built in a `--jobs` process and measured as pool jobs on the
boards of a class (two at a time, one per board), the confirmation round on one board, all over TLS; a resumed search finds
the same pool. (Resuming the study itself: tests/search/test_search.py.)"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("distributed", reason="dask distributed is not installed (pip install 'edgebench[pool]')")
pytest.importorskip("optuna", reason="Optuna is not installed (pip install 'edgebench[search]')")

from conftest import write_experiment  # noqa: E402

from .conftest import CLI  # noqa: E402

# A grid of 3 points: the baseline's chain, and two to measure, confirmed together with the baseline.
GRID = """
[search]
sampler = "grid"
[search.space.prune]
kinds = ["none"]
finetune_epochs = [0, 0]
lr_scale = [1.0, 1.0]
skip_sensitive = [false]
[search.space.lowrank]
use = [false]
[search.space.quantize]
schemes = ["none", "fp16", "int8_static"]
"""


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "records.jsonl").read_text().splitlines() if line.strip()]


def test_a_search_on_a_class_measures_trials_on_both_boards_and_confirms_on_one(both_boards, tmp_path):
    pool = both_boards
    exp = write_experiment(tmp_path, variants=GRID, **{'targets = ["local"]': 'targets = ["loop"]\nrounds = 2'})
    # --jobs 1: the trials are built in a local build process (the boards have no --cpu worker)
    run = subprocess.run([*CLI, "search", str(exp), *pool["cluster"], "--jobs", "1", "--trials", "3", "--max-drop", "50",
                          "--out", str(tmp_path / "runs"), "--json"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout)
    run_dir = Path(out["run_dir"])
    records = _records(run_dir)
    trials = [r for r in records if r.get("trial") is not None]
    assert out["trials"] == 3 and out["device_trials"] == len(trials) == 2
    assert all(r["status"] == "ok" and r["target"] == "loop" for r in records)
    boards = {rnd["board"] for r in trials for rnd in r["latency_rounds"]}
    assert boards == {"pi-a", "pi-b"}  # two boards, two trials at a time: both measured trials
    confirmed = out["confirmed_p50_ms"]
    assert set(confirmed) == {"baseline", *(r["variant"] for r in trials)}
    assert out["confirmed_on"] in ("pi-a", "pi-b")  # every confirming round on one device
    assert confirmed[out["best"]["variant"]] <= min(v for k, v in confirmed.items() if k != "baseline")
    # --resume goes back to the same pool: the run's [run] keeps --cluster and --tls (not the keys).
    from edgebench.config import resumed_experiment
    from edgebench.pool import add_pool_arguments, with_pool_arguments

    parser = argparse.ArgumentParser()
    add_pool_arguments(parser)
    resumed = with_pool_arguments(resumed_experiment(run_dir), parser.parse_args([])).run
    assert (resumed.cluster, resumed.tls) == (pool["address"], str(pool["tls"]))

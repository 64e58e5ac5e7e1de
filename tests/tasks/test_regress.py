"""A regressor (lower is better) through a run: MAE on the runtime's outputs, the Pareto front and
charts the right way up, and the gate's budget in the metric's units."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytestmark = [pytest.mark.slow]

MODEL = '''
from torch import nn

def mlp(num_classes=1):
    return nn.Sequential(nn.Linear(6, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, num_classes))
'''


def test_a_regressor_is_judged_by_mae_lower_better(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((800, 6)).astype(np.float32)
    y = (np.sin(x[:, 0]) + x[:, 1] * x[:, 2] + 0.05 * rng.standard_normal(800)).astype(np.float32)
    np.savez(tmp_path / "sensors.npz", x=x, y=y)
    (tmp_path / "mynet.py").write_text(MODEL)
    (tmp_path / "experiment.toml").write_text("""
name = "regress"
[model]
factory = "mynet:mlp"
[data]
source = "sensors.npz"
[task]
kind = "regress"
[train]
epochs = 30
lr = 0.003
optimizer = "adam"
threads = 1
[[variant]]
name = "int8"
steps = [{ method = "quantize", scheme = "int8_static" }]
[[variant]]
name = "slim"
steps = [{ method = "prune", kind = "structured", ratio = 0.5, finetune_epochs = 5 }]
[run]
targets = ["local"]
runtimes = ["onnxruntime"]
warmup = 1
min_runs = 5
min_seconds = 0.0
rounds = 1
""")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "edgebench", "run", "experiment.toml", "--out", "runs", "--json"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / json.loads(proc.stdout)["run_dir"]
    records = {r["variant"]: r for r in map(json.loads, (run / "records.jsonl").read_text().splitlines())}
    base = records["baseline"]["metric"]
    assert base["name"] == "mae" and base["higher_is_better"] is False and base["n"] == 160
    assert base["value"] < 0.5 * np.abs(y - y.mean()).mean()  # it learned: well under the mean's MAE
    for r in records.values():
        assert r["status"] == "ok" and r["accuracy"] is None and r["metric"]["ci95"][0] <= r["metric"]["value"]
    # Lower is better: a worse variant has a positive difference, and the budget counts it as a drop.
    (tmp_path / "budget.toml").write_text('[[budget]]\nvariant = "*"\nmax_metric_drop = 1e-9\n')
    worse = [v for v, r in records.items() if v != "baseline" and r["metric"]["delta"] > 1e-9]
    check = subprocess.run([sys.executable, "-m", "edgebench", "--json", "check", str(run), "--budget", "budget.toml"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    verdicts = {c["variant"]: c["verdict"] for c in json.loads(check.stdout)["checks"] if c["metric"] == "metric.drop"}
    assert {v for v, verdict in verdicts.items() if verdict == "FAIL"} == set(worse)
    assert check.returncode == (1 if worse else 0)
    assert (run / "plots" / "accuracy_vs_size.png").is_file() and "| mae |" in (run / "report.md").read_text()

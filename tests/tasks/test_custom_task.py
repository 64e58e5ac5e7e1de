"""The user's own task: an anomaly detector (an autoencoder) judged by the user's `evaluate` (ROC
AUC of the reconstruction error) and trained with the user's `loss` (MSE reconstruction), both
written in the user's module — through a run, the regression gate's budgets and the search."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.slow]

HERE = Path(__file__).resolve().parent
USER_TASK = '''
import numpy as np
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score


def auc(outputs, targets, inputs):
    """Anomaly score = the autoencoder's reconstruction error; AUC against the labels."""
    error = ((outputs[0] - inputs[0]) ** 2).mean(axis=1)
    return roc_auc_score(targets, error)


def reconstruction(outputs, inputs):
    return F.mse_loss(outputs[0], inputs[0])
'''


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> dict:
    from user_nets import make_data

    folder = tmp_path_factory.mktemp("anomaly")
    shutil.copy(HERE / "user_nets.py", folder / "user_nets.py")
    (folder / "mytask.py").write_text(USER_TASK)
    np.savez(folder / "machines.npz", **make_data("autoenc", n=600, n_test=200))
    (folder / "experiment.toml").write_text("""
name = "anomaly"
seed = 0
[model]
factory = "user_nets:autoenc"
[data]
source = "machines.npz"
[train]
epochs = 8
lr = 0.003
optimizer = "adam"
batch_size = 32
threads = 1
[task]
evaluate = "mytask:auc"
loss = "mytask:reconstruction"
metric = "auc"
higher_is_better = true
resamples = 200
[[variant]]
name = "int8"
steps = [{ method = "quantize", scheme = "int8_static" }]
[[variant]]
name = "slim"
steps = [{ method = "prune", kind = "structured", ratio = 0.5, finetune_epochs = 2 }]
[[variant]]
name = "kd"
steps = [{ method = "distill", kind = "logits", epochs = 4 }]
[run]
targets = ["local"]
runtimes = ["onnxruntime", "openvino"]
threads = 1
warmup = 1
min_runs = 5
min_seconds = 0.0
rounds = 1
timeout_s = 120
""")
    env = {**os.environ, "PYTHONPATH": str(folder)}
    proc = subprocess.run([sys.executable, "-m", "edgebench", "run", "experiment.toml", "--out", "runs", "--json"],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = folder / json.loads(proc.stdout)["run_dir"]  # relative to the folder (or absolute: / keeps it)
    records = {(r["variant"], r["runtime"]): r for r in map(json.loads, (run / "records.jsonl").read_text().splitlines())}
    return {"folder": folder, "run": run, "records": records, "env": env}


def edgebench(project: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgebench", *args], cwd=project["folder"], env=project["env"],
                          capture_output=True, text=True, timeout=900)


def test_every_record_carries_the_users_metric_with_its_interval(project):
    records = project["records"]
    assert {v for v, _ in records} == {"baseline", "int8", "slim", "kd", "kd-nokd"}
    for (variant, runtime), r in records.items():
        assert r["status"] == "ok", (variant, runtime, r["error"])
        m = r["metric"]
        assert m["name"] == "auc" and m["higher_is_better"] is True and m["n"] == 200
        assert m["ci95"][0] <= m["value"] <= m["ci95"][1] and 0 <= m["value"] <= 1
        assert r["accuracy"] is None  # not a classifier: no top-1 pretending to be one
        assert set(r["fidelity"]) == {"logits"} and r["fidelity"]["logits"]["cosine"] is not None
        if variant != "baseline":
            assert m["delta"] == pytest.approx(m["value"] - records[("baseline", runtime)]["metric"]["value"])
            assert m["delta_ci95"][0] <= m["delta"] <= m["delta_ci95"][1] and 0 < m["delta_p"] <= 1
    assert records[("baseline", "onnxruntime")]["metric"]["value"] >= 0.9  # anomalies are off the normal subspace
    report = (project["run"] / "report.md").read_text()
    header = next(line for line in report.splitlines() if line.startswith("| front"))
    assert "| auc |" in header and "| Δ auc |" in header and "accuracy" not in header  # the table speaks the metric


def test_budgets_speak_the_metric(project, tmp_path):
    loose, strict = tmp_path / "loose.toml", tmp_path / "strict.toml"
    loose.write_text('[[budget]]\nvariant = "*"\nmax_metric_drop = 0.5\nmin_metric = 0.5\n')
    strict.write_text('[[budget]]\nvariant = "*"\nmin_metric = 1.01\n')
    ok = edgebench(project, "--json", "check", str(project["run"]), "--budget", str(loose))
    assert ok.returncode == 0, ok.stdout[-2000:] + ok.stderr[-2000:]
    checks = json.loads(ok.stdout)["checks"]
    assert {c["metric"] for c in checks} >= {"metric.value", "metric.drop"}
    fail = edgebench(project, "--json", "check", str(project["run"]), "--budget", str(strict))
    assert fail.returncode == 1
    assert all(c["verdict"] == "FAIL" for c in json.loads(fail.stdout)["checks"] if c["metric"] == "metric.value")


def test_the_search_budgets_the_drop_in_the_metrics_units(project):
    proc = edgebench(project, "--json", "search", "experiment.toml", "--target", "local", "--runtime", "onnxruntime",
                     "--max-drop", "0.05", "--minimize", "size", "--trials", "3", "--out", "search-runs")
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["budgets"]["accuracy_drop_pt"] == 0.05 and out["trials"] == 3
    run = project["folder"] / out["run_dir"]
    trials = [json.loads(line) for line in (run / "records.jsonl").read_text().splitlines()]
    assert all(r["metric"]["name"] == "auc" for r in trials if r["status"] == "ok")
    if out["best"]:  # within the AUC budget, measured on the device's runtime
        base = out["baseline"]["metric"]["value"]
        assert out["best"]["metrics"]["metric"]["value"] >= base - 0.05 - 1e-9

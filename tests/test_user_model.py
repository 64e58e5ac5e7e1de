"""A user's own model, trained outside edgebench, is measured as the user measured it.

The user's story (issue 9): a small CNN trained in plain torch on 8x8 digits scaled to [0, 1],
given as `factory = "usernet:build"` (a module on PYTHONPATH) plus a checkpoint, with its data
as a .npz. edgebench must not change its inputs unasked, must say how the weights score in
torch, must warn loudly when the inputs are not what the model was trained on, and must
never run code from a weights file.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edgebench.measure.records import read_records

pytestmark = pytest.mark.slow

USERNET = """
import torch
from torch import nn


class UserNet(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        )
        self.classifier = nn.Linear(32 * 4 * 4, num_classes)

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


def build(num_classes: int = 10) -> nn.Module:
    return UserNet(num_classes)
"""

EXPERIMENT = """
name = "user"
seed = 0

[model]
factory = "usernet:build"
weights = "{weights}"

[data]
source = "{data}"
{data_extra}

[train]
threads = 1

{variants}

[run]
targets = ["local"]
runtimes = ["onnxruntime"]
threads = 1
warmup = 2
min_runs = 10
min_seconds = 0.0
rounds = 1
timeout_s = 60
"""

FP16 = '[[variant]]\nname = "fp16"\nsteps = [{ method = "quantize", scheme = "fp16" }]\n'


class RunsCode:
    """What a malicious weights file holds: unpickling it would run a shell command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _train_user_model(folder: Path, standardize: bool) -> dict:
    """What the user does outside edgebench: train in plain torch, save a checkpoint and the data."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    spec = importlib.util.spec_from_file_location("usernet", folder / "usernet.py")
    usernet = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(usernet)
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]  # the user's preprocessing: [0, 1]
    x_train, x_test, y_train, y_test = train_test_split(
        x, digits.target, test_size=0.2, random_state=1, stratify=digits.target
    )
    mean, std = float(x_train.mean()), float(x_train.std())

    def prepare(a):
        return (a - mean) / std if standardize else a

    torch.manual_seed(0)
    model = usernet.build()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xs, ys = torch.from_numpy(prepare(x_train)), torch.from_numpy(y_train)
    gen = torch.Generator().manual_seed(0)
    for _ in range(15):
        model.train()
        for idx in torch.randperm(len(xs), generator=gen).split(64):
            loss = torch.nn.functional.cross_entropy(model(xs[idx]), ys[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(torch.from_numpy(prepare(x_test))).argmax(1).numpy() == y_test).mean())
    name = "standardized" if standardize else "unit"
    weights = folder / f"{name}.pt"
    # The usual checkpoint shape of a training script, not a bare state dict.
    torch.save({"epoch": 15, "model_state_dict": model.state_dict(), "optimizer_state_dict": opt.state_dict()}, weights)
    return {
        "weights": weights,
        "accuracy": accuracy,
        "mean": mean,
        "std": std,
        "n_test": len(y_test),
        "x_train": x_train,
        "y_train": y_train,
        "x_test": x_test,
        "y_test": y_test,
    }


@pytest.fixture(scope="module")
def user(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("user")
    (folder / "usernet.py").write_text(USERNET)
    unit = _train_user_model(folder, standardize=False)
    np.savez(
        folder / "digits.npz",
        x_train=unit["x_train"],
        y_train=unit["y_train"],
        x_test=unit["x_test"],
        y_test=unit["y_test"],
    )
    # The same images as raw 0..16 pixel values, the way sklearn ships them.
    np.savez(
        folder / "digits16.npz",
        x_train=unit["x_train"] * 16,
        y_train=unit["y_train"],
        x_test=unit["x_test"] * 16,
        y_test=unit["y_test"],
    )
    return {"folder": folder, "unit": unit, "standardized": _train_user_model(folder, standardize=True)}


def edgebench(
    user: dict, *args: str, weights: Path, data: str = "digits.npz", data_extra: str = "", variants: str = ""
) -> subprocess.CompletedProcess:
    folder = user["folder"]
    exp = folder / "experiment.toml"
    exp.write_text(EXPERIMENT.format(weights=weights, data=data, data_extra=data_extra, variants=variants))
    env = {**os.environ, "PYTHONPATH": str(folder)}  # where the user's module lives
    command = [sys.executable, "-m", "edgebench", *args, str(exp), "--out", str(folder / "results")]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=folder.parent)


def test_the_baseline_scores_what_the_user_measured(user):
    unit = user["unit"]
    assert unit["accuracy"] >= 0.95  # the user's own torch measurement
    before = set((user["folder"] / "results").glob("*")) if (user["folder"] / "results").exists() else set()
    proc = edgebench(user, "run", weights=unit["weights"], variants=FP16)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = set((user["folder"] / "results").glob("*")) - before
    records = {r["variant"]: r for r in read_records(run_dir / "records.jsonl")}
    base = records["baseline"]
    assert base["status"] == "ok" and base["n_eval"] == unit["n_test"] == 360
    # On onnxruntime, on the user's own test inputs, as the user measured it in torch.
    assert abs(base["accuracy"] - unit["accuracy"]) <= 0.005, (base["accuracy"], unit["accuracy"])
    assert abs(records["fp16"]["accuracy"] - unit["accuracy"]) <= 0.01
    # The torch score of the given weights is reported first, and nothing is wrong with them.
    assert f"baseline: your weights score {unit['accuracy']:.1%} in torch on 360 test inputs" in proc.stderr
    assert "WARNING" not in proc.stderr
    # The inputs reached the model unchanged (no standardization unasked).
    np.testing.assert_array_equal(np.load(run_dir / "eval.npz")["x"], unit["x_test"])


def test_weights_that_would_run_code_are_refused(user, tmp_path):
    marker = tmp_path / "pwned"
    for weights, save in ((tmp_path / "evil.pt", torch.save), (tmp_path / "evil.pkl", None)):
        if save is not None:
            save(RunsCode(marker), weights)
        else:
            import pickle

            weights.write_bytes(pickle.dumps(RunsCode(marker), protocol=2))
        proc = edgebench(user, "--quiet", "compress", weights=weights)
        assert proc.returncode == 2, proc.stderr[-2000:]
        error = proc.stderr.strip().splitlines()
        assert len(error) == 1 and error[0].startswith("edgebench: error: weights"), proc.stderr
        assert "refused" in error[0] and "torch.save(model.state_dict()" in error[0], error[0]
        assert not marker.exists()  # nothing ran


def test_inputs_on_another_scale_are_warned_about_even_when_quiet(user):
    # Weights trained on [0, 1], data given as sklearn's raw 0..16 values. This BatchNorm CNN
    # still scores well above chance on them (95.8% measured), so the warning comes from its
    # first BatchNorm layer, whose inputs now spread ~16x wider than in training.
    proc = edgebench(user, "--quiet", "compress", weights=user["unit"]["weights"], data="digits16.npz")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "edgebench: WARNING" in proc.stderr and "first BatchNorm (features.1)" in proc.stderr
    assert 'normalize (now "none")' in proc.stderr and "channel order" in proc.stderr


def test_a_missing_normalize_is_near_chance_and_warned(user):
    standardized = user["standardized"]
    assert standardized["accuracy"] >= 0.95  # with the preprocessing it was trained with
    proc = edgebench(user, "--quiet", "compress", weights=standardized["weights"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "near chance" in proc.stderr and 'normalize (now "none")' in proc.stderr, proc.stderr
    # Declaring the user's preprocessing gives the score back, with no warning.
    declared = f"normalize = {{ mean = [{standardized['mean']}], std = [{standardized['std']}] }}"
    proc = edgebench(user, "compress", weights=standardized["weights"], data_extra=declared)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"your weights score {standardized['accuracy']:.1%} in torch" in proc.stderr
    assert "WARNING" not in proc.stderr

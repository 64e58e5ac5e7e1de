"""A trained baseline is cached by what the model is, not only by what it is called."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_experiment

pytestmark = pytest.mark.slow

MODEL = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, num_classes=10, in_channels=1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 8, 3, padding=1)
        {extra}
        self.head = nn.Linear(8, num_classes)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        {use}
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(h, 1), 1))


def build(num_classes=10, in_channels=1):
    return Net(num_classes, in_channels)
"""


def _run(folder: Path, out: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgebench", "run", "experiment.toml", "--out", out],
                          cwd=folder, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(folder)})  # fmt: skip


def test_an_edited_model_under_the_same_name_is_trained_again_not_loaded_from_the_cache(tmp_path):
    write_experiment(tmp_path, variants="", **{'factory = "demo_cnn"': 'factory = "usernet:build"',
                                               "kwargs = { width = 0.25 }": ""})  # fmt: skip
    (tmp_path / "usernet.py").write_text(MODEL.format(extra="", use=""))
    first = _run(tmp_path, "a")
    assert first.returncode == 0, first.stderr[-2000:]
    again = _run(tmp_path, "b")
    assert again.returncode == 0 and "loaded trained weights from cache" in again.stderr
    # The user adds a layer (its weights would not load) and uses it in forward.
    (tmp_path / "usernet.py").write_text(MODEL.format(extra="self.mix = nn.Conv2d(8, 8, 1)", use="h = h + self.mix(h)"))
    edited = _run(tmp_path, "c")
    assert edited.returncode == 0, edited.stderr[-2000:]
    assert "loaded trained weights from cache" not in edited.stderr and "baseline: epoch" in edited.stderr
    # Only the forward changes: the same weights would load, but they were trained for another net.
    (tmp_path / "usernet.py").write_text(MODEL.format(extra="self.mix = nn.Conv2d(8, 8, 1)", use="h = h * 2"))
    forward = _run(tmp_path, "d")
    assert forward.returncode == 0 and "loaded trained weights from cache" not in forward.stderr

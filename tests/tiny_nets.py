"""A tiny task and a tiny net with every layer kind the compression steps must handle.

Used by test_prune, test_cluster, test_qat and test_sensitivity. The net's names are nothing
like the built-ins' and its head is registered first but runs last, so a step that relies on
names or module order fails here.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from edgebench.config import TrainConfig
from edgebench.model.data import Dataset
from edgebench.model.train import fit

N_CLASSES = 4
TRAIN = TrainConfig(epochs=6, lr=0.05, batch_size=32, threads=1)


def tiny_data(seed: int = 0, n_train: int = 192, n_test: int = 96, size: int = 8) -> Dataset:
    """4 classes, 1×size×size inputs: a bright patch in the class's quadrant, plus noise."""
    rng = np.random.default_rng(seed)

    def make(n: int):
        y = rng.integers(0, N_CLASSES, n)
        x = rng.normal(0, 0.5, (n, 1, size, size)).astype(np.float32)
        h = size // 2
        for i, c in enumerate(y):
            x[i, 0, (c // 2) * h : (c // 2 + 1) * h, (c % 2) * h : (c % 2 + 1) * h] += 1.5
        return x, y.astype(np.int64)

    x_train, y_train = make(n_train)
    x_calib, _ = make(32)
    x_test, y_test = make(n_test)
    return Dataset(
        x_train=x_train, y_train=y_train, x_calib=x_calib, x_test=x_test, y_test=y_test,
        num_classes=N_CLASSES, mean=np.zeros(1), std=np.ones(1), classes=[str(i) for i in range(N_CLASSES)],
    )  # fmt: skip


class TinyNet(nn.Module):
    """Conv-BN-SiLU stem, a depthwise + grouped-conv block with Hardswish and a residual add,
    a strided conv, global pool and a Linear head (registered first, runs last)."""

    def __init__(self, num_classes: int = N_CLASSES, in_channels: int = 1, c: int = 16):
        super().__init__()
        self.out = nn.Linear(2 * c, num_classes)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.SiLU()
        )
        self.mix = nn.Sequential(
            nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False), nn.BatchNorm2d(c), nn.Hardswish(),
            nn.Conv2d(c, c, 1, groups=2, bias=False), nn.BatchNorm2d(c),
        )  # fmt: skip
        self.down = nn.Sequential(
            nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), nn.BatchNorm2d(2 * c), nn.ReLU()
        )
        self.hidden = nn.Linear(2 * c, 2 * c)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.mix(x))
        x = self.down(x).mean(dim=(2, 3))
        return self.out(torch.relu(self.hidden(x)))


class NoBatchNormNet(nn.Module):
    """Convs and Linear layers only (for steps that need BatchNorm)."""

    def __init__(self, num_classes: int = N_CLASSES):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()
        )
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.fc(self.body(x).mean(dim=(2, 3)))


_TRAINED: dict[str, nn.Module] = {}


def trained_tiny(data: Dataset, cls: type = TinyNet) -> nn.Module:
    """A trained copy of `cls` on `data` (trained once per process, ~1 s)."""
    key = f"{cls.__name__}-{data.fingerprint()}"
    if key not in _TRAINED:
        torch.manual_seed(0)
        _TRAINED[key] = fit(cls(), data, TRAIN, seed=0).eval()
    return copy.deepcopy(_TRAINED[key])


def state_equal(a: nn.Module, b: nn.Module) -> bool:
    """Same keys and bit-identical tensors (to check a step left its input untouched)."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)

"""The zoo's data sets: small, offline, seeded, each hard enough that a compressed net's drop shows.

- `digits`: scikit-learn's 8x8 digits, shifted by up to one pixel on a 10x10 canvas, with
  Gaussian noise (1 x 10 x 10, 10 classes); split by source image.
- `digits8`: the same digits as they are (1 x 8 x 8), with heavier noise: the ViT's (it
  learns too slowly on the shifted ones for this budget).
- `shapes`: 10 classes of noisy coloured shapes and textures (3 x 16 x 16), from
  benchmarks/prune_vs_reference.py.
- `kws`: keyword-spotting-like spectrogram frames (1 x 49 x 10, 12 classes): each keyword its
  own ripple across frequency and time, buried in noise (tests/tasks/user_nets.py's, noisier).
- `signal`: 1-D signals (1 x 128, 6 classes): a tone of the class's frequency at a random
  phase, with noise and a random second tone.

Every set is a `Dataset` with the classify task, 128 calibration inputs, and as many training
inputs as the zoo's time budget allows (`N_TRAIN`).
"""

from __future__ import annotations

import functools

import numpy as np

from edgebench.model.data import Dataset
from edgebench.tasks import make_task

N_TRAIN = 1000
N_TEST = 500
N_CALIB = 128


def _dataset(x: np.ndarray, y: np.ndarray, n_classes: int, source: str) -> Dataset:
    """Train / calibration / test splits of (x, y), in order; x float32, y int64."""
    x, y = x.astype(np.float32), y.astype(np.int64)
    a, b = len(x) - N_TEST - N_CALIB, len(x) - N_TEST
    return Dataset(
        x_train=x[:a], y_train=y[:a], x_calib=x[a:b], y_calib=y[a:b], x_test=x[b:], y_test=y[b:],
        num_classes=n_classes, mean=np.zeros(x.shape[1]), std=np.ones(x.shape[1]),
        classes=[str(i) for i in range(n_classes)], source=source, task=make_task(),
    )  # fmt: skip


def digits() -> Dataset:
    from sklearn.datasets import load_digits

    rng = np.random.default_rng(0)
    d = load_digits()
    order = rng.permutation(len(d.target))
    images, y = d.images[order] / 16.0, d.target[order]
    x = np.zeros((len(y), 1, 10, 10), np.float32)
    for i, img in enumerate(images):
        dy, dx = rng.integers(0, 3, 2)
        x[i, 0, dy : dy + 8, dx : dx + 8] = img
    x += rng.normal(0, 0.15, x.shape)
    n = min(len(y), N_TRAIN + N_CALIB + N_TEST)
    return _dataset((x[:n] - 0.2) / 0.45, y[:n], 10, "digits (shifted, noisy)")


def digits8() -> Dataset:
    from sklearn.datasets import load_digits

    rng = np.random.default_rng(0)
    d = load_digits()
    order = rng.permutation(len(d.target))[: N_TRAIN + N_CALIB + N_TEST]
    x = (d.images[order, None] / 16.0 - 0.3) / 0.4
    return _dataset(x + rng.normal(0, 0.5, x.shape), d.target[order], 10, "digits 8x8 (noisy)")


def shapes(size: int = 12, noise: float = 0.15) -> Dataset:
    """prune_vs_reference.py's shapes and textures at `size` x `size` (stripes in four
    directions, checkerboard, disc, ring, square outline, cross, dot grid)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)

    def wave(t: np.ndarray, period: float, phase: float) -> np.ndarray:
        return np.sin(2 * np.pi * t / period + phase)

    def pattern(c: int) -> np.ndarray:
        period, phase = rng.uniform(3.0, 5.0), rng.uniform(0, 2 * np.pi)
        cy, cx = rng.uniform(size / 2 - 2, size / 2 + 2, 2)
        r, w = rng.uniform(2.5, size / 2 - 1), rng.uniform(1.0, 1.8)
        dy, dx = np.abs(yy - cy), np.abs(xx - cx)
        masks = [
            lambda: wave(yy, period, phase) > 0, lambda: wave(xx, period, phase) > 0,
            lambda: wave(xx + yy, period * 1.41, phase) > 0, lambda: wave(xx - yy, period * 1.41, phase) > 0,
            lambda: (wave(xx, period, phase) > 0) ^ (wave(yy, period, phase) > 0),
            lambda: dy**2 + dx**2 < r**2, lambda: np.abs(np.sqrt(dy**2 + dx**2) - r) < w * 0.7,
            lambda: (np.maximum(dy, dx) < r) & (np.maximum(dy, dx) > r - w),
            lambda: ((dy < w) & (dx < r)) | ((dx < w) & (dy < r)),
            lambda: (wave(xx, period, phase) > 0.5) & (wave(yy, period, phase) > 0.5),
        ]  # fmt: skip
        return masks[c]().astype(np.float32)

    n = N_TRAIN + N_CALIB + N_TEST
    y = rng.integers(0, 10, n)
    x = np.empty((n, 3, size, size), np.float32)
    for i, c in enumerate(y):
        bg = rng.uniform(0.2, 0.8, 3)
        delta = rng.normal(0, 1, 3)
        delta *= rng.uniform(0.35, 0.7) * np.sqrt(3) / np.linalg.norm(delta)
        x[i] = bg[:, None, None] + delta[:, None, None] * pattern(c)[None] + rng.normal(0, noise, (3, size, size))
    return _dataset((x - 0.5) / 0.5, y, 10, f"shapes {size}x{size}")


def kws() -> Dataset:
    rng = np.random.default_rng(0)
    n = N_TRAIN + N_CALIB + N_TEST
    y = rng.integers(0, 12, n)
    rows, cols = np.arange(49)[:, None], np.arange(10)[None, :]
    x = rng.normal(0, 1.5, (n, 1, 49, 10))
    for i, c in enumerate(y):  # each keyword: its own ripple across frequency and time
        f_row, f_col, shift = 0.05 + 0.07 * (c % 6), 0.1 + 0.2 * (c // 6), rng.uniform(0, 2 * np.pi)
        amp = rng.uniform(0.4, 1.0)
        x[i, 0] += amp * np.sin(2 * np.pi * (f_row * rows + f_col * cols) + shift)
    return _dataset(x, y, 12, "kws frames")


def signal() -> Dataset:
    rng = np.random.default_rng(0)
    n = N_TRAIN + N_CALIB + N_TEST
    y = rng.integers(0, 6, n)
    t = np.arange(128) / 128
    phase = rng.uniform(0, 2 * np.pi, (n, 1))
    other = rng.uniform(2, 26, (n, 1))
    x = (np.sin(2 * np.pi * (4 + 3 * y[:, None]) * t + phase) + 0.6 * np.sin(2 * np.pi * other * t)
         + rng.normal(0, 1.2, (n, 128)))  # fmt: skip
    return _dataset(x[:, None], y, 6, "signals")


SETS = {"digits": digits, "digits8": digits8, "shapes": shapes, "kws": kws, "signal": signal}


@functools.cache
def load(name: str) -> Dataset:
    return SETS[name]()

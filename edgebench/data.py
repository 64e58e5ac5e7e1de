"""Data: the built-in digits images, a .npz of arrays, or an image folder; fixed splits.

    >>> data = load_data(DataConfig(source="digits", image_size=32), seed=0)
    >>> data.x_train.shape, data.x_calib.shape, data.x_test.shape
    ((1309, 1, 32, 32), (128, 1, 32, 32), (360, 1, 32, 32))

Inputs are float32 NCHW, normalized with the training split's per-channel mean and std; the
same normalized arrays go to training, calibration and every runtime, so every runtime sees
the inputs torch saw.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgebench.config import DataConfig
from edgebench.errors import ConfigError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


@dataclass
class Dataset:
    x_train: np.ndarray
    y_train: np.ndarray
    x_calib: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    mean: np.ndarray
    std: np.ndarray
    classes: list
    y_calib: np.ndarray | None = None  # labels of the calibration split, where known

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def fingerprint(self) -> str:
        """A hash of the arrays, for caching what was trained on them."""
        h = hashlib.sha256()
        for a in (self.x_train, self.y_train, self.x_test):
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()[:16]

    def save_eval(self, path: Path) -> Path:
        """The .npz the runner reads: test inputs `x` and labels `y`."""
        np.savez(path, x=self.x_test, y=self.y_test)
        return path


def _resize(x: np.ndarray, size: int | None) -> np.ndarray:
    if size is None or x.shape[-1] == size and x.shape[-2] == size:
        return x
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        t = F.interpolate(torch.from_numpy(x), size=(size, size), mode="bilinear", align_corners=False)
    return t.numpy()


def _digits() -> tuple[np.ndarray, np.ndarray, list]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images[:, None].astype(np.float32) / 16.0, d.target.astype(np.int64), [str(i) for i in range(10)]


def _npz(path: Path) -> tuple:
    try:
        z = np.load(path)
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"data {path}: cannot be read as .npz ({exc})") from None
    need = {"x_train", "y_train", "x_test", "y_test"}
    missing = need - set(z.files)
    if missing:
        raise ConfigError(f"data {path}: missing arrays {sorted(missing)}; a .npz needs x_train, y_train, x_test, y_test")
    out = []
    for key in ("x_train", "x_test"):
        x = z[key].astype(np.float32)
        if x.ndim == 3:
            x = x[:, None]
        if x.ndim != 4:
            raise ConfigError(f"data {path}: {key} must be N×C×H×W or N×H×W, got shape {x.shape}")
        out.append(x)
    classes = sorted(set(z["y_train"].tolist()) | set(z["y_test"].tolist()))
    return out[0], z["y_train"].astype(np.int64), out[1], z["y_test"].astype(np.int64), [str(c) for c in classes]


def _image_folder(path: Path, size: int, grayscale: bool) -> tuple[np.ndarray, np.ndarray, list]:
    from PIL import Image

    classes = sorted(p.name for p in path.iterdir() if p.is_dir())
    if len(classes) < 2:
        raise ConfigError(f"data {path}: an image folder needs one sub-folder per class (found {len(classes)})")
    xs, ys = [], []
    for label, name in enumerate(classes):
        for f in sorted((path / name).iterdir()):
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            img = Image.open(f).convert("L" if grayscale else "RGB").resize((size, size))
            a = np.asarray(img, dtype=np.float32) / 255.0
            xs.append(a[None] if grayscale else a.transpose(2, 0, 1))
            ys.append(label)
    if not xs:
        raise ConfigError(f"data {path}: no images found (suffixes {sorted(IMAGE_SUFFIXES)})")
    return np.stack(xs), np.array(ys, dtype=np.int64), classes


def load_data(cfg: DataConfig, seed: int = 0) -> Dataset:
    """Load, split (seeded, stratified) and normalize the data an experiment names."""
    from sklearn.model_selection import train_test_split

    if cfg.source == "digits":
        x, y, classes = _digits()
        x = _resize(x, cfg.image_size)
        x_train, x_test, y_train, y_test = train_test_split(
            x, y, test_size=cfg.test_fraction, random_state=seed, stratify=y
        )
    else:
        path = Path(cfg.source).expanduser()
        if path.is_dir():
            x, y, classes = _image_folder(path, cfg.image_size or 32, cfg.grayscale)
            x_train, x_test, y_train, y_test = train_test_split(
                x, y, test_size=cfg.test_fraction, random_state=seed, stratify=y
            )
        elif path.suffix == ".npz":
            x_train, y_train, x_test, y_test, classes = _npz(path)
            x_train, x_test = _resize(x_train, cfg.image_size), _resize(x_test, cfg.image_size)
        else:
            raise ConfigError(f"data source {cfg.source!r}: expected \"digits\", a .npz file or an image folder")
    # Calibration data comes out of the training split, never from the test split.
    n_calib = min(cfg.calibration_size, len(x_train) // 4)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x_train))
    calib_idx, train_idx = order[:n_calib], order[n_calib:]
    mean = x_train[train_idx].mean(axis=(0, 2, 3), keepdims=True)
    std = x_train[train_idx].std(axis=(0, 2, 3), keepdims=True) + 1e-6

    def norm(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray((a - mean) / std, dtype=np.float32)

    num_classes = int(max(y_train.max(), y_test.max()) + 1)
    return Dataset(
        x_train=norm(x_train[train_idx]), y_train=y_train[train_idx],
        x_calib=norm(x_train[calib_idx]), y_calib=y_train[calib_idx], x_test=norm(x_test), y_test=y_test,
        num_classes=num_classes, mean=mean.ravel(), std=std.ravel(), classes=classes,
    )  # fmt: skip

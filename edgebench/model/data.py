"""Data: a built-in image set, a .npz of arrays, or an image folder; fixed splits; the user's preprocessing.

    >>> data = load_data(DataConfig(source="digits", image_size=32), seed=0)
    >>> data.x_train.shape, data.x_calib.shape, data.x_test.shape
    ((1309, 1, 32, 32), (128, 1, 32, 32), (360, 1, 32, 32))
    >>> data.describe()["normalize"]
    'none'

Inputs are float32 NCHW. Preprocessing is the user's and is never changed unasked:

- pixels of an image folder or a built-in set are mapped linearly onto `image_range`
  (default [0, 1]); a .npz's arrays are taken as they are;
- `normalize = "none"` (the default) applies nothing more; `"standardize"` subtracts the
  training split's per-channel mean and divides by its std; `{ mean = [..], std = [..] }`
  applies the given values (one per channel, or one for all).

The same arrays go to training, calibration and every runtime, so every runtime sees the
inputs torch saw. `Dataset.describe()` says what was applied (for the run's manifest).

Built-in sets (offline; scikit-learn ships the digits):

- `"digits"`: the 1,797 8x8 digits, plain (fast; what the tests' tiny experiments use).
- `"cluttered-digits"`: a harder, larger set generated from the same digits (see
  `cluttered_digits`), split by source image.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgebench.config import DataConfig
from edgebench.errors import ConfigError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
# Copies rendered per source digit. 20% of the 1,797 sources (360) x 5 = 1,800 test images:
# enough that a 1-point gap between two variants can be significant (McNemar), where the
# plain digits' 360 test images resolve single images. Train copies (1,437 sources x 3 =
# 4,311, less the calibration split) trade accuracy for the demo's training time.
CLUTTERED_TRAIN_COPIES = 3
CLUTTERED_TEST_COPIES = 5
CLUTTERED_SIZE = 20  # canvas side when [data] image_size is not given (the demo's)


@dataclass
class Dataset:
    x_train: np.ndarray
    y_train: np.ndarray
    x_calib: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    mean: np.ndarray  # what was subtracted per channel (zeros when normalize = "none")
    std: np.ndarray  # what was divided by per channel (ones when normalize = "none")
    classes: list
    y_calib: np.ndarray | None = None  # labels of the calibration split, where known
    normalize: str = "none"  # "none" | "standardize" | "given"
    image_range: tuple[float, float] | None = None  # pixels mapped onto it; None for a .npz
    source: str = ""
    notes: dict = field(default_factory=dict)  # facts of the source (e.g. how it was generated)

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

    def describe(self) -> dict:
        """What the model is fed, as plain data (the run's manifest keeps it).

        >>> load_data(DataConfig(normalize="standardize")).describe()["mean"]   # doctest: +SKIP
        [0.3046]
        """
        applied = self.normalize != "none"
        return {
            "source": self.source,
            "input_shape": list(self.input_shape),
            "image_range": list(self.image_range) if self.image_range else None,
            "normalize": self.normalize,
            "mean": [round(float(v), 6) for v in self.mean] if applied else None,
            "std": [round(float(v), 6) for v in self.std] if applied else None,
            "n_train": len(self.x_train),
            "n_calib": len(self.x_calib),
            "n_test": len(self.x_test),
            "classes": list(self.classes),
            **self.notes,
        }


def _resize(x: np.ndarray, size: int | None) -> np.ndarray:
    if size is None or x.shape[-1] == size and x.shape[-2] == size:
        return x
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        t = F.interpolate(torch.from_numpy(x), size=(size, size), mode="bilinear", align_corners=False)
    return t.numpy()


@functools.lru_cache(maxsize=1)
def _digit_sources() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 sklearn digits as (N, 8, 8) float32 in [0, 1] and their labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images / 16.0).astype(np.float32), d.target.astype(np.int64)


def _split_sources(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    # The same seeded, stratified split the plain digits always had.
    train, test = train_test_split(np.arange(len(y)), test_size=test_fraction, random_state=seed, stratify=y)
    return train, test


def _render(images: np.ndarray, matrices: np.ndarray, offsets: np.ndarray, size: int) -> np.ndarray:
    """Draw each (8, 8) image onto a size x size canvas through its affine map (bilinear).

    A canvas point p (in [-1, 1]², pixel centres) samples the image at matrices @ (p - offsets),
    image coordinates in [-1, 1]² across its 8 pixels; outside the image is 0.
    """
    import torch
    import torch.nn.functional as F

    # The sampling grid is four multiply-adds per pixel written out: for the ~18,000 canvases
    # (32x32) of one data set, torch's affine_grid (a batched 3x2 matmul) took 1.0 s and
    # numpy's einsum 6.6 s, this ~0.1 s (measured here); grid_sample's lookup adds ~0.15 s.
    centres = torch.arange(size, dtype=torch.float32).mul(2).add(1).div(size).sub(1)
    u, v = centres[None, None, :], centres[None, :, None]  # canvas x (across), y (down)
    m = torch.from_numpy(matrices.astype(np.float32))
    o = torch.from_numpy(offsets.astype(np.float32))
    du, dv = u - o[:, 0, None, None], v - o[:, 1, None, None]
    with torch.no_grad():
        x = m[:, 0, 0, None, None] * du + m[:, 0, 1, None, None] * dv
        y = m[:, 1, 0, None, None] * du + m[:, 1, 1, None, None] * dv
        grid = torch.stack([x, y], dim=-1)
        image = torch.from_numpy(images[:, None])
        out = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out[:, 0].numpy()


def _affines(
    rng: np.random.Generator, n: int, scale: tuple[float, float], rotation_deg: float, shear: float, shift: float
) -> tuple[np.ndarray, np.ndarray]:
    """n random canvas->image maps: inverse of (rotate · shear · scale), and canvas offsets."""
    theta = np.deg2rad(rng.uniform(-rotation_deg, rotation_deg, n))
    sx = rng.uniform(*scale, n)
    sy = sx * rng.uniform(0.85, 1.15, n)  # a little aspect change
    sh = rng.uniform(-shear, shear, n)
    cos, sin = np.cos(theta), np.sin(theta)
    # forward = R(theta) @ [[1, sh], [0, 1]] @ diag(sx, sy): image [-1,1]² -> canvas units
    fwd = np.empty((n, 2, 2))
    fwd[:, 0, 0], fwd[:, 0, 1] = cos * sx, (cos * sh - sin) * sy
    fwd[:, 1, 0], fwd[:, 1, 1] = sin * sx, (sin * sh + cos) * sy
    return np.linalg.inv(fwd), rng.uniform(-shift, shift, (n, 2))


def cluttered_digits(
    sources: np.ndarray,
    labels: np.ndarray,
    copies: int,
    size: int,
    rng: np.random.Generator,
    fragments: int = 2,
    rotation_deg: float = 15.0,
    clutter_brightness: tuple[float, float] = (0.3, 0.7),
    noise: tuple[float, float] = (0.02, 0.1),
) -> tuple[np.ndarray, np.ndarray]:
    """Render `copies` distorted, cluttered, noisy versions of each 8x8 source digit.

    Each image (size x size, uint8 0-255, like a camera's):
    1. the digit, drawn through a random affine map: box 45-70% of the canvas side, aspect
       +-15%, rotation +-`rotation_deg`, shear +-0.3, centre shifted up to 15% of the side;
    2. clutter: `fragments` pieces (a random 3-5 px window of another source of the same
       split, so no test image holds a piece of a training source), each rotated freely,
       40-75% of the canvas side, anywhere on it, at `clutter_brightness`, kept where brighter
       than the digit (max);
    3. contrast 0.6-1.0 over a background of 0-0.25, Gaussian noise of sigma in `noise`,
       clipped to [0, 1], stored as 8-bit pixels.

    With these defaults the demo CNN (4 epochs) scores 89.9% at 20x20 and 91.9% at 24x24,
    where plain digits give 99.4%; 3 fragments at 35-90% brightness, noise 0.04-0.14 and
    +-20 deg gave 87% at 24x24. Deterministic from `rng`. Vectorized (torch grid_sample): the
    demo's 6,111 images take ~0.25 s (sklearn's loader ~1.8 s more, once per process), so
    nothing is cached on disk; a process keeps its last four sets in memory.

        >>> x, y = cluttered_digits(*_digit_sources(), copies=1, size=32, rng=np.random.default_rng(0))
        >>> x.shape, x.dtype
        ((1797, 32, 32), dtype('uint8'))
    """
    n_src = len(sources)
    idx = np.repeat(np.arange(n_src), copies)
    n = len(idx)
    matrices, offsets = _affines(rng, n, scale=(0.45, 0.70), rotation_deg=rotation_deg, shear=0.3, shift=0.15)
    canvas = _render(sources[idx], matrices, offsets, size)
    for _ in range(fragments):
        other = rng.integers(0, n_src, n)
        other = np.where(other == idx, (other + 1) % n_src, other)  # never a piece of itself
        h, w = rng.integers(3, 6, n), rng.integers(3, 6, n)
        r0, c0 = rng.integers(0, 9 - h), rng.integers(0, 9 - w)
        rows, cols = np.arange(8)[None, :, None], np.arange(8)[None, None, :]
        in_rows = (rows >= r0[:, None, None]) & (rows < (r0 + h)[:, None, None])
        in_cols = (cols >= c0[:, None, None]) & (cols < (c0 + w)[:, None, None])
        window = in_rows & in_cols
        piece = sources[other] * window.astype(np.float32)
        m, o = _affines(rng, n, scale=(0.40, 0.75), rotation_deg=180, shear=0.3, shift=0.9)
        brightness = rng.uniform(*clutter_brightness, n).astype(np.float32)[:, None, None]
        canvas = np.maximum(canvas, brightness * _render(piece, m, o, size))
    contrast = rng.uniform(0.6, 1.0, n).astype(np.float32)[:, None, None]
    background = rng.uniform(0.0, 0.25, n).astype(np.float32)[:, None, None]
    sigma = rng.uniform(*noise, n).astype(np.float32)[:, None, None]
    image = background + contrast * canvas + sigma * rng.standard_normal(canvas.shape, dtype=np.float32)
    # Stored as 8-bit pixels, like a real image: ulp-level float differences between CPUs
    # cannot change the data set (and so the cached baseline).
    return np.clip(np.rint(image * 255), 0, 255).astype(np.uint8), labels[idx]


@functools.lru_cache(maxsize=4)
def _cluttered_split(size: int, test_fraction: float, seed: int) -> tuple[np.ndarray, ...]:
    """Train/test split by source digit, then rendered: no test image shares a source (or a
    clutter fragment) with a training image."""
    images, labels = _digit_sources()
    train_src, test_src = _split_sources(labels, test_fraction, seed)
    rng = np.random.default_rng([seed, size, 20261203])
    x_train, y_train = cluttered_digits(images[train_src], labels[train_src], CLUTTERED_TRAIN_COPIES, size, rng)
    x_test, y_test = cluttered_digits(images[test_src], labels[test_src], CLUTTERED_TEST_COPIES, size, rng)
    return x_train, y_train, x_test, y_test


def _builtin(cfg: DataConfig, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float, dict]:
    """(x_train, y_train, x_test, y_test, full-scale pixel value, notes) of a built-in set."""
    if cfg.source == "digits":
        images, labels = _digit_sources()
        train, test = _split_sources(labels, cfg.test_fraction, seed)
        x = _resize(images[:, None] * np.float32(16), cfg.image_size)  # back to sklearn's 0..16 pixels
        return x[train], labels[train], x[test], labels[test], 16.0, {}
    size = cfg.image_size or CLUTTERED_SIZE
    x_train, y_train, x_test, y_test = _cluttered_split(size, cfg.test_fraction, seed)
    recipe = f"{CLUTTERED_TRAIN_COPIES} copies per training source, {CLUTTERED_TEST_COPIES} per test source"
    notes = {"generated": f"cluttered-digits at {size}x{size}: {recipe}, split by source"}
    as_float = [a[:, None].astype(np.float32) for a in (x_train, x_test)]
    return as_float[0], y_train, as_float[1], y_test, 255.0, notes


def _npz(path: Path, test_fraction: float = 0.2, seed: int = 0) -> tuple:
    try:
        z = np.load(path)
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"data {path}: cannot be read as .npz ({exc})") from None
    need = {"x_train", "y_train", "x_test", "y_test"}
    missing = need - set(z.files)
    arrays = {k: z[k] for k in z.files}
    if missing and {"x", "y"} <= set(z.files):
        # One set: split here as an image folder is (seeded, stratified, test_fraction).
        from sklearn.model_selection import train_test_split

        y = arrays["y"]
        if len(arrays["x"]) != len(y):
            raise ConfigError(f"data {path}: x has {len(arrays['x'])} rows but y has {len(y)}")
        counts = np.unique(y, return_counts=True)[1]
        stratify = y if counts.min() >= 2 else None
        arrays["x_train"], arrays["x_test"], arrays["y_train"], arrays["y_test"] = train_test_split(
            arrays["x"], y, test_size=test_fraction, random_state=seed, stratify=stratify)
    elif missing:
        raise ConfigError(f"data {path}: missing arrays {sorted(missing)}; a .npz needs x_train, y_train, x_test, "
                          "y_test (or x and y, split by [data] test_fraction)")
    out = []
    for key in ("x_train", "x_test"):
        x = arrays[key].astype(np.float32)
        if x.ndim == 3:
            x = x[:, None]
        if x.ndim != 4:
            raise ConfigError(f"data {path}: {key} must be N×C×H×W or N×H×W, got shape {x.shape}")
        out.append(x)
    classes = sorted(set(arrays["y_train"].tolist()) | set(arrays["y_test"].tolist()))
    return (out[0], arrays["y_train"].astype(np.int64), out[1], arrays["y_test"].astype(np.int64),
            [str(c) for c in classes])


def _image_folder(path: Path, size: int, grayscale: bool) -> tuple[np.ndarray, np.ndarray, list]:
    """Images as float32 0..255 pixels (NCHW), labels by sorted sub-folder name."""
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
            a = np.asarray(img, dtype=np.float32)
            xs.append(a[None] if grayscale else a.transpose(2, 0, 1))
            ys.append(label)
    if not xs:
        raise ConfigError(f"data {path}: no images found (suffixes {sorted(IMAGE_SUFFIXES)})")
    return np.stack(xs), np.array(ys, dtype=np.int64), classes


def _per_channel(values: tuple[float, ...], channels: int, key: str) -> np.ndarray:
    if len(values) not in (1, channels):
        plural = "s" if channels != 1 else ""
        raise ConfigError(
            f"[data] {key} has {len(values)} values but the inputs have {channels} channel{plural}: "
            "give one per channel, or one for all"
        )
    return np.broadcast_to(np.asarray(values, dtype=np.float32), (channels,)).copy()


def load_data(cfg: DataConfig, seed: int = 0) -> Dataset:
    """Load, split (seeded, stratified) and preprocess the data an experiment names.

    Preprocessing is what `[data]` declares and nothing else (see the module docstring).
    """
    from sklearn.model_selection import train_test_split

    image_range = tuple(cfg.image_range) if cfg.image_range else (0.0, 1.0)
    notes: dict = {}
    if cfg.source in ("digits", "cluttered-digits"):
        x_train, y_train, x_test, y_test, full_scale, notes = _builtin(cfg, seed)
        classes = [str(i) for i in range(10)]
    else:
        path = Path(cfg.source).expanduser()
        if path.is_dir():
            x, y, classes = _image_folder(path, cfg.image_size or 32, cfg.grayscale)
            x_train, x_test, y_train, y_test = train_test_split(
                x, y, test_size=cfg.test_fraction, random_state=seed, stratify=y
            )
            full_scale = 255.0
        elif path.suffix == ".npz":
            x_train, y_train, x_test, y_test, classes = _npz(path, cfg.test_fraction, seed)
            x_train, x_test = _resize(x_train, cfg.image_size), _resize(x_test, cfg.image_size)
            full_scale, image_range = None, None  # the user's arrays, as they are
        else:
            raise ConfigError(
                f"data source {cfg.source!r}: expected \"digits\", \"cluttered-digits\", a .npz file or an image folder"
            )
    if image_range is not None:
        low, high = image_range
        scale = np.float32((high - low) / full_scale)
        x_train, x_test = x_train * scale + np.float32(low), x_test * scale + np.float32(low)
    # Calibration data comes out of the training split, never from the test split.
    n_calib = min(cfg.calibration_size, len(x_train) // 4)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x_train))
    calib_idx, train_idx = order[:n_calib], order[n_calib:]
    channels = x_train.shape[1]
    if cfg.normalize == "standardize":
        kind = "standardize"
        mean = x_train[train_idx].mean(axis=(0, 2, 3))
        std = x_train[train_idx].std(axis=(0, 2, 3)) + 1e-6
    elif isinstance(cfg.normalize, dict):
        kind = "given"
        mean = _per_channel(tuple(cfg.normalize["mean"]), channels, "normalize.mean")
        std = _per_channel(tuple(cfg.normalize["std"]), channels, "normalize.std")
    else:
        kind, mean, std = "none", np.zeros(channels, np.float32), np.ones(channels, np.float32)

    def prepare(a: np.ndarray) -> np.ndarray:
        if kind == "none":
            return np.ascontiguousarray(a, dtype=np.float32)
        return np.ascontiguousarray((a - mean[:, None, None]) / std[:, None, None], dtype=np.float32)

    return Dataset(
        x_train=prepare(x_train[train_idx]),
        y_train=y_train[train_idx],
        x_calib=prepare(x_train[calib_idx]),
        y_calib=y_train[calib_idx],
        x_test=prepare(x_test),
        y_test=y_test,
        num_classes=int(max(y_train.max(), y_test.max()) + 1),
        mean=np.asarray(mean, np.float32),
        std=np.asarray(std, np.float32),
        classes=classes,
        normalize=kind,
        image_range=image_range,
        source=cfg.source,
        notes=notes,
    )

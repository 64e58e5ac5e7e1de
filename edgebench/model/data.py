"""Data: a built-in set, a .npz of arrays, an image folder, or the user's loader; fixed splits;
the user's preprocessing.

    >>> data = load_data(DataConfig(source="digits", image_size=32), seed=0)
    >>> data.x_train.shape, data.x_calib.shape, data.x_test.shape
    ((1309, 1, 32, 32), (128, 1, 32, 32), (360, 1, 32, 32))
    >>> data.describe()["normalize"]
    'none'

Inputs are taken as they are: images float32 NCHW, but also 1-D signals (N, C, L), spectrogram
frames, token ids (integers keep their type), and several named inputs. A .npz holds
`x_train`/`x_test` (one input) or `x_train:<name>`/`x_test:<name>` (several, in the order the
model takes them), and `y_train`/`y_test` or `y_train:<name>`/`y_test:<name>` (a detector's
padded `boxes` and `classes`, say) — or one set `x`, `y` split here. It is read without
pickling. What the arrays mean is the task's (`edgebench.tasks`): labels for classify, floats
for regress, anomaly labels (0 normal, 1 anomaly)...

Preprocessing is the user's and is never changed unasked:

- pixels of an image folder or a built-in set are mapped linearly onto `image_range`
  (default [0, 1]); a .npz's arrays are taken as they are;
- `normalize = "none"` (the default) applies nothing more; `"standardize"` subtracts the
  training split's per-channel mean and divides by its std; `{ mean = [..], std = [..] }`
  applies the given values (one per channel, or one for all). Integer inputs are never
  normalized.

The same arrays go to training, calibration and every runtime, so every runtime sees the
inputs torch saw. `Dataset.describe()` says what was applied (for the run's manifest). The
built-in sets are in `edgebench.model.generated`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgebench.config import DataConfig
from edgebench.errors import ConfigError
from edgebench.model.generated import builtin, resize
from edgebench.model.images import image_folder
from edgebench.tasks import Task, make_task
from edgebench.tasks.arrays import (
    ArrayLike,
    Arrays,
    as_list,
    fingerprint_update,
    names_of,
    sample_shapes,
)


@dataclass
class Dataset:
    """The splits of one data set, each input array (or `Arrays` of several named inputs)
    beside its targets, and the task that says what the targets mean."""

    x_train: ArrayLike
    y_train: ArrayLike | None
    x_calib: ArrayLike
    x_test: ArrayLike
    y_test: ArrayLike | None
    num_classes: int
    mean: np.ndarray  # what was subtracted per channel (zeros when normalize = "none")
    std: np.ndarray  # what was divided by per channel (ones when normalize = "none")
    classes: list
    y_calib: ArrayLike | None = None  # targets of the calibration split, where known
    normalize: str = "none"  # "none" | "standardize" | "given"
    image_range: tuple[float, float] | None = None  # pixels mapped onto it; None for a .npz
    source: str = ""
    notes: dict = field(default_factory=dict)  # facts of the source (e.g. how it was generated)
    task: Task = field(default_factory=make_task)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One sample's shape (of the first input, for models with several)."""
        return tuple(as_list(self.x_train)[0].shape[1:])

    @property
    def input_names(self) -> list[str]:
        return names_of(self.x_train)

    def fingerprint(self) -> str:
        """A hash of the arrays, for caching what was trained on them."""
        h = hashlib.sha256()
        for a in (self.x_train, self.y_train, self.x_test):
            if a is not None:
                fingerprint_update(h, a)
        return h.hexdigest()[:16]

    def save_eval(self, path: Path) -> Path:
        """The .npz the runner reads: the test inputs (`x`, or `x:<name>` with `input_names`),
        a classifier's labels `y` (the runner scores top-1 itself), and any other task's targets
        as `target` / `target:<name>` (scored on the host)."""
        arrays: dict[str, np.ndarray] = {}
        if isinstance(self.x_test, Arrays):
            arrays["input_names"] = np.array(self.x_test.names)
            arrays.update({f"x:{k}": v for k, v in self.x_test.items()})
        else:
            arrays["x"] = self.x_test
        if isinstance(self.y_test, Arrays):
            arrays.update({f"target:{k}": v for k, v in self.y_test.items()})
        elif self.y_test is not None:
            arrays["y" if self.task.name == "classify" else "target"] = self.y_test
        np.savez(path, **arrays)
        return path

    def describe(self) -> dict:
        """What the model is fed, as plain data (the run's manifest keeps it).

        >>> load_data(DataConfig(normalize="standardize")).describe()["mean"]   # doctest: +SKIP
        [0.3046]
        """
        applied = self.normalize != "none"
        shapes = sample_shapes(self.x_train)
        return {
            "source": self.source,
            "input_shape": list(self.input_shape),
            **({"inputs": {k: list(v) for k, v in shapes.items()}} if len(shapes) > 1 else {}),
            "task": self.task.describe(),
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


def eval_targets(path: Path) -> ArrayLike | None:
    """The targets saved by `Dataset.save_eval`: `y`, `target`, or `Arrays` of `target:<name>`."""
    with np.load(path, allow_pickle=False) as z:
        named = {k.partition(":")[2]: z[k] for k in z.files if k.startswith("target:")}
        if named:
            return Arrays(named)
        for key in ("y", "target"):
            if key in z.files:
                return z[key]
    return None


def eval_inputs(path: Path) -> ArrayLike:
    """The inputs saved by `Dataset.save_eval`, as the model takes them."""
    with np.load(path, allow_pickle=False) as z:
        if "input_names" in z.files:
            return Arrays({str(k): z[f"x:{k}"] for k in z["input_names"]})
        return z["x"]


def _group(arrays: dict[str, np.ndarray], base: str) -> ArrayLike | None:
    """`base` itself, or `Arrays` of every `base:<name>` (in the file's order)."""
    named = {k.partition(":")[2]: v for k, v in arrays.items() if k.partition(":")[0] == base and ":" in k}
    if named:
        return Arrays(named)
    return arrays.get(base)


def _as_inputs(x: ArrayLike) -> ArrayLike:
    """Float inputs as float32 (what every exported graph takes), integers (token ids) as they are."""
    def one(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a, dtype=np.float32 if a.dtype.kind in "fb" else a.dtype)

    return Arrays({k: one(v) for k, v in x.items()}) if isinstance(x, Arrays) else one(x)


def _as_targets(y: ArrayLike | None, task: Task) -> ArrayLike | None:
    def one(a: np.ndarray) -> np.ndarray:
        if task.name == "classify" or a.dtype.kind in "iub":
            return a.astype(np.int64)
        return a.astype(np.float32)

    if y is None:
        return None
    return Arrays({k: one(v) for k, v in y.items()}) if isinstance(y, Arrays) else one(y)


def _user_loader(ref: str, task: Task, test_fraction: float, seed: int) -> tuple:
    """`[data] loader`: the user's function gives the arrays a .npz would hold."""
    from edgebench.registry import user_function

    fn = user_function(ref, "[data] loader")
    try:
        arrays = fn(seed=seed) if "seed" in __import__("inspect").signature(fn).parameters else fn()
    except Exception as exc:  # noqa: BLE001 - the user's code: one line naming it
        raise ConfigError(f"[data] loader {ref!r} failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(arrays, dict) or not all(isinstance(v, np.ndarray) for v in arrays.values()):
        raise ConfigError(f"[data] loader {ref!r} must return a dict of numpy arrays named as in a .npz "
                          "(x_train, y_train, x_test, y_test; or x, y)")
    return _arrays(arrays, ref, task, test_fraction, seed)


def _npz(path: Path, task: Task, test_fraction: float = 0.2, seed: int = 0) -> tuple:
    try:
        with np.load(path, allow_pickle=False) as z:  # never unpickle: a .npz can carry code
            arrays = {k: z[k] for k in z.files}
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"data {path}: cannot be read as .npz without pickling ({exc})") from None
    return _arrays(arrays, path, task, test_fraction, seed)


def _arrays(arrays: dict, path, task: Task, test_fraction: float, seed: int) -> tuple:
    """Splits, inputs and targets from arrays named as in a .npz (see the module docstring)."""
    split = {k: _group(arrays, k) for k in ("x_train", "y_train", "x_test", "y_test", "x", "y")}
    unsupervised = task.name in ("anomaly", "custom")  # an autoencoder's training set has no labels
    need = ["x_train", "x_test"] + ([] if unsupervised else ["y_train", "y_test"])
    missing = [k for k in need if split[k] is None]
    if missing and split["x"] is not None and (split["y"] is not None or unsupervised):
        # One set: split here as an image folder is (seeded, stratified for a classifier, test_fraction).
        from sklearn.model_selection import train_test_split

        x, y = split["x"], split["y"]
        if y is not None and len(x) != len(y):
            raise ConfigError(f"data {path}: x has {len(x)} rows but y has {len(y)}")
        stratify = None
        if task.name == "classify" and not isinstance(y, Arrays):
            stratify = y if np.unique(y, return_counts=True)[1].min() >= 2 else None
        train, test = train_test_split(np.arange(len(x)), test_size=test_fraction, random_state=seed, stratify=stratify)
        split.update(x_train=x[train], x_test=x[test], y_train=None if y is None else y[train],
                     y_test=None if y is None else y[test])
    elif missing:
        keys = ", ".join(need)
        raise ConfigError(f"data {path}: missing arrays {missing}; a .npz needs {keys} (each may be several, "
                          "named x_train:<input>, y_train:<target>), or x and y, split by [data] test_fraction")
    for key in ("x_train", "x_test"):
        for name, a in zip(names_of(split[key], key), as_list(split[key])):
            if a.ndim < 2:
                raise ConfigError(f"data {path}: {name} has shape {list(a.shape)}: inputs need a sample axis "
                                  "and at least one more (N x features, N x C x L, N x C x H x W...)")
    y_train, y_test = _as_targets(split["y_train"], task), _as_targets(split["y_test"], task)
    classes: list = []
    if task.name == "classify":
        classes = [str(c) for c in sorted(set(y_train.tolist()) | set(y_test.tolist()))]
    return _as_inputs(split["x_train"]), y_train, _as_inputs(split["x_test"]), y_test, classes


def _per_channel(values: tuple[float, ...], channels: int, key: str) -> np.ndarray:
    if len(values) not in (1, channels):
        plural = "s" if channels != 1 else ""
        raise ConfigError(
            f"[data] {key} has {len(values)} values but the inputs have {channels} channel{plural}: "
            "give one per channel, or one for all"
        )
    return np.broadcast_to(np.asarray(values, dtype=np.float32), (channels,)).copy()


def _num_outputs(task: Task, y_train: ArrayLike | None, y_test: ArrayLike | None, notes: dict) -> int:
    """What a built-in factory's `num_classes` should be: classes for classify (and detect),
    the target's size per sample for regress, 1 otherwise."""
    if notes.get("num_classes"):
        return int(notes["num_classes"])
    if y_train is None or isinstance(y_train, Arrays):
        return 1
    if task.name == "classify":
        return int(max(y_train.max(), y_test.max()) + 1)
    if task.name == "regress":
        return int(np.prod(y_train.shape[1:])) if y_train.ndim > 1 else 1
    return 1


def load_data(cfg: DataConfig, seed: int = 0, task: Task | None = None) -> Dataset:
    """Load, split (seeded; stratified for a classifier) and preprocess the data an experiment
    names, for `task` (classify by default).

    Preprocessing is what `[data]` declares and nothing else (see the module docstring).
    """
    from sklearn.model_selection import train_test_split

    task = task or make_task()
    image_range = tuple(cfg.image_range) if cfg.image_range else (0.0, 1.0)
    notes: dict = {}
    if cfg.source in ("digits", "cluttered-digits"):
        x_train, y_train, x_test, y_test, full_scale, notes = builtin(cfg, seed)
        classes = [str(i) for i in range(10)]
    elif cfg.source == "digit-scenes":
        from edgebench.model.scenes import digit_scenes

        x_train, y_train, x_test, y_test, full_scale, notes = digit_scenes(cfg.image_size or 48, seed)
        classes = [str(i) for i in range(notes["num_classes"])]
    elif cfg.loader:
        x_train, y_train, x_test, y_test, classes = _user_loader(cfg.loader, task, cfg.test_fraction, seed)
        full_scale, image_range = None, None  # the user's arrays, as they are
    elif cfg.annotations:
        from edgebench.model.coco import load_coco

        x, y, classes = load_coco(Path(cfg.source).expanduser(), Path(cfg.annotations).expanduser(),
                                  cfg.image_size or 64, cfg.grayscale)
        train, test = train_test_split(np.arange(len(x)), test_size=cfg.test_fraction, random_state=seed)
        y = Arrays(y)
        x_train, x_test, y_train, y_test = x[train], x[test], y[train], y[test]
        full_scale = 255.0
    else:
        path = Path(cfg.source).expanduser()
        if path.is_dir():
            x, y, classes = image_folder(path, cfg.image_size or 32, cfg.grayscale)
            x_train, x_test, y_train, y_test = train_test_split(
                x, y, test_size=cfg.test_fraction, random_state=seed, stratify=y
            )
            full_scale = 255.0
        elif path.suffix == ".npz":
            x_train, y_train, x_test, y_test, classes = _npz(path, task, cfg.test_fraction, seed)
            if not isinstance(x_train, Arrays):
                x_train, x_test = resize(x_train, cfg.image_size), resize(x_test, cfg.image_size)
            full_scale, image_range = None, None  # the user's arrays, as they are
        else:
            raise ConfigError(
                f"data source {cfg.source!r}: expected \"digits\", \"cluttered-digits\", \"digit-scenes\", a .npz file "
                "or an image folder"
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
    kind, mean, std = _normalization(cfg, x_train, train_idx)

    def prepare(a: ArrayLike) -> ArrayLike:
        if kind == "none" or isinstance(a, Arrays):
            return _as_inputs(a)
        shape = (1, -1) + (1,) * (a.ndim - 2)  # per channel: axis 1
        return np.ascontiguousarray((a - mean.reshape(shape)) / std.reshape(shape), dtype=np.float32)

    def rows(y: ArrayLike | None, idx: np.ndarray) -> ArrayLike | None:
        return None if y is None else y[idx]

    return Dataset(
        x_train=prepare(x_train[train_idx]),
        y_train=rows(y_train, train_idx),
        x_calib=prepare(x_train[calib_idx]),
        y_calib=rows(y_train, calib_idx),
        x_test=prepare(x_test),
        y_test=y_test,
        num_classes=_num_outputs(task, y_train, y_test, notes),
        mean=np.asarray(mean, np.float32),
        std=np.asarray(std, np.float32),
        classes=classes,
        normalize=kind,
        image_range=image_range,
        source=cfg.source,
        notes={k: v for k, v in notes.items() if k != "num_classes"},
        task=task,
    )


def _normalization(cfg: DataConfig, x_train: ArrayLike, train_idx: np.ndarray) -> tuple[str, np.ndarray, np.ndarray]:
    """(kind, mean, std) per channel (axis 1) of the inputs, from `[data] normalize`."""
    if isinstance(x_train, Arrays) or x_train.dtype.kind not in "f":
        if cfg.normalize != "none":
            raise ConfigError("[data] normalize applies to one float input (images, signals, features); with "
                              "several inputs or integer ones (token ids), normalize the arrays before saving them")
        return "none", np.zeros(1, np.float32), np.ones(1, np.float32)
    channels = x_train.shape[1]
    if cfg.normalize == "standardize":
        axes = tuple(d for d in range(x_train.ndim) if d != 1)
        part = x_train[train_idx]
        return "standardize", part.mean(axis=axes), part.std(axis=axes) + 1e-6
    if isinstance(cfg.normalize, dict):
        return ("given", _per_channel(tuple(cfg.normalize["mean"]), channels, "normalize.mean"),
                _per_channel(tuple(cfg.normalize["std"]), channels, "normalize.std"))
    return "none", np.zeros(channels, np.float32), np.ones(channels, np.float32)

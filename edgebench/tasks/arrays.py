"""A model's inputs and outputs as they are: one array, or several named ones sharing the first axis.

Most edge models take one tensor and give one (an image classifier: NCHW in, logits out), but a
text model takes token ids and a mask, a detector gives a heatmap and boxes, a model may return
`(logits, embedding)` or a dict. Everything that feeds or reads a model goes through here, so one
input stays a plain array (every existing path unchanged) and several travel as `Arrays`.

    >>> x = Arrays({"ids": np.zeros((8, 16), np.int64), "mask": np.ones((8, 16), np.float32)})
    >>> len(x), x[:2].names, [a.shape for a in as_list(x[:2])]
    (8, ['ids', 'mask'], [(2, 16), (2, 16)])
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np


class Arrays:
    """Named arrays with a common first axis (the samples); sliced together like one array."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        if not arrays:
            raise ValueError("Arrays needs at least one array")
        self._arrays = dict(arrays)
        lengths = {len(a) for a in self._arrays.values()}
        if len(lengths) != 1:
            shapes = {k: v.shape for k, v in self._arrays.items()}
            raise ValueError(f"arrays must share their first axis (the samples), got {shapes}")

    @property
    def names(self) -> list[str]:
        return list(self._arrays)

    def values(self) -> list[np.ndarray]:
        return list(self._arrays.values())

    def items(self) -> Iterator[tuple[str, np.ndarray]]:
        return iter(self._arrays.items())

    def __len__(self) -> int:
        return len(next(iter(self._arrays.values())))

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return self._arrays[key]
        return Arrays({k: v[key] for k, v in self._arrays.items()})

    def __contains__(self, name: str) -> bool:
        return name in self._arrays

    @property
    def shape(self) -> tuple:
        """The first array's shape (what code written for one input reads)."""
        return next(iter(self._arrays.values())).shape

    def __repr__(self) -> str:
        return "Arrays(" + ", ".join(f"{k}: {v.dtype}{list(v.shape)}" for k, v in self._arrays.items()) + ")"


ArrayLike = np.ndarray | Arrays


def as_list(x: ArrayLike | list) -> list[np.ndarray]:
    """One array per model input, in the model's order (a list is taken as that already)."""
    if isinstance(x, Arrays):
        return x.values()
    return list(x) if isinstance(x, (list, tuple)) else [x]


def names_of(x: ArrayLike, single: str = "input") -> list[str]:
    return x.names if isinstance(x, Arrays) else [single]


def concat(parts: list[ArrayLike]) -> ArrayLike:
    if isinstance(parts[0], Arrays):
        return Arrays({k: np.concatenate([p[k] for p in parts]) for k in parts[0].names})
    return np.concatenate(parts)


def sample_shapes(x: ArrayLike) -> dict[str, tuple]:
    """Per input, the shape of one sample (without the batch axis)."""
    return {name: tuple(a.shape[1:]) for name, a in zip(names_of(x), as_list(x))}


def fingerprint_update(h, x: ArrayLike) -> None:
    """Feed the arrays' bytes (and names) into a hashlib object."""
    for name, a in zip(names_of(x), as_list(x)):
        h.update(name.encode())
        h.update(np.ascontiguousarray(a).tobytes())


# ---- torch side (torch imported inside: reading data needs no torch) -------------------------


def to_torch(x: ArrayLike) -> Any:
    """A tensor, or a tuple of tensors for several inputs (what `call` passes on)."""
    import torch

    if isinstance(x, Arrays):
        return tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in x.values())
    return torch.from_numpy(np.ascontiguousarray(x))


def targets_to_torch(y: Any) -> Any:
    """Targets as tensors: an array, or a dict for several target arrays (e.g. boxes, classes)."""
    import torch

    if y is None:
        return None
    if isinstance(y, Arrays):
        return {k: torch.from_numpy(np.ascontiguousarray(a)) for k, a in y.items()}
    return torch.from_numpy(np.ascontiguousarray(y))


def index(x: Any, idx: Any) -> Any:
    """Rows `idx` of a tensor, a tuple of tensors or a dict of tensors."""
    if x is None:
        return None
    if isinstance(x, tuple):
        return tuple(t[idx] for t in x)
    if isinstance(x, dict):
        return {k: t[idx] for k, t in x.items()}
    return x[idx]


def call(model: Any, x: Any) -> Any:
    """The model on a batch: `model(x)`, or `model(*x)` for several inputs."""
    return model(*x) if isinstance(x, tuple) else model(x)


def outputs(out: Any) -> tuple:
    """A forward's result as a tuple of tensors: a tensor, a tuple/list, or a dict (in key order;
    nested tuples are flattened), as exporters flatten them."""
    import torch

    if isinstance(out, torch.Tensor):
        return (out,)
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (tuple, list)):
        flat: list = []
        for item in out:
            flat.extend(outputs(item))
        return tuple(flat)
    raise TypeError(f"the model returned {type(out).__name__}; expected a tensor, a tuple/list or a dict of tensors")


def output_names(out: Any) -> list[str]:
    """Names for a forward's outputs: the dict's keys, "logits" for a lone tensor, else out0, out1..."""
    import torch

    if isinstance(out, torch.Tensor):
        return ["logits"]
    if isinstance(out, dict) and all(isinstance(v, torch.Tensor) for v in out.values()):
        return [str(k) for k in out]
    return [f"out{k}" for k in range(len(outputs(out)))]

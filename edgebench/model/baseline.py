"""The user's trained baseline: its data prepared, its model built, trained by edgebench
(cached by a content hash) or the user's own weights checked.

    >>> data = prepare_data(exp)
    >>> model = train_baseline(exp, data, log=print)        # cached by content hash (model_fingerprint)
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgebench.config import Experiment
from edgebench.model.data import Dataset
from edgebench.model.factories import create_model, load_weights
from edgebench.model.train import TRAIN_CODE_VERSION, evaluate, fit
from edgebench.paths import cache_dir
from edgebench.tasks.arrays import ArrayLike, call, outputs, to_torch


def model_fingerprint(model: nn.Module) -> str:
    """A hash of what the model is, not what it is called: its module tree, its parameters' and
    buffers' shapes, and the source of every class in it that is not torch's. A user who edits
    their model (a layer more, a forward changed) under the same factory name gets a new
    baseline trained, not the cached weights of the old one (which failed to load, or loaded
    into a forward they no longer fit)."""
    import inspect

    tree = re.sub(r" at 0x[0-9a-fA-F]+", "", repr(model))  # a function's address in an extra_repr: not the model
    parts = [tree, *(f"{k}:{tuple(v.shape)}:{v.dtype}" for k, v in model.state_dict().items())]
    for cls in sorted({type(m) for m in model.modules()}, key=lambda c: f"{c.__module__}.{c.__qualname__}"):
        if cls.__module__.split(".")[0] == "torch":
            continue
        try:
            parts.append(inspect.getsource(cls))
        except (OSError, TypeError):  # defined where no source is kept (an interactive session)
            parts.append(f"{cls.__module__}.{cls.__qualname__}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def baseline_key(exp: Experiment, data: Dataset, model: nn.Module) -> str:
    """A hash of everything that determines the trained baseline."""
    what = {
        "model": [exp.model.factory, exp.model.kwargs, model_fingerprint(model)],
        "data": data.fingerprint(),
        "train": exp.train.__dict__,
        "seed": exp.seed,
        "code": TRAIN_CODE_VERSION,
        "torch": torch.__version__,
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


def build_model(exp: Experiment, data: Dataset) -> nn.Module:
    torch.manual_seed(exp.seed)
    shape = data.input_shape
    in_channels = shape[0] if len(shape) >= 2 else 1
    return create_model(exp.model.factory, data.num_classes, in_channels, **exp.model.kwargs)


def _forward_error(model: nn.Module, x: ArrayLike) -> str | None:
    """Why the model cannot take two samples of `x`, or None when it can."""
    try:
        with torch.no_grad():
            outputs(call(model.eval(), to_torch(x[:2])))
    except Exception as exc:  # noqa: BLE001 - the user's model: any failure is the answer
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    return None


def prepare_data(exp: Experiment, log: Callable[[str], None] = print) -> Dataset:
    """The experiment's data for its task, shaped as its model takes it.

    Arrays are the user's, as they are; the one exception is a missing channel axis: when the
    model cannot take the samples as given and they are 2-D images or frames (N x H x W, e.g.
    a .npz of grayscale digits or spectrogram frames for a Conv2d), it gets them as
    N x 1 x H x W — decided by trying the model on two samples, so a Conv1d net on (N, 1, L)
    signals or an MLP on (N, H, W) keeps its arrays. A model that takes neither is a config
    error naming why, before any training.
    """
    from edgebench.errors import ConfigError
    from edgebench.model.data import load_data
    from edgebench.tasks import make_task

    data = load_data(exp.data, seed=exp.seed, task=make_task(exp.task))
    why = _forward_error(build_model(exp, data), data.x_train)
    if why is None:
        return data
    x = data.x_train
    if not isinstance(x, np.ndarray) or x.ndim != 3 or x.dtype.kind != "f":
        raise ConfigError(f"model {exp.model.factory!r} cannot take the data's inputs of shape {list(data.input_shape)} "
                          f"per sample: {why}")
    import dataclasses

    with_axis = dataclasses.replace(data, x_train=x[:, None], x_calib=data.x_calib[:, None], x_test=data.x_test[:, None])
    again = _forward_error(build_model(exp, with_axis), with_axis.x_train)
    if again is not None:
        raise ConfigError(f"model {exp.model.factory!r} cannot take the data's inputs of shape {list(data.input_shape)} "
                          f"per sample ({why}), nor with a channel axis added ({again})")
    log(f"data: the model takes 1 x {' x '.join(map(str, data.input_shape))} samples: a channel axis added")
    return with_axis


def train_baseline(exp: Experiment, data: Dataset, log: Callable[[str], None] = print) -> nn.Module:
    """The baseline: loaded from `[model] weights`, else trained once and cached by hash.

    Given weights are scored in torch on the test split first (`check_given_model`), so a
    preprocessing mismatch shows before any variant is made.
    """
    model = build_model(exp, data)
    if exp.model.weights:
        load_weights(model, exp.model.weights)
        model.eval()
        check_given_model(model, data, log)
        return model
    path: Path = cache_dir("models") / f"{exp.model.factory.replace(':', '_')}-{baseline_key(exp, data, model)}.pt"
    if path.is_file():
        # Our own file, but read as tensors only all the same: a cache folder can be written by others.
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        log(f"baseline: loaded trained weights from cache {path}")
        return model.eval()
    fit(model, data, exp.train, seed=exp.seed, log=log, label="baseline")
    tmp = path.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(path)  # atomic: a killed run never leaves a half-written cache file
    return model.eval()


def chance_accuracy(y: np.ndarray) -> float:
    """What always guessing the most common label scores on `y`."""
    return float(np.bincount(y).max() / len(y)) if len(y) else 0.0


def near_chance(accuracy: float, y: np.ndarray) -> bool:
    """True when `accuracy` is closer to chance than to a perfect score.

    Halfway is a wide net on purpose: a model given to edgebench was trained to work, so a
    score this low on its own task almost always means it is not fed what it was trained on
    (a BatchNorm CNN trained on standardized digits scored 39% on the raw [0, 1] pixels).
    """
    chance = chance_accuracy(y)
    return accuracy < chance + 0.5 * (1 - chance)


@torch.no_grad()
def batchnorm_mismatch(model: nn.Module, x: np.ndarray, max_shift: float = 1.0, max_ratio: float = 2.0) -> str | None:
    """Say how far `x` is from what the model's first BatchNorm saw in training, if too far.

    A BatchNorm layer keeps the per-channel mean and variance of its inputs over training
    (running_mean/var). Feeding `x` and comparing shows a preprocessing mismatch even when
    the accuracy does not collapse. Measured here on a small BatchNorm CNN trained on [0, 1]
    digits (tests/test_user_model.py): on its own test inputs, 98.9%, means 0.0 std off,
    spread 1x; fed 0..16 pixels it still scored 95.8%, but means 9.2 std off, spread 16x;
    standardized (issue 9's case), 97.5%, spread 2.5x. Flags a median channel whose mean moved
    by more than `max_shift` running standard deviations, or whose standard deviation changed
    by more than `max_ratio` times. None when the model has no BatchNorm with running
    statistics, or all is in range.

        >>> batchnorm_mismatch(model, data.x_test * 16)
        'its first BatchNorm (features.1) sees inputs whose channel means are off by 9.2 training std and ...'
    """
    names = {m: name for name, m in model.named_modules()}
    layers = [m for m in names if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_var is not None]
    seen: list = []

    def keep_first(module: nn.Module, inputs: tuple) -> None:
        if not seen:
            seen.append((module, inputs[0].detach()))

    handles = [m.register_forward_pre_hook(keep_first) for m in layers]
    try:
        model.eval()
        model(torch.from_numpy(np.ascontiguousarray(x[:512])))
    finally:
        for handle in handles:
            handle.remove()
    if not seen:
        return None
    layer, a = seen[0]
    dims = [d for d in range(a.dim()) if d != 1]
    var = layer.running_var + layer.eps
    shift = float(((a.mean(dims) - layer.running_mean).abs() / var.sqrt()).median())
    ratio = float((a.var(dims) / var).sqrt().median())
    if shift <= max_shift and 1 / max_ratio <= ratio <= max_ratio:
        return None
    return (
        f"its first BatchNorm ({names[layer] or 'the model'}) sees inputs whose channel means are off by "
        f"{shift:.1f} training std and whose spread is {ratio:.2g}x the training one (medians over channels)"
    )


def check_given_model(model: nn.Module, data: Dataset, log: Callable[[str], None] = print) -> float:
    """Score the user's model in torch on the test split, say so, and warn loudly when its
    score is near chance or its inputs do not look like its training inputs.

    The warning goes through `log.always` when the logger has it (printed even with
    --quiet), and says what to check. Returns the accuracy.

        >>> check_given_model(model, data, log)
        baseline: your weights score 99.5% in torch on 360 test inputs
        0.995
    """
    accuracy = evaluate(model, data.x_test, data.y_test)
    n = len(data.y_test)
    log(f"baseline: your weights score {accuracy:.1%} in torch on {n} test inputs")
    problems = []
    if near_chance(accuracy, data.y_test):
        chance = chance_accuracy(data.y_test)
        problems.append(
            f"your weights score {accuracy:.1%} in torch on {n} test inputs, near chance: closer to "
            f"{chance:.1%} (always guessing the most common class) than to 100%"
        )
    mismatch = batchnorm_mismatch(model, data.x_test)
    if mismatch:
        problems.append(mismatch)
    if problems:
        x = data.x_test
        normalize = data.normalize if data.normalize != "given" else "{ mean, std }"
        getattr(log, "always", log)(
            f"edgebench: WARNING: {'; '.join(problems)}. The model is probably not fed what it was trained on: "
            f"it gets inputs of shape {list(data.input_shape)}, values {float(x.min()):.3g}..{float(x.max()):.3g} "
            f"(mean {float(x.mean()):.3g}, std {float(x.std()):.3g}). Check [data] normalize (now \"{normalize}\") "
            "and image_range, image_size, the channel order (grayscale, RGB vs BGR) and the class order "
            "(labels 0..N-1; image folders: sub-folders sorted by name)."
        )
    return accuracy

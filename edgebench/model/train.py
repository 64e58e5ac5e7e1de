"""Training and evaluation in torch: seeded, deterministic on CPU, threads set explicitly.

    >>> model = train_baseline(exp, data, log=print)        # cached by content hash
    >>> fit(student, data, exp.train, epochs=3, loss_fn=my_loss)   # fine-tune in place
    >>> evaluate(model, data.x_test, data.y_test)
    0.983

The loss is the task's (`data.task.loss`: cross-entropy for a classifier, the detector's,
the user's own...) unless a step passes its own; inputs may be several (`Arrays`), outputs any
tuple or dict of tensors (edgebench.tasks.arrays).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgebench.config import Experiment, TrainConfig
from edgebench.model.data import Dataset
from edgebench.model.factories import create_model, load_weights
from edgebench.paths import cache_dir
from edgebench.tasks.arrays import ArrayLike, call, index, outputs, targets_to_torch, to_torch

# Bump when the training code changes what it produces, so caches are not reused wrongly.
TRAIN_CODE_VERSION = 1

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def cross_entropy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(outputs(call(model, x))[0], y)


def task_loss(data: Dataset) -> LossFn:
    """The training loss of the data's task, as a `loss(model, x, y)`."""
    task = data.task

    def loss(model: nn.Module, x, y) -> torch.Tensor:
        return task.loss(outputs(call(model, x)), y, x)

    return loss


# The learning-rate schedules `fit` knows: "cosine" decays from lr to 0 over the whole run (the
# baseline's training); "constant" holds lr; "hold_cosine" holds lr for the first half of the
# steps, then decays it by a cosine to 0 over the second half.
SCHEDULES = ("cosine", "constant", "hold_cosine")


def fit(
    model: nn.Module,
    data: Dataset,
    cfg: TrainConfig,
    epochs: int | None = None,
    lr: float | None = None,
    loss_fn: LossFn | None = None,
    seed: int = 0,
    after_step: Callable[[], None] | None = None,
    params: list | None = None,
    log: Callable[[str], None] | None = None,
    label: str = "train",
    schedule: str = "cosine",
) -> nn.Module:
    """Train `model` in place on data.x_train ([train] optimizer: SGD or Adam); return it.

    `schedule` is one of SCHEDULES (default: cosine decay over the run); fine-tunes after a
    compression step use `finetune` instead, which picks theirs. `after_step` runs after every
    optimizer step (e.g. to re-apply a pruning mask); `params` trains extra parameters too
    (e.g. a distillation adapter).
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule = {schedule!r}: expected one of {', '.join(SCHEDULES)}")
    epochs = cfg.epochs if epochs is None else epochs
    lr = cfg.lr if lr is None else lr
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    loss_fn = loss_fn or task_loss(data)
    x = to_torch(data.x_train)
    y = targets_to_torch(data.y_train)
    n = len(data.x_train)
    trainable = list(model.parameters()) + list(params or [])
    if cfg.optimizer == "adam":
        opt = torch.optim.Adam(trainable, lr=lr, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.SGD(trainable, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, (n + cfg.batch_size - 1) // cfg.batch_size)
    sched = _scheduler(opt, schedule, max(1, epochs * steps_per_epoch))
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for i in range(0, n, cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            loss = loss_fn(model, index(x, idx), index(y, idx))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if after_step is not None:
                after_step()
            total += loss.item() * len(idx)
        if log:
            log(f"{label}: epoch {epoch + 1}/{epochs} loss {total / n:.4f}")
    model.eval()
    return model


def _scheduler(opt: torch.optim.Optimizer, schedule: str, steps: int):
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    if schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    hold = steps // 2

    def factor(step: int) -> float:
        if step < hold:
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - hold) / max(1, steps - hold))))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def finetune_schedule(cfg: TrainConfig) -> str:
    """The lr schedule of a fine-tune after a compression step, for the [train] optimizer.

    Adam: "constant" (the training lr held, as Adam is usually run and as a plain
    torch-pruning / torch.nn.utils.prune fine-tune does). SGD with momentum: "hold_cosine"
    (held for half the steps, then annealed: at a constant high lr SGD ends noisy).
    Measured on benchmarks/prune_vs_reference.py's three models, 4 epochs at the training lr,
    one seed. Adam-trained: a fresh cosine to 0 lost 4-6 points against "constant" after
    structured 50 % and 0.5-12 after unstructured 80 %; "hold_cosine" lost 1.6-2.1
    (structured). SGD-trained (edgebench's own cosine training, lr 0.05): "hold_cosine" beat
    a cosine from the same lr in 18 of 18 runs (3 seeds; 0.3-4.3 points) and a constant lr by
    3-18 points (structured).
    """
    return "constant" if cfg.optimizer == "adam" else "hold_cosine"


def finetune(
    model: nn.Module,
    data: Dataset,
    cfg: TrainConfig,
    epochs: int,
    lr: float | None = None,
    seed: int = 0,
    after_step: Callable[[], None] | None = None,
    log: Callable[[str], None] | None = None,
    label: str = "fine-tune",
    notes: dict | None = None,
) -> nn.Module:
    """Fine-tune after a compression step (prune, lowrank, cluster): it continues the user's
    training, so the [train] optimizer at the [train] lr unless `lr` is given, with
    `finetune_schedule(cfg)`.

    A fine-tune may not leave the model worse than it found it (`guarded_fit`). Measured on
    benchmarks/defaults_zoo.py's net without BatchNorm (SGD, lr 0.05): Tucker-2 at half rank
    left 89.6 % (of 92.0 %), the fine-tune at the training lr ended at 35.4 % (train loss
    1.70 after 1.90 in its first epoch); at a tenth of the lr the zoo's gap to a plain SVD
    reference went from +52.2 to -3.4 points (median of 3 seeds). `notes` (a step's
    ctx.notes) gets what the guard saw.

    Earlier defaults (a fifth or a tenth of the training lr, and a fresh cosine decay to 0)
    left Adam-trained models far from recovered: on a user's model structured 50 % + 4
    epochs lost 17.6 points where torch-pruning with 4 epochs of Adam at the training lr lost
    2.9; see benchmarks/prune_vs_reference.py. On the SGD-trained demo they were no better
    either: drops, old → new (one run): sparse80 0.7 → 0.5 points, slim50 1.6 → 1.0, kmeans4
    0.1 → -0.4, lowrank-svd -0.6 → -0.7, lowrank-tucker2 0.0 → -0.1.
    """
    guarded_fit(model, data, cfg, epochs, cfg.lr if lr is None else lr, seed=seed, after_step=after_step, log=log,
                label=label, schedule=finetune_schedule(cfg), notes=notes, prefix="finetune")  # fmt: skip
    return model


def guarded_fit(
    model: nn.Module,
    data: Dataset,
    cfg: TrainConfig,
    epochs: int,
    lr: float,
    loss_fn: LossFn | None = None,
    params: list | None = None,
    notes: dict | None = None,
    prefix: str = "finetune",
    **fit_kw,
) -> nn.Module:
    """`fit` that may not leave the model worse than it found it by its own loss.

    The training loss (`loss_fn`, else the task's) on up to GUARD_INPUTS of the training
    inputs is read before and after; where it rose (a training that diverged), the weights
    (and `params`) are restored and trained again at a tenth of the lr, and where that rose
    too, they are kept as they were. Meant for trainings that start from trained weights (a
    fine-tune after a compression step, a student cut from its teacher); from a random start
    it only catches a loss that ends higher than chance. `notes` gets `<prefix>_lr` (the lr
    whose weights were kept; 0 for none) and `<prefix>_loss_before`/`_after`.
    """
    import copy

    start = (copy.deepcopy(model.state_dict()), [p.detach().clone() for p in params or []])
    before = guard_loss(model, data, loss_fn)
    kept, after = lr, before
    for attempt in (lr, lr / 10):
        fit(model, data, cfg, epochs=epochs, lr=attempt, loss_fn=loss_fn, params=params, **fit_kw)
        after = guard_loss(model, data, loss_fn)
        if after <= before:  # False for NaN
            kept = attempt
            break
        log, label = fit_kw.get("log"), fit_kw.get("label", "train")
        if log:
            following = f"again at lr {attempt / 10:g}" if attempt == lr else "kept as they were"
            log(f"{label}: at lr {attempt:g} the training loss rose ({before:.4f} -> {after:.4f}): {following}")
        model.load_state_dict(start[0])
        with torch.no_grad():
            for p, saved in zip(params or [], start[1]):
                p.copy_(saved)
        kept, after = 0.0, before
    if notes is not None:
        notes.update({f"{prefix}_lr": kept, f"{prefix}_loss_before": round(before, 6),
                      f"{prefix}_loss_after": round(after, 6)})  # fmt: skip
    model.eval()
    return model


GUARD_INPUTS = 2048  # training inputs the fine-tune guard scores (the first ones: the same each time)


@torch.no_grad()
def guard_loss(model: nn.Module, data: Dataset, loss_fn: LossFn | None = None, batch_size: int = 256) -> float:
    """The mean of `loss_fn` (else the task's loss) for `model` (eval mode) on the first
    GUARD_INPUTS training inputs."""
    model.eval()
    loss_fn = loss_fn or task_loss(data)
    n = min(len(data.x_train), GUARD_INPUTS)
    x, y = to_torch(data.x_train), targets_to_torch(data.y_train)
    total = 0.0
    for i in range(0, n, batch_size):
        idx = torch.arange(i, min(n, i + batch_size))
        total += float(loss_fn(model, index(x, idx), index(y, idx))) * len(idx)
    return total / n


@torch.no_grad()
def predict_outputs(model: nn.Module, x: ArrayLike, batch_size: int = 256) -> list[np.ndarray]:
    """Every output of the torch model on every input, as float32 arrays."""
    model.eval()
    parts = [outputs(call(model, to_torch(x[i : i + batch_size]))) for i in range(0, len(x), batch_size)]
    return [torch.cat([p[k] for p in parts]).float().numpy() for k in range(len(parts[0]))]


def predict_logits(model: nn.Module, x: ArrayLike, batch_size: int = 256) -> np.ndarray:
    """The first output (a classifier's logits)."""
    return predict_outputs(model, x, batch_size)[0]


def evaluate(model: nn.Module, x: ArrayLike, y, task=None) -> float:
    """The torch model's score on (x, y): top-1 accuracy, or the metric of `task`."""
    if task is None or task.name == "classify":
        return float((predict_logits(model, x).argmax(1) == y).mean())
    return task.value(task.prepare(predict_outputs(model, x), y, x))


def evaluate_on(model: nn.Module, data: Dataset) -> float:
    """The torch model's score on the test split, by the data's task."""
    return evaluate(model, data.x_test, data.y_test, data.task)


def baseline_key(exp: Experiment, data: Dataset) -> str:
    """A hash of everything that determines the trained baseline."""
    what = {
        "model": [exp.model.factory, exp.model.kwargs],
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
    path: Path = cache_dir("models") / f"{exp.model.factory.replace(':', '_')}-{baseline_key(exp, data)}.pt"
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

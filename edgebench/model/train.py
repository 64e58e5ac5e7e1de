"""Training and evaluation in torch: seeded, deterministic on CPU, threads set explicitly.

    >>> fit(student, data, exp.train, epochs=3, loss_fn=my_loss)   # fine-tune in place
    >>> evaluate(model, data.x_test, data.y_test)
    0.983

The loss is the task's (`data.task.loss`: cross-entropy for a classifier, the detector's,
the user's own...) unless a step passes its own; inputs may be several (`Arrays`), outputs any
tuple or dict of tensors (edgebench.tasks.arrays). Fine-tunes after a compression step
(`finetune`) and students cut from their teacher are guarded (`guarded_fit`). The user's
baseline (data, build, train or check, cached) is edgebench.model.baseline.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgebench.config import TrainConfig
from edgebench.model.data import Dataset
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
    recalibrated = recalibrate_bn(model, data)
    if notes is not None and recalibrated:
        notes["bn_recalibrated"] = recalibrated
    guarded_fit(model, data, cfg, epochs, cfg.lr if lr is None else lr, seed=seed, after_step=after_step, log=log,
                label=label, schedule=finetune_schedule(cfg), notes=notes, prefix="finetune")  # fmt: skip
    return model


@torch.no_grad()
def recalibrate_bn(model: nn.Module, data: Dataset, batch_size: int = 256) -> int:
    """Re-estimate every BatchNorm's running statistics (their plain average) on the first
    GUARD_INPUTS training inputs, the weights untouched; returns how many layers it set.

    A compression step changes what each BatchNorm sees, and its statistics still describe the
    old net (NNCF adapts them the same way before fine-tuning). The fine-tune would replace
    them within its first steps anyway; what this changes is the start the fine-tune's guard
    compares with: measured on benchmarks/defaults_zoo.py, unstructured 80 % then came out
    better by 1.8-15.2 points on 7 of 16 (net, baseline) pairs (worse by 1.4 on one), the rows
    more than a point behind the plain reference went from 4 to 2, and structured 50 %,
    low-rank and clustering were unchanged within a point (median change 0.0).
    """
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not layers:
        return 0
    was_training = {m: m.training for m in model.modules()}
    momenta = [m.momentum for m in layers]
    model.eval()
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches
        m.train()
    for x, _, _ in guard_batches(data, batch_size):
        call(model, x)
    for m, momentum in zip(layers, momenta):
        m.momentum = momentum
    for m, training in was_training.items():
        m.train(training)
    return len(layers)


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


def guard_batches(data: Dataset, batch_size: int = 256):
    """(inputs, targets, rows) of the first GUARD_INPUTS training inputs, in batches: what the
    guard scores and what `recalibrate_bn` estimates BatchNorm statistics on."""
    n = min(len(data.x_train), GUARD_INPUTS)
    x, y = to_torch(data.x_train), targets_to_torch(data.y_train)
    for i in range(0, n, batch_size):
        idx = torch.arange(i, min(n, i + batch_size))
        yield index(x, idx), index(y, idx), len(idx)


@torch.no_grad()
def guard_loss(model: nn.Module, data: Dataset, loss_fn: LossFn | None = None, batch_size: int = 256) -> float:
    """The mean of `loss_fn` (else the task's loss) for `model` (eval mode) on the first
    GUARD_INPUTS training inputs."""
    model.eval()
    loss_fn = loss_fn or task_loss(data)
    total, n = 0.0, 0
    for x, y, rows in guard_batches(data, batch_size):
        total, n = total + float(loss_fn(model, x, y)) * rows, n + rows
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

"""Training and evaluation in torch: seeded, deterministic on CPU, threads set explicitly.

    >>> model = train_baseline(exp, data, log=print)        # cached by content hash
    >>> fit(student, data, exp.train, epochs=3, loss_fn=my_loss)   # fine-tune in place
    >>> evaluate(model, data.x_test, data.y_test)
    0.983
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgebench.config import Experiment, TrainConfig
from edgebench.data import Dataset
from edgebench.models import create_model, load_weights
from edgebench.paths import cache_dir

# Bump when the training code changes what it produces, so caches are not reused wrongly.
TRAIN_CODE_VERSION = 1

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def cross_entropy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(x), y)


def fit(
    model: nn.Module,
    data: Dataset,
    cfg: TrainConfig,
    epochs: int | None = None,
    lr: float | None = None,
    loss_fn: LossFn = cross_entropy,
    seed: int = 0,
    after_step: Callable[[], None] | None = None,
    params: list | None = None,
    log: Callable[[str], None] | None = None,
    label: str = "train",
) -> nn.Module:
    """Train `model` in place on data.x_train (SGD with cosine decay, or Adam); return it.

    `after_step` runs after every optimizer step (e.g. to re-apply a pruning mask);
    `params` trains extra parameters too (e.g. a distillation adapter).
    """
    epochs = cfg.epochs if epochs is None else epochs
    lr = cfg.lr if lr is None else lr
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(data.x_train)
    y = torch.from_numpy(data.y_train)
    trainable = list(model.parameters()) + list(params or [])
    if cfg.optimizer == "adam":
        opt = torch.optim.Adam(trainable, lr=lr, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.SGD(trainable, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, (len(x) + cfg.batch_size - 1) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * steps_per_epoch))
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for i in range(0, len(x), cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            loss = loss_fn(model, x[idx], y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if after_step is not None:
                after_step()
            total += loss.item() * len(idx)
        if log:
            log(f"{label}: epoch {epoch + 1}/{epochs} loss {total / len(x):.4f}")
    model.eval()
    return model


@torch.no_grad()
def predict_logits(model: nn.Module, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    model.eval()
    out = [model(torch.from_numpy(x[i : i + batch_size])) for i in range(0, len(x), batch_size)]
    return torch.cat(out).numpy()


def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of the torch model."""
    return float((predict_logits(model, x).argmax(1) == y).mean())


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
    return create_model(exp.model.factory, data.num_classes, data.input_shape[0], **exp.model.kwargs)


def train_baseline(exp: Experiment, data: Dataset, log: Callable[[str], None] = print) -> nn.Module:
    """The baseline: loaded from `[model] weights`, else trained once and cached by hash."""
    model = build_model(exp, data)
    if exp.model.weights:
        load_weights(model, exp.model.weights)
        return model.eval()
    path: Path = cache_dir("models") / f"{exp.model.factory.replace(':', '_')}-{baseline_key(exp, data)}.pt"
    if path.is_file():
        model.load_state_dict(torch.load(path, map_location="cpu"))
        log(f"baseline: loaded trained weights from cache {path}")
        return model.eval()
    fit(model, data, exp.train, seed=exp.seed, log=log, label="baseline")
    tmp = path.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(path)  # atomic: a killed run never leaves a half-written cache file
    return model.eval()

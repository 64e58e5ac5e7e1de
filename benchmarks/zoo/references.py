"""Plain references: each method written the way a practitioner writes it with the library alone.

- training "elsewhere": the user's optimizer at a constant lr, torch's own defaults otherwise
  (no weight decay), `plain_fit`;
- the fine-tune after a reference step (`plain_finetune`): Adam at the training lr, held
  constant (torch-pruning's and torch.nn.utils.prune's users reuse their optimizer); SGD
  with momentum at a tenth of the training lr, cosine-annealed to 0 (torch-pruning's
  benchmarks, Han et al.'s retraining);
- structured: torch-pruning's `MagnitudePruner`, L2 magnitude, the classifier ignored;
- unstructured: `torch.nn.utils.prune.global_unstructured`, L1, over every Conv/Linear weight;
- low-rank: a plain truncated SVD of every Linear and (reshaped) non-grouped conv at one
  ratio of their full rank, the ratio picked so the parameter count equals edgebench's;
- KD: Hinton's loss with the usual T = 4, alpha = 0.9, the same student, epochs and schedule;
- cluster: scikit-learn's KMeans per layer (16 values), a plain fine-tune, KMeans again.

Batches follow edgebench's `fit` for the same seed (its permutation generator), so a gap
between edgebench and a reference is not a different data order.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgebench.config import TrainConfig
from edgebench.model.data import Dataset

KD_TEMPERATURE, KD_ALPHA = 4.0, 0.9


def plain_fit(model: nn.Module, data: Dataset, cfg: TrainConfig, epochs: int, lr: float, seed: int,
              schedule: str = "constant", loss_fn=None, after_step=None) -> nn.Module:  # fmt: skip
    """A plain training loop: cfg's optimizer (momentum 0.9 for SGD), no weight decay, lr held
    (`constant`) or annealed to 0 (`cosine`)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    if cfg.optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=lr)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    steps = epochs * ((len(x) + cfg.batch_size - 1) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps)) if schedule == "cosine" else None
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            loss = loss_fn(model, x[idx], y[idx]) if loss_fn else F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched:
                sched.step()
            if after_step:
                after_step()
    return model.eval()


def plain_finetune(model: nn.Module, data: Dataset, cfg: TrainConfig, epochs: int, seed: int, after_step=None):
    if cfg.optimizer == "adam":
        return plain_fit(model, data, cfg, epochs, cfg.lr, seed, "constant", after_step=after_step)
    return plain_fit(model, data, cfg, epochs, cfg.lr / 10, seed, "cosine", after_step=after_step)


def classifier(model: nn.Module) -> nn.Module:
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


def structured(model: nn.Module, data: Dataset, cfg: TrainConfig, ratio: float, epochs: int, seed: int) -> nn.Module:
    import torch_pruning as tp

    model = copy.deepcopy(model).eval()
    heads = {m: m.num_heads for m in model.modules() if isinstance(m, nn.MultiheadAttention)}
    tp.pruner.MagnitudePruner(
        model, torch.from_numpy(data.x_train[:1]), importance=tp.importance.MagnitudeImportance(p=2),
        pruning_ratio=ratio, ignored_layers=[classifier(model)], num_heads=heads,
    ).step()  # fmt: skip
    for mha in heads:
        mha.head_dim = mha.embed_dim // mha.num_heads
    return plain_finetune(model, data, cfg, epochs, seed)


def unstructured(model: nn.Module, data: Dataset, cfg: TrainConfig, ratio: float, epochs: int, seed: int) -> nn.Module:
    from torch.nn.utils import prune

    model = copy.deepcopy(model).eval()
    params = [(m, "weight") for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))]
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=ratio)
    # The masks, then plain weights again: nn.MultiheadAttention reads out_proj.weight without
    # calling out_proj, so prune's forward pre-hook would not recompute it per step (torch raises
    # "backward through the graph a second time"); re-applying the masks after each step is the
    # usual way around it, and holds the mask through the fine-tune the same way.
    masks = [(m.weight_mask.detach().clone(), m) for m, _ in params]
    for m, p in params:
        prune.remove(m, p)

    def keep_masks():
        with torch.no_grad():
            for mask, m in masks:
                m.weight.mul_(mask)

    plain_finetune(model, data, cfg, epochs, seed, after_step=keep_masks)
    return model.eval()


def _svd_split(layer: nn.Module, ratio: float) -> nn.Module | None:
    """Linear / Conv: W (out x in·k) ≈ A B at rank ratio·full; None when it saves nothing."""
    w = layer.weight.detach()
    out, rest = w.shape[0], w[0].numel()
    if isinstance(layer, (nn.Conv1d, nn.Conv2d)) and layer.groups > 1:
        return None
    r = max(1, round(ratio * min(out, rest)))
    if r * (out + rest) >= out * rest:
        return None
    u, s, vh = torch.linalg.svd(w.reshape(out, rest), full_matrices=False)
    a, b = u[:, :r] * s[:r], vh[:r]
    bias = layer.bias is not None
    if isinstance(layer, nn.Linear):
        first, second = nn.Linear(rest, r, bias=False), nn.Linear(r, out, bias=bias)
        second.weight.data.copy_(a)
    else:
        conv = type(layer)
        first = conv(layer.in_channels, r, layer.kernel_size, layer.stride, layer.padding, layer.dilation, bias=False)
        second = conv(r, out, 1, bias=bias)
        second.weight.data.copy_(a.reshape(second.weight.shape))
    first.weight.data.copy_(b.reshape(first.weight.shape))
    if bias:
        second.bias.data.copy_(layer.bias.detach())
    return nn.Sequential(first, second)


def svd_factorize(model: nn.Module, ratio: float) -> nn.Module:
    model = copy.deepcopy(model)
    for name, layer in list(model.named_modules()):
        if isinstance(layer, (nn.Linear, nn.Conv1d, nn.Conv2d)) and name:
            new = _svd_split(layer, ratio)
            if new is not None:
                parent, _, child = name.rpartition(".")
                setattr(model.get_submodule(parent) if parent else model, child, new)
    return model


def params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def lowrank(model: nn.Module, data: Dataset, cfg: TrainConfig, target_params: int, epochs: int, seed: int):
    """Plain SVD at the ratio whose parameter count is closest to `target_params`, fine-tuned."""
    ratios = np.linspace(0.05, 1.0, 39)
    best = min(ratios, key=lambda r: abs(params(svd_factorize(model, float(r))) - target_params))
    return plain_finetune(svd_factorize(model, float(best)), data, cfg, epochs, seed)


def hinton_loss(teacher: nn.Module, temperature: float = KD_TEMPERATURE, alpha: float = KD_ALPHA):
    """alpha·T²·KL(teacher/T ‖ student/T) + (1 − alpha)·CE: Hinton et al. 2015."""
    memo: dict = {}

    def loss(model, x, y):
        key = x.numpy().tobytes()
        if key not in memo:
            with torch.no_grad():
                memo[key] = teacher(x)
        s, t = model(x), memo[key]
        soft = F.kl_div(F.log_softmax(s / temperature, 1), F.softmax(t / temperature, 1), reduction="batchmean")
        return alpha * temperature**2 * soft + (1 - alpha) * F.cross_entropy(s, y)

    return loss


def cluster(model: nn.Module, data: Dataset, cfg: TrainConfig, bits: int, epochs: int, seed: int) -> nn.Module:
    from sklearn.cluster import KMeans

    model = copy.deepcopy(model).eval()
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))
              and m.weight.numel() >= 4 * 2**bits]  # fmt: skip
    centroids = []

    @torch.no_grad()
    def snap(fit: bool = False) -> None:
        for i, m in enumerate(layers):
            w = m.weight.detach().reshape(-1, 1).numpy()
            if fit:
                centroids.append(KMeans(2**bits, n_init=1, random_state=seed).fit(w).cluster_centers_)
            c = centroids[i]
            m.weight.copy_(torch.from_numpy(c[np.abs(w - c.T).argmin(1)].reshape(m.weight.shape)).float())

    snap(fit=True)
    plain_finetune(model, data, cfg, epochs, seed)
    centroids.clear()
    snap(fit=True)
    return model.eval()


@torch.no_grad()
def recalibrate_bn(model: nn.Module, data: Dataset, batch_size: int = 128) -> nn.Module:
    """Re-estimate every BatchNorm's running statistics on the training inputs (their plain
    average), the model otherwise untouched."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return model
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    x = torch.from_numpy(data.x_train)
    for i in range(0, len(x), batch_size):
        model(x[i : i + batch_size])
    for m, momentum in zip(bns, saved):
        m.momentum = momentum
    return model.eval()

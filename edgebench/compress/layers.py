"""The layers compression works on, found by type (never by name), and magnitude masks.

Shared by `prune`, `cluster`, quantization-aware training and `edgebench sensitivity`; torch
is imported here, at the top, so method modules import this inside `apply` only.

    >>> [name for name, _ in prunable_layers(model)]
    ['features.0.0', 'features.1.0', 'classifier']
"""

from __future__ import annotations

import math

import torch
from torch import nn


def prunable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Conv and Linear layers with a weight, in module order; found by type, never by name."""
    return [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))
        and getattr(m, "weight", None) is not None
    ]


def output_layer(model: nn.Module, sample: torch.Tensor) -> nn.Module | None:
    """The last Conv/Linear that runs in a forward pass: the classifier, whose outputs stay."""
    order: list[nn.Module] = []
    hooks = [m.register_forward_hook(lambda m, i, o: order.append(m)) for _, m in prunable_layers(model)]
    run_once(model, sample, hooks)
    return order[-1] if order else None


def run_once(model: nn.Module, sample: torch.Tensor, hooks: list) -> None:
    """One inference in eval mode with `hooks` (their handles) installed, then remove them."""
    try:
        with torch.no_grad():
            model.eval()(sample)
    finally:
        for h in hooks:
            h.remove()


def out_channels(m: nn.Module) -> int:
    return int(m.weight.shape[0])


def magnitude_mask(weights: list[torch.Tensor], ratio: float) -> list[torch.Tensor]:
    """Masks zeroing exactly ceil(ratio × n) of the smallest |w| pooled over `weights`."""
    flat = torch.cat([w.detach().abs().flatten() for w in weights])
    k = min(len(flat), math.ceil(ratio * len(flat) - 1e-9))
    keep = torch.ones(len(flat), dtype=torch.bool)
    if k > 0:
        # argsort, not a threshold: ties (e.g. many zeros) must not over- or under-prune.
        keep[torch.argsort(flat, stable=True)[:k]] = False
    return [m.view_as(w) for m, w in zip(torch.split(keep, [w.numel() for w in weights]), weights)]

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


def output_layers(model: nn.Module, sample) -> list[nn.Module]:
    """The Conv/Linear layers whose channels the model's outputs are made of: for each output,
    the layer that produced it, or else the last layer to run whose channel count is one of the
    output's dimensions (an embedding pooled from a conv, a head output permuted to NHWC).
    Pruning keeps their channels, so outputs keep their shapes."""
    from edgebench.tasks.arrays import call, outputs

    ran: list[tuple[nn.Module, torch.Tensor]] = []
    hooks = [m.register_forward_hook(lambda m, i, o: ran.append((m, o))) for _, m in prunable_layers(model)]
    try:
        with torch.no_grad():
            outs = outputs(call(model.eval(), sample))
    finally:
        for h in hooks:
            h.remove()
    found: list[nn.Module] = []
    for out in outs:
        same = [m for m, o in ran if o is out]
        if not same and out.dim() >= 2:
            same = [m for m, _ in reversed(ran) if out_channels(m) in tuple(out.shape[1:])][:1]
        found += [m for m in same if not any(m is f for f in found)]
    return found


def run_once(model: nn.Module, sample: torch.Tensor, hooks: list) -> None:
    """One inference in eval mode with `hooks` (their handles) installed, then remove them."""
    from edgebench.tasks.arrays import call

    try:
        with torch.no_grad():
            call(model.eval(), sample)
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

"""The module `stress` plants (its own file: torch is imported here, and a built model must
pickle for the export worker, so the class lives at module level)."""

from __future__ import annotations

import torch
from torch import nn


class DuplicatedInput(nn.Module):
    """`layer` fed its input plus a copy of the input's first channel, the copies weighted +M
    and -M (M = `magnitude` x the layer's largest weight): equal in float, hostile to int8."""

    def __init__(self, layer: nn.Module, magnitude: float):
        super().__init__()
        self.linear = isinstance(layer, nn.Linear)
        weight = layer.weight.detach()
        big = magnitude * float(weight.abs().max())
        if self.linear:
            self.conv = nn.Linear(layer.in_features + 1, layer.out_features, bias=layer.bias is not None)
        else:
            self.conv = type(layer)(layer.in_channels + 1, layer.out_channels, layer.kernel_size, layer.stride,
                                    layer.padding, layer.dilation, 1, layer.bias is not None, layer.padding_mode)
        with torch.no_grad():
            new = torch.cat([weight, torch.zeros_like(weight[:, :1])], 1)
            new[:, 0] += big
            new[:, -1] -= big
            self.conv.weight.copy_(new)
            if layer.bias is not None:
                self.conv.bias.copy_(layer.bias.detach())

    def forward(self, x):
        axis = -1 if self.linear else 1
        return self.conv(torch.cat([x, x.narrow(axis, 0, 1)], axis))

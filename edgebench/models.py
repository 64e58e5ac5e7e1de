"""Built-in models and user model factories; one way in: `create_model(name, ...)`.

    >>> model = create_model("mobilenet", num_classes=10, in_channels=1, width=0.5)
    >>> model = create_model("mypkg.nets:build", num_classes=10, in_channels=3)

Every built-in takes `num_classes`, `in_channels` and a `width` multiplier. A user factory
(`"package.module:function"`) gets `num_classes` and `in_channels` when its signature accepts
them, plus the `[model] kwargs` table of the experiment.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable

import torch
from torch import nn

from edgebench.errors import ConfigError, did_you_mean

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register(name: str):
    def add(fn):
        MODELS[name] = fn
        return fn

    return add


def _ch(c: int, width: float, divisor: int = 4) -> int:
    """Channels scaled by width, rounded to a multiple of `divisor` (at least `divisor`)."""
    return max(divisor, int(c * width + divisor / 2) // divisor * divisor)


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: type | None = nn.ReLU):
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class DemoCNN(nn.Module):
    """A plain VGG-style CNN: five 3x3 conv-BN-ReLU layers, global pool, one Linear."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: float = 1.0):
        super().__init__()
        c = [_ch(n, width) for n in (16, 32, 32, 64, 64)]
        self.features = nn.Sequential(
            conv_bn(in_channels, c[0]),
            conv_bn(c[0], c[1], stride=2),
            conv_bn(c[1], c[2]),
            conv_bn(c[2], c[3], stride=2),
            conv_bn(c[3], c[4]),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c[4], num_classes)

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 project; residual when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int = 4):
        super().__init__()
        hidden = cin * expand
        self.use_residual = stride == 1 and cin == cout
        self.block = nn.Sequential(
            conv_bn(cin, hidden, k=1, act=nn.Hardswish),
            conv_bn(hidden, hidden, stride=stride, groups=hidden, act=nn.Hardswish),
            conv_bn(hidden, cout, k=1, act=None),
        )

    def forward(self, x):
        y = self.block(x)
        return x + y if self.use_residual else y


class MobileNet(nn.Module):
    """A small MobileNetV2-style net (depthwise-separable, inverted residuals)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: float = 1.0):
        super().__init__()
        c = [_ch(n, width) for n in (16, 24, 32, 64)]
        self.features = nn.Sequential(
            conv_bn(in_channels, c[0], act=nn.Hardswish),
            InvertedResidual(c[0], c[1], 2),
            InvertedResidual(c[1], c[1], 1),
            InvertedResidual(c[1], c[2], 2),
            InvertedResidual(c[2], c[2], 1),
            InvertedResidual(c[2], c[3], 1),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c[3], num_classes)

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class ChannelShuffle(nn.Module):
    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x):
        n, c, h, w = x.shape
        return x.reshape(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleUnit(nn.Module):
    """ShuffleNetV1 unit: grouped 1x1, channel shuffle, depthwise 3x3, grouped 1x1, residual."""

    def __init__(self, channels: int, groups: int = 2):
        super().__init__()
        mid = channels
        self.block = nn.Sequential(
            conv_bn(channels, mid, k=1, groups=groups),
            ChannelShuffle(groups),
            conv_bn(mid, mid, groups=mid, act=None),
            conv_bn(mid, channels, k=1, groups=groups, act=None),
        )
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(x + self.block(x))


class ShuffleNet(nn.Module):
    """A small ShuffleNet-style net (grouped 1x1 convs, channel shuffle, depthwise convs)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: float = 1.0, groups: int = 2):
        super().__init__()
        c = [_ch(n, width, divisor=2 * groups) for n in (16, 32, 64)]
        self.features = nn.Sequential(
            conv_bn(in_channels, c[0]),
            conv_bn(c[0], c[1], stride=2),
            ShuffleUnit(c[1], groups),
            conv_bn(c[1], c[2], stride=2),
            ShuffleUnit(c[2], groups),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c[2], num_classes)

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(conv_bn(cin, cout, stride=stride), conv_bn(cout, cout, act=None))
        self.shortcut = (
            nn.Identity() if stride == 1 and cin == cout else conv_bn(cin, cout, k=1, stride=stride, act=None)
        )
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.body(x) + self.shortcut(x))


class ResNet(nn.Module):
    """A small ResNet (basic blocks, projection shortcuts)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: float = 1.0):
        super().__init__()
        c = [_ch(n, width) for n in (16, 32, 64)]
        self.features = nn.Sequential(
            conv_bn(in_channels, c[0]),
            BasicBlock(c[0], c[0], 1),
            BasicBlock(c[0], c[1], 2),
            BasicBlock(c[1], c[2], 2),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c[2], num_classes)

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


register("demo_cnn")(DemoCNN)
register("mobilenet")(MobileNet)
register("shufflenet")(ShuffleNet)
register("resnet")(ResNet)


def resolve_factory(name: str) -> Callable[..., nn.Module]:
    if name in MODELS:
        return MODELS[name]
    if ":" not in name:
        raise ConfigError(
            f"unknown model {name!r}{did_you_mean(name, MODELS)}; "
            'use a built-in name or "package.module:function"'
        )
    module_name, fn_name = name.split(":", 1)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"model factory {name!r}: cannot import {module_name!r} ({exc})") from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise ConfigError(f"model factory {name!r}: {module_name} has no callable {fn_name!r}")
    return fn


def create_model(name: str, num_classes: int, in_channels: int, **kwargs) -> nn.Module:
    """Build a model by registry name or "package.module:function"."""
    fn = resolve_factory(name)
    params = inspect.signature(fn).parameters
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    for key, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        if accepts_any or key in params:
            kwargs.setdefault(key, value)
    try:
        model = fn(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"model {name!r}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model factory {name!r} returned {type(model).__name__}, not a torch nn.Module")
    return model


def load_weights(model: nn.Module, path: str) -> nn.Module:
    """Load a state dict (or a whole pickled module's state) into `model`."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise ConfigError(f"weights {path}: cannot be read by torch.load ({exc})") from None
    if isinstance(state, nn.Module):
        state = state.state_dict()
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError) as exc:
        first = str(exc).strip().splitlines()
        raise ConfigError(f"weights {path} do not fit the model: {first[0] if first else exc}") from None
    return model


def count_params(model: nn.Module) -> tuple[int, int]:
    """(parameters, non-zero parameters)."""
    total = nonzero = 0
    for p in model.parameters():
        total += p.numel()
        nonzero += int(torch.count_nonzero(p).item())
    return total, nonzero

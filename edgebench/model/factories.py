"""Built-in models and user model factories; one way in: `create_model(name, ...)`.

    >>> model = create_model("mobilenet", num_classes=10, in_channels=1, width=0.5)
    >>> model = create_model("mypkg.nets:build", num_classes=10, in_channels=3)

Every built-in takes `num_classes`, `in_channels` and a `width` multiplier. A user factory
(`"package.module:function"`) gets `num_classes` and `in_channels` when its signature accepts
them, plus the `[model] kwargs` table of the experiment.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from torch import nn

from edgebench.errors import ConfigError, did_you_mean
from edgebench.registry import user_function

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


class TinyDetector(nn.Module):
    """A single-stage, anchor-free detector (CenterNet-style) for the `detect` task: two stride-2
    convs straight to the stride-4 grid, three 3x3 convs there (the middle one dilated: objects
    span up to 6 cells), one 1x1 head giving (N, C + 4, H/4, W/4) — class heatmap logits, then
    the centre offset and log size (edgebench.tasks.detect decodes them). 28.6 k parameters,
    4.2 M MACs at 48x48, width 1. Measured: a 6-conv, 19 M MAC version reached the same mAP@0.5
    (0.96) and took ~4x longer per epoch on 2 cores."""

    def __init__(self, num_classes: int = 5, in_channels: int = 1, width: float = 1.0):
        super().__init__()
        from edgebench.tasks.detect import HEAT_BIAS

        c = [_ch(n, width) for n in (12, 24, 32, 32, 32)]
        dilated = nn.Sequential(nn.Conv2d(c[2], c[3], 3, padding=2, dilation=2, bias=False), nn.BatchNorm2d(c[3]),
                                nn.ReLU())
        self.features = nn.Sequential(conv_bn(in_channels, c[0], stride=2), conv_bn(c[0], c[1], stride=2),
                                      conv_bn(c[1], c[2]), dilated, conv_bn(c[3], c[4]))
        self.head = nn.Conv2d(c[4], num_classes + 4, 1)
        with torch.no_grad():  # CenterNet's init: heatmap bias at the prior, boxes near 0
            self.head.bias.zero_()
            self.head.bias[:num_classes] = HEAT_BIAS

    def forward(self, x):
        return self.head(self.features(x))


register("demo_cnn")(DemoCNN)
register("tiny_detector")(TinyDetector)
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
    return user_function(name, "model factory")


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


# The keys under which common training scripts keep the state dict inside a checkpoint.
CHECKPOINT_KEYS = ("state_dict", "model_state_dict")
SAVE_HINT = "save a plain state dict: torch.save(model.state_dict(), PATH)"


def read_state_dict(path: str) -> dict:
    """The state dict in a weights file, read with `torch.load(weights_only=True)`.

    Never unpickles code: a file that would import anything but tensors and plain containers
    (a pickled module, an arbitrary object) is refused with a ConfigError saying how to save
    a plain state dict. Accepted: a state dict, or a checkpoint dict holding one under
    "state_dict" or "model_state_dict"; a "module." prefix (DataParallel) is dropped.

        >>> torch.save(model.state_dict(), "model.pt")
        >>> state = read_state_dict("model.pt")
    """
    import pickle
    import re
    import warnings

    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the error says it all
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "weights only load failed" not in text.lower():
            raise ConfigError(f"weights {path}: cannot be read by torch.load ({_first_line(text)}); {SAVE_HINT}") from None
        found = re.search(r"GLOBAL ([\w.]+)", text)
        if found:
            # e.g. posix.system for a file that would run a shell command, or
            # torch.nn.modules.linear.Linear for torch.save(model) of a whole module.
            raise ConfigError(
                f"weights {path}: refused: loading it would import {found.group(1)}, and edgebench loads only "
                f"tensors (torch.load weights_only=True), so a weights file cannot run code; {SAVE_HINT}"
            ) from None
        raise ConfigError(
            f"weights {path}: cannot be read by torch.load as plain tensors (not a torch.save file of "
            f"a state dict, or a pickle it does not read safely); {SAVE_HINT}"
        ) from None
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise ConfigError(f"weights {path}: cannot be read by torch.load ({_first_line(str(exc))}); {SAVE_HINT}") from None
    if isinstance(state, dict):
        for key in CHECKPOINT_KEYS:
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        what = type(state).__name__ if not isinstance(state, dict) else f"a dict with keys {sorted(map(str, state))[:5]}"
        raise ConfigError(
            f"weights {path}: holds {what}, not a state dict of tensors "
            f"(nor a checkpoint with one under {' or '.join(CHECKPOINT_KEYS)}); {SAVE_HINT}"
        )
    if state and all(str(k).startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_weights(model: nn.Module, path: str) -> nn.Module:
    """Load the state dict in `path` (see `read_state_dict`) into `model`; return it.

        >>> model = load_weights(create_model("demo_cnn", 10, 1), "model.pt")
    """
    state = read_state_dict(path)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"weights {path} do not fit the model: {_first_line(str(exc))}") from None
    return model


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else text


def count_params(model: nn.Module) -> tuple[int, int]:
    """(parameters, non-zero parameters)."""
    total = nonzero = 0
    for p in model.parameters():
        total += p.numel()
        nonzero += int(torch.count_nonzero(p).item())
    return total, nonzero

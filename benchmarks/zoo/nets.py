"""The zoo's nets: written the way users write them, outside edgebench, none tuned for it.

Each differs in what breaks defaults: SE gates and residual adds, grouped and depthwise convs,
no BatchNorm, Hardswish, 1-D convs, attention with LayerNorm. None takes a `width` argument,
so edgebench's KD student is the teacher pruned to half its channels (weights kept).

    se_resnet  ResNet-like with squeeze-excite gates and residual adds (BatchNorm, ReLU)
    resnext    ResNeXt-like grouped 3x3 convs, SE gates, projection shortcuts, hardswish
    dw_mix     depthwise 5x5 + grouped 1x1 blocks, SE gates, a hidden Linear before the classifier
    mbv3       MobileNetV3-like: depthwise inverted residuals, SE with a hard-sigmoid, Hardswish
    plain      a VGG-like CNN without BatchNorm (biases, ReLU, max-pooling, dropout-free)
    dscnn      a DS-CNN keyword spotter on spectrogram frames (MLPerf Tiny's shape)
    conv1d     a Conv1d net on raw signals
    vit        a tiny vision transformer (patch conv, class token, nn.MultiheadAttention, GELU)
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch.nn.functional as F
from prune_vs_reference import SE, DWMix, GroupSE, MobileSE, cbh
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "tasks"))
import user_nets  # noqa: E402  (the user-model test's nets: a user's file, kept standalone there)


class SEBasic(nn.Module):
    """conv-BN-ReLU, conv-BN, SE gate, add the (projected) input, ReLU."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.se = SE(cout)
        self.short = (nn.Sequential() if stride == 1 and cin == cout else
                      nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))  # fmt: skip

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.se(self.bn2(self.conv2(y))) + self.short(x))


class SEResNet(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 3, w: int = 12):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU())
        self.layers = nn.Sequential(SEBasic(w, w, 1), SEBasic(w, 2 * w, 2), SEBasic(2 * w, 4 * w, 2))
        self.fc = nn.Linear(4 * w, num_classes)

    def forward(self, x):
        return self.fc(self.layers(self.stem(x)).mean((2, 3)))


class Plain(nn.Module):
    """No BatchNorm anywhere: convs with biases, ReLU, max-pooling, a hidden Linear."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2), nn.Conv2d(32, 48, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(48 * 4, 64), nn.ReLU(), nn.Linear(64, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


class DSCNN(nn.Module):
    """MLPerf Tiny's keyword spotter, smaller: a strided stem, then depthwise-separable blocks."""

    def __init__(self, num_classes: int = 12, w: int = 32):
        super().__init__()

        def ds(c: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
                                 nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU())  # fmt: skip

        self.stem = nn.Sequential(nn.Conv2d(1, w, (5, 3), stride=(2, 2), padding=(2, 1), bias=False),
                                  nn.BatchNorm2d(w), nn.ReLU())  # fmt: skip
        self.blocks = nn.Sequential(ds(w), ds(w), ds(w))
        self.head = nn.Linear(w, num_classes)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


class SignalNet(nn.Module):
    def __init__(self, num_classes: int = 6):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(1, 16, 7, padding=3), nn.BatchNorm1d(16), nn.ReLU(), nn.MaxPool1d(2),
            nn.Conv1d(16, 32, 5, padding=2), nn.BatchNorm1d(32), nn.ReLU(), nn.MaxPool1d(2),
            nn.Conv1d(32, 48, 3, padding=1), nn.BatchNorm1d(48), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Sequential(nn.Linear(48, 32), nn.ReLU(), nn.Linear(32, num_classes))

    def forward(self, x):
        return self.head(self.features(x).mean(2))


class TinyViT(user_nets.TinyViT):
    """The user-model test's tiny ViT (patch conv, LayerNorm, multi-head attention, GELU) on 1-channel digits."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, patch: int = 2, tokens: int = 25, **kw):
        super().__init__(num_classes, in_channels, patch=patch, tokens=tokens, **kw)


class ResNeXt(GroupSE):
    """prune_vs_reference's GroupSE at width 12 (grouped convs of 4 groups)."""

    def __init__(self, num_classes: int = 10):
        super().__init__(num_classes, w=12)


__all__ = ["SEResNet", "ResNeXt", "DWMix", "MobileSE", "Plain", "DSCNN", "SignalNet", "TinyViT", "cbh"]

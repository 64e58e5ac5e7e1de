"""Models and data the way users bring them: written outside edgebench, one factory each, and a
seeded generator of a small learnable data set for each (saved as the user's .npz).

    kws        keyword spotting: a depthwise-separable CNN (DS-CNN) on 1 x 49 x 10 spectrogram
               frames, 12 classes (MLPerf Tiny's KWS shape)
    vit        a tiny vision transformer: patch conv, class token, LayerNorm, multi-head
               attention, GELU MLP, on 3 x 16 x 16 images, 4 classes
    signal     a Conv1d net on 1 x 128 signals, 4 classes
    text       a text classifier on int64 token ids with a padding mask (two named inputs),
               Embedding + masked mean pooling, 3 classes
    embed      a classifier returning (logits, embedding)
    autoenc    an MLP autoencoder for anomaly detection (MSE reconstruction, judged by AUC)
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class DSCNN(nn.Module):
    def __init__(self, num_classes: int = 12, width: int = 32):
        super().__init__()

        def ds(c: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(c, c, 3, padding=1, groups=c), nn.BatchNorm2d(c), nn.ReLU(),
                                 nn.Conv2d(c, c, 1), nn.BatchNorm2d(c), nn.ReLU())

        self.stem = nn.Sequential(nn.Conv2d(1, width, (5, 3), stride=(2, 1), padding=(2, 1)), nn.BatchNorm2d(width),
                                  nn.ReLU())
        self.blocks = nn.Sequential(ds(width), ds(width))
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x):
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    def __init__(self, num_classes: int = 4, in_channels: int = 3, dim: int = 32, heads: int = 4, depth: int = 2,
                 patch: int = 4, tokens: int = 16):  # fmt: skip
        super().__init__()
        self.patch = nn.Conv2d(in_channels, dim, patch, stride=patch)  # 16x16 images: 16 patches
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls.expand(tokens.shape[0], -1, -1), tokens], 1) + self.pos
        return self.head(self.norm(self.blocks(tokens))[:, 0])


class SignalNet(nn.Module):
    def __init__(self, num_classes: int = 4, in_channels: int = 1):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(in_channels, 16, 7, padding=3), nn.BatchNorm1d(16), nn.ReLU(), nn.MaxPool1d(2),
            nn.Conv1d(16, 32, 5, padding=2), nn.BatchNorm1d(32), nn.ReLU(), nn.MaxPool1d(2),
            nn.Conv1d(32, 32, 3, padding=1), nn.BatchNorm1d(32), nn.ReLU())
        self.head = nn.Linear(32, num_classes)

    def forward(self, x):
        return self.head(self.features(x).mean(2))


class TextNet(nn.Module):
    def __init__(self, num_classes: int = 3, vocab: int = 50, dim: int = 32):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.proj = nn.Sequential(nn.Linear(dim, dim), nn.ReLU())
        self.head = nn.Linear(dim, num_classes)

    def forward(self, ids, mask):
        h = self.proj(self.embed(ids)) * mask.unsqueeze(-1)
        return self.head(h.sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0))


class EmbedNet(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(in_channels, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                                      nn.Flatten(), nn.Linear(128, 32), nn.ReLU())
        self.head = nn.Linear(32, num_classes)

    def forward(self, x):
        embedding = self.features(x)
        return self.head(embedding), embedding


class AutoEncoder(nn.Module):
    def __init__(self, features: int = 32, code: int = 8):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(features, 64), nn.ReLU(), nn.Linear(64, code), nn.ReLU())
        self.decoder = nn.Sequential(nn.Linear(code, 64), nn.ReLU(), nn.Linear(64, features))

    def forward(self, x):
        return self.decoder(self.encoder(x))


def kws(num_classes: int = 12):
    return DSCNN(num_classes)


def vit(num_classes: int = 4):
    return TinyViT(num_classes)


def signal(num_classes: int = 4, in_channels: int = 1):
    return SignalNet(num_classes, in_channels)


def text(num_classes: int = 3):
    return TextNet(num_classes)


def embed(num_classes: int = 10, in_channels: int = 1):
    return EmbedNet(num_classes, in_channels)


def autoenc():
    return AutoEncoder()


# ---- data -------------------------------------------------------------------------------------


def _split(x, y, n_test: int) -> dict:
    if isinstance(x, dict):
        out = {f"x_train:{k}": v[:-n_test] for k, v in x.items()} | {f"x_test:{k}": v[-n_test:] for k, v in x.items()}
    else:
        out = {"x_train": x[:-n_test], "x_test": x[-n_test:]}
    return out | {"y_train": y[:-n_test], "y_test": y[-n_test:]}


def make_data(name: str, n: int = 600, n_test: int = 200, seed: int = 0) -> dict:
    """The arrays of a learnable set for model `name`, as a user would save them."""
    rng = np.random.default_rng(seed)
    if name == "kws":
        y = rng.integers(0, 12, n)
        rows, cols = np.arange(49)[:, None], np.arange(10)[None, :]
        x = rng.normal(0, 0.5, (n, 1, 49, 10)).astype(np.float32)
        for i, c in enumerate(y):  # each keyword: its own ripple across frequency and time
            f_row, f_col, shift = 0.05 + 0.07 * (c % 6), 0.1 + 0.2 * (c // 6), rng.uniform(0, 2 * np.pi)
            x[i, 0] += 1.5 * np.sin(2 * np.pi * (f_row * rows + f_col * cols) + shift)
        return _split(x, y, n_test)
    if name == "vit":
        y = rng.integers(0, 4, n)
        x = rng.normal(0, 0.3, (n, 3, 16, 16)).astype(np.float32)
        for i, c in enumerate(y):  # a bright stripe: horizontal/vertical, in channel 0 or 1
            channel, line = c % 2, rng.integers(2, 14)
            if c < 2:
                x[i, channel, line - 1 : line + 1, :] += 2.0
            else:
                x[i, channel, :, line - 1 : line + 1] += 2.0
        return _split(x, y, n_test)
    if name == "signal":
        y = rng.integers(0, 4, n)
        t = np.arange(128) / 128
        phase = rng.uniform(0, 2 * np.pi, (n, 1))
        x = np.sin(2 * np.pi * (3 + 4 * y[:, None]) * t + phase) + rng.normal(0, 0.5, (n, 128))
        return _split(x[:, None].astype(np.float32), y, n_test)
    if name == "text":
        y = rng.integers(0, 3, n)
        ids = rng.integers(4, 50, (n, 24)).astype(np.int64)
        lengths = rng.integers(8, 25, n)
        mask = (np.arange(24)[None] < lengths[:, None]).astype(np.float32)
        for i, c in enumerate(y):  # the class's keyword (token 1, 2 or 3) appears a few times
            ids[i, rng.choice(lengths[i], 3, replace=False)] = c + 1
        ids[mask == 0] = 0
        return _split({"ids": ids, "mask": mask}, y, n_test)
    if name == "embed":
        from sklearn.datasets import load_digits

        d = load_digits()
        x = (d.images[:, None] / 16.0).astype(np.float32)
        return _split(x, d.target, 360)
    if name == "autoenc":  # normal: points near a low-dimensional subspace; anomalies: off it
        basis = rng.normal(0, 1, (4, 32))
        normal = rng.normal(0, 1, (n, 4)) @ basis + rng.normal(0, 0.1, (n, 32))
        anomalous = rng.normal(0, 1.5, (n_test // 2, 32))
        x_test = np.concatenate([normal[-n_test // 2 :], anomalous]).astype(np.float32)
        y_test = np.r_[np.zeros(n_test // 2), np.ones(n_test // 2)].astype(np.int64)
        return {"x_train": normal[: -n_test // 2].astype(np.float32), "x_test": x_test, "y_test": y_test}
    raise ValueError(name)

"""Low-rank factorization: requested ranks, fewer parameters, a close approximation before
fine-tuning, depthwise convs left alone, a clear error when nothing can be factorized, and
ONNX exports that match torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_distill import TRAIN, UserNet, assert_exports, context, tiny_data
from torch import nn

from edgebench.compress import METHODS
from edgebench.compress.lowrank import factorize
from edgebench.errors import ConfigError, StepError
from edgebench.export.onnx import rel_err
from edgebench.model.factories import count_params
from edgebench.model.train import fit, predict_logits


class Wide(nn.Module):
    """Big enough layers that factorizing them saves parameters; a 1×1 strided shortcut too."""

    def __init__(self, c: int = 32):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(1, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU())
        self.b = nn.Sequential(
            nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), nn.BatchNorm2d(2 * c), nn.ReLU()
        )
        self.skip = nn.Conv2d(c, 2 * c, 1, stride=2, bias=False)
        self.dw = nn.Conv2d(2 * c, 2 * c, 3, padding=1, groups=2 * c)
        self.fc1 = nn.Linear(2 * c, 64)
        self.fc2 = nn.Linear(64, 4)

    def forward(self, x):
        x = self.a(x)
        x = self.b(x) + self.skip(x)
        x = torch.relu(self.dw(x)).mean((2, 3))
        return self.fc2(torch.relu(self.fc1(x)))


def nearly_low_rank_(layer: nn.Module, rank: int, seed: int = 0) -> None:
    """Give a layer weights of rank `rank` plus 1% noise, as trained layers often nearly are."""
    g = torch.Generator().manual_seed(seed)
    w = layer.weight.data
    m = w.reshape(w.shape[0], -1)
    low = torch.randn(m.shape[0], rank, generator=g) @ torch.randn(rank, m.shape[1], generator=g)
    low = low / low.norm() * m.norm()
    w.copy_((low + 0.01 * low.std() * torch.randn(m.shape, generator=g)).reshape(w.shape))


@pytest.fixture(scope="module")
def data():
    return tiny_data()


@pytest.fixture()
def wide():
    torch.manual_seed(0)
    return Wide().eval()


def weights(seq: nn.Sequential) -> list[tuple[int, ...]]:
    return [tuple(m.weight.shape) for m in seq]


def test_ratio_gives_the_requested_ranks_in_each_mode(wide):
    svd, ranks = factorize(wide, ratio=0.25, mode="svd")
    # b: 64 × (32·9) → rank 16; skip (1×1): 64 × 32 → rank 8; fc1: 64 × 64 → rank 16.
    assert ranks == {"b.0": 16, "skip": 8, "fc1": 16}
    assert weights(svd.b[0]) == [(16, 32, 3, 3), (64, 16, 1, 1)]
    assert svd.b[0][0].stride == (2, 2) and svd.skip[0].stride == (2, 2)
    assert weights(svd.fc1) == [(16, 64), (64, 16)]
    product = svd.fc1[1].weight @ svd.fc1[0].weight
    assert torch.linalg.matrix_rank(product).item() == 16

    tucker, ranks = factorize(wide, ratio=0.25, mode="tucker2")
    assert ranks["b.0"] == [8, 16]  # (r_in, r_out) = a quarter of (32, 64)
    assert weights(tucker.b[0]) == [(8, 32, 1, 1), (16, 8, 3, 3), (64, 16, 1, 1)]
    assert ranks["skip"] == 8  # a 1×1 conv is a matrix: a plain SVD split in both modes
    for model in (svd, tucker):
        assert count_params(model)[0] < count_params(wide)[0]


@pytest.mark.parametrize("mode", ["svd", "tucker2"])
def test_energy_099_approximates_a_nearly_low_rank_model(wide, data, mode):
    for layer in (wide.b[0], wide.skip, wide.fc1):
        nearly_low_rank_(layer, 4)
    x = data.x_test
    before = predict_logits(wide, x)
    model, ranks = factorize(wide, energy=0.99, mode=mode)
    assert count_params(model)[0] < 0.6 * count_params(wide)[0]
    assert rel_err(predict_logits(model, x), before) < 0.05
    assert np.array_equal(predict_logits(wide, x), before)  # the input model is untouched
    assert isinstance(wide.b[0], nn.Conv2d)


def test_depthwise_and_small_layers_are_skipped(wide):
    model, ranks = factorize(wide, ratio=0.5)
    assert model.dw is not wide.dw and isinstance(model.dw, nn.Conv2d)  # a copy, unchanged
    assert torch.equal(model.dw.weight, wide.dw.weight)
    assert (
        "dw" not in ranks and "a.0" not in ranks and "fc2" not in ranks
    )  # grouped; 288 and 256 weights


def test_nothing_to_factorize_is_a_step_error(data):
    depthwise_only = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, groups=1, bias=False), nn.ReLU(),
                                   nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.AdaptiveAvgPool2d(1), nn.Flatten())  # fmt: skip
    with pytest.raises(StepError, match="no factorizable layer: .*groups = 8"):
        METHODS.get("lowrank")(ratio=0.5).apply(depthwise_only, context(data, None))
    with pytest.raises(StepError, match="no factorizable layer"):
        factorize(nn.Sequential(nn.Flatten(), nn.ReLU()))


@pytest.mark.parametrize("mode", ["svd", "tucker2"])
def test_step_finetunes_records_ranks_and_exports(mode, data, tmp_path):
    torch.manual_seed(0)
    model = fit(UserNet(width=2.0), data, TRAIN, epochs=2)
    ctx = context(data, model)
    out = METHODS.get("lowrank")(ratio=0.5, mode=mode, min_params=512, finetune_epochs=1).apply(
        model, ctx
    )
    ranks = ctx.notes["lowrank_ranks"]
    assert "mix" in ranks and "dw" not in ranks and "grouped" not in ranks
    assert count_params(out)[0] < count_params(model)[0]
    assert isinstance(model.mix, nn.Conv2d)
    assert_exports(out, data, tmp_path)


def test_chains_after_distill(data, tmp_path):
    torch.manual_seed(0)
    teacher = fit(UserNet(width=2.0), data, TRAIN, epochs=2)
    ctx = context(data, teacher)
    student = METHODS.get("distill")(kind="logits", width=1.0, epochs=1).apply(teacher, ctx)
    out = METHODS.get("lowrank")(ratio=0.5, min_params=256, finetune_epochs=0).apply(student, ctx)
    assert set(ctx.notes) >= {"distill", "lowrank_ranks"}
    assert count_params(out)[0] < count_params(student)[0]


def test_config_checks():
    with pytest.raises(ConfigError, match="not both"):
        METHODS.get("lowrank")(ratio=0.5, energy=0.9)
    with pytest.raises(ConfigError, match="mode"):
        METHODS.get("lowrank")(mode="cp")

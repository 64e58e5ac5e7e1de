"""Knowledge distillation on a tiny synthetic task and a user model with no name conventions.

The teacher is trained once per module (about a second); each test trains a student for a
few epochs on 8×8 inputs and checks what the step promises: the student learns (its loss
falls), the teacher is untouched, layers are found without names, the -nokd twin exists,
and the student exports to ONNX and matches torch.
"""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from tiny_nets import tiny_data as shared_tiny_data
from torch import nn

from edgebench.compress import METHODS, StepContext
from edgebench.compress.distill import make_student
from edgebench.compress.distill_losses import auto_feature_layer, kd_logits, last_linear
from edgebench.config import ModelConfig, TrainConfig, parse_experiment
from edgebench.errors import ConfigError, StepError
from edgebench.export.onnx import export_onnx, verify_onnx
from edgebench.model.data import Dataset
from edgebench.model.factories import count_params, create_model
from edgebench.model.train import fit

N_CLASSES = 4
TRAIN = TrainConfig(epochs=4, lr=0.05, batch_size=32, threads=1)


def tiny_data(seed: int = 0) -> Dataset:
    return shared_tiny_data(seed, n_train=160, n_test=64)


class UserNet(nn.Module):
    """Names nothing like the built-ins; residual adds and pooling in forward(); SiLU,
    Hardswish, depthwise and grouped convs; the head is not the last module registered."""

    def __init__(self, num_classes: int = N_CLASSES, in_channels: int = 1, width: float = 1.0):
        super().__init__()
        c = max(4, int(16 * width) // 4 * 4)
        self.head = nn.Linear(2 * c, num_classes)  # registered first, runs last
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU()
        )
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.act = nn.SiLU()
        self.expand = nn.Conv2d(c, 2 * c, 1)
        self.grouped = nn.Conv2d(2 * c, 2 * c, 3, stride=2, padding=1, groups=2)
        self.hs = nn.Hardswish()
        self.mix = nn.Conv2d(2 * c, 2 * c, 3, padding=1)
        self.unused = nn.Linear(3, 3)  # registered after the head but never run

    def forward(self, x):
        x = self.stem(x)
        x = x + self.act(self.dw(x))
        x = self.hs(self.grouped(self.expand(x)))
        x = x + self.mix(x)
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


def no_width_net(num_classes: int = N_CLASSES, in_channels: int = 1) -> nn.Module:
    return UserNet(num_classes, in_channels)


def wrapped_net(num_classes: int = N_CLASSES, in_channels: int = 1, **kw) -> nn.Module:
    """A user's wrapper passing its keywords on to a model that has no width."""
    return no_width_net(num_classes, in_channels, **kw)


@pytest.fixture(scope="module")
def data() -> Dataset:
    return tiny_data()


@pytest.fixture(scope="module")
def teacher(data) -> nn.Module:
    torch.manual_seed(0)
    return fit(UserNet(), data, TRAIN, epochs=3)


def context(data, teacher, model_config=None, log=None) -> StepContext:
    return StepContext(data=data, train=TRAIN, seed=0, teacher=teacher, model_config=model_config,
                       log=log or (lambda _msg: None))  # fmt: skip


def epoch_losses(lines: list[str]) -> list[float]:
    return [float(m.group(1)) for line in lines if (m := re.search(r"loss ([0-9.]+)", line))]


def assert_exports(model, data, tmp_path) -> None:
    path = export_onnx(model, data.x_test[:1], tmp_path / "model.onnx")
    assert verify_onnx(path, model, data.x_test) <= 1e-4


def has_hooks(model) -> bool:
    return any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize("kind", ["logits", "feature", "relation", "none"])
def test_each_kind_trains_a_smaller_student_and_leaves_the_teacher(kind, data, teacher, tmp_path):
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    lines: list[str] = []
    ctx = context(data, teacher, log=lines.append)
    student = METHODS.get("distill")(kind=kind, width=0.5, epochs=4).apply(teacher, ctx)

    losses = epoch_losses(lines)
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert student is not teacher and isinstance(student, UserNet)
    assert count_params(student)[0] < count_params(teacher)[0]
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert not teacher.training and not has_hooks(teacher) and not has_hooks(student)
    assert (
        ctx.notes["distill"]["kind"] == kind
        and ctx.notes["distill"]["student_params"] == count_params(student)[0]
    )
    assert_exports(student, data, tmp_path)


def test_auto_layers_are_found_by_shape_and_call_order(teacher, data):
    sample = torch.from_numpy(data.x_train[:2])
    # `mix` is the deepest module giving a spatial map; the pooling is functional.
    assert auto_feature_layer(teacher, sample) == "mix"
    # `head` is registered first but runs last; `unused` never runs.
    assert last_linear(teacher, sample) is teacher.head


def test_feature_kd_with_named_layers_and_different_sizes(data, teacher):
    # The student's `expand` map is 8×8, the teacher's `mix` 4×4: pooled to the smaller one.
    ctx = context(data, teacher)
    step = METHODS.get("distill")(
        kind="feature", width=0.5, epochs=1, teacher_layer="mix", student_layer="expand"
    )
    step.apply(teacher, ctx)
    assert ctx.notes["distill_layers"]["student_shape"] == [16, 8, 8]
    assert ctx.notes["distill_layers"]["teacher_shape"] == [32, 4, 4]
    with pytest.raises(StepError, match='did you mean "mix"'):
        METHODS.get("distill")(kind="feature", epochs=1, teacher_layer="mixx").apply(teacher, ctx)
    with pytest.raises(StepError, match="'head' gives .*not a 4-D feature map"):
        METHODS.get("distill")(kind="feature", epochs=1, teacher_layer="head").apply(teacher, ctx)


def test_registry_student_and_factory_without_width(data, teacher):
    ctx = context(data, teacher, ModelConfig(factory="demo_cnn"))
    student = METHODS.get("distill")(kind="logits", student="shufflenet", width=0.25, epochs=1).apply(
        teacher, ctx
    )
    assert type(student).__name__ == "ShuffleNet"  # its export is tested in test_compact.py
    # "teacher" means the experiment's factory, its width scaled by the step's width.
    ctx = context(data, teacher, ModelConfig(factory="demo_cnn", kwargs={"width": 0.5}))
    student = METHODS.get("distill")(kind="relation", width=0.5, epochs=1).apply(teacher, ctx)
    assert (
        count_params(student)[0]
        == count_params(create_model("demo_cnn", N_CLASSES, 1, width=0.25))[0]
    )
    # A factory without `width`: the student is the teacher narrowed by structured pruning,
    # its output shapes unchanged and fewer parameters; a named student can still refuse.
    ctx = context(data, teacher, ModelConfig(factory=f"{__name__}:no_width_net"))
    student = METHODS.get("distill")(kind="logits", width=0.5, epochs=1).apply(teacher, ctx)
    assert "pruned to width 0.5" in ctx.notes["student_from"]
    assert count_params(student)[0] < count_params(teacher)[0]
    assert ctx.notes["distill"]["train_lr"] in (ctx.train.lr, ctx.train.lr / 10)  # cut from the teacher: guarded
    # A training that only raises the student's loss is not kept: at lr 1000 (and 100) the
    # student stays the teacher cut to width 0.5, as it started.
    lines: list[str] = []
    ctx = context(data, teacher, ModelConfig(factory=f"{__name__}:no_width_net"), log=lines.append)
    blown = METHODS.get("distill")(kind="logits", width=0.5, epochs=1, lr=1000.0).apply(teacher, ctx)
    assert ctx.notes["distill"]["train_lr"] == 0.0, lines
    assert ctx.notes["distill"]["train_loss_after"] == ctx.notes["distill"]["train_loss_before"]
    assert sum("the training loss rose" in line for line in lines) == 2
    assert torch.isfinite(blown.eval()(torch.as_tensor(data.x_test[:2]))).all()
    x = torch.as_tensor(data.x_test[:2])
    assert student.eval()(x).shape == teacher.eval()(x).shape
    # A factory whose **kwargs go to a model without width refuses width: the pruned teacher too.
    ctx = context(data, teacher, ModelConfig(factory=f"{__name__}:wrapped_net"))
    student = METHODS.get("distill")(kind="logits", width=0.5, epochs=1).apply(teacher, ctx)
    assert "pruned to width 0.5" in ctx.notes["student_from"] and count_params(student)[0] < count_params(teacher)[0]
    ctx = context(data, teacher, ModelConfig(factory=f"{__name__}:no_width_net"))
    with pytest.raises(StepError, match="no width argument"):
        METHODS.get("distill")(
            kind="logits", student=f"{__name__}:no_width_net", width=0.5, epochs=1
        ).apply(teacher, ctx)


def test_student_and_its_nokd_twin_start_equal(data, teacher):
    ctx = context(data, teacher)
    a, b = make_student("teacher", 0.5, ctx, teacher), make_student("teacher", 0.5, ctx, teacher)
    assert all(
        torch.equal(x, y)
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


def test_companions_add_the_nokd_twin():
    exp = parse_experiment({"variant": [
        {"name": "kd", "steps": [{"method": "distill", "kind": "feature", "width": 0.5},
                                 {"method": "quantize", "scheme": "int8_static"}]},
        {"name": "plain", "steps": [{"method": "distill", "kind": "none"}]},
        {"name": "solo", "steps": [{"method": "distill", "kind": "relation", "twin": False}]},
    ]})  # fmt: skip
    by_name = {v.name: v for v in exp.variants}
    assert sorted(by_name) == ["kd", "kd-nokd", "plain", "solo"]
    twin = by_name["kd-nokd"].steps
    assert (twin[0].kind, twin[0].width, twin[1].method) == ("none", 0.5, "quantize")
    with pytest.raises(ConfigError, match="kind"):
        parse_experiment(
            {"variant": [{"name": "x", "steps": [{"method": "distill", "kind": "logit"}]}]}
        )


def test_logits_loss_follows_hinton():
    s, y = torch.randn(8, N_CLASSES), torch.randint(0, N_CLASSES, (8,))
    assert torch.allclose(
        kd_logits(s, torch.randn(8, N_CLASSES), y, 4.0, 0.0), F.cross_entropy(s, y)
    )
    assert kd_logits(s, s, y, 4.0, 1.0).abs() < 1e-6  # no soft-target loss when they agree

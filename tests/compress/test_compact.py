"""Compact architectures: a registry net trained from scratch, with or without the teacher."""

from __future__ import annotations

import pytest
import torch
from test_distill import TRAIN, UserNet, assert_exports, context, epoch_losses, tiny_data

from edgebench.compress import METHODS
from edgebench.config import parse_experiment
from edgebench.errors import ConfigError
from edgebench.model.factories import count_params
from edgebench.model.train import fit


@pytest.fixture(scope="module")
def data():
    return tiny_data()


@pytest.fixture(scope="module")
def teacher(data):
    torch.manual_seed(0)
    return fit(UserNet(width=2.0), data, TRAIN, epochs=2)


@pytest.mark.parametrize(("arch", "distill"), [("mobilenet", True), ("shufflenet", False)])
def test_compact_student_learns_and_exports(arch, distill, data, teacher, tmp_path):
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    lines: list[str] = []
    ctx = context(data, teacher, log=lines.append)
    student = METHODS.get("compact")(arch=arch, width=0.25, epochs=3, distill=distill).apply(
        teacher, ctx
    )
    losses = epoch_losses(lines)
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert type(student).__name__ == {"mobilenet": "MobileNet", "shufflenet": "ShuffleNet"}[arch]
    assert count_params(student)[0] < count_params(teacher)[0]
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    notes = ctx.notes["compact"]
    assert {k: notes[k] for k in ("arch", "width", "distill", "student_params", "student_arch")} == {
        "arch": arch, "width": 0.25, "distill": distill, "student_params": count_params(student)[0],
        "student_arch": type(student).__name__}  # fmt: skip
    assert "train_lr" not in notes  # a student from a random start is not guarded
    assert_exports(student, data, tmp_path)


def test_companion_without_kd_only_when_distilling():
    exp = parse_experiment({"variant": [
        {"name": "mb", "steps": [{"method": "compact", "arch": "mobilenet", "width": 0.75}]},
        {"name": "sn", "steps": [{"method": "compact", "arch": "shufflenet", "distill": False}]},
    ]})  # fmt: skip
    by_name = {v.name: v for v in exp.variants}
    assert sorted(by_name) == ["mb", "mb-nokd", "sn"]
    twin = by_name["mb-nokd"].steps[0]
    assert (twin.arch, twin.width, twin.distill) == ("mobilenet", 0.75, False)


def test_unknown_arch_suggests_the_nearest():
    with pytest.raises(ConfigError, match='did you mean "mobilenet"'):
        METHODS.get("compact")(arch="mobilnet")

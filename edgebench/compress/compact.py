"""Compact architecture: swap in a small efficient net trained from scratch on the same data.

The student is a model registry name (`mobilenet`: depthwise-separable inverted residuals,
Sandler et al. CVPR 2018; `shufflenet`: grouped 1×1 convs and channel shuffle, Zhang et al.
CVPR 2018; any other built-in or "package.module:function") at `width`. With `distill = true`
it learns from the trained baseline's logits too (Hinton et al. 2015, the same loss as
`distill`), and the same student trained without the teacher (`<name>-nokd`) is made beside it
so the chart shows what the teacher adds.

    [[variant]]
    name = "compact-mobilenet"
    steps = [{ method = "compact", arch = "mobilenet", width = 0.75, distill = true }]
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from edgebench.compress import StepContext, method
from edgebench.config import BUILTIN_MODELS, require
from edgebench.errors import did_you_mean


@method("compact")
@dataclass(frozen=True)
class Compact:
    arch: str = "mobilenet"
    width: float = 1.0
    epochs: int | None = None  # default: [train] epochs
    lr: float | None = None  # default: [train] lr
    distill: bool = True  # logits KD from the trained baseline
    temperature: float = 2.0
    alpha: float = 0.5
    twin: bool = True  # with distill: also make the same student without KD (`<name>-nokd`)

    def __post_init__(self):
        require(self.width > 0, "width must be positive")
        require(self.epochs is None or self.epochs >= 1, "epochs must be >= 1")
        require(self.lr is None or self.lr > 0, "lr must be positive")
        require(self.temperature > 0, "temperature must be positive")
        require(0 <= self.alpha <= 1, "alpha must be between 0 and 1")
        if ":" not in self.arch:  # a factory path is checked when the step runs
            require(
                self.arch in BUILTIN_MODELS,
                f"arch = {self.arch!r} is not a model{did_you_mean(self.arch, BUILTIN_MODELS)}",
            )

    def companions(self, variant) -> list[tuple[str, tuple]]:
        """The same chain with this student trained without the teacher."""
        if not self.distill or not self.twin:
            return []
        steps = tuple(
            dataclasses.replace(s, distill=False) if s is self else s for s in variant.steps
        )
        return [(f"{variant.name}-nokd", steps)]

    def apply(self, model, ctx: StepContext):
        import torch.nn.functional as F

        from edgebench.compress.distill import frozen_teacher, make_student, train_student
        from edgebench.compress.distill_losses import logits_loss

        teacher = frozen_teacher(ctx.teacher if ctx.teacher is not None else model)
        student = make_student(self.arch, self.width, ctx, teacher)
        if self.distill:
            loss_fn = logits_loss(teacher, self.temperature, self.alpha)
        else:

            def loss_fn(m, x, y):
                return F.cross_entropy(m(x), y)

        label = f"compact-{self.arch}" + ("-kd" if self.distill else "")
        notes = train_student(student, ctx, loss_fn, [], self.epochs, self.lr, label)
        ctx.notes["compact"] = {
            "arch": self.arch,
            "width": self.width,
            "distill": self.distill,
            **notes,
        }
        return student

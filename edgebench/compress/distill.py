"""Knowledge distillation: train a smaller student with the trained baseline as its teacher.

Three kinds of knowledge, each one paper:

- `logits` (Hinton et al. 2015): loss = α·T²·KL(softmax(t/T) ‖ softmax(s/T)) + (1−α)·CE — for
  a classifier; for other tasks the task's own distillation loss (output matching: α·MSE to
  the teacher's outputs + (1−α)·the task's loss; `[task] distill_loss` for the user's own).
- `feature` (FitNets, Romero et al. ICLR 2015): the logits loss + β·hint, the hint being the
  relative squared error between a teacher feature map and the student's seen through a
  learned 1×1 conv adapter, trained jointly (the adapter is dropped afterwards).
- `relation` (RKD, Park et al. CVPR 2019): CE + β·(distance loss + 2·angle loss) on the
  penultimate embeddings, i.e. the inputs of the last Linear layer each model runs.
- `none`: the same student, same seed and epochs, trained with plain cross-entropy and no
  teacher. Every KD variant gets this twin (`<name>-nokd`) so the chart shows what KD gains.

    [[variant]]
    name = "kd-logits"
    steps = [{ method = "distill", kind = "logits", student = "teacher", width = 0.5 }]

`student = "teacher"` is the teacher's own factory with its width times `width`; when that
factory takes no `width` (most users' models), the student is the teacher itself with `width`
of its channels, heads' widths and hidden sizes kept by structured pruning (torch-pruning, L2
magnitude), its weights kept as the start — the KD student and its no-KD twin start equal. Any
other value is a model registry name or "package.module:function" at `width`. The input model is only read (as the teacher when
the pipeline gives none); the student is a new model.

Automatic layer choice (`teacher_layer`/`student_layer` unset), the same rule for both models:
the feature map is the output of the module that *finishes last* among those returning a 4-D
tensor with more than one spatial position: the last feature map before global pooling, and
for a container (a residual block, a Sequential) its output after any residual add. An add
written in the model's own forward() belongs to no module: name the layers to go past it.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from dataclasses import dataclass

from edgebench.compress import StepContext, method
from edgebench.compress.distill_losses import feature_loss, logits_loss, relation_loss, task_loss
from edgebench.config import choice, require
from edgebench.errors import ConfigError, StepError

KINDS = ("logits", "feature", "relation", "none")


@method("distill")
@dataclass(frozen=True)
class Distill:
    kind: str = "logits"
    student: str = "teacher"  # "teacher" (its architecture at `width`) or a model name
    width: float = 0.5
    epochs: int | None = None  # default: [train] epochs
    lr: float | None = None  # default: [train] lr
    temperature: float = 2.0  # logits, feature
    alpha: float = 0.5  # logits, feature: weight of the soft-target term
    beta: float = 1.0  # feature/relation: weight of the hint or relation loss
    teacher_layer: str | None = None  # feature: module name; automatic when unset
    student_layer: str | None = None
    twin: bool = True  # also make the same student without KD (`<name>-nokd`)

    def __post_init__(self):
        choice(self.kind, KINDS, "kind")
        require(self.width > 0, "width must be positive")
        require(self.epochs is None or self.epochs >= 1, "epochs must be >= 1")
        require(self.lr is None or self.lr > 0, "lr must be positive")
        require(self.temperature > 0, "temperature must be positive")
        require(0 <= self.alpha <= 1, "alpha must be between 0 and 1")
        require(self.beta >= 0, "beta must be >= 0")

    def companions(self, variant) -> list[tuple[str, tuple]]:
        """The same chain with this step trained without the teacher, so the KD gain shows."""
        if self.kind == "none" or not self.twin:
            return []
        steps = tuple(
            dataclasses.replace(s, kind="none") if s is self else s for s in variant.steps
        )
        return [(f"{variant.name}-nokd", steps)]

    def apply(self, model, ctx: StepContext):
        teacher = frozen_teacher(ctx.teacher if ctx.teacher is not None else model)
        ctx.notes.pop("student_from", None)
        student = make_student(self.student, self.width, ctx, teacher)
        loss_fn, extra = self._loss(teacher, student, ctx)
        label = f"distill-{self.kind}"
        from_teacher = "student_from" in ctx.notes  # cut from the teacher: trained weights to start from
        notes = train_student(student, ctx, loss_fn, extra, self.epochs, self.lr, label, guard=from_teacher)
        ctx.notes["distill"] = {"kind": self.kind, "student": self.student, "width": self.width}
        ctx.notes["distill"].update(notes)
        return student

    def _loss(self, teacher, student, ctx: StepContext):
        task = ctx.data.task
        if self.kind == "none":
            return task_loss(task), []
        if self.kind == "logits":
            return logits_loss(teacher, self.temperature, self.alpha, task), []
        if self.kind == "feature":
            kd = logits_loss(teacher, self.temperature, self.alpha, task)
            return feature_loss(
                teacher, student, ctx, kd, self.beta, self.teacher_layer, self.student_layer
            )
        return relation_loss(teacher, student, ctx, self.beta), []


# ---- teacher and student -----------------------------------------------------------------


def frozen_teacher(model):
    """A private eval-mode copy: hooks and no_grad never touch the caller's model."""
    import copy

    teacher = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def make_student(name: str, width: float, ctx: StepContext, teacher):
    """A freshly initialized student, seeded so the KD student and its twin start equal.

    `name` is "teacher" (the teacher's factory; `width` multiplies its own width) or a model
    registry name / "package.module:function" (`width` as given).
    """
    import torch

    from edgebench.model.factories import create_model, resolve_factory

    num_classes, in_channels = ctx.data.num_classes, ctx.data.input_shape[0]
    kwargs: dict = {}
    if name == "teacher":
        if ctx.model_config is not None:
            factory, label = resolve_factory(ctx.model_config.factory), ctx.model_config.factory
            kwargs = dict(ctx.model_config.kwargs)
            # Relative to the teacher: a 0.5 copy of a width-0.25 teacher is width 0.125.
            width *= kwargs.get("width", 1.0)
        else:  # no experiment (a direct call): the teacher's class is its factory
            factory, label = type(teacher), type(teacher).__name__
    else:
        factory, label = resolve_factory(name), name
    params = inspect.signature(factory).parameters if callable(factory) else {}
    # `width` through **kwargs only: a subclass passing them on to a parent that has no width
    # (a common way to wrap a model) refuses it, and then the student is the pruned teacher too.
    via_kwargs = "width" not in params
    if "width" in params or any(p.kind is p.VAR_KEYWORD for p in params.values()):
        kwargs["width"] = width
    elif width != 1.0 and name == "teacher":
        return pruned_student(teacher, width, ctx, label)
    elif width != 1.0:
        raise StepError(
            f"student {label!r}: its factory takes no width argument, so width = {width} cannot apply"
        )
    torch.manual_seed(ctx.seed)
    try:
        if name == "teacher" and ctx.model_config is None:
            sizes = {"num_classes": num_classes, "in_channels": in_channels}
            return factory(**{k: v for k, v in sizes.items() if k in params}, **kwargs)
        return create_model(label, num_classes, in_channels, **kwargs)
    except (TypeError, ConfigError) as exc:  # create_model says a factory's TypeError as a ConfigError
        if name == "teacher" and via_kwargs and "width" in kwargs and "'width'" in str(exc):
            return pruned_student(teacher, width, ctx, label)
        if name == "teacher" and ctx.model_config is None:
            raise StepError(f"student copy of {label}: {exc}") from None
        raise


def pruned_student(teacher, width: float, ctx: StepContext, label: str):
    """The teacher with `width` of its channels kept (structured, torch-pruning, L2 magnitude,
    outputs' shapes unchanged): a student of the teacher's own architecture for factories that
    take no width. Its weights are kept as the start (seeded: the KD student and its twin get
    the same)."""
    import copy

    import torch

    from edgebench.compress.prune import structured_prune

    torch.manual_seed(ctx.seed)
    student = copy.deepcopy(teacher)
    for p in student.parameters():
        p.requires_grad_(True)
    try:
        student, macs = structured_prune(student, ctx.data.x_train[:1], 1 - width)
    except StepError as exc:
        raise StepError(f"student {label!r}: its factory takes no width argument and the teacher could not be "
                        f"narrowed to width {width}: {exc}") from None
    ctx.notes["student_from"] = f"the teacher pruned to width {width} (structured, MACs x{macs:.2f}), weights kept"
    return student


def train_student(
    student, ctx: StepContext, loss_fn: Callable, extra: list, epochs, lr, label: str, guard: bool = False
) -> dict:
    """Train the student in place with `loss_fn`; return facts for the record.

    With `guard` (a student that starts from trained weights: the teacher cut to a width),
    edgebench.model.train.guarded_fit: a training whose own loss ends above where it started
    is done again at a tenth of the lr. A student from a random start is not guarded: in eval
    mode its BatchNorm statistics after a short training can score worse than its untrained
    near-uniform outputs (measured: a MobileNet after 3 epochs). Measured on benchmarks/defaults_zoo.py's net
    without BatchNorm (SGD, lr 0.05, the teacher pruned to half width as the student): logits
    KD diverged (its loss 0.47 -> 0.93; 74.2 % where the no-KD twin reached 93.2 %), at lr
    0.01 it reached 91.6 %."""
    from edgebench.model.factories import count_params
    from edgebench.model.train import fit, guarded_fit

    seen: dict = {}
    if guard:
        guarded_fit(student, ctx.data, ctx.train, epochs or ctx.train.epochs, lr or ctx.train.lr, loss_fn=loss_fn,
                    params=extra, notes=seen, prefix="train", seed=ctx.seed, log=ctx.log, label=label)  # fmt: skip
    else:
        fit(student, ctx.data, ctx.train, epochs=epochs, lr=lr, loss_fn=loss_fn, seed=ctx.seed,
            params=extra, log=ctx.log, label=label)  # fmt: skip
    return {"student_params": count_params(student)[0], "student_arch": type(student).__name__, **seen}

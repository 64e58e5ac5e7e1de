"""Knowledge distillation: train a smaller student with the trained baseline as its teacher.

Three kinds of knowledge, each one paper:

- `logits` (Hinton et al. 2015): loss = α·T²·KL(softmax(t/T) ‖ softmax(s/T)) + (1−α)·CE.
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

`student = "teacher"` is the teacher's own factory with its width times `width`; any other
value is a model registry name or "package.module:function" at `width`. The input model is only read (as the teacher when
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
from edgebench.config import choice, require
from edgebench.errors import StepError

KINDS = ("logits", "feature", "relation", "none")
RKD_ANGLE_WEIGHT = 2.0  # λ_A/λ_D = 2 as in the RKD authors' code


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
        student = make_student(self.student, self.width, ctx, teacher)
        loss_fn, extra = self._loss(teacher, student, ctx)
        label = f"distill-{self.kind}"
        notes = train_student(student, ctx, loss_fn, extra, self.epochs, self.lr, label)
        ctx.notes["distill"] = {"kind": self.kind, "student": self.student, "width": self.width}
        ctx.notes["distill"].update(notes)
        return student

    def _loss(self, teacher, student, ctx: StepContext):
        import torch.nn.functional as F

        if self.kind == "none":
            return (lambda m, x, y: F.cross_entropy(m(x), y)), []
        if self.kind == "logits":
            return logits_loss(teacher, self.temperature, self.alpha), []
        if self.kind == "feature":
            kd = logits_loss(teacher, self.temperature, self.alpha)
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

    from edgebench.models import create_model, resolve_factory

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
    params = inspect.signature(factory).parameters
    if "width" in params or any(p.kind is p.VAR_KEYWORD for p in params.values()):
        kwargs["width"] = width
    elif width != 1.0:
        raise StepError(
            f"student {label!r}: its factory takes no width argument, so width = {width} cannot apply"
        )
    torch.manual_seed(ctx.seed)
    if name == "teacher" and ctx.model_config is None:
        sizes = {"num_classes": num_classes, "in_channels": in_channels}
        try:
            return factory(**{k: v for k, v in sizes.items() if k in params}, **kwargs)
        except TypeError as exc:
            raise StepError(f"student copy of {label}: {exc}") from None
    return create_model(label, num_classes, in_channels, **kwargs)


def train_student(
    student, ctx: StepContext, loss_fn: Callable, extra: list, epochs, lr, label: str
) -> dict:
    """Train the student in place with `loss_fn`; return facts for the record."""
    from edgebench.models import count_params
    from edgebench.train import fit

    fit(student, ctx.data, ctx.train, epochs=epochs, lr=lr, loss_fn=loss_fn, seed=ctx.seed,
        params=extra, log=ctx.log, label=label)  # fmt: skip
    return {"student_params": count_params(student)[0], "student_arch": type(student).__name__}


# ---- losses ------------------------------------------------------------------------------


def kd_logits(student_logits, teacher_logits, y, temperature: float, alpha: float):
    """Hinton et al. 2015; T² keeps the soft-target gradients on the scale of the CE term."""
    import torch.nn.functional as F

    soft = F.kl_div(
        F.log_softmax(student_logits / temperature, dim=1),
        F.log_softmax(teacher_logits / temperature, dim=1),
        reduction="batchmean", log_target=True,
    )  # fmt: skip
    return alpha * temperature**2 * soft + (1 - alpha) * F.cross_entropy(student_logits, y)


def logits_loss(teacher, temperature: float, alpha: float):
    memo = TeacherMemo(lambda x: teacher(x))

    def loss(model, x, y):
        return kd_logits(model(x), memo(x), y, temperature, alpha)

    return loss


class TeacherMemo:
    """The teacher's output for each training input, computed once and looked up after.

    The teacher is frozen and in eval mode, so its output is a function of the input alone,
    and every epoch revisits the same rows: this removes the teacher's forward pass from all
    epochs but the first. Rows are keyed by their bytes (fit() passes batches, not indices);
    past `max_bytes` of stored outputs it stops storing and just computes.
    """

    def __init__(self, compute: Callable, max_bytes: int = 256 * 2**20):
        self.compute = compute
        self.rows: dict[bytes, object] = {}
        self.stored = 0
        self.max_bytes = max_bytes

    def __call__(self, x):
        import torch

        keys = [row.numpy().tobytes() for row in x.detach().contiguous()]
        hits = [self.rows.get(k) for k in keys]
        if all(h is not None for h in hits):
            return torch.stack(hits)
        with torch.no_grad():
            out = self.compute(x).detach()
        if self.stored < self.max_bytes:
            for key, row in zip(keys, out.clone(), strict=True):
                if key not in self.rows:
                    self.rows[key] = row
                    self.stored += row.numel() * row.element_size()
        return out


def feature_loss(
    teacher, student, ctx: StepContext, kd: Callable, beta: float, teacher_layer, student_layer
):
    """`kd` plus β × the FitNets hint loss; returns the loss and the adapter's parameters.

    FitNets trains in two stages (hints, then KD); here both terms train jointly, which fits
    a step of a few epochs. The hint is a relative squared error (MSE / mean of the teacher
    map squared), so β means the same whatever the scale of the teacher's activations.
    """
    import torch
    import torch.nn.functional as F
    from torch import nn

    sample = torch.from_numpy(ctx.data.x_train[:2])
    t_name = teacher_layer or auto_feature_layer(teacher, sample)
    s_name = student_layer or auto_feature_layer(student, sample)
    t_mod = _module(teacher, t_name, "teacher_layer")
    s_mod = _module(student, s_name, "student_layer")
    t_shape, s_shape = (
        _map_shape(teacher, t_mod, t_name, sample),
        _map_shape(student, s_mod, s_name, sample),
    )
    torch.manual_seed(ctx.seed)
    adapter = nn.Conv2d(s_shape[1], t_shape[1], 1)
    size = (min(t_shape[2], s_shape[2]), min(t_shape[3], s_shape[3]))
    seen: dict = {}
    t_memo = TeacherMemo(lambda x: _capture(teacher, t_mod, x))

    def loss(model, x, y):
        handle = s_mod.register_forward_hook(lambda _m, _i, out: seen.__setitem__("s", out))
        try:
            base = kd(model, x, y)
        finally:
            handle.remove()  # never left on the student we return
        # Maps of different sizes meet at the smaller one: average pooling keeps the content.
        t_feat = F.adaptive_avg_pool2d(t_memo(x), size)
        s_feat = F.adaptive_avg_pool2d(adapter(seen.pop("s")), size)
        return base + beta * F.mse_loss(s_feat, t_feat) / t_feat.pow(2).mean().clamp_min(1e-12)

    ctx.notes["distill_layers"] = {"teacher": t_name, "student": s_name,
                                   "teacher_shape": list(t_shape[1:]), "student_shape": list(s_shape[1:])}  # fmt: skip
    return loss, list(adapter.parameters())


def relation_loss(teacher, student, ctx: StepContext, beta: float):
    """RKD distance + angle losses on the inputs of each model's last-run Linear layer."""
    import torch
    import torch.nn.functional as F

    sample = torch.from_numpy(ctx.data.x_train[:2])
    t_mod, s_mod = last_linear(teacher, sample), last_linear(student, sample)
    seen: dict = {}

    def keep(_m, args):
        seen["emb"] = args[0].flatten(1)

    def teacher_embedding(x):
        handle = t_mod.register_forward_pre_hook(keep)
        try:
            teacher(x)
        finally:
            handle.remove()
        return seen.pop("emb")

    t_memo = TeacherMemo(teacher_embedding)

    def loss(model, x, y):
        handle = s_mod.register_forward_pre_hook(keep)
        try:
            logits = model(x)
        finally:
            handle.remove()
        s_emb = seen.pop("emb")
        t_emb = t_memo(x)
        return F.cross_entropy(logits, y) + beta * (
            rkd_distance(s_emb, t_emb) + RKD_ANGLE_WEIGHT * rkd_angle(s_emb, t_emb)
        )

    return loss


def _pairwise(e):
    import torch

    d = torch.cdist(e, e).clamp_min(1e-12)
    # Normalize by the mean distance so teacher and student scales do not matter.
    off = ~torch.eye(len(e), dtype=torch.bool)
    return d / d[off].mean().clamp_min(1e-12)


def rkd_distance(s, t):
    import torch.nn.functional as F

    return F.smooth_l1_loss(_pairwise(s), _pairwise(t.detach()))


def rkd_angle(s, t):
    import torch.nn.functional as F

    def cosines(e):
        v = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)  # v[i, j] = e_j - e_i
        return (v @ v.transpose(1, 2)).flatten()  # angle at i between j and k

    return F.smooth_l1_loss(cosines(s), cosines(t.detach()))


# ---- finding layers by what they compute, not by name --------------------------------------


def auto_feature_layer(model, sample) -> str:
    """Name of the module that finishes last among those giving a 4-D map with H·W > 1."""
    import torch

    order: list[str] = []
    handles = [
        m.register_forward_hook(
            lambda _m, _i, out, name=name: order.append(name)
            if isinstance(out, torch.Tensor) and out.dim() == 4 and out.shape[2] * out.shape[3] > 1 else None
        )
        for name, m in model.named_modules() if name  # the model itself returns logits
    ]  # fmt: skip
    _run_once(model, sample, handles)
    if not order:
        raise StepError(f"feature distillation: {type(model).__name__} has no module that outputs a 4-D feature map; "
                        "set teacher_layer/student_layer")  # fmt: skip
    return order[-1]


def _run_once(model, sample, handles: list) -> None:
    """One inference in eval mode with the given hooks installed, then remove them."""
    import torch

    try:
        with torch.no_grad():
            model.eval()(sample)
    finally:
        for h in handles:
            h.remove()


def last_linear(model, sample):
    """The Linear layer that runs last: its input is the penultimate embedding."""
    from torch import nn

    ran: list = []
    handles = [
        m.register_forward_pre_hook(lambda m, _a: ran.append(m))
        for m in model.modules()
        if isinstance(m, nn.Linear)
    ]
    _run_once(model, sample, handles)
    if not ran:
        raise StepError(
            f"relation distillation: {type(model).__name__} runs no Linear layer to take embeddings from"
        )
    return ran[-1]


def _module(model, name: str, key: str):
    modules = dict(model.named_modules())
    if name not in modules:
        from edgebench.errors import did_you_mean

        raise StepError(
            f"{key} = {name!r}: no such module in {type(model).__name__}{did_you_mean(name, [n for n in modules if n])}"
        )
    return modules[name]


def _capture(model, module, x):
    seen: list = []
    handle = module.register_forward_hook(lambda _m, _i, out: seen.append(out))
    try:
        model(x)
    finally:
        handle.remove()
    return seen[-1]


def _map_shape(model, module, name: str, sample) -> tuple[int, ...]:
    import torch

    with torch.no_grad():
        out = _capture(model.eval(), module, sample)
    if not isinstance(out, torch.Tensor) or out.dim() != 4:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise StepError(f"feature distillation: layer {name!r} gives {got}, not a 4-D feature map")
    return tuple(out.shape)

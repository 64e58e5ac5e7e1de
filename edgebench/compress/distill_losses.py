"""The distillation losses and the layers they hook: the torch side of `distill` and `compact`.

Each loss is a `loss(model, x, y)` for `edgebench.model.train.fit`; the teacher's part of it is
computed once per training input (`TeacherMemo`). Layers are found by what they compute
(`auto_feature_layer`, `last_linear`), never by name. The part that compares outputs and the
labels' loss are the task's (`Task.distill_loss`, `Task.loss`): Hinton's soft targets for a
classifier, output matching for a detector, a regressor or an anomaly model. `x` may be one
tensor or a tuple of them (a model with several inputs), outputs any tuple or dict.

    >>> loss = logits_loss(teacher, temperature=2.0, alpha=0.5)
    >>> loss(student, x, y).backward()
"""

from __future__ import annotations

from collections.abc import Callable

from edgebench.compress import StepContext
from edgebench.errors import StepError, did_you_mean
from edgebench.tasks.arrays import call, outputs

RKD_ANGLE_WEIGHT = 2.0  # λ_A/λ_D = 2 as in the RKD authors' code


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


def logits_loss(teacher, temperature: float, alpha: float, task=None):
    """The task's distillation loss between the student's outputs and the teacher's (Hinton's
    KD on the logits for classify, `kd_logits`; output matching for other tasks)."""
    if task is None:
        from edgebench.tasks import make_task

        task = make_task()
    memo = TeacherMemo(lambda x: outputs(call(teacher, x)))

    def loss(model, x, y):
        return task.distill_loss(outputs(call(model, x)), memo(x), y, x, alpha, temperature)

    return loss


def task_loss(task):
    """The task's own training loss as a `loss(model, x, y)` (the no-KD twin's)."""

    def loss(model, x, y):
        return task.loss(outputs(call(model, x)), y, x)

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
        """The teacher's result for the batch `x` (a tensor or a tuple of input tensors); the
        result is a tensor or a tuple of tensors, each with the batch as its first axis."""
        import torch

        parts = x if isinstance(x, tuple) else (x,)
        keys = [b"".join(p[i].detach().contiguous().numpy().tobytes() for p in parts) for i in range(len(parts[0]))]
        hits = [self.rows.get(k) for k in keys]
        if all(h is not None for h in hits):
            if isinstance(hits[0], tuple):
                return tuple(torch.stack([h[j] for h in hits]) for j in range(len(hits[0])))
            return torch.stack(hits)
        with torch.no_grad():
            out = self.compute(x)
        out = tuple(o.detach() for o in out) if isinstance(out, tuple) else out.detach()
        if self.stored < self.max_bytes:
            rows = zip(*(o.clone() for o in out)) if isinstance(out, tuple) else out.clone()
            for key, row in zip(keys, rows, strict=True):
                if key not in self.rows:
                    self.rows[key] = tuple(row) if isinstance(out, tuple) else row
                    self.stored += sum(r.numel() * r.element_size() for r in (row if isinstance(out, tuple) else (row,)))
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

    from edgebench.tasks.arrays import to_torch

    sample = to_torch(ctx.data.x_train[:2])
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
    """The task's loss + β × RKD distance + angle losses on the inputs of each model's last-run
    Linear layer."""

    from edgebench.tasks.arrays import to_torch

    sample = to_torch(ctx.data.x_train[:2])
    t_mod, s_mod = last_linear(teacher, sample), last_linear(student, sample)
    seen: dict = {}

    def keep(_m, args):
        seen["emb"] = args[0].flatten(1)

    def teacher_embedding(x):
        handle = t_mod.register_forward_pre_hook(keep)
        try:
            call(teacher, x)
        finally:
            handle.remove()
        return seen.pop("emb")

    t_memo = TeacherMemo(teacher_embedding)

    def loss(model, x, y):
        handle = s_mod.register_forward_pre_hook(keep)
        try:
            out = outputs(call(model, x))
        finally:
            handle.remove()
        s_emb = seen.pop("emb")
        t_emb = t_memo(x)
        return ctx.data.task.loss(out, y, x) + beta * (
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

    from edgebench.compress.layers import run_once

    order: list[str] = []
    handles = [
        m.register_forward_hook(
            lambda _m, _i, out, name=name: order.append(name)
            if isinstance(out, torch.Tensor) and out.dim() == 4 and out.shape[2] * out.shape[3] > 1 else None
        )
        for name, m in model.named_modules() if name  # the model itself returns logits
    ]  # fmt: skip
    run_once(model, sample, handles)
    if not order:
        raise StepError(f"feature distillation: {type(model).__name__} has no module that outputs a 4-D feature map; "
                        "set teacher_layer/student_layer")  # fmt: skip
    return order[-1]


def last_linear(model, sample):
    """The Linear layer that runs last: its input is the penultimate embedding."""
    from torch import nn

    from edgebench.compress.layers import run_once

    ran: list = []
    handles = [
        m.register_forward_pre_hook(lambda m, _a: ran.append(m))
        for m in model.modules()
        if isinstance(m, nn.Linear)
    ]
    run_once(model, sample, handles)
    if not ran:
        raise StepError(
            f"relation distillation: {type(model).__name__} runs no Linear layer to take embeddings from"
        )
    return ran[-1]


def _module(model, name: str, key: str):
    modules = dict(model.named_modules())
    if name not in modules:
        raise StepError(
            f"{key} = {name!r}: no such module in {type(model).__name__}{did_you_mean(name, [n for n in modules if n])}"
        )
    return modules[name]


def _capture(model, module, x):
    seen: list = []
    handle = module.register_forward_hook(lambda _m, _i, out: seen.append(out))
    try:
        call(model, x)
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

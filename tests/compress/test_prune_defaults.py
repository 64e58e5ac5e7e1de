"""Fine-tune defaults after compression: they follow the user's [train] table, and edgebench's
prune step recovers about as much as a plain reference with the same budget.

The accuracy check is benchmarks/prune_vs_reference.py's comparison on one of its user-like
models (depthwise + grouped convs, SE gates, hardswish, residual adds, 3x16x16 inputs),
trained by plain Adam, on a smaller budget. With the earlier defaults (a fifth of the training
lr, a fresh cosine decay to 0) edgebench lost 17 points there where the reference lost 5.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch
from tiny_nets import TinyNet, state_equal, tiny_data, trained_tiny

import edgebench.model.train as train_module
from edgebench.compress import METHODS, StepContext
from edgebench.config import TrainConfig
from edgebench.model.train import _scheduler, finetune_schedule

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import prune_vs_reference as bench  # noqa: E402

TINY = tiny_data()
ADAM = TrainConfig(epochs=6, lr=2e-3, batch_size=32, optimizer="adam", threads=1)
SGD = TrainConfig(epochs=6, lr=0.05, batch_size=32, optimizer="sgd", threads=1)
STEPS = [
    ("prune", {"kind": "structured", "ratio": 0.5}),
    ("prune", {"kind": "unstructured", "ratio": 0.8}),
    ("lowrank", {"ratio": 0.5, "min_params": 256}),
    ("cluster", {"bits": 3}),
]


@pytest.mark.parametrize("cfg", [ADAM, SGD], ids=["adam", "sgd"])
@pytest.mark.parametrize("name,params", STEPS, ids=[f"{n}-{p.get('kind', '')}" for n, p in STEPS])
def test_fine_tunes_follow_the_training_settings(cfg, name, params, monkeypatch):
    calls = []
    real_fit = train_module.fit

    def spy(model, data, train_cfg, **kw):
        calls.append((train_cfg, kw))
        return real_fit(model, data, train_cfg, **kw)

    monkeypatch.setattr(train_module, "fit", spy)
    ctx = StepContext(data=TINY, train=cfg, seed=0, log=lambda _: None)
    METHODS.get(name)(**params, finetune_epochs=1).apply(trained_tiny(TINY), ctx)
    assert calls, f"{name} did not fine-tune"
    assert calls[0][1]["lr"] == cfg.lr  # the training lr, not a fraction of it
    for train_cfg, kw in calls:
        assert train_cfg is cfg  # the user's optimizer, batch size, weight decay
        assert kw["lr"] in (cfg.lr, cfg.lr / 10)  # a tenth only where the guard retried
        assert kw["schedule"] == ("constant" if cfg.optimizer == "adam" else "hold_cosine")
    assert ctx.notes["finetune_lr"] in (cfg.lr, cfg.lr / 10, 0.0)
    # An explicit lr still wins.
    calls.clear()
    METHODS.get(name)(**params, finetune_epochs=1, lr=1e-4).apply(trained_tiny(TINY), ctx)
    assert calls[0][1]["lr"] == 1e-4 and {kw["lr"] for _, kw in calls} <= {1e-4, 1e-5}


def test_a_fine_tune_that_only_makes_things_worse_is_not_kept():
    # SGD at lr 1000 (and its tenth) blows any net up: the step's own weights are kept.
    model, notes, lines = trained_tiny(TINY), {}, []
    start = copy.deepcopy(model)
    train_module.recalibrate_bn(start, TINY)  # the fine-tune's first move, deterministic
    train_module.finetune(model, TINY, SGD, 1, lr=1000.0, notes=notes, log=lines.append, label="t")
    assert state_equal(model, start), "a fine-tune that raised the loss was kept"
    assert notes["finetune_lr"] == 0.0 and notes["finetune_loss_after"] == notes["finetune_loss_before"]
    rose = [line for line in lines if "the training loss rose" in line]
    assert len(rose) == 2 and "again at lr 100" in rose[0] and "kept as they were" in rose[1], lines


def test_a_fine_tune_that_helps_is_kept_at_the_training_lr():
    model, notes = trained_tiny(TINY), {}
    torch.manual_seed(1)
    with torch.no_grad():  # damaged as a compression step would: noise on every weight
        for w in model.parameters():
            w.add_(0.3 * w.std() * torch.randn_like(w))
    train_module.finetune(model, TINY, SGD, 2, notes=notes)
    assert notes["finetune_lr"] == SGD.lr
    assert notes["finetune_loss_after"] < notes["finetune_loss_before"]
    assert train_module.guard_loss(model, TINY) == pytest.approx(notes["finetune_loss_after"], rel=1e-5)


def test_schedules():
    def lrs(schedule: str, steps: int = 10) -> list[float]:
        opt = torch.optim.SGD(TinyNet().parameters(), lr=1.0)
        sched, out = _scheduler(opt, schedule, steps), []
        for _ in range(steps):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return out

    assert lrs("constant") == [1.0] * 10
    hold = lrs("hold_cosine")
    assert hold[:6] == [1.0] * 6 and all(a > b for a, b in zip(hold[5:], hold[6:])) and hold[-1] < 0.1
    cosine = lrs("cosine")
    assert cosine[0] == 1.0 and cosine[5] == pytest.approx(0.5)
    assert finetune_schedule(ADAM) == "constant" and finetune_schedule(SGD) == "hold_cosine"
    with pytest.raises(ValueError, match="schedule"):
        train_module.fit(TinyNet(), TINY, ADAM, epochs=1, schedule="linear")


@pytest.fixture(scope="module")
def user_model():
    """dw_mix of the benchmark trained by plain Adam on 1,600 shapes (~20 s on one core)."""
    torch.set_num_threads(1)
    data = bench.shapes_data(0, n_train=1600, n_test=1000)
    model = bench.train_user_model("dw_mix", data, epochs=10)
    base = bench.accuracy(model, data)
    assert base > 0.75, f"the user-like model should learn the task: {base:.1%}"  # measured 78.8 %
    return data, model, base


# (kind, ratio, tolerance in accuracy). Measured here, 3 epochs, edgebench's drop minus the
# reference's: structured 50 % +0.1 points (the earlier defaults: +23.9), unstructured 80 %
# -0.5 (earlier: +22.9). 80 % of this 11k-weight net costs both sides ~26 points and the
# result of such a fine-tune swings by several points with the batch order, hence 5.
CASES = [("structured", 0.5, 0.025), ("unstructured", 0.8, 0.05)]


@pytest.mark.parametrize("kind,ratio,tolerance", CASES, ids=[c[0] for c in CASES])
def test_default_fine_tune_recovers_like_the_plain_reference(user_model, kind, ratio, tolerance):
    """edgebench's prune step with its default lr and schedule against torch-pruning's
    MagnitudePruner / torch's global L1 prune, each followed by 3 epochs of plain Adam at the
    training lr (the same batches)."""
    data, model, base = user_model
    pruned, eb_macs = bench.edgebench_prune(model, data, kind, ratio, epochs=3)
    ref, ref_macs = bench.reference(model, data, kind, ratio, epochs=3)
    eb_drop, ref_drop = base - bench.accuracy(pruned, data), base - bench.accuracy(ref, data)
    assert eb_macs == pytest.approx(ref_macs, abs=0.02)  # the same share of the net is gone
    assert eb_drop <= ref_drop + tolerance, (
        f"{kind} {ratio:.0%}: edgebench lost {eb_drop:.1%}, the reference {ref_drop:.1%} "
        f"(baseline {base:.1%})"
    )


def test_unstructured_prunes_what_torch_global_l1_prunes(user_model):
    """One magnitude threshold over all Conv/Linear weights, like torch's global_unstructured:
    no layer is forced to 80 % on its own (the first conv or a depthwise conv would suffer)."""
    from torch import nn
    from torch.nn.utils import prune as torch_prune

    data, model, _ = user_model
    ours, _ = bench.edgebench_prune(model, data, "unstructured", 0.8, epochs=0)
    theirs = copy.deepcopy(model)
    params = [(m, "weight") for m in theirs.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    torch_prune.global_unstructured(params, pruning_method=torch_prune.L1Unstructured, amount=0.8)
    a = [m.weight == 0 for m in ours.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    b = [m.weight_mask == 0 for m, _ in params]
    assert sum(int((x != y).sum()) for x, y in zip(a, b)) <= 2  # ties at the threshold aside
    shares = [float(x.float().mean()) for x in a]
    assert min(shares) < 0.5 and max(shares) > 0.9  # the ratio is spread, not uniform


def test_batchnorm_statistics_are_re_estimated_before_a_fine_tune():
    # A step changed the weights; the statistics still describe the old net. recalibrate_bn
    # sets each BatchNorm's running mean/var to those of its inputs over the first training
    # inputs, and touches nothing else (weights, the model's train/eval flags).
    model = trained_tiny(TINY)
    bn = model.stem[1]
    seen = []
    hook = bn.register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach()))
    with torch.no_grad():
        model.eval()(torch.as_tensor(TINY.x_train))  # the inputs the first conv gives the first BN
    hook.remove()
    x = seen[0]
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.add_(5.0)
                m.running_var.mul_(9.0)
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}
    model.eval()
    assert train_module.recalibrate_bn(model, TINY) == sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert torch.allclose(bn.running_mean, x.mean(dim=(0, 2, 3)), atol=1e-4)
    assert torch.allclose(bn.running_var, x.var(dim=(0, 2, 3), unbiased=True), rtol=1e-2)
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items() if k in weights)
    assert not any(m.training for m in model.modules()) and bn.momentum == 0.1
    # The fine-tune does it first and says so in the step's notes.
    notes: dict = {}
    train_module.finetune(trained_tiny(TINY), TINY, SGD, 1, notes=notes)
    assert notes["bn_recalibrated"] == sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())

"""Does edgebench's prune step, with its default fine-tune, recover as much as a plain reference?

User-like models and data, written here, offline and seeded:

- data: 10 classes of 3x16x16 shapes and textures (stripes in four directions, checkerboard,
  dot grid, disc, ring, square outline, cross) at random position, size, period and colours,
  with Gaussian noise; 2,000 training and 2,000 test images;
- models (all BatchNorm + hardswish, SE gates with a hard-sigmoid, residual adds):
  `mobile_se` (MobileNetV3-like depthwise inverted residuals), `group_se` (ResNeXt-like grouped
  3x3 convs, projection shortcuts), `dw_mix` (depthwise 5x5 + grouped 1x1 blocks and a hidden
  Linear before the classifier);
- each trained by plain Adam (lr 2e-3, 10 epochs, batch 64), as a user would, outside edgebench.

Then, per model and case, from the same trained weights and with the same fine-tune budget
(epochs, batch size, data order: the same seed):

- edgebench: the `prune` step through its public API as the pipeline runs it
  (`METHODS.get("prune")(kind=..., ratio=..., finetune_epochs=E).apply(model, ctx)`), its lr and
  schedule left at their defaults, with the user's `[train]` table: optimizer = "adam",
  lr = 2e-3, batch_size = 64 (weight_decay left at its default);
- reference, structured 50 %: torch-pruning's `MagnitudePruner` (L2 magnitude, 50 % of the
  channels, the classifier ignored) then E epochs of plain Adam at the training lr;
- reference, unstructured 80 %: `torch.nn.utils.prune.global_unstructured` (L1, 80 % of all
  Conv/Linear weights) then the same fine-tune.

It prints baseline accuracy, each side's accuracy and drop, the gap (edgebench's drop minus
the reference's, in points: negative = edgebench lost less), and MACs ratios (structured), on
n test images; with several seeds (fine-tune seeds: data order), medians and the per-seed gaps.

    python benchmarks/prune_vs_reference.py            # 3 models x 2 seeds (237-263 s here, 1 thread)
    python benchmarks/prune_vs_reference.py --quick    # dw_mix, 1 seed (~50 s)
    python benchmarks/prune_vs_reference.py --seeds 3 --models mobile_se --importance l2

Measured here (torch 2.13 CPU, 2 seeds, 4 epochs; gap = edgebench's drop minus the
reference's, points, median): structured 50 % +0.9 / +0.9 / -0.1 (mobile_se / group_se /
dw_mix; per seed up to +1.2), MACs equal (0.32 / 0.28 / 0.38); unstructured 80 % +0.5 / 0.0 /
-8.6. The remaining structured gap is the channel importance: edgebench's default L1 norm
against the reference's L2; with importance = "l2" and weight_decay = 0 edgebench scored
what the reference scored in 6 of 6 runs, and with the default weight decay -0.7..+0.3. On the
SGD-trained demo L1 and L2 are a wash (3 seeds), so L1 stays the default. 80 % unstructured
costs these 11-37k-parameter nets a lot (one global threshold empties most of the largest
conv), and such fine-tunes swing by several points: read those gaps with that in mind.
With the former defaults (a fifth of the training lr, a fresh cosine decay to 0) edgebench
lost 19-40 points more than the reference on these models (1 seed).

tests/compress/test_prune_defaults.py runs this comparison on dw_mix with a smaller budget.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgebench.compress import METHODS, StepContext  # noqa: E402
from edgebench.config import TrainConfig  # noqa: E402
from edgebench.model.data import Dataset  # noqa: E402

N_CLASSES = 10
SIZE = 16
TRAIN_LR = 2e-3
BATCH = 64
CASES = (("structured", 0.5), ("unstructured", 0.8))


# -- data -----------------------------------------------------------------------------------------


def shapes_data(seed: int = 0, n_train: int = 2000, n_test: int = 2000, noise: float = 0.3) -> Dataset:
    """10 classes of noisy coloured shapes and textures, 3x16x16, scaled to about [-1, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)

    def wave(t: np.ndarray, period: float, phase: float) -> np.ndarray:
        return np.sin(2 * np.pi * t / period + phase)

    def pattern(c: int) -> np.ndarray:
        period, phase = rng.uniform(3.0, 6.0), rng.uniform(0, 2 * np.pi)
        cy, cx = rng.uniform(6, SIZE - 6, 2)
        r, w = rng.uniform(3.5, 6.0), rng.uniform(1.2, 2.2)
        dy, dx = np.abs(yy - cy), np.abs(xx - cx)
        if c == 0:
            m = wave(yy, period, phase) > 0  # horizontal stripes
        elif c == 1:
            m = wave(xx, period, phase) > 0  # vertical stripes
        elif c == 2:
            m = wave(xx + yy, period * 1.41, phase) > 0  # diagonal stripes
        elif c == 3:
            m = wave(xx - yy, period * 1.41, phase) > 0  # the other diagonal
        elif c == 4:
            m = (wave(xx, period, phase) > 0) ^ (wave(yy, period, phase) > 0)  # checkerboard
        elif c == 5:
            m = dy**2 + dx**2 < r**2  # disc
        elif c == 6:
            m = np.abs(np.sqrt(dy**2 + dx**2) - r) < w * 0.7  # ring
        elif c == 7:
            m = (np.maximum(dy, dx) < r) & (np.maximum(dy, dx) > r - w)  # square outline
        elif c == 8:
            m = ((dy < w) & (dx < r)) | ((dx < w) & (dy < r))  # cross
        else:
            m = (wave(xx, period, phase) > 0.5) & (wave(yy, period, phase) > 0.5)  # dot grid
        return m.astype(np.float32)

    def make(n: int):
        y = rng.integers(0, N_CLASSES, n)
        x = np.empty((n, 3, SIZE, SIZE), np.float32)
        for i, c in enumerate(y):
            bg = rng.uniform(0.2, 0.8, 3)
            delta = rng.normal(0, 1, 3)
            delta *= rng.uniform(0.35, 0.7) * np.sqrt(3) / np.linalg.norm(delta)
            x[i] = bg[:, None, None] + delta[:, None, None] * pattern(c)[None]
            x[i] += rng.normal(0, noise, (3, SIZE, SIZE))
        return (x - 0.5) / 0.5, y.astype(np.int64)

    x_train, y_train = make(n_train)
    x_calib, y_calib = make(128)
    x_test, y_test = make(n_test)
    return Dataset(
        x_train=x_train, y_train=y_train, x_calib=x_calib, x_test=x_test, y_test=y_test,
        num_classes=N_CLASSES, mean=np.zeros(3), std=np.ones(3),
        classes=[str(i) for i in range(N_CLASSES)], y_calib=y_calib, source="shapes",
    )  # fmt: skip


# -- user-like models -----------------------------------------------------------------------------


class SE(nn.Module):
    """Squeeze-and-excitation gate: pool, 1x1 reduce, ReLU, 1x1 expand, hard-sigmoid, multiply."""

    def __init__(self, c: int, r: int = 4):
        super().__init__()
        self.fc1 = nn.Conv2d(c, max(4, c // r), 1)
        self.fc2 = nn.Conv2d(max(4, c // r), c, 1)

    def forward(self, x):
        return x * F.hardsigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3), keepdim=True)))))


def cbh(cin: int, cout: int, k: int = 3, s: int = 1, g: int = 1, act: bool = True) -> nn.Sequential:
    """Conv (no bias) + BatchNorm (+ hardswish)."""
    layers = [nn.Conv2d(cin, cout, k, s, k // 2, groups=g, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.Hardswish()) if act else nn.Sequential(*layers)


class InvRes(nn.Module):
    def __init__(self, cin: int, cout: int, expand: int, s: int):
        super().__init__()
        mid = cin * expand
        self.body = nn.Sequential(
            cbh(cin, mid, 1), cbh(mid, mid, 3, s, g=mid), SE(mid), cbh(mid, cout, 1, act=False)
        )
        self.res = s == 1 and cin == cout

    def forward(self, x):
        y = self.body(x)
        return x + y if self.res else y


class MobileSE(nn.Module):
    """MobileNetV3-like: depthwise inverted residuals with SE gates and hardswish."""

    def __init__(self, num_classes: int = N_CLASSES, w: int = 12):
        super().__init__()
        self.stem = cbh(3, w, 3)
        self.blocks = nn.Sequential(
            InvRes(w, w, 2, 1), InvRes(w, 2 * w, 3, 2), InvRes(2 * w, 2 * w, 3, 1),
            InvRes(2 * w, 3 * w, 3, 2), InvRes(3 * w, 3 * w, 3, 1),
        )  # fmt: skip
        self.head = cbh(3 * w, 4 * w, 1)
        self.fc = nn.Linear(4 * w, num_classes)

    def forward(self, x):
        return self.fc(self.head(self.blocks(self.stem(x))).mean((2, 3)))


class GroupBlock(nn.Module):
    def __init__(self, cin: int, cout: int, s: int, groups: int = 4):
        super().__init__()
        self.a = cbh(cin, cout, 1)
        self.b = cbh(cout, cout, 3, s, g=groups)
        self.se = SE(cout)
        self.c = cbh(cout, cout, 1, act=False)
        self.short = None if (s == 1 and cin == cout) else cbh(cin, cout, 1, s, act=False)

    def forward(self, x):
        y = self.c(self.se(self.b(self.a(x))))
        return F.hardswish(y + (x if self.short is None else self.short(x)))


class GroupSE(nn.Module):
    """ResNeXt-like: grouped 3x3 convs, SE gates, projection shortcuts, residual adds."""

    def __init__(self, num_classes: int = N_CLASSES, w: int = 16):
        super().__init__()
        self.stem = cbh(3, w, 3)
        self.layers = nn.Sequential(
            GroupBlock(w, w, 1), GroupBlock(w, 2 * w, 2), GroupBlock(2 * w, 2 * w, 1),
            GroupBlock(2 * w, 4 * w, 2),
        )  # fmt: skip
        self.fc = nn.Linear(4 * w, num_classes)

    def forward(self, x):
        return self.fc(self.layers(self.stem(x)).mean((2, 3)))


class MixBlock(nn.Module):
    """Depthwise 5x5, grouped 1x1 (2 groups), SE gate, residual add."""

    def __init__(self, c: int):
        super().__init__()
        self.dw = cbh(c, c, 5, g=c)
        self.pw = cbh(c, c, 1, g=2, act=False)
        self.se = SE(c)

    def forward(self, x):
        return F.hardswish(x + self.se(self.pw(self.dw(x))))


class DWMix(nn.Module):
    """Depthwise / grouped-pointwise blocks with SE gates, a hidden Linear before the classifier."""

    def __init__(self, num_classes: int = N_CLASSES, w: int = 16):
        super().__init__()
        self.stem = nn.Sequential(cbh(3, w, 3), cbh(w, w, 3, g=w))
        self.b1 = MixBlock(w)
        self.down = cbh(w, 2 * w, 3, 2)
        self.b2 = MixBlock(2 * w)
        self.b3 = MixBlock(2 * w)
        self.hidden = nn.Linear(2 * w, 2 * w)
        self.fc = nn.Linear(2 * w, num_classes)

    def forward(self, x):
        x = self.b3(self.b2(self.down(self.b1(self.stem(x)))))
        return self.fc(F.hardswish(self.hidden(x.mean((2, 3)))))


MODELS = {"mobile_se": MobileSE, "group_se": GroupSE, "dw_mix": DWMix}


# -- plain training, the references, edgebench ---------------------------------------------------


def plain_fit(model: nn.Module, data: Dataset, epochs: int, lr: float = TRAIN_LR, seed: int = 0) -> nn.Module:
    """Plain Adam at a constant lr (what the user trained with, and the references' fine-tune).

    Same batches as edgebench's `fit` for the same seed (its permutation generator)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), BATCH):
            idx = order[i : i + BATCH]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, data: Dataset) -> float:
    model.eval()
    x = torch.from_numpy(data.x_test)
    pred = torch.cat([model(x[i : i + 500]).argmax(1) for i in range(0, len(x), 500)])
    return float((pred.numpy() == data.y_test).mean())


def macs(model: nn.Module, data: Dataset) -> int:
    import torch_pruning as tp

    return tp.utils.count_ops_and_params(model, torch.from_numpy(data.x_train[:1]))[0]


def train_user_model(name: str, data: Dataset, epochs: int = 10, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return plain_fit(MODELS[name](), data, epochs, seed=seed)


def reference(model: nn.Module, data: Dataset, kind: str, ratio: float, epochs: int, seed: int = 0):
    """(pruned and fine-tuned copy, MACs after / before) by the plain torch tools."""
    model = copy.deepcopy(model).eval()
    before = macs(model, data)
    if kind == "structured":
        import torch_pruning as tp

        classifier = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
        tp.pruner.MagnitudePruner(
            model, torch.from_numpy(data.x_train[:1]), importance=tp.importance.MagnitudeImportance(p=2),
            pruning_ratio=ratio, ignored_layers=[classifier],
        ).step()  # fmt: skip
        plain_fit(model, data, epochs, seed=seed)
    else:
        from torch.nn.utils import prune

        params = [(m, "weight") for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=ratio)
        plain_fit(model, data, epochs, seed=seed)  # the mask holds through the fine-tune
        for m, p in params:
            prune.remove(m, p)
    return model.eval(), macs(model, data) / before


def user_train_config() -> TrainConfig:
    """The [train] table a user who trained with Adam writes: optimizer and lr, the rest default."""
    return TrainConfig(epochs=10, lr=TRAIN_LR, batch_size=BATCH, optimizer="adam", threads=1)


def edgebench_prune(model: nn.Module, data: Dataset, kind: str, ratio: float, epochs: int, seed: int = 0,
                    train: TrainConfig | None = None, **params):  # fmt: skip
    """(pruned copy, MACs after / before) by edgebench's prune step, as the pipeline applies it."""
    ctx = StepContext(data=data, train=train or user_train_config(), seed=seed, log=lambda _: None)
    step = METHODS.get("prune")(kind=kind, ratio=ratio, finetune_epochs=epochs, **params)
    before = macs(model, data)
    pruned = step.apply(model, ctx)
    return pruned, macs(pruned, data) / before


# -- the benchmark --------------------------------------------------------------------------------


def run(models: list[str], seeds: int, epochs: int, log=print, **params) -> list[dict]:
    """Rows of the table; `params` go to edgebench's prune step (e.g. importance="l2")."""
    torch.set_num_threads(1)
    data = shapes_data(0)
    rows = []
    for name in models:
        t0 = time.perf_counter()
        base_model = train_user_model(name, data)
        base = accuracy(base_model, data)
        log(f"{name}: trained by plain Adam, {base:.1%} on {len(data.y_test)} test images")
        for kind, ratio in CASES:
            runs = []
            for seed in range(seeds):
                eb, eb_macs = edgebench_prune(base_model, data, kind, ratio, epochs, seed, **params)
                ref, ref_macs = reference(base_model, data, kind, ratio, epochs, seed)
                runs.append({"eb": accuracy(eb, data), "ref": accuracy(ref, data),
                             "eb_macs": eb_macs, "ref_macs": ref_macs})  # fmt: skip
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            rows.append({
                "model": name, "case": f"{kind} {ratio:.0%}", "n": len(data.y_test), "base": base,
                "eb": med["eb"], "ref": med["ref"], "eb_drop": base - med["eb"], "ref_drop": base - med["ref"],
                "gap": statistics.median((r["ref"] - r["eb"]) * 100 for r in runs),
                "gaps": [round((r["ref"] - r["eb"]) * 100, 1) for r in runs],
                "eb_macs": med["eb_macs"], "ref_macs": med["ref_macs"], "seeds": seeds, "epochs": epochs,
            })  # fmt: skip
        log(f"{name}: done in {time.perf_counter() - t0:.0f} s")
    return rows


def table(rows: list[dict]) -> str:
    head = (f"{'model':<10} {'case':<17} {'n':>5} {'base':>6}  {'edgebench':>9} {'drop':>6}  "
            f"{'reference':>9} {'drop':>6}  {'gap pt':>6}  {'MACs eb/ref':>11}  per-seed gaps")  # fmt: skip
    lines = [head, "-" * len(head)]
    for r in rows:
        m = f"{r['eb_macs']:.2f}/{r['ref_macs']:.2f}" if r["case"].startswith("structured") else "1/1"
        lines.append(
            f"{r['model']:<10} {r['case']:<17} {r['n']:>5} {r['base']:>6.1%}  {r['eb']:>9.1%} "
            f"{-100 * r['eb_drop']:>+6.1f}  {r['ref']:>9.1%} {-100 * r['ref_drop']:>+6.1f}  "
            f"{r['gap']:>+6.1f}  {m:>11}  {r['gaps']}"
        )
    lines.append("drop: points against the baseline; gap: edgebench's drop minus the reference's "
                 "(median over seeds; > 0: edgebench lost more)")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="dw_mix only, 1 seed")
    ap.add_argument("--models", nargs="+", choices=sorted(MODELS), default=None)
    ap.add_argument("--seeds", type=int, default=None, help="fine-tune seeds (default 2; --quick 1)")
    ap.add_argument("--epochs", type=int, default=4, help="fine-tune epochs, both sides (default 4)")
    ap.add_argument("--importance", choices=["l1", "l2", "bn_scale"], default=None,
                    help="edgebench's structured importance (default: the step's default)")
    args = ap.parse_args(argv)
    params = {"importance": args.importance} if args.importance else {}
    models = args.models or (["dw_mix"] if args.quick else list(MODELS))
    seeds = args.seeds or (1 if args.quick else 2)
    t0 = time.perf_counter()
    rows = run(models, seeds, args.epochs, log=lambda s: print(s, file=sys.stderr, flush=True), **params)
    print(f"prune: edgebench's defaults{' + ' + str(params) if params else ''} vs a plain reference, "
          f"{args.epochs} fine-tune epochs each, {seeds} seed(s), torch {torch.__version__}")  # fmt: skip
    print(table(rows))
    print(f"({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

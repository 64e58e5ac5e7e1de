"""Do edgebench's defaults hold on models nobody tuned them for? A zoo, each method against a plain reference.

Eight user-like nets (benchmarks/zoo/nets.py: SE gates and residual adds, grouped and depthwise
convs, no BatchNorm, a MobileNetV3-like with Hardswish, a DS-CNN on spectrogram frames, a
Conv1d net, a tiny ViT; five trained with Adam, three with SGD) on four offline data sets
(benchmarks/zoo/data.py), each trained per seed twice: by edgebench (`fit`: the [train]
optimizer, cosine to 0, weight decay 5e-4) and "elsewhere" (the same optimizer at a constant
lr, torch's defaults: weights a user brings). Then, from each baseline and seed, with the
same fine-tune budget (edgebench's default epochs, the same data order), edgebench's step
through its public API with default settings against a plain reference written with the
library alone (benchmarks/zoo/references.py):

    prune-s50   structured 50 % (torch-pruning MagnitudePruner L2, classifier kept), equal MACs
    prune-u80   unstructured 80 % (torch.nn.utils.prune global L1), equal non-zeros
    lowrank     edgebench's default (Tucker-2, half rank) vs plain SVD at equal parameters
    cluster4    4-bit weight sharing vs scikit-learn KMeans per layer + plain fine-tune
    kd          logits KD into the teacher pruned to half width (edgebench's student for a factory
                without `width`) vs the same student without KD (its twin) and Hinton's T 4, α 0.9

Drops are points against the baseline on 500 test inputs (> 0: lost accuracy); gap =
edgebench's drop minus the reference's (> 0: edgebench lost more), median over seeds, with
the seeds' gaps beside it.

    python benchmarks/defaults_zoo.py                  # 8 nets x 3 seeds, 2 processes
    python benchmarks/defaults_zoo.py --quick          # dw_mix and conv1d, 3 seeds
    python benchmarks/defaults_zoo.py --nets mbv3 --methods prune-s50 --set prune.importance=l2
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


@dataclass(frozen=True)
class Net:
    factory: str  # a class in zoo.nets, with its keyword arguments
    data: str  # a set in zoo.data
    optimizer: str
    lr: float
    epochs: int = 15
    batch_size: int = 32
    kwargs: tuple = ()

    def make(self):
        from zoo import nets

        return getattr(nets, self.factory)(**dict(self.kwargs))

    def train_config(self):
        """The [train] table this user writes: optimizer, lr, epochs, batch size; the rest default."""
        from edgebench.config import TrainConfig

        return TrainConfig(epochs=self.epochs, lr=self.lr, batch_size=self.batch_size, optimizer=self.optimizer,
                           threads=1)  # fmt: skip


ZOO = {
    "se_resnet": Net("SEResNet", "digits", "adam", 3e-3, kwargs=(("in_channels", 1),)),
    "resnext": Net("ResNeXt", "shapes", "sgd", 0.05),
    "dw_mix": Net("DWMix", "shapes", "adam", 3e-3, kwargs=(("w", 12),)),
    "mbv3": Net("MobileSE", "shapes", "adam", 3e-3),
    "plain": Net("Plain", "digits", "sgd", 0.05),
    "dscnn": Net("DSCNN", "kws", "adam", 3e-3),
    "conv1d": Net("SignalNet", "signal", "sgd", 0.05),
    "vit": Net("TinyViT", "digits8", "adam", 4e-3, epochs=12, batch_size=16,
               kwargs=(("patch", 2), ("tokens", 16))),
}  # fmt: skip
QUICK = ("dw_mix", "conv1d")
METHODS = ("prune-s50", "prune-u80", "lowrank", "cluster4", "kd")
BASELINES = ("edgebench", "constant")  # who trained the baseline: edgebench's fit, or elsewhere at a constant lr
STEPS = {  # edgebench's step for each method, default settings
    "prune-s50": ("prune", {"kind": "structured", "ratio": 0.5}),
    "prune-u80": ("prune", {"kind": "unstructured", "ratio": 0.8}),
    "lowrank": ("lowrank", {}),
    "cluster4": ("cluster", {"bits": 4}),
    "kd": ("distill", {"kind": "logits", "student": "teacher", "width": 0.5}),
}
ON_BOTH = ("prune-s50", "prune-u80")  # methods run from both baselines; the others from edgebench's


# -- one net, one seed ----------------------------------------------------------------------------


def correct(model, data):
    """Per test input: is the top-1 right? (a bool array, so paired differences have intervals)"""
    from edgebench.model.train import predict_logits

    return predict_logits(model, data.x_test).argmax(1) == data.y_test


def macs(model, data) -> int:
    import torch
    import torch_pruning as tp

    return tp.utils.count_ops_and_params(model.eval(), torch.from_numpy(data.x_train[:1]))[0]


def baselines(net: Net, data, cfg, seed: int, cache: str | None = None) -> dict:
    """{"edgebench": trained by edgebench's fit, "constant": by a plain loop at a constant lr};
    kept in `cache` (a folder) by everything that makes them, when given."""
    import hashlib

    import torch
    from zoo import references

    from edgebench.model.train import TRAIN_CODE_VERSION, fit

    out = {}
    for kind in BASELINES:
        key = hashlib.sha256(repr((net, cfg if kind == "edgebench" else net.train_config(), seed, kind, TRAIN_CODE_VERSION, data.fingerprint())).encode())
        path = Path(cache or ".") / f"{net.factory}-{kind}-{seed}-{key.hexdigest()[:12]}.pt"
        torch.manual_seed(seed)
        model = net.make()
        if cache and path.is_file():
            model.load_state_dict(torch.load(path, weights_only=True))
            out[kind] = model.eval()
            continue
        if kind == "edgebench":
            out[kind] = fit(model, data, cfg, seed=seed)
        else:
            plain = net.train_config()  # the user's own loop: no [train] overrides
            out[kind] = references.plain_fit(model, data, plain, plain.epochs, plain.lr, seed, "constant")
        if cache:
            Path(cache).mkdir(parents=True, exist_ok=True)
            torch.save(model.state_dict(), path)
    return out


def edgebench_step(method: str, model, data, cfg, seed: int, overrides: dict):
    """(compressed model, its twin or None, the step) by edgebench's public API, as the pipeline applies it."""
    from edgebench.compress import METHODS as STEP_METHODS
    from edgebench.compress import StepContext

    name, params = STEPS[method]
    params = {**params, **overrides.get(name, {})}
    ctx = StepContext(data=data, train=cfg, seed=seed, teacher=model, log=lambda _: None)
    step = STEP_METHODS.get(name)(**params)
    out = step.apply(model, ctx)
    twin = None
    if method == "kd":
        twin_ctx = StepContext(data=data, train=cfg, seed=seed, teacher=model, log=lambda _: None)
        twin = dataclasses.replace(step, kind="none").apply(model, twin_ctx)
    return out, twin, step


def reference_step(method: str, step, model, data, cfg, seed: int, eb_model):
    from zoo import references as ref

    if method == "prune-s50":
        return ref.structured(model, data, cfg, step.ratio, step.finetune_epochs, seed)
    if method == "prune-u80":
        return ref.unstructured(model, data, cfg, step.ratio, step.finetune_epochs, seed)
    if method == "lowrank":
        return ref.lowrank(model, data, cfg, ref.params(eb_model), step.finetune_epochs, seed)
    if method == "cluster4":
        return ref.cluster(model, data, cfg, step.bits, step.finetune_epochs, seed)
    # kd: the same student as edgebench's, trained by the same loop with Hinton's loss and usual T, alpha.
    from edgebench.compress import StepContext
    from edgebench.compress.distill import frozen_teacher, make_student
    from edgebench.model.train import fit

    ctx = StepContext(data=data, train=cfg, seed=seed, teacher=model, log=lambda _: None)
    teacher = frozen_teacher(model)
    student = make_student(step.student, step.width, ctx, teacher)
    return fit(student, data, cfg, epochs=step.epochs, lr=step.lr, loss_fn=ref.hinton_loss(teacher), seed=seed)


def patch_finetune(schedule: str | None = None, lr_scale: float = 1.0, bn_recalib: bool = False) -> None:
    """Try other fine-tune defaults in this process: `schedule` (edgebench.model.train.SCHEDULES),
    the lr as `lr_scale` x the step's, BatchNorm statistics re-estimated before it (`bn_recalib`)."""
    import edgebench.model.train as train_module

    real = train_module.finetune
    if schedule:
        train_module.finetune_schedule = lambda _cfg: schedule

    def finetune(model, data, cfg, epochs, lr=None, **kw):
        if bn_recalib:
            from zoo.references import recalibrate_bn

            recalibrate_bn(model, data)
        return real(model, data, cfg, epochs, lr=(cfg.lr if lr is None else lr) * lr_scale, **kw)

    train_module.finetune = finetune


def run_unit(name: str, seed: int, methods: tuple, overrides: dict, cache: str | None = None) -> list[dict]:
    """Every method on net `name` at `seed`: one row per (method, baseline kind)."""
    import torch
    from zoo import data as zoo_data
    from zoo import references

    from edgebench.errors import StepError

    torch.set_num_threads(1)
    net = ZOO[name]
    data, cfg = zoo_data.load(net.data), net.train_config()
    if "train" in overrides:  # the user's [train] table, for edgebench's baseline and its fine-tunes
        cfg = dataclasses.replace(cfg, **overrides["train"])
    if "finetune" in overrides:
        patch_finetune(**overrides["finetune"])
    t0, cpu0 = time.perf_counter(), time.process_time()
    bases = baselines(net, data, cfg, seed, cache)
    rows = []
    for method in methods:
        for kind in BASELINES if method in ON_BOTH else ("edgebench",):
            base = bases[kind]
            try:
                eb, twin, step = edgebench_step(method, base, data, cfg, seed, overrides)
            except StepError as exc:  # the method does not apply to this net: a row that says why
                rows.append({"net": name, "seed": seed, "method": method, "baseline": kind, "skipped": str(exc)})
                continue
            ref = reference_step(method, step, base, data, net.train_config(), seed, eb)
            row = {"net": name, "seed": seed, "method": method, "baseline": kind, "n": len(data.y_test),
                   "base": correct(base, data), "eb": correct(eb, data), "ref": correct(ref, data)}  # fmt: skip
            if twin is not None:
                row["twin"] = correct(twin, data)
            if method == "prune-s50":
                before = macs(base, data)
                row["cost"] = (macs(eb, data) / before, macs(ref, data) / before)
            elif method in ("lowrank", "kd"):
                before = references.params(base)
                row["cost"] = (references.params(eb) / before, references.params(ref) / before)
            rows.append(row)
    for r in rows:
        r["seconds"], r["cpu_s"] = time.perf_counter() - t0, time.process_time() - cpu0
    return rows


# -- the tables -----------------------------------------------------------------------------------


def _pt(correct_a, correct_b) -> float:
    """Accuracy of a minus accuracy of b, in points."""
    return 100 * (correct_a.mean() - correct_b.mean())


def paired_interval(pairs: list[tuple]) -> tuple[float, float]:
    """Mean over seeds of acc(a) - acc(b) in points and its 95 % half-width, each seed's
    difference paired on the same test inputs (se² = discordant / n², McNemar's)."""
    import numpy as np

    diffs = [_pt(a, b) for a, b in pairs]
    var = sum(float((a != b).sum()) / len(a) ** 2 for a, b in pairs) * 1e4
    return float(np.mean(diffs)), 1.96 * var**0.5 / len(pairs)


def group(rows: list[dict]) -> dict:
    """Rows by (net, method, baseline); methods that did not apply are left out (see skipped())."""
    out: dict = {}
    for r in rows:
        if "skipped" not in r:
            out.setdefault((r["net"], r["method"], r["baseline"]), []).append(r)
    return out


def skipped(rows: list[dict]) -> list[str]:
    """One line per (net, method) that did not apply, with edgebench's reason (first 160 characters)."""
    seen = {(r["net"], r["method"]): r["skipped"] for r in rows if "skipped" in r}
    return [f"  {net} {method}: not applicable: {why[:160]}" for (net, method), why in seen.items()]


def gap_verdict(rs: list[dict]) -> tuple[float, float, str]:
    """Mean gap over seeds (points, > 0: edgebench lost more), its 95 % half-width (paired on
    the test inputs), and what that says against the 1-point target: "within" (mean <= +1),
    "n.s." (above +1 but its interval reaches +1: seeds and test inputs cannot tell), "beyond"
    (the interval is above +1)."""
    mean, half = paired_interval([(r["ref"], r["eb"]) for r in rs])
    return mean, half, "within" if mean <= 1.0 else "n.s." if mean - half <= 1.0 else "beyond"


def compare_table(rows: list[dict]) -> str:
    head = (f"{'net':<10} {'method':<10} {'baseline':<9} {'base':>6} {'eb drop':>8} {'ref drop':>8} {'gap':>6}  "
            f"{'per-seed gaps':<20} {'mean gap ± 95%':>15} {'verdict':<7} {'cost eb/ref':>11}")  # fmt: skip
    lines = [head, "-" * len(head)]
    for (net, method, kind), rs in group(rows).items():
        base = statistics.median(100 * r["base"].mean() for r in rs)
        eb = statistics.median(_pt(r["base"], r["eb"]) for r in rs)
        ref = statistics.median(_pt(r["base"], r["ref"]) for r in rs)
        gaps = [_pt(r["ref"], r["eb"]) for r in rs]
        mean, half, verdict = gap_verdict(rs)
        cost = ""
        if "cost" in rs[0]:
            cost = "{:.2f}/{:.2f}".format(*(statistics.median(r["cost"][i] for r in rs) for i in (0, 1)))
        seeds = "[" + " ".join(f"{g:+.1f}" for g in gaps) + "]"
        lines.append(f"{net:<10} {method:<10} {kind:<9} {base:>6.1f} {eb:>+8.1f} {ref:>+8.1f} "
                     f"{statistics.median(gaps):>+6.1f}  {seeds:<20} {mean:>+8.1f} ± {half:<4.1f} {verdict:<7} "
                     f"{cost:>11}")  # fmt: skip
    lines.append("drops in points against the baseline (> 0: lost); gap = edgebench's drop - the reference's, "
                 "median over seeds (> 0: edgebench lost more); mean gap: over seeds, ± its 95 % interval paired "
                 "on the test inputs; verdict against +1 point: within, n.s. (above, but the interval reaches it), "
                 "beyond; cost: MACs (prune-s50) or params after/before")
    return "\n".join(lines)


def kd_table(rows: list[dict]) -> str:
    head = (f"{'net':<10} {'base':>6} {'KD drop':>8} {'no-KD':>7} {'KD - no-KD':>16} {'per seed':<20} {'verdict':<7} "
            f"{'Hinton T4':>9} {'params':>6}")  # fmt: skip
    lines = [head, "-" * len(head)]
    for (net, method, _), rs in group(rows).items():
        if method != "kd":
            continue
        base = statistics.median(100 * r["base"].mean() for r in rs)
        kd = statistics.median(_pt(r["base"], r["eb"]) for r in rs)
        twin = statistics.median(_pt(r["base"], r["twin"]) for r in rs)
        ref = statistics.median(_pt(r["base"], r["ref"]) for r in rs)
        mean, half = paired_interval([(r["eb"], r["twin"]) for r in rs])
        verdict = "better" if mean - half > 0 else "worse" if mean + half < 0 else "tie"
        seeds = "[" + " ".join(f"{_pt(r['eb'], r['twin']):+.1f}" for r in rs) + "]"
        lines.append(f"{net:<10} {base:>6.1f} {kd:>+8.1f} {twin:>+7.1f} {mean:>+8.1f} ± {half:<5.1f} {seeds:<20} "
                     f"{verdict:<7} {ref:>+9.1f} {statistics.median(r['cost'][0] for r in rs):>6.2f}")  # fmt: skip
    lines.append("KD - no-KD: the KD student's accuracy minus its twin's (same student, seed, epochs; no teacher), "
                 "mean over seeds ± 95 % (paired on the test inputs); Hinton T4: the same student with T = 4, "
                 "alpha = 0.9 (drop)")
    return "\n".join(lines)


def summary(rows: list[dict]) -> str:
    groups = group(rows)
    prune = [(k, statistics.median(_pt(r["ref"], r["eb"]) for r in rs), gap_verdict(rs))
             for k, rs in groups.items() if k[1] in ON_BOTH]  # fmt: skip
    within = [k for k, g, _ in prune if round(g, 1) <= 1.0]  # as printed
    lines = [f"prune within 1 pt of the reference (median gap <= +1.0): {len(within)} of {len(prune)}"]
    lines += skipped(rows)
    lines += [f"  not: {' '.join(k)} (median {g:+.1f}; mean {m:+.1f} ± {h:.1f}: {v})" for k, g, (m, h, v) in prune
              if round(g, 1) > 1.0]  # fmt: skip
    beyond = [k for k, _, (_, _, v) in prune if v == "beyond"]
    lines.append(f"prune beyond 1 pt with 95 % confidence (paired over seeds and test inputs): {len(beyond)} of "
                 f"{len(prune)}{': ' + ', '.join(' '.join(k) for k in beyond) if beyond else ''}")
    kd = [paired_interval([(r["eb"], r["twin"]) for r in rs]) for k, rs in groups.items() if k[1] == "kd"]
    if kd:
        better = sum(m - h > 0 for m, h in kd)
        worse = sum(m + h < 0 for m, h in kd)
        lines.append(f"KD vs its no-KD twin: better on {better}, tie on {len(kd) - better - worse}, worse on {worse} "
                     f"of {len(kd)} nets")  # fmt: skip
    return "\n".join(lines)


# -- main -----------------------------------------------------------------------------------------


def parse_overrides(items: list[str]) -> dict:
    """["prune.importance=l2", "distill.temperature=4"] -> {"prune": {"importance": "l2"}, ...}"""
    import ast

    out: dict = {}
    for item in items:
        key, _, value = item.partition("=")
        method, _, param = key.partition(".")
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            parsed = value
        out.setdefault(method, {})[param] = parsed
    return out


def run(nets: list[str], seeds: int, methods: tuple, overrides: dict, jobs: int, log=print,
        cache: str | None = None) -> list[dict]:
    units = [(n, s) for s in range(seeds) for n in nets]
    rows: list[dict] = []
    if jobs <= 1:
        for n, s in units:
            rows += run_unit(n, s, methods, overrides, cache)
            log(f"{n} seed {s}: {rows[-1]['seconds']:.0f} s ({rows[-1]['cpu_s']:.0f} s CPU)")
        return rows
    with ProcessPoolExecutor(jobs, mp_context=get_context("spawn"), initializer=os.nice, initargs=(0,)) as pool:
        futures = {pool.submit(run_unit, n, s, methods, overrides, cache): (n, s) for n, s in units}
        for future, (n, s) in futures.items():
            rows += future.result()
            log(f"{n} seed {s}: {rows[-1]['seconds']:.0f} s ({rows[-1]['cpu_s']:.0f} s CPU)")
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help=f"{' and '.join(QUICK)} only")
    ap.add_argument("--nets", nargs="+", choices=list(ZOO), default=None)
    ap.add_argument("--methods", nargs="+", choices=METHODS, default=None)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=2, help="worker processes, one torch thread each (default 2)")
    ap.add_argument("--set", action="append", default=[], metavar="METHOD.KEY=VALUE",
                    help="an edgebench step parameter other than its default, e.g. prune.importance=l2")
    ap.add_argument("--cache", default=None, help="a folder to keep trained baselines in (off by default: "
                    "the timed run trains them)")
    ap.add_argument("--save", default=None, help="pickle the per-seed rows (correct answers per test input) here")
    ap.add_argument("--load", default=None, help="print the tables of rows saved by --save (nothing is trained)")
    args = ap.parse_args(argv)
    if args.load:
        import pickle

        saved = pickle.loads(Path(args.load).read_bytes())
        print_tables(saved["rows"], saved["overrides"], len({r["seed"] for r in saved["rows"]}))
        return 0
    nets = args.nets or (list(QUICK) if args.quick else list(ZOO))
    methods = tuple(args.methods or METHODS)
    overrides = parse_overrides(args.set)
    t0 = time.perf_counter()

    rows = run(nets, args.seeds, methods, overrides, args.jobs, log=lambda s: print(s, file=sys.stderr, flush=True),
               cache=args.cache)
    if args.save:
        import pickle

        Path(args.save).write_bytes(pickle.dumps({"rows": rows, "overrides": overrides}))
    print_tables(rows, overrides, args.seeds)
    print(f"({time.perf_counter() - t0:.0f} s; {sum({(r['net'], r['seed']): r['cpu_s'] for r in rows}.values()):.0f} "
          f"CPU-seconds in the worker processes; load average {os.getloadavg()[0]:.1f} at the end)")
    return 0


def print_tables(rows: list[dict], overrides: dict, seeds: int) -> None:
    import torch

    print(f"edgebench's defaults{' + ' + str(overrides) if overrides else ''} vs plain references, "
          f"{seeds} seeds, torch {torch.__version__}")
    print(compare_table([r for r in rows if r["method"] != "kd"]))
    if any(r["method"] == "kd" for r in rows):
        print()
        print(kd_table(rows))
    print()
    print(summary(rows))


if __name__ == "__main__":
    sys.exit(main())

"""Does the search find what the grid finds, with far fewer device measurements?

A space small enough to enumerate (structured prune ratio 0.25/0.5/0.75 x fine-tune 1/2
epochs x quantize none/fp16/int8: 18 chains) on a digits CNN (24x24), local/onnxruntime, max drop
3 pt, minimize p50. The grid (Optuna's GridSampler) measures every chain that passes the torch
accuracy check; the search (TPE, up to 18 trials) may measure a third as many on the device
(--max-device-trials; trials pruned in torch or reusing a measured chain cost none), for several
seeds. At the end, the baseline, the grid's best and each search's best are measured again side
by side (five interleaved rounds), so the comparison is one run's numbers: the search's best speed-up over
the baseline as a share of the grid's best (target: >= 95 %), and the device measurements each
used (target: <= 1/3 of the grid's).

    python benchmarks/search_vs_grid.py [--seeds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

EXPERIMENT = """
name = "search-vs-grid"
[model]
factory = "demo_cnn"
[data]
source = "digits"
image_size = 24               # latency well above the timer's noise (8x8: ~0.04 ms, noise-bound)
[train]
epochs = 4
lr = 0.05
threads = 1
[run]
targets = ["local"]
runtimes = ["onnxruntime"]
threads = 1
warmup = 20
min_runs = 300
min_seconds = 0.3
rounds = 1
[search.space.prune]
kinds = ["structured"]
ratio = [0.25, 0.75]
ratio_step = 0.25
finetune_epochs = [1, 2]
lr_scale = [1.0, 1.0]
skip_sensitive = [false]
[search.space.lowrank]
use = [false]
[search.space.quantize]
schemes = ["none", "fp16", "int8_static"]
"""
MAX_DROP = 3.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    from edgebench.config import load_experiment
    from edgebench.search import Settings
    from edgebench.search.command import run_search

    quiet = lambda _m: None  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="search-vs-grid-") as tmp:
        path = Path(tmp) / "experiment.toml"
        path.write_text(EXPERIMENT)
        exp = load_experiment(path)
        common = dict(target="local", runtime="onnxruntime", max_drop=MAX_DROP, minimize=("latency",), space=exp.search["space"])
        grid = run_search(exp, Settings(**common, sampler="grid", trials=18), Path(tmp) / "grid", None, quiet)
        records = [json.loads(x) for x in (Path(grid["run_dir"]) / "records.jsonl").read_text().splitlines()]
        base = next(r for r in records if r["variant"] == "baseline")
        by_chain = {r["search_signature"]: r for r in records if r.get("search_signature") and r["status"] == "ok"}
        within = {s: r for s, r in by_chain.items() if (base["accuracy"] - r["accuracy"]) * 100 <= MAX_DROP}
        grid_best = min(r["latency_ms"]["p50"] for r in within.values())
        grid_speedup = base["latency_ms"]["p50"] / grid_best
        print(f"grid: {len(by_chain)} chains measured ({grid['device_trials']} device measurements, "
              f"{grid['device_seconds']:.1f} s), {len(within)} within {MAX_DROP} pt; best speed-up {grid_speedup:.2f}x "
              f"({grid['best']['chain']})")
        budget = max(1, grid["device_trials"] // 3)  # a third of the grid's device measurements
        bests, measured = {}, []
        for seed in range(args.seeds):
            out = run_search(exp, Settings(**common, trials=18, max_device_trials=budget, seed=seed),
                             Path(tmp) / f"search-{seed}", None, quiet)
            measured.append(out["device_trials"])
            print(f"search seed {seed}: {out['device_trials']} device measurements, {out['trials']} trials; best: "
                  + (out["best"]["chain"] if out["best"] else "nothing within the budget"))
            if out["best"]:
                bests[f"search-{seed}"] = Path(out["run_dir"]) / "variants" / out["best"]["variant"]
        # Side by side: the baseline, the grid's best and each search's best, measured together.
        grid_dir = Path(grid["run_dir"]) / "variants"
        p50 = side_by_side({"baseline": grid_dir / "baseline", "grid": grid_dir / grid["best"]["variant"], **bests},
                           Path(grid["run_dir"]), exp)
        grid_speedup = p50["baseline"] / p50["grid"]
        shares = [(p50["baseline"] / p50[k]) / grid_speedup for k in bests] + [0.0] * (args.seeds - len(bests))
        print("\nmeasured side by side (5 interleaved rounds): " + ", ".join(f"{k} {v:.4g} ms" for k, v in p50.items()))
        print(f"grid's best speed-up {grid_speedup:.2f}x; each search's best: "
              + ", ".join(f"{k} {p50['baseline'] / p50[k]:.2f}x" for k in bests))
        print(f"search (<= {budget} device measurements, {args.seeds} seeds): median {statistics.median(shares) * 100:.0f}% "
              f"of the grid's best speed-up (min {min(shares) * 100:.0f}%; target >= 95%), "
              f"{statistics.median(measured):g} device measurements against the grid's {grid['device_trials']} "
              f"({statistics.median(measured) / grid['device_trials']:.2f}x; target <= 0.33x)")


def side_by_side(dirs: dict[str, Path], run_dir: Path, exp) -> dict[str, float]:
    """Median p50 of each variant over 5 interleaved runner rounds on the local target."""
    import dataclasses

    import numpy as np

    from edgebench.export.variants import load_variant
    from edgebench.measure.rounds import measure_rounds, run_options
    from edgebench.targets import load_profile, open_target

    variants = []
    for name, folder in dirs.items():
        v = load_variant(folder.parent.parent, folder.name)  # RUN/variants/NAME
        variants.append(dataclasses.replace(v, name=name))
    profile = load_profile("local")
    options = dataclasses.replace(run_options(exp).for_target(profile), rounds=5, min_seconds=2.0, min_runs=1000)
    target = open_target(profile)
    try:
        return {v.name: float(np.median([r["p50"] for r in result["latency_rounds"]]))
                for v, result in measure_rounds(variants, target, "onnxruntime", options, run_dir, lambda _m: None)}
    finally:
        target.close()


if __name__ == "__main__":
    main()

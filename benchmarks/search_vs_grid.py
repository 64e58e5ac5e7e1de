"""Does the search find what the grid finds, with far fewer device measurements?

A space small enough to enumerate (structured prune ratio 0.25/0.5/0.75 x fine-tune 1/2
epochs x quantize none/fp16/int8: 18 chains) on a digits CNN, local/onnxruntime, max drop
1.5 pt, minimize p50. The grid (Optuna's GridSampler) measures every chain; the search (TPE)
gets a third of that (6 trials), for several seeds. Each search's best chain is looked up in the
grid's run (same chain, same seed: same accuracy; its p50 measured there, side by side with the
grid's best), so the comparison is one run's numbers: the search's best speed-up over the
baseline as a share of the grid's best (target: >= 95 %), and the device measurements each used.

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
[search.space.lowrank]
use = [false]
[search.space.quantize]
schemes = ["none", "fp16", "int8_static"]
"""
MAX_DROP = 1.5


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
        shares, measured = [], []
        for seed in range(args.seeds):
            out = run_search(exp, Settings(**common, trials=6, seed=seed), Path(tmp) / f"search-{seed}", None, quiet)
            measured.append(out["device_trials"])
            if not out["best"]:
                print(f"search seed {seed}: nothing within the budget in 6 trials")
                shares.append(0.0)
                continue
            chain = json.dumps(out["best"]["steps"], sort_keys=True)
            p50 = by_chain[chain]["latency_ms"]["p50"] if chain in by_chain else base["latency_ms"]["p50"]
            share = (base["latency_ms"]["p50"] / p50) / grid_speedup
            shares.append(share)
            print(f"search seed {seed}: {out['device_trials']} device measurements; best {out['best']['chain']}: "
                  f"speed-up {base['latency_ms']['p50'] / p50:.2f}x in the grid's run = {share * 100:.0f}% of the grid's best")
        print(f"\nsearch (6 trials, {args.seeds} seeds): median {statistics.median(shares) * 100:.0f}% of the grid's best "
              f"speed-up (min {min(shares) * 100:.0f}%), {statistics.median(measured):g} device measurements against "
              f"the grid's {grid['device_trials']} ({statistics.median(measured) / grid['device_trials']:.2f}x; target <= 0.33x)")


if __name__ == "__main__":
    main()

"""How often does the latency gate cry wolf, and how often does it catch a real slowdown?

Measured on THIS machine with the real runner and onnxruntime (threads 1):

1. build three small ONNX CNNs: `ref`, the uncompressed model (variant "baseline"), and two
   candidates for variant "cnn": `small`, and `big`, the same net with one more 3×3 conv
   block (~25% more MACs, which must also make it >= 10% slower — checked and printed);
2. make N+1 "runs"; each measures small, ref and big back to back (ref in the middle, so it is
   next to both candidates; the order flips every time so slow drifts hit both alike), each
   model in `--slices` interleaved runner calls whose samples are pooled (3 by default;
   `--slices 1` is one process per variant, as the pipeline measures today);
3. judge run i (saved as a baseline JSON would keep it) against run i+1 with the real gate
   (`check.check_baseline`):
   false alarms: run i+1's candidate is again `small` (target: at most 1 in 20);
   detection: run i+1's candidate is `big` (target: N in N) — latency check alone, and the
   whole gate (which the exact MAC count alone already fails).

    python benchmarks/gate_noise.py            # ~2 minutes on 2 cores; --runs 20 --seconds 1.2
    python benchmarks/gate_noise.py --load runs.json   # judge a --dump again, no measuring
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgebench.analyze import format_table  # noqa: E402
from edgebench.analyze.check import (  # noqa: E402
    Check,
    GateOptions,
    baseline_entry,
    check_baseline,
    latency_stat,
    latency_test,
)

RUNNER = ROOT / "edgebench" / "runner.py"
SIDE, WIDTH, CLASSES = 32, 16, 10
BLOCKS = {"ref": 6, "small": 4, "big": 5}
VARIANT = {"ref": "baseline", "small": "cnn", "big": "cnn"}  # the gate sees small and big as one variant


def build_cnn(path: Path, blocks: int, seed: int = 0) -> dict:
    """stem 3×3 conv 1→WIDTH, `blocks` × (3×3 conv WIDTH→WIDTH + ReLU), global pool, linear.

    Written with onnx.helper (no torch needed); returns params and MACs, counted here.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits, params, macs = [], [], 0, 0
    x, c_in = "x", 1
    for i in range(blocks + 1):
        w = (rng.standard_normal((WIDTH, c_in, 3, 3)) * np.sqrt(2 / (9 * c_in))).astype(np.float32)
        b = np.zeros(WIDTH, np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes.append(helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        params += w.size + b.size
        macs += SIDE * SIDE * WIDTH * c_in * 9
        x, c_in = f"r{i}", WIDTH
    fc = (rng.standard_normal((WIDTH, CLASSES)) * 0.3).astype(np.float32)
    inits += [numpy_helper.from_array(fc, "fc"), numpy_helper.from_array(np.zeros(CLASSES, np.float32), "fcb")]
    nodes += [helper.make_node("GlobalAveragePool", [x], ["pool"]),
              helper.make_node("Flatten", ["pool"], ["flat"]),
              helper.make_node("Gemm", ["flat", "fc", "fcb"], ["logits"])]
    params += fc.size + CLASSES
    macs += WIDTH * CLASSES
    graph = helper.make_graph(
        nodes, f"cnn{blocks}", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, SIDE, SIDE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", CLASSES])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return {"params": int(params), "macs": int(macs), "size_bytes": path.stat().st_size}


def measure(model: Path, data: Path, out: Path, seconds: float) -> dict:
    """One real runner process, as a target would start it; returns its JSON document."""
    cmd = [sys.executable, str(RUNNER), "--model", str(model), "--data", str(data), "--runtime",
           "onnxruntime", "--threads", "1", "--warmup", "50", "--min-runs", "200",
           "--min-seconds", str(seconds), "--output", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    return json.loads(out.read_text())


def to_record(variant: str, result: dict, facts: dict) -> dict:
    """The fields of a record the gate reads, built from the runner's output."""
    samples = result["latency_samples_ms"]
    return {"variant": variant, "target": "local", "runtime": "onnxruntime", "status": result["status"],
            **facts, "accuracy": result.get("accuracy"), "latency_samples_ms": samples,
            "latency_ms": {"p50": float(np.median(samples)), "p90": float(np.percentile(samples, 90)),
                           "min": float(np.min(samples)), "n": len(samples)},
            "machine": {**result["machine"], "runtime_version": result["runtime_version"]}}


def measure_runs(n_runs: int, seconds: float, slices: int) -> list[dict[str, dict]]:
    """n_runs runs of {model name: record}; each run measures all three models back to back.

    With slices > 1 each model is measured in `slices` runner calls of seconds/slices each,
    interleaved (small, ref, big, small, ref, big, ...), and its samples are pooled: a burst
    from a neighbour then disturbs one slice of a model, not the whole of it (asv runs each
    benchmark in several interleaved processes for the same reason).
    """
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        facts = {name: build_cnn(folder / f"{name}.onnx", blocks, seed=1 if name == "ref" else 0)
                 for name, blocks in BLOCKS.items()}
        rng = np.random.default_rng(0)
        np.savez(folder / "data.npz", x=rng.standard_normal((16, 1, SIDE, SIDE)).astype(np.float32),
                 y=rng.integers(0, CLASSES, 16))
        for i in range(n_runs):
            results: dict[str, list[dict]] = {name: [] for name in BLOCKS}
            for j in range(slices):
                for name in ("small", "ref", "big") if (i + j) % 2 == 0 else ("big", "ref", "small"):
                    results[name].append(measure(folder / f"{name}.onnx", folder / "data.npz",
                                                 folder / "out.json", seconds / slices))
            run = {}
            for name, parts in results.items():
                pooled = {**parts[0], "latency_samples_ms": [x for r in parts for x in r["latency_samples_ms"]]}
                run[name] = to_record(VARIANT[name], pooled, facts[name])
            runs.append(run)
            print(f"\rrun {i + 1}/{n_runs}", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
    return runs


def stat_of(record: dict) -> float:
    """The gate's default statistic of a record (named for the median it once was)."""
    return latency_stat(record["latency_samples_ms"], GateOptions().latency_stat)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="comparisons per kind (default 20)")
    parser.add_argument("--seconds", type=float, default=1.2, help="timed seconds per model and run")
    parser.add_argument("--slices", type=int, default=3,
                        help="runner calls per model and run, interleaved, samples pooled (default 3; "
                             "1 = one process per variant, as the pipeline measures today)")
    parser.add_argument("--dump", metavar="PATH", help="also write every run's records as JSON here")
    parser.add_argument("--load", metavar="PATH", help="judge the runs of an earlier --dump instead")
    args = parser.parse_args()
    started = time.perf_counter()
    if args.load:
        runs = json.loads(Path(args.load).read_text())
        args.runs = len(runs) - 1
    else:
        runs = measure_runs(args.runs + 1, args.seconds, args.slices)
    if args.dump:
        Path(args.dump).write_text(json.dumps(runs))
    n, options = args.runs, GateOptions()

    def gate(i: int, candidate: str, options: GateOptions = options) -> list[Check]:
        """Run i saved as a baseline (as --save-baseline keeps it) vs run i+1 with `candidate`."""
        entries = [baseline_entry(runs[i]["ref"]), baseline_entry(runs[i]["small"])]
        return check_baseline([runs[i + 1]["ref"], runs[i + 1][candidate]], entries, options)

    def count(checks: list[list[Check]], keep: Callable[[Check], bool]) -> int:
        return sum(any(c.failed and keep(c) for c in run) for run in checks)

    def is_relative(c: Check) -> bool:
        return c.variant == "cnn" and c.metric.startswith("latency")

    def is_absolute_ref(c: Check) -> bool:
        return c.variant == "baseline" and c.metric.startswith("latency")

    same = [gate(i, "small") for i in range(n)]
    bigger = [gate(i, "big") for i in range(n)]
    by_median = GateOptions(latency_stat="p50")  # `--latency-stat p50` (the median), on the same runs
    same_median = [gate(i, "small", by_median) for i in range(n)]
    bigger_median = [gate(i, "big", by_median) for i in range(n)]
    # run-to-run movement: absolute (what a shared machine does to everything) and relative
    abs_ref = [stat_of(runs[i + 1]["ref"]) / stat_of(runs[i]["ref"]) for i in range(n)]
    abs_small = [latency_stat(runs[i + 1]["small"]["latency_samples_ms"], "p50")  # the old rule's median
                 / latency_stat(runs[i]["small"]["latency_samples_ms"], "p50") for i in range(n)]
    rel = {c: [(stat_of(runs[i + 1][c]) / stat_of(runs[i + 1]["ref"])) / (stat_of(runs[i]["small"]) / stat_of(runs[i]["ref"]))
               for i in range(n)] for c in ("small", "big")}
    # the old rule (absolute Mann-Whitney + 10% on the variant itself), on the same runs
    old = {c: sum(latency_test(runs[i]["small"]["latency_samples_ms"], runs[i + 1][c]["latency_samples_ms"],
                               effect=0.10, alpha=options.alpha, stat="p50").slower for i in range(n))
           for c in ("small", "big")}

    def span(values: list[float]) -> str:
        return f"{min(values):.3f}–{max(values):.3f}"

    results = {
        "relative_false": count(same, is_relative), "absolute_ref_false": count(same, is_absolute_ref),
        "gate_false": count(same, lambda c: True), "relative_detected": count(bigger, is_relative),
        "gate_detected": count(bigger, lambda c: True)}
    target_false, target_hit = "≤ 1 in 20", f"{n} in {n}"
    rows = [
        ["same model", f"relative latency, cnn / baseline, {options.latency_stat} (+{options.latency_effect:.0%})",
         f"{results['relative_false']}/{n}", span(rel["small"]), target_false],
        ["same model", "relative latency, --latency-stat p50", f"{count(same_median, is_relative)}/{n}", "",
         target_false],
        ["same model", f"absolute latency, baseline (+{options.latency_effect_absolute:.0%})",
         f"{results['absolute_ref_false']}/{n}", span(abs_ref), target_false],
        ["same model", "old rule: absolute latency, cnn, p50 (+10%)", f"{old['small']}/{n}", span(abs_small), "(was 4/20)"],
        ["same model", "whole gate", f"{results['gate_false']}/{n}", "", target_false],
        ["bigger model", f"relative latency, cnn / baseline, {options.latency_stat} (+{options.latency_effect:.0%})",
         f"{results['relative_detected']}/{n}", span(rel["big"]), target_hit],
        ["bigger model", "relative latency, --latency-stat p50", f"{count(bigger_median, is_relative)}/{n}", "",
         target_hit],
        ["bigger model", "old rule: absolute latency, cnn, p50 (+10%)", f"{old['big']}/{n}", "", "(was 17-18/20)"],
        ["bigger model", "whole gate (MACs too)", f"{results['gate_detected']}/{n}", "", target_hit],
    ]
    medians = {name: statistics.median(stat_of(r[name]) for r in runs) for name in BLOCKS}
    macs = {name: runs[0][name]["macs"] for name in BLOCKS}
    print("models: " + "; ".join(f"{name} {macs[name]:,} MACs, {GateOptions().latency_stat} {medians[name]:.3f} ms" for name in BLOCKS))
    print(f"big vs small: +{macs['big'] / macs['small'] - 1:.1%} MACs, "
          f"+{statistics.median(rel['big']) - 1:.1%} latency relative to the reference (median over runs)")
    how = "measured" if args.load else f"{args.slices} interleaved runner call(s) of >= {args.seconds / args.slices:.2g} s"
    print(f"{n + 1} runs of small, ref, big ({how} per model and run); run i vs run i+1, p < {options.alpha}\n")
    print(format_table(rows, ["run i+1 candidate", "check", "fails", "ratio range", "target"]))
    worst_abs = max(max(abs_ref), 1 / min(abs_ref)) - 1
    worst_rel = max(max(rel["small"]), 1 / min(rel["small"])) - 1
    sweep = {e: sum(latency_test(runs[i]["ref"]["latency_samples_ms"], runs[i + 1]["ref"]["latency_samples_ms"],
                                 effect=e, alpha=options.alpha, stat=options.latency_stat).slower
                 for i in range(n))
             for e in (0.10, 0.15, 0.20, 0.25, 0.30)}
    print(f"\nlargest run-to-run move ({options.latency_stat}): reference absolute {worst_abs:.1%}, cnn relative {worst_rel:.1%}")
    print("absolute false alarms on the reference by effect: "
          + ", ".join(f"+{e:.0%}: {k}/{n}" for e, k in sweep.items()))
    print(f"\n{time.perf_counter() - started:.0f} s")
    allowed = max(1, n // 20)
    ok = (results["gate_false"] <= allowed and results["relative_detected"] == n
          and results["gate_detected"] == n)
    print("default gate: " + ("PASS" if ok else "FAIL: the gate is too noisy or too blind here"))
    print(f"big model slower by {statistics.median(rel['big']) - 1:.1%} relative: "
          + ("ok" if statistics.median(rel["big"]) >= 1.10 else "NOT >= 10%: make it bigger"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

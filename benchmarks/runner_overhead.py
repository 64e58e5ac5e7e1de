"""Is the runner's own overhead negligible? Its p50 next to a bare InferenceSession.run loop.

Exports the demo CNN (untrained: latency does not depend on the weights) at 32x32, then, over
several rounds: (a) the runner in a fresh process, exactly as the local target starts it;
(b) a bare `session.run` loop timed in a fresh process too, same model, same threads, same
session options. The order alternates (a b, b a, a b, ...) so neither side always runs first
(a fixed order gave 0.979 in one run and 1.067 in the next on a fresh machine, while balanced
orders over 12 rounds gave 0.99). Prints each round's ratio, their median and spread (target:
median at most 1.05).

    python benchmarks/runner_overhead.py [--rounds 12] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BARE = """
import sys, time, statistics
import numpy as np
import onnxruntime as ort
path, threads, warmup, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
options = ort.SessionOptions()
options.intra_op_num_threads = threads
options.inter_op_num_threads = 1
options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
sess = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
x = np.load(sys.argv[5])["x"][:1].astype(np.float32)
feed = {sess.get_inputs()[0].name: x}
for _ in range(warmup):
    sess.run(None, feed)
samples = []
for _ in range(runs):
    t0 = time.perf_counter_ns()
    sess.run(None, feed)
    samples.append(time.perf_counter_ns() - t0)
print(statistics.median(samples) / 1e6)
"""


def bare_loop(model_path: Path, data: Path, threads: int, warmup: int, runs: int) -> float:
    """p50 (ms) of a bare InferenceSession.run loop in a fresh process, like the runner's."""
    import os
    import subprocess

    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    out = subprocess.run([sys.executable, "-c", BARE, str(model_path), str(threads), str(warmup), str(runs),
                          str(data)], capture_output=True, text=True, check=True, env=env)
    return float(out.stdout.strip())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=int, default=2000)
    args = p.parse_args()

    import torch

    from edgebench.export.onnx import export_onnx
    from edgebench.model.factories import create_model
    from edgebench.targets import RunOptions, load_profile, open_target

    tmp = Path(tempfile.mkdtemp(prefix="eb-overhead-"))
    torch.manual_seed(0)
    model = create_model("demo_cnn", num_classes=10, in_channels=1)
    x = np.random.default_rng(0).standard_normal((16, 1, 32, 32)).astype(np.float32)
    onnx_path = export_onnx(model, x[:1], tmp / "model.onnx")
    np.savez(tmp / "eval.npz", x=x, y=np.zeros(len(x), dtype=np.int64))
    target = open_target(load_profile("local"))
    options = RunOptions(threads=args.threads, warmup=50, min_runs=args.runs, min_seconds=0.0, max_seconds=60)

    started = time.perf_counter()
    ratios = []
    for i in range(args.rounds):
        order = ("runner", "bare") if i % 2 == 0 else ("bare", "runner")
        p50 = {}
        for side in order:
            if side == "runner":
                result = target.measure(onnx_path, tmp / "eval.npz", "onnxruntime", options)
                if result.get("status") != "ok":
                    print(f"runner failed: {result.get('error')}", file=sys.stderr)
                    return 1
                p50[side] = statistics.median(result["latency_samples_ms"])
            else:
                p50[side] = bare_loop(onnx_path, tmp / "eval.npz", args.threads, 50, args.runs)
        ratios.append(p50["runner"] / p50["bare"])
        print(f"round {i + 1:2d} ({order[0]} first): runner p50 {p50['runner'] * 1000:7.1f} us   "
              f"bare p50 {p50['bare'] * 1000:7.1f} us   ratio {ratios[-1]:.3f}")
    q1, median, q3 = np.percentile(ratios, [25, 50, 75])
    print(f"\n{args.rounds} rounds (order alternating), {args.runs} runs each, {args.threads} thread(s), "
          f"{time.perf_counter() - started:.0f} s:")
    print(f"  runner / bare p50: median {median:.3f} (IQR {q1:.3f}-{q3:.3f}, range {min(ratios):.3f}-"
          f"{max(ratios):.3f}); target: median <= 1.05")
    return 0


if __name__ == "__main__":
    sys.exit(main())

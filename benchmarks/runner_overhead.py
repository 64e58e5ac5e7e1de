"""Is the runner's own overhead negligible? Its p50 next to a bare InferenceSession.run loop.

Exports the demo CNN (untrained: latency does not depend on the weights) at 32x32, then
alternates, several rounds: (a) the runner in a fresh process, exactly as the local target
starts it; (b) a bare `session.run` loop timed in this process, same model, same threads,
same session options. Prints the medians and their ratio (target: at most 1.05).

    python benchmarks/runner_overhead.py [--rounds 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def bare_loop(model_path: Path, x: np.ndarray, threads: int, warmup: int, runs: int) -> float:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: x}
    for _ in range(warmup):
        sess.run(None, feed)
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        sess.run(None, feed)
        samples.append(time.perf_counter_ns() - t0)
    return statistics.median(samples) / 1e6


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=int, default=2000)
    args = p.parse_args()

    import torch

    from edgebench.export import export_onnx
    from edgebench.models import create_model
    from edgebench.targets import RunOptions, load_profile, open_target

    tmp = Path(tempfile.mkdtemp(prefix="eb-overhead-"))
    torch.manual_seed(0)
    model = create_model("demo_cnn", num_classes=10, in_channels=1)
    x = np.random.default_rng(0).standard_normal((16, 1, 32, 32)).astype(np.float32)
    onnx_path = export_onnx(model, x[:1], tmp / "model.onnx")
    np.savez(tmp / "eval.npz", x=x, y=np.zeros(len(x), dtype=np.int64))
    target = open_target(load_profile("local"))
    options = RunOptions(threads=args.threads, warmup=50, min_runs=args.runs, min_seconds=0.0, max_seconds=60)

    runner_p50, bare_p50 = [], []
    for i in range(args.rounds):
        result = target.measure(onnx_path, tmp / "eval.npz", "onnxruntime", options)
        if result.get("status") != "ok":
            print(f"runner failed: {result.get('error')}", file=sys.stderr)
            return 1
        runner_p50.append(statistics.median(result["latency_samples_ms"]))
        bare_p50.append(bare_loop(onnx_path, x[:1], args.threads, 50, args.runs))
        print(f"round {i + 1}: runner p50 {runner_p50[-1] * 1000:7.1f} us   bare p50 {bare_p50[-1] * 1000:7.1f} us")
    r, b = statistics.median(runner_p50), statistics.median(bare_p50)
    print(f"\nmedian of {args.rounds} rounds, {args.runs} runs each, {args.threads} thread(s):")
    print(f"  runner p50 {r * 1000:.1f} us | bare InferenceSession.run p50 {b * 1000:.1f} us | ratio {r / b:.3f} (target <= 1.05)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

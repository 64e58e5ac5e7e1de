"""Is the runner's own overhead negligible? Its p50 next to a bare loop of the runtime's own call.

Exports the demo CNN (untrained: latency does not depend on the weights) at 32x32 to each
runtime's format, then, per runtime, over several rounds: (a) the runner in a fresh process,
exactly as the local target starts it; (b) a bare loop of the same runtime call on the same
artifact (onnxruntime `session.run`; ExecuTorch `method(inputs, False)`, its set_inputs +
execute; ncnn a new extractor, `input`, `extract`), timed in a fresh process too, same threads
and options. The order alternates (a b, b a, a b, ...) so neither side always runs first (a
fixed order gave 0.979 in one run and 1.067 in the next on a fresh machine, while balanced
orders over 12 rounds gave 0.99). Prints each round's ratio, their median and spread per
runtime (target: median at most 1.05).

    python benchmarks/runner_overhead.py [--runtimes onnxruntime,executorch,ncnn] [--rounds 12] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# Each bare loop: argv = artifact, threads, warmup, runs, data; prints the median ms.
PROLOGUE = """
import sys, time, statistics
import numpy as np
path, threads, warmup, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
x = np.load(sys.argv[5])["x"][:1].astype(np.float32)
"""
EPILOGUE = """
for _ in range(warmup):
    call()
samples = []
for _ in range(runs):
    t0 = time.perf_counter_ns()
    call()
    samples.append(time.perf_counter_ns() - t0)
print(statistics.median(samples) / 1e6)
"""
BARE = {
    "onnxruntime": """
import onnxruntime as ort
options = ort.SessionOptions()
options.intra_op_num_threads = threads
options.inter_op_num_threads = 1
options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
sess = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
feed = {sess.get_inputs()[0].name: x}
call = lambda: sess.run(None, feed)
""",
    "executorch": """
import torch
from executorch.extension.pybindings import _C
_C._unsafe_reset_threadpool(threads)
method = _C._load_program(path).load_method("forward")
inputs = [torch.from_numpy(np.ascontiguousarray(x))]
call = lambda: method(inputs, False)
""",
    "ncnn": """
import ncnn
net = ncnn.Net()
opt = net.opt
opt.num_threads = threads
opt.use_vulkan_compute = False
for key in ("use_fp16_storage", "use_fp16_packed", "use_fp16_arithmetic"):
    setattr(opt, key, False)
net.opt = opt
net.load_param(path)
net.load_model(path[:-len(".param")] + ".bin")
row = np.ascontiguousarray(x[0])
mat = ncnn.Mat(row)
def call():
    ex = net.create_extractor()
    ex.input("in0", mat)
    return ex.extract("out0")
""",
}


def bare_loop(runtime: str, model_path: Path, data: Path, threads: int, warmup: int, runs: int) -> float:
    """p50 (ms) of a bare loop of the runtime's call in a fresh process, like the runner's."""
    import os
    import subprocess

    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    out = subprocess.run([sys.executable, "-c", PROLOGUE + BARE[runtime] + EPILOGUE, str(model_path), str(threads),
                          str(warmup), str(runs), str(data)], capture_output=True, text=True, check=True, env=env)
    return float(out.stdout.strip().splitlines()[-1])


def artifacts(runtimes: list[str], folder: Path) -> dict[str, Path]:
    """The demo CNN in each runtime's format, made by edgebench's own exporters."""
    import torch

    from edgebench.export.artifacts import ExportRequest
    from edgebench.export.onnx import export_onnx
    from edgebench.model.factories import create_model
    from edgebench.runtimes import FORMATS, resolve, runtime

    torch.manual_seed(0)
    model = create_model("demo_cnn", num_classes=10, in_channels=1).eval()
    x = np.random.default_rng(0).standard_normal((16, 1, 32, 32)).astype(np.float32)
    np.savez(folder / "eval.npz", x=x, y=np.zeros(len(x), dtype=np.int64))
    paths = {"onnx": export_onnx(model, x[:1], folder / "model.onnx")}
    request = ExportRequest(x, x, float_onnx=paths["onnx"])
    for name in runtimes:
        fmt = runtime(name).format
        if fmt not in paths:
            entry = resolve(FORMATS[fmt].exporter)(model, request, folder / f"model{FORMATS[fmt].suffix}", print, "demo")
            if entry.get("error"):
                raise SystemExit(f"{name}: {entry['error']}")
            paths[fmt] = folder / entry["file"]
    return {name: paths[runtime(name).format] for name in runtimes}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runtimes", default="onnxruntime,executorch,ncnn", help="comma-separated, from: " + ", ".join(BARE))
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=int, default=2000)
    args = p.parse_args()

    from edgebench.targets import RunOptions, load_profile, open_target

    runtimes = [r for r in args.runtimes.split(",") if r]
    unknown = [r for r in runtimes if r not in BARE]
    if unknown:
        p.error(f"no bare loop for {', '.join(unknown)} (have: {', '.join(BARE)})")
    tmp = Path(tempfile.mkdtemp(prefix="eb-overhead-"))
    files = artifacts(runtimes, tmp)
    target = open_target(load_profile("local"))
    options = RunOptions(threads=args.threads, warmup=50, min_runs=args.runs, min_seconds=0.0, max_seconds=60)

    summary = []
    for name in runtimes:
        started, ratios = time.perf_counter(), []
        for i in range(args.rounds):
            order = ("runner", "bare") if i % 2 == 0 else ("bare", "runner")
            p50 = {}
            for side in order:
                if side == "runner":
                    result = target.measure(files[name], tmp / "eval.npz", name, options)
                    if result.get("status") != "ok":
                        print(f"{name}: runner failed: {result.get('error')}", file=sys.stderr)
                        return 1
                    p50[side] = statistics.median(result["latency_samples_ms"])
                else:
                    p50[side] = bare_loop(name, files[name], tmp / "eval.npz", args.threads, 50, args.runs)
            ratios.append(p50["runner"] / p50["bare"])
            print(f"{name} round {i + 1:2d} ({order[0]} first): runner p50 {p50['runner'] * 1000:7.1f} us   "
                  f"bare p50 {p50['bare'] * 1000:7.1f} us   ratio {ratios[-1]:.3f}")
        q1, median, q3 = np.percentile(ratios, [25, 50, 75])
        summary.append(f"  {name:12} runner / bare p50: median {median:.3f} (IQR {q1:.3f}-{q3:.3f}, range "
                       f"{min(ratios):.3f}-{max(ratios):.3f}), {time.perf_counter() - started:.0f} s")
    print(f"\n{args.rounds} rounds per runtime (order alternating), {args.runs} runs each, {args.threads} thread(s); "
          "target: median <= 1.05")
    print("\n".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())

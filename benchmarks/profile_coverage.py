"""How much of a profiled run do the per-node times cover? onnxruntime and OpenVINO, fp32 and int8.

The runner's profile mode times each node (onnxruntime's profiler, OpenVINO's PERF_COUNT) over
N runs and also the runs' wall time; the share the nodes account for is the `coverage` that
`edgebench profile` prints in each table header (the rest is the session's own work between
nodes). It depends on the model's size and on how busy the machine is, so it is measured here,
not asserted in a test: on the demo-size CNN (3 convs, 16 channels, 32x32) this prints the
median coverage over several runner processes, optionally with a busy loop on every core.

    python benchmarks/profile_coverage.py [--processes 5] [--runs 30] [--load]

Target (quiet machine): median coverage at least 0.3 for each (runtime, model).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def busy(stop) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def coverage(runner: Path, model: Path, data: Path, runtime: str, runs: int) -> float:
    proc = subprocess.run([sys.executable, str(runner), "--model", str(model), "--data", str(data), "--runtime",
                           runtime, "--profile-runs", str(runs), "--warmup", "5"],
                          capture_output=True, text=True, timeout=300)
    doc = json.loads(proc.stdout)
    if doc.get("status") != "ok":
        raise SystemExit(f"{runtime} {model.name}: {doc.get('error')}")
    p = doc["profile"]
    return sum(n["ms"] for n in p["nodes"]) / p["profiled_run_ms"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=5)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--load", action="store_true", help="keep every core busy while profiling")
    args = parser.parse_args()

    from edgebench.export.onnx import quantize_onnx
    from edgebench.runtimes import DEVICE_DIR
    from edgebench.testing import onnx_cnn

    folder = Path(tempfile.mkdtemp(prefix="coverage-"))
    x = np.random.default_rng(0).standard_normal((16, 1, 32, 32)).astype(np.float32)
    np.savez(folder / "inputs.npz", x=x, y=np.zeros(16, np.int64))
    onnx_cnn(folder / "fp32.onnx", convs=3)
    quantize_onnx(folder / "fp32.onnx", folder / "int8.onnx", "int8_static", x)

    stop = multiprocessing.Event()
    load = [multiprocessing.Process(target=busy, args=(stop,), daemon=True)
            for _ in range(os.cpu_count() or 1)] if args.load else []
    for p in load:
        p.start()
    try:
        print(f"{'runtime':12} {'model':6} {'median':>7} {'min':>6} {'max':>6}  (coverage over {args.processes} "
              f"processes of {args.runs} profiled runs{', every core busy' if load else ''})")
        for runtime in ("onnxruntime", "openvino"):
            for model in ("fp32", "int8"):
                shares = [coverage(DEVICE_DIR / "runner.py", folder / f"{model}.onnx", folder / "inputs.npz",
                                   runtime, args.runs) for _ in range(args.processes)]
                print(f"{runtime:12} {model:6} {statistics.median(shares):7.2f} {min(shares):6.2f} {max(shares):6.2f}")
    finally:
        stop.set()
        for p in load:
            p.join(timeout=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())

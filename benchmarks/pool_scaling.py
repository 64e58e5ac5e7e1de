"""Does the pool scale? The measuring phase on 1 and 2 devices, the build phase with --jobs 1 and 2.

Devices: two loopback sshd servers (tests/sshd.py), one `edgebench worker` each, the runners
pinned to their own core (taskset 0 and 1), a real `dask scheduler`. The same built variants are
measured through the pool on board "pi-a" alone (1 device) and on class "loop" (pi-a and pi-b):
same jobs, same rounds; the measuring phase's wall time is printed for each. Builds: the same
variants (prune with fine-tuning, low-rank, quantize) with a local cluster of 1 and 2 build
processes (cluster start-up excluded). Repeats alternate the order; medians and ratios printed.

    python benchmarks/pool_scaling.py [--repeats 2]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

EXPERIMENT = """
name = "pool-scaling"
[model]
factory = "demo_cnn"
kwargs = { width = 0.5 }
[data]
source = "digits"
[train]
epochs = 3
lr = 0.05
threads = 1
[[variant]]
name = "int8"
steps = [{ method = "quantize", scheme = "int8_static" }]
[[variant]]
name = "fp16"
steps = [{ method = "quantize", scheme = "fp16" }]
[[variant]]
name = "slim"
steps = [{ method = "prune", kind = "structured", ratio = 0.5, finetune_epochs = 2 }]
[[variant]]
name = "sparse"
steps = [{ method = "prune", kind = "unstructured", ratio = 0.7, finetune_epochs = 2 }]
[[variant]]
name = "svd"
steps = [{ method = "lowrank", ratio = 0.5, finetune_epochs = 2 }]
[run]
runtimes = ["onnxruntime"]
threads = 1
warmup = 20
min_runs = 300
min_seconds = 2.0             # 1 s timed per round: the runner's start-up is not most of a job
rounds = 2
"""


def _proc(argv, log):
    return subprocess.Popen(argv, stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)  # noqa: SIM115


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    from distributed import Client
    from sshd import free_port, loopback_sshd

    from edgebench.config import load_experiment
    from edgebench.measure.records import RecordLog, write_manifest
    from edgebench.pipeline import load_run_data, make_all_variants, prepare_run_dir
    from edgebench.pool import Pool
    from edgebench.pool.measure import measure_with_pool

    quiet = lambda _m: None  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="pool-scaling-") as tmp, contextlib.ExitStack() as stack:
        tmp = Path(tmp)
        (tmp / "experiment.toml").write_text(EXPERIMENT)
        exp = load_experiment(tmp / "experiment.toml")
        data = load_run_data(exp, quiet)
        port = free_port()
        address = f"tcp://127.0.0.1:{port}"
        procs = [_proc([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port",
                        str(port), "--no-dashboard"], tmp / "scheduler.log")]
        for core, name in enumerate(("pi-a", "pi-b")):
            server = stack.enter_context(loopback_sshd(tmp / f"sshd-{name}"))
            profile = server.write_profile(tmp / f"{name}.toml", taskset=str(core % (os.cpu_count() or 1)))
            procs.append(_proc([sys.executable, "-m", "edgebench", "worker", "--scheduler", address, "--target",
                                str(profile), "--board-class", "loop"], tmp / f"worker-{name}.log"))
        try:
            with Client(address, timeout="30s") as c:
                c.wait_for_workers(2, timeout=120)
            # Builds: a fresh run folder each time; --jobs 1 and 2 alternate.
            build: dict[int, list[float]] = {1: [], 2: []}
            for rep in range(args.repeats):
                for jobs in ((1, 2) if rep % 2 == 0 else (2, 1)):
                    run_dir, run_id, _ = prepare_run_dir(exp, tmp / f"build-{jobs}-{rep}", None)
                    write_manifest(run_dir, run_id, exp.to_dict())
                    with Pool.open(None, jobs, quiet) as pool:
                        t0 = time.perf_counter()
                        variants = make_all_variants(exp, data, run_dir, {"onnx"}, quiet, pool)
                        build[jobs].append(time.perf_counter() - t0)
                    print(f"build --jobs {jobs}: {build[jobs][-1]:.1f} s", flush=True)
            # Measuring: the last build's variants, through the pool, on 1 board and on the class of 2.
            measure: dict[int, list[float]] = {1: [], 2: []}
            with Pool.open(address, 0, quiet) as pool:
                for rep in range(args.repeats):
                    for n in ((1, 2) if rep % 2 == 0 else (2, 1)):
                        target = "pi-a" if n == 1 else "loop"
                        folder = tmp / f"measure-{n}-{rep}"
                        folder.mkdir()
                        shutil.copy(run_dir / "eval.npz", folder / "eval.npz")
                        shutil.copy(run_dir / "manifest.json", folder / "manifest.json")
                        shutil.copytree(run_dir / "variants", folder / "variants")
                        moved = [dataclasses.replace(v, dir=folder / "variants" / v.name) for v in variants]
                        run = dataclasses.replace(exp.run, targets=(target,))
                        t0 = time.perf_counter()
                        measure_with_pool(pool, dataclasses.replace(exp, run=run), pool.resolve([target]), moved,
                                          folder, "bench", quiet)
                        measure[n].append(time.perf_counter() - t0)
                        records = RecordLog(folder).records
                        bad = [r for r in records if r["status"] != "ok"]
                        if bad or len(records) != len(moved):
                            raise SystemExit(f"{len(records)} records, {len(bad)} errors: {bad[:1]}")
                        print(f"measure on {n} device(s): {measure[n][-1]:.1f} s", flush=True)
        finally:
            for p in procs:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, 15)
    med = {k: statistics.median(v) for k, v in build.items()}
    mm = {k: statistics.median(v) for k, v in measure.items()}
    print(f"\nbuild phase (6 variants incl. baseline reuse): --jobs 1 {med[1]:.1f} s, --jobs 2 {med[2]:.1f} s, "
          f"speed-up {med[1] / med[2]:.2f}x (median of {args.repeats})")
    print(f"measuring phase ({len(variants)} variants x 2 rounds): 1 device {mm[1]:.1f} s, 2 devices {mm[2]:.1f} s, "
          f"speed-up {mm[1] / mm[2]:.2f}x (median of {args.repeats}; target >= 1.7x)")


if __name__ == "__main__":
    main()

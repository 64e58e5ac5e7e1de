"""Does the pool scale? Measuring on 1 and 2 devices, builds with --jobs 1 and 2, a search on 1 and 2 boards.

Devices: two loopback sshd servers (tests/sshd.py), one `edgebench worker --tls` each, the runners
pinned to their own core (taskset 0 and 1), a real `dask scheduler` speaking TLS with certificates
from `edgebench pool certs` (as README 'Scale out' says to run it). The same built variants are
measured through the pool on board "pi-a" alone (1 device) and on class "loop" (pi-a and pi-b):
same jobs, same rounds; the measuring phase's wall time is printed for each. Builds: the same
variants (prune with fine-tuning, low-rank, quantize) with a local cluster of 1 and 2 build
processes (cluster start-up excluded). Search: `edgebench search --cluster` over the same grid of
chains (every point measured, so both searches do the same trials) on "pi-a" and on "loop", the
whole search's wall time each (data, baseline, trials, the confirmation round, reports); the
confirmation runs on one board by design, so it does not scale. Repeats alternate the order;
medians and ratios printed, each ratio from the same run.

    python benchmarks/pool_scaling.py [--repeats 2] [--skip build,measure]
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
# The search's grid: 8 chains (4 quantization schemes, with or without a 50 % unstructured prune,
# no fine-tuning), cheap to build, so the search's time is mostly device time.
SEARCH_SPACE = {"prune": {"kinds": ["none", "unstructured"], "ratio": [0.5, 0.5], "ratio_step": 0.5,
                          "finetune_epochs": [0, 0], "lr_scale": [1.0, 1.0], "skip_sensitive": [False]},
                "lowrank": {"use": [False]}, "quantize": {"schemes": ["none", "fp16", "int8_static", "int8_dynamic"]}}
SEARCH_TRIALS = 8


def _proc(argv, log):
    return subprocess.Popen(argv, stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)  # noqa: SIM115


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--skip", default="", help="comma-separated phases to leave out: build, measure, search")
    args = ap.parse_args()
    skip = {p.strip() for p in args.skip.split(",") if p.strip()}
    from distributed import Client
    from sshd import free_port, loopback_sshd

    from edgebench.config import load_experiment
    from edgebench.measure.records import RecordLog, write_manifest
    from edgebench.pipeline import load_run_data, make_all_variants, prepare_run_dir
    from edgebench.pool import Pool, _warm_up
    from edgebench.pool.measure import measure_with_pool
    from edgebench.pool.security import security, write_certs

    quiet = lambda _m: None  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="pool-scaling-") as tmp, contextlib.ExitStack() as stack:
        tmp = Path(tmp)
        (tmp / "experiment.toml").write_text(EXPERIMENT)
        exp = load_experiment(tmp / "experiment.toml")
        data = load_run_data(exp, quiet)
        port = free_port()
        address = f"tls://127.0.0.1:{port}"
        certs = tmp / "certs"
        write_certs(certs)
        procs = [_proc([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "tls://127.0.0.1", "--port",
                        str(port), "--no-dashboard", "--tls-ca-file", str(certs / "ca.pem"), "--tls-cert",
                        str(certs / "scheduler.pem"), "--tls-key", str(certs / "scheduler.key")], tmp / "scheduler.log")]
        for core, name in enumerate(("pi-a", "pi-b")):
            server = stack.enter_context(loopback_sshd(tmp / f"sshd-{name}"))
            profile = server.write_profile(tmp / f"{name}.toml", taskset=str(core % (os.cpu_count() or 1)))
            procs.append(_proc([sys.executable, "-m", "edgebench", "worker", "--scheduler", address, "--tls", str(certs),
                                "--target", str(profile), "--board-class", "loop"], tmp / f"worker-{name}.log"))
        try:
            with Client(address, timeout="30s", security=security(certs, "client")) as c:
                c.wait_for_workers(2, timeout=120)
            # Builds: a fresh run folder each time; --jobs 1 and 2 alternate.
            build: dict[int, list[float]] = {1: [], 2: []}
            for rep in range(args.repeats if "build" not in skip else 0):
                for jobs in ((1, 2) if rep % 2 == 0 else (2, 1)):
                    run_dir, run_id, _ = prepare_run_dir(exp, tmp / f"build-{jobs}-{rep}", None)
                    write_manifest(run_dir, run_id, exp.to_dict())
                    with Pool.open(None, jobs, quiet) as pool:
                        pool.client.run(_warm_up)  # waits for the imports Pool.open started: start-up excluded
                        t0 = time.perf_counter()
                        variants = make_all_variants(exp, data, run_dir, {"onnx"}, quiet, pool)
                        build[jobs].append(time.perf_counter() - t0)
                    print(f"build --jobs {jobs}: {build[jobs][-1]:.1f} s", flush=True)
            # Measuring: the last build's variants, through the pool, on 1 board and on the class of 2.
            measure: dict[int, list[float]] = {1: [], 2: []}
            with Pool.open(address, 0, quiet, tls=str(certs)) as pool:
                for rep in range(args.repeats if "measure" not in skip and build[1] else 0):
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
            search = {1: [], 2: []} if "search" in skip else _search(exp, address, certs, tmp, args.repeats)
        finally:
            for p in procs:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, 15)
    print()
    if build[1]:
        med = {k: statistics.median(v) for k, v in build.items()}
        print(f"build phase (6 variants incl. baseline reuse): --jobs 1 {med[1]:.1f} s, --jobs 2 {med[2]:.1f} s, "
              f"speed-up {med[1] / med[2]:.2f}x (median of {args.repeats})")
    if measure[1]:
        mm = {k: statistics.median(v) for k, v in measure.items()}
        print(f"measuring phase ({len(variants)} variants x 2 rounds): 1 device {mm[1]:.1f} s, 2 devices {mm[2]:.1f} s, "
              f"speed-up {mm[1] / mm[2]:.2f}x (median of {args.repeats}; target >= 1.7x)")
    if search[1]:
        ms = {k: statistics.median(v) for k, v in search.items()}
        print(f"search ({SEARCH_TRIALS} grid trials, 2 rounds each, confirmation on one board): 1 board {ms[1]:.1f} s, "
              f"2 boards {ms[2]:.1f} s, speed-up {ms[1] / ms[2]:.2f}x (median of {args.repeats})")


def _search(exp, address: str, certs: Path, tmp: Path, repeats: int) -> dict[int, list[float]]:
    """The same grid search on board pi-a and on class loop (pi-a, pi-b), alternating; wall seconds."""
    from edgebench.measure.records import RecordLog
    from edgebench.search import Settings
    from edgebench.search.command import run_search

    quiet = lambda _m: None  # noqa: E731
    base = dataclasses.replace(exp, variants=())
    wall: dict[int, list[float]] = {1: [], 2: []}
    for rep in range(repeats):
        for n in ((1, 2) if rep % 2 == 0 else (2, 1)):
            target = "pi-a" if n == 1 else "loop"
            run = dataclasses.replace(base.run, targets=(target,), cluster=address, tls=str(certs))
            settings = Settings(target=target, runtime="onnxruntime", max_drop=50.0, trials=SEARCH_TRIALS,
                                sampler="grid", space=SEARCH_SPACE, seed=rep)
            t0 = time.perf_counter()
            out = run_search(dataclasses.replace(base, run=run), settings, tmp / f"search-{n}-{rep}", None, quiet)
            wall[n].append(time.perf_counter() - t0)
            records = RecordLog(Path(out["run_dir"])).records
            boards = sorted({rnd["board"] for r in records if r.get("trial") is not None for rnd in r["latency_rounds"]})
            print(f"search on {n} board(s): {wall[n][-1]:.1f} s, {out['device_trials']} trials measured on "
                  f"{', '.join(boards)}, confirmed on {out.get('confirmed_on')}", flush=True)
    return wall


if __name__ == "__main__":
    main()

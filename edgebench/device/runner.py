"""The runner: measures one artifact on one runtime and prints one JSON document.

It is the only edgebench code that runs on a target device, so it imports nothing but the
Python standard library, numpy and the one runtime it is asked for, through that runtime's
adapter `rt_<runtime>.py` (onnxruntime, tflite, openvino). Copy `runner.py`, `runner_facts.py`
and the adapter into one folder on a Raspberry Pi with no torch installed and run::

    python3 runner.py --model model.onnx --data inputs.npz --runtime onnxruntime --threads 1

`inputs.npz` holds the model's inputs — `x` for a model with one input, or one array per input
named in the order the model takes them by `input_names` (keys `x:<name>`) — and optionally `y`
(integer labels of a classifier). Float inputs are fed as float32, integer inputs (token ids)
keep their type. The runner
works in phases and reports each on its own: importing the runtime, loading the model
(session/interpreter creation only), the first inference, batch-1 steady state on the first
input (warm-up, then until both `--min-runs` and `--min-seconds` are reached, at most
`--max-seconds`), then one accuracy pass over every input. Memory is read per phase (RSS after
load; the peak of inference alone; the peak of the accuracy pass), with the run conditions
(clock, temperature, throttling, load) before and after timing. It prints (to stdout, or
`--output FILE`) one JSON document with the raw latency samples, CPU time and RAPL energy of
the timed loop, accuracy (a classifier with labels), every output of the model on every input
(`outputs`: name, shape and base64 float32 data each) and facts about the machine.
A failure prints `{"status": "error", "error": ...}` and exits 1; a runtime that is not
installed, or cannot run this model on this CPU, exits 3 with `"error": "unavailable: ..."`.
An adapter that can read back what its runtime compiled adds `executed` (the precision that ran);
one that can time each node adds `profile` (`--profile-runs N`: a per-node document instead).
`--compare-model B --paired`: the same full run, its steady state timed in alternating blocks with
B (the run's baseline) loaded beside it; B's samples come back as `compare_samples_ms`.
"""

from __future__ import annotations

import argparse
import base64
import importlib
import json
import os
import sys
import time

if __package__:
    from .runner_facts import (
        machine_facts,
        peak_rss_mb,
        read_conditions,
        reset_peak_rss,
        rss_mb,
        wait_until_cool,
    )
    from .timing import measure_latency, measure_pair
else:  # run as a script on a device: the helpers are staged beside this file
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # also when started by runpy
    from runner_facts import (
        machine_facts,
        peak_rss_mb,
        read_conditions,
        reset_peak_rss,
        rss_mb,
        wait_until_cool,
    )
    from timing import measure_latency, measure_pair

RUNNER_VERSION = 3  # 3: several named inputs and outputs
EXIT_ERROR = 1
EXIT_UNAVAILABLE = 3


class Unavailable(Exception):
    """The requested runtime is not installed here, or cannot run this model on this CPU."""


def _pin_threads(threads: int) -> None:
    # Runtimes read these at import time; set before importing them.
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)


def load_adapter(runtime: str):
    """The adapter module `rt_<runtime>` beside this file, with its runtime imported."""
    name = f"rt_{runtime}"
    try:
        adapter = importlib.import_module(f"{__package__}.{name}" if __package__ else name)
    except ModuleNotFoundError as exc:
        if exc.name in (name, f"{__package__}.{name}"):
            raise Unavailable(f"this runner has no adapter for runtime {runtime!r} ({name}.py not staged)") from exc
        raise
    return adapter


def import_runtime(adapter):
    try:
        return adapter.import_runtime()
    except ImportError as exc:
        # A broken install's ImportError may name no module: then the runtime's own name.
        name = exc.name or adapter.__name__.rpartition("rt_")[2]
        raise Unavailable(f"{name} is not installed ({adapter.INSTALL_HINT})") from exc


def open_model(adapter, path: str, threads: int, options: dict):
    try:
        return adapter.Model(path, threads, options)
    except Exception as exc:
        if type(exc).__name__ == "Unsupported":  # an adapter's: the device cannot run this model
            raise Unavailable(str(exc)) from exc
        raise


def _options(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--runtime-option {pair!r}: expected KEY=VALUE")
        out[key] = value
    return out


def predict_all(model, xs: list, batch_size: int = 64) -> list:
    """Every output of the model on every input: `xs` holds one array per model input (sharing
    the first axis); batches of `batch_size` where the model takes any batch, else one by one."""
    import numpy as np

    n = len(xs[0])
    step = batch_size if model.dynamic_batch else 1
    parts = [model.predict([x[i : i + step] for x in xs]) for i in range(0, n, step)]
    return [np.concatenate([p[k] for p in parts]).astype(np.float32) for k in range(len(parts[0]))]


def read_inputs(path: str, np, rows: int | None = None) -> list:
    """The model's inputs from the .npz, in the model's order: `x`, or `x:<name>` for each name
    of `input_names`. Floats become float32 (what every exported graph takes), integers (token
    ids) keep their type; `rows` keeps only the first rows, copied so the file can close."""
    with np.load(path) as data:
        keys = [f"x:{name}" for name in data["input_names"]] if "input_names" in data.files else ["x"]
        out = []
        for key in keys:
            a = data[key] if rows is None else data[key][:rows]
            out.append(np.ascontiguousarray(a, dtype=np.float32 if a.dtype.kind == "f" else a.dtype))
        return out


def encode_outputs(outputs: list, names: list | None = None) -> list:
    """The outputs as JSON: name, shape and base64 float32 data each."""
    names = names or [f"out{k}" for k in range(len(outputs))]
    return [{"name": str(name), "shape": list(a.shape), "dtype": "float32",
             "b64": base64.b64encode(a.astype("float32").tobytes()).decode("ascii")}
            for name, a in zip(names, outputs)]


def decode_outputs(result: dict) -> list:
    """The runner's `outputs` back as float32 arrays (the host's side of encode_outputs)."""
    import numpy as np

    return [np.frombuffer(base64.b64decode(o["b64"]), dtype=np.float32).reshape(o["shape"])
            for o in result.get("outputs") or []]


def _first_input(path: str, np) -> list:
    """The timing input: the first row of each input."""
    return read_inputs(path, np, rows=1)


def _numpy_and_runtime(args: argparse.Namespace):
    """Threads pinned, numpy and the runtime imported (Unavailable when either is missing):
    what the pair and profile modes do before opening a model."""
    _pin_threads(args.threads)
    try:
        import numpy as np
    except ImportError as exc:
        raise Unavailable("numpy is not installed (pip install numpy)") from exc
    adapter = load_adapter(args.runtime)
    import_runtime(adapter)
    return np, adapter


def run_pair(args: argparse.Namespace) -> dict:
    """`--compare-model`: the latency of two artifacts on one runtime, interleaved in this
    process (the regression gate's A/B). No accuracy pass, no memory phases."""
    np, adapter = _numpy_and_runtime(args)
    options = _options(args.runtime_option)
    model_a = open_model(adapter, args.model, args.threads, options)
    model_b = open_model(adapter, args.compare_model, args.threads, options)
    x_a = _first_input(args.data, np)
    x_b = _first_input(args.compare_data or args.data, np)
    samples_a, samples_b = measure_pair(model_a.timed_call(x_a), model_b.timed_call(x_b), args.warmup,
                                        args.min_runs, args.min_seconds, args.max_seconds)
    return {"status": "ok", "runner_version": RUNNER_VERSION, "runtime": args.runtime,
            "runtime_version": model_a.version, "threads": args.threads,
            "latency_samples_ms": samples_a, "compare_samples_ms": samples_b, "machine": machine_facts()}


def run(args: argparse.Namespace) -> dict:
    """Measure by phase: import, load (session creation only), first inference, steady state,
    then the accuracy pass; memory is read per phase, never across them."""
    _pin_threads(args.threads)
    try:
        import numpy as np
    except ImportError as exc:
        raise Unavailable("numpy is not installed (pip install numpy)") from exc

    adapter = load_adapter(args.runtime)
    options = _options(args.runtime_option)
    x0 = _first_input(args.data, np)
    started = time.perf_counter()
    import_runtime(adapter)
    import_s = time.perf_counter() - started
    rss_before_load = rss_mb()
    started = time.perf_counter()
    model = open_model(adapter, args.model, args.threads, options)
    load_s = time.perf_counter() - started
    rss_after_load = rss_mb()
    # From here the peak is inference's own: not the session's creation, not the accuracy pass.
    peak_reset = reset_peak_rss()
    call = model.timed_call(x0)
    t0 = time.perf_counter_ns()
    call()
    first_ms = (time.perf_counter_ns() - t0) / 1e6
    paired = bool(args.compare_model and args.paired)
    if paired:  # the model's own inference peak (its warm-up alone), then the baseline beside it
        for _ in range(args.warmup):
            call()
        peak_inference = peak_rss_mb()
        beside = open_model(adapter, args.compare_model, args.threads, options)
        beside_call = beside.timed_call(_first_input(args.compare_data or args.data, np))
    cooling = wait_until_cool(args.max_temp_c, args.cool_timeout_s) if args.max_temp_c else None
    before, unreadable = read_conditions()
    window: dict = {}
    if paired:
        usage: dict = {}
        samples, compare = measure_pair(call, beside_call, args.warmup, args.min_runs, args.min_seconds,
                                        args.max_seconds, window, usage)
        cpu, rapl = usage["cpu_s"][0], (usage["rapl_uj"] or [None])[0]
        del beside, beside_call  # not in the accuracy pass
    else:
        samples, cpu, rapl = measure_latency(call, args.warmup, args.min_runs, args.min_seconds, args.max_seconds,
                                             window)
        peak_inference = peak_rss_mb()
    after, _ = read_conditions()
    result: dict = {
        "status": "ok",
        "runner_version": RUNNER_VERSION,
        "runtime": args.runtime,
        "runtime_version": model.version,
        "threads": args.threads,
        "latency_samples_ms": samples,
        "measured_at": window,  # the timed window on the device's clock
        "cpu_time_s": cpu,
        "import_s": import_s,
        "load_s": load_s,
        "first_inference_ms": first_ms,
        "rss_before_load_mb": rss_before_load,
        "rss_after_load_mb": rss_after_load,
        "peak_rss_inference_mb": peak_inference,
        # Energy of the timed loop alone (warm-up excluded), where the machine has RAPL.
        "rapl_uj": rapl,
        "conditions": {"before": before, "after": after, "unreadable": unreadable,
                       **({"cooling": cooling} if cooling else {})},
    }
    if hasattr(model, "executed") and not args.no_eval:  # what really runs here (first round only)
        try:
            result["executed"] = model.executed(x0)
        except Exception as exc:  # noqa: BLE001 - a read-back that fails is a note, not a failed run
            result["executed"] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    if getattr(model, "settings", None):  # what the runtime says it was set to (threads, hints)
        result["runtime_settings"] = model.settings
    if paired:
        result.update(compare_samples_ms=compare, compare_cpu_time_s=usage["cpu_s"][1])
    if not peak_reset:
        result["memory_note"] = "VmHWM could not be reset: inference peak includes loading"
    if not args.no_eval:
        reset_peak_rss()
        xs = read_inputs(args.data, np, rows=args.limit or None)
        with np.load(args.data) as data:
            y = data["y"] if "y" in data.files else None
        outputs = predict_all(model, xs)
        n = len(xs[0])
        result.update(n_eval=int(n), eval_batch=64 if model.dynamic_batch else 1, peak_rss_eval_mb=peak_rss_mb(),
                      outputs=encode_outputs(outputs, getattr(model, "output_names", None)))
        if y is not None and outputs[0].ndim == 2:  # a classifier's labels: top-1 of its first output
            result["accuracy"] = float((outputs[0].argmax(axis=1) == y[:n]).mean())
    result["peak_rss_mb"] = peak_inference  # the footprint a device needs to run the model
    result["machine"] = machine_facts()
    return result


def profile_unavailable(adapter, runtime: str) -> str | None:
    """Why this adapter cannot time each node (its NO_PROFILE), or None when it can."""
    if hasattr(adapter.Model, "profile"):
        return None
    return getattr(adapter, "NO_PROFILE", f"{runtime} has no per-node profiler in this runner")


def run_profile(args: argparse.Namespace) -> dict:
    """`--profile-runs N`: per-node time on the first input (the adapter's `profile`: warm-up
    runs dropped, N measured). No accuracy pass, no timing loop: profiling inflates the total,
    so the host scales the nodes' shares to a clean p50."""
    np, adapter = _numpy_and_runtime(args)
    why = profile_unavailable(adapter, args.runtime)
    if why:
        raise Unavailable(why)
    model = open_model(adapter, args.model, args.threads, _options(args.runtime_option))
    profile = model.profile(_first_input(args.data, np), runs=args.profile_runs, warmup=args.warmup)
    return {"status": "ok", "runner_version": RUNNER_VERSION, "runtime": args.runtime,
            "runtime_version": model.version, "threads": args.threads, "profile": profile,
            "machine": machine_facts()}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Measure one model on one runtime; print JSON.")
    p.add_argument("--model", required=True, help="the artifact (.onnx, .tflite, ...)")
    p.add_argument("--data", required=True, help=".npz with x (inputs) and optional y (labels)")
    p.add_argument("--runtime", required=True, help="onnxruntime, tflite, openvino: the adapter rt_<runtime>.py beside this file")
    p.add_argument("--runtime-option", action="append", default=[], metavar="KEY=VALUE",
                   help="a setting for the runtime's adapter (e.g. inference_precision=f32); repeatable")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--min-runs", type=int, default=200)
    p.add_argument("--min-seconds", type=float, default=1.0)
    # Defaults: edgebench.config.measure_settings.Measure (tests/device/test_runner.py checks that they agree).
    p.add_argument("--max-seconds", type=float, default=30.0)
    p.add_argument("--limit", type=int, default=0, help="evaluate only the first N inputs")
    p.add_argument("--no-eval", action="store_true", help="latency only: skip predicting every input")
    p.add_argument("--max-temp-c", type=float, default=0.0,
                   help="before timing, wait until the hottest thermal zone is at most this (0: don't)")
    p.add_argument("--cool-timeout-s", type=float, default=120.0, help="wait at most this long to cool down")
    p.add_argument("--compare-model", help="A/B: also time this artifact, interleaved with --model "
                   "in blocks (latency only); its samples are compare_samples_ms")
    p.add_argument("--compare-data", help="inputs of --compare-model (default: --data)")
    p.add_argument("--paired", action="store_true", help="with --compare-model: the full run of --model "
                   "(phases, memory, accuracy), its steady state interleaved with --compare-model's")
    p.add_argument("--profile-runs", type=int, default=0, metavar="N",
                   help="per-node time instead: N profiled runs after --warmup (0: off)")
    p.add_argument("--output", help="write the JSON here instead of stdout")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    code = 0
    try:
        if args.profile_runs < 0:
            raise ValueError("--profile-runs must be >= 0")
        result = (run_profile(args) if args.profile_runs else run_pair(args) if args.compare_model and not args.paired
                  else run(args))
    except Unavailable as exc:
        result, code = {"status": "error", "error": f"unavailable: {exc}"}, EXIT_UNAVAILABLE
    except Exception as exc:  # noqa: BLE001 - every failure must come back as JSON
        result, code = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}, EXIT_ERROR
    result.setdefault("machine", machine_facts())
    text = json.dumps(result)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())

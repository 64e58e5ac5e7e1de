"""The runner: measures one artifact on one runtime and prints one JSON document.

It is the only edgebench code that runs on a target device, so it imports nothing but the
Python standard library, numpy and the one runtime it is asked for (onnxruntime or
ai-edge-litert). Copy this single file to a Raspberry Pi with no torch installed and run::

    python3 runner.py --model model.onnx --data inputs.npz --runtime onnxruntime --threads 1

`inputs.npz` holds `x` (float32 inputs, NCHW) and optionally `y` (integer labels). The runner
works in phases and reports each on its own: importing the runtime, loading the model
(session/interpreter creation only), the first inference, batch-1 steady state on the first
input (warm-up, then until both `--min-runs` and `--min-seconds` are reached, at most
`--max-seconds`), then one accuracy pass over every input. Memory is read per phase (RSS after
load; the peak of inference alone; the peak of the accuracy pass), with the run conditions
(clock, temperature, throttling, load) before and after timing. It prints (to stdout, or
`--output FILE`) one JSON document with the raw latency samples, CPU time and RAPL energy of
the timed loop, accuracy, the logits (base64 float32) and facts about the machine.
A failure prints `{"status": "error", "error": ...}` and exits 1; a runtime that is not
installed exits 3 with `"error": "unavailable: ..."`.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import sys
import time

RUNNER_VERSION = 1
EXIT_ERROR = 1
EXIT_UNAVAILABLE = 3
INSTALL_HINT = {
    "onnxruntime": "pip install onnxruntime",
    "tflite": "pip install ai-edge-litert (or: pip install edgebench[tflite])",
}


class Unavailable(Exception):
    """The requested runtime is not installed here."""


def _pin_threads(threads: int) -> None:
    # Runtimes read these at import time; set before importing them.
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)


class OnnxModel:
    """An onnxruntime session with the input prepared once, so the timed call is bare."""

    @staticmethod
    def import_runtime():
        try:
            import onnxruntime
        except ImportError as exc:
            raise Unavailable(f"onnxruntime is not installed ({INSTALL_HINT['onnxruntime']})") from exc
        return onnxruntime

    def __init__(self, path: str, threads: int):
        ort = self.import_runtime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.version = ort.__version__
        batch = self.session.get_inputs()[0].shape[0]
        self.dynamic_batch = not isinstance(batch, int)

    def timed_call(self, x):
        """Return a zero-argument callable that runs one inference on `x`."""
        run, feed = self.session.run, {self.input_name: x}
        return lambda: run(None, feed)

    def predict(self, x):
        return self.session.run(None, {self.input_name: x})[0]


class TfliteModel:
    """An ai-edge-litert interpreter; int8 inputs/outputs are (de)quantized with their params."""

    @staticmethod
    def import_runtime():
        try:
            from ai_edge_litert import interpreter
        except ImportError as exc:
            raise Unavailable(f"ai-edge-litert is not installed ({INSTALL_HINT['tflite']})") from exc
        return interpreter

    def __init__(self, path: str, threads: int):
        litert = self.import_runtime()
        self.interpreter = litert.Interpreter(model_path=path, num_threads=threads)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        try:
            from importlib.metadata import version

            self.version = version("ai-edge-litert")
        except Exception:  # noqa: BLE001 - a version is a fact, not a requirement
            self.version = "unknown"
        self.dynamic_batch = False

    def _quantize(self, x):
        import numpy as np

        dtype = self.input["dtype"]
        if dtype == np.float32:
            return x.astype(np.float32)
        scale, zero = self.input["quantization"]
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)

    def _dequantize(self, y):
        import numpy as np

        if self.output["dtype"] == np.float32:
            return y
        scale, zero = self.output["quantization"]
        return (y.astype(np.float32) - zero) * scale

    def timed_call(self, x):
        interp, index = self.interpreter, self.input["index"]
        xq = self._quantize(x)
        set_tensor, invoke = interp.set_tensor, interp.invoke

        def call():
            set_tensor(index, xq)
            invoke()

        return call

    def predict(self, x):
        self.interpreter.set_tensor(self.input["index"], self._quantize(x))
        self.interpreter.invoke()
        return self._dequantize(self.interpreter.get_tensor(self.output["index"]))


RUNTIMES = {"onnxruntime": OnnxModel, "tflite": TfliteModel}


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key = line.split(":")[0].strip().lower()
                if key in ("model name", "hardware", "cpu model"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ---- memory by phase ----------------------------------------------------------------------

def _status_mb(field: str) -> float | None:
    """A `VmRSS`/`VmHWM` line of /proc/self/status, in MB; None where there is no procfs."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return None


def rss_mb() -> float | None:
    """This process's resident memory now (VmRSS), in MB."""
    return _status_mb("VmRSS")


def peak_rss_mb() -> float | None:
    """This process's peak resident memory (VmHWM) since start or since `reset_peak_rss`, in MB."""
    peak = _status_mb("VmHWM")
    if peak is not None:
        return peak
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    except Exception:  # noqa: BLE001
        return None


def reset_peak_rss() -> bool:
    """Start a new VmHWM window at the current RSS, so a phase's peak is its own.

    Writing 5 to /proc/self/clear_refs resets the high-water mark (Linux >= 4.0; allowed for
    one's own process, no privileges). Measured here: VmHWM 416 MB after a freed 400 MB array,
    26 MB after the reset. False where it is not possible; then peaks include earlier phases.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# ---- run conditions -----------------------------------------------------------------------

def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _cpu_mhz() -> tuple[dict, str | None]:
    """Current (mean over CPUs) and maximum clock in MHz, from cpufreq, else /proc/cpuinfo."""
    import glob

    current = [_read(p) for p in glob.glob("/sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_cur_freq")]
    maximum = [_read(p) for p in glob.glob("/sys/devices/system/cpu/cpu[0-9]*/cpufreq/cpuinfo_max_freq")]
    cur = [int(v) / 1000 for v in current if v and v.isdigit()]
    top = [int(v) / 1000 for v in maximum if v and v.isdigit()]
    if cur:
        return {"cur": round(sum(cur) / len(cur), 1), "max": max(top) if top else None}, None
    text = _read("/proc/cpuinfo") or ""
    mhz = [float(line.split(":", 1)[1]) for line in text.splitlines()
           if line.lower().startswith("cpu mhz") and ":" in line]
    if mhz:  # x86 VMs: no cpufreq driver, but the kernel's estimate of the clock
        return {"cur": round(sum(mhz) / len(mhz), 1), "max": None}, "no cpufreq: /proc/cpuinfo clock, no maximum"
    return {"cur": None, "max": None}, "no cpufreq in /sys and no clock in /proc/cpuinfo"


THERMAL_GLOB = "/sys/class/thermal/thermal_zone[0-9]*/temp"


def _temp_c() -> tuple[float | None, str | None]:
    """The hottest thermal zone, in °C."""
    import glob

    temps = []
    for path in glob.glob(THERMAL_GLOB):
        value = _read(path)
        if value and value.lstrip("-").isdigit():
            temps.append(int(value) / 1000)
    if temps:
        return max(temps), None
    return None, "no readable /sys/class/thermal zone (VMs and containers often have none)"


def _throttled() -> tuple[str | None, str | None]:
    """A Raspberry Pi's firmware throttling flags (`vcgencmd get_throttled`), e.g. '0x0'."""
    import shutil
    import subprocess

    if not shutil.which("vcgencmd"):
        return None, "no vcgencmd (not a Raspberry Pi OS)"
    try:
        out = subprocess.run(["vcgencmd", "get_throttled"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"vcgencmd failed: {exc}"
    value = out.strip().partition("=")[2]
    return (value, None) if value else (None, f"vcgencmd said {out.strip()!r}")


def read_conditions() -> tuple[dict, dict]:
    """(readings, why-not for each reading that is None): clock, temperature, throttling, load."""
    mhz, mhz_why = _cpu_mhz()
    temp, temp_why = _temp_c()
    throttled, throttled_why = _throttled()
    try:
        load = round(os.getloadavg()[0], 2)
        load_why = None
    except OSError:
        load, load_why = None, "os.getloadavg() unavailable"
    readings = {"cpu_mhz": mhz, "temp_c": temp, "throttled": throttled, "load_avg_1m": load}
    why = {k: v for k, v in (("cpu_mhz", mhz_why), ("temp_c", temp_why), ("throttled", throttled_why),
                             ("load_avg_1m", load_why)) if v}
    return readings, why


def wait_until_cool(max_temp_c: float, timeout_s: float, poll_s: float = 1.0) -> dict:
    """Wait (bounded) until the hottest zone is at or below `max_temp_c`; say what happened."""
    started = time.monotonic()
    temp, why = _temp_c()
    if temp is None:
        return {"max_temp_c": max_temp_c, "waited_s": 0.0, "cooled": None, "why": f"cannot wait: {why}"}
    while temp is not None and temp > max_temp_c and time.monotonic() - started < timeout_s:
        time.sleep(poll_s)
        temp, _ = _temp_c()
    return {"max_temp_c": max_temp_c, "waited_s": round(time.monotonic() - started, 2),
            "cooled": temp is not None and temp <= max_temp_c, "temp_c": temp}


# ---- energy -------------------------------------------------------------------------------

RAPL_GLOB = "/sys/class/powercap/intel-rapl:*/energy_uj"


def _rapl_packages() -> list[str]:
    import glob

    # Only packages (intel-rapl:0, intel-rapl:1): their sub-domains (intel-rapl:0:0 core,
    # uncore, dram) are already inside the package count and would be counted twice.
    return sorted(p for p in glob.glob(RAPL_GLOB) if os.path.basename(os.path.dirname(p)).count(":") == 1)


def read_rapl_uj() -> int | None:
    """Sum of the package energy counters (Intel/AMD RAPL) in µJ; None where absent or unreadable
    (these VMs have none; since CVE-2020-8694 they are often root-only)."""
    paths = _rapl_packages()
    if not paths:
        return None
    total = 0
    for path in paths:
        value = _read(path)
        if value is None or not value.isdigit():
            return None
        total += int(value)
    return total


def rapl_delta_uj(before: int | None, after: int | None) -> int | None:
    """Energy between two readings in µJ, undoing one wrap of the counters; None if unknown."""
    if before is None or after is None:
        return None
    delta = after - before
    if delta < 0:
        ranges = [_read(os.path.join(os.path.dirname(p), "max_energy_range_uj")) for p in _rapl_packages()]
        if not ranges or not all(r and r.isdigit() for r in ranges):
            return None
        delta += sum(int(r) for r in ranges if r)
    return delta


# ---- measuring ----------------------------------------------------------------------------

def measure_latency(call, warmup: int, min_runs: int, min_seconds: float, max_seconds: float):
    """Time `call()` after `warmup` calls until both minimums are met.

    Returns (ms samples, CPU seconds, RAPL µJ or None) of the timed loop alone: warm-up is
    neither timed nor counted in CPU time or energy.
    """
    for _ in range(warmup):
        call()
    clock = time.perf_counter_ns
    samples: list[int] = []
    append = samples.append
    rapl_before = read_rapl_uj()
    cpu0 = time.process_time()
    start = clock()
    min_ns, max_ns = int(min_seconds * 1e9), int(max_seconds * 1e9)
    while True:
        t0 = clock()
        call()
        t1 = clock()
        append(t1 - t0)
        elapsed = t1 - start
        if (len(samples) >= min_runs and elapsed >= min_ns) or elapsed >= max_ns:
            break
    cpu = time.process_time() - cpu0
    rapl = rapl_delta_uj(rapl_before, read_rapl_uj())
    return [s / 1e6 for s in samples], cpu, rapl


def predict_all(model, x, batch_size: int = 64):
    import numpy as np

    if model.dynamic_batch:
        parts = [model.predict(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    else:
        parts = [model.predict(x[i : i + 1]) for i in range(len(x))]
    return np.concatenate(parts).astype(np.float32).reshape(len(x), -1)


def _first_input(path: str, np):
    """The timing input: the first row of `x`, copied so the full array can be freed at once."""
    with np.load(path) as data:
        return np.ascontiguousarray(data["x"][:1], dtype=np.float32)


# A/B blocks last about this long: much shorter than the phases in which neighbours load the
# machine (hundreds of ms), so a phase hits both models alike; long enough that the timer and
# the switch between sessions cost nothing measurable.
AB_BLOCK_SECONDS = 0.005


def measure_pair(call_a, call_b, warmup: int, min_runs: int, min_seconds: float, max_seconds: float):
    """Time two models in one process, alternating blocks of calls A B B A A B ...

    Returns the ms samples of A and of B. Measured on a 20-µs model against itself while the
    other core trained a network: the round-to-round sd of log(B/A) of the per-round minimum
    was 31 % with one process per model, 2.0 % with this (blocks of ~5 ms): a slow spell of the
    machine that covers one process covers a stretch of blocks of both here.
    """
    import statistics

    for call in (call_a, call_b):
        for _ in range(warmup):
            call()
    probe = []
    for _ in range(5):
        t0 = time.perf_counter_ns()
        call_a()
        probe.append(time.perf_counter_ns() - t0)
    block = max(1, min(100, int(AB_BLOCK_SECONDS * 1e9 / max(statistics.median(probe), 1))))
    clock = time.perf_counter_ns
    samples: tuple[list[int], list[int]] = ([], [])
    calls = (call_a, call_b)
    start = clock()
    min_ns, max_ns = int(min_seconds * 1e9), int(max_seconds * 1e9)
    k = 0
    while True:
        for side in ((0, 1) if k % 2 == 0 else (1, 0)):
            call, append = calls[side], samples[side].append
            for _ in range(block):
                t0 = clock()
                call()
                append(clock() - t0)
        k += 1
        elapsed = clock() - start
        if (min(map(len, samples)) >= min_runs and elapsed >= min_ns and k % 2 == 0) or elapsed >= max_ns:
            break
    return [s / 1e6 for s in samples[0]], [s / 1e6 for s in samples[1]]


def run_pair(args: argparse.Namespace) -> dict:
    """`--compare-model`: the latency of two artifacts on one runtime, interleaved in this
    process (the regression gate's A/B). No accuracy pass, no memory phases."""
    _pin_threads(args.threads)
    try:
        import numpy as np
    except ImportError as exc:
        raise Unavailable("numpy is not installed (pip install numpy)") from exc
    adapter = RUNTIMES[args.runtime]
    model_a = adapter(args.model, args.threads)
    model_b = adapter(args.compare_model, args.threads)
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

    adapter = RUNTIMES[args.runtime]
    x0 = _first_input(args.data, np)
    started = time.perf_counter()
    adapter.import_runtime()
    import_s = time.perf_counter() - started
    rss_before_load = rss_mb()
    started = time.perf_counter()
    model = adapter(args.model, args.threads)
    load_s = time.perf_counter() - started
    rss_after_load = rss_mb()
    # From here the peak is inference's own: not the session's creation, not the accuracy pass.
    peak_reset = reset_peak_rss()
    call = model.timed_call(x0)
    t0 = time.perf_counter_ns()
    call()
    first_ms = (time.perf_counter_ns() - t0) / 1e6
    cooling = wait_until_cool(args.max_temp_c, args.cool_timeout_s) if args.max_temp_c else None
    before, unreadable = read_conditions()
    samples, cpu, rapl = measure_latency(call, args.warmup, args.min_runs, args.min_seconds, args.max_seconds)
    peak_inference = peak_rss_mb()
    after, _ = read_conditions()
    result: dict = {
        "status": "ok",
        "runner_version": RUNNER_VERSION,
        "runtime": args.runtime,
        "runtime_version": model.version,
        "threads": args.threads,
        "latency_samples_ms": samples,
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
    if not peak_reset:
        result["memory_note"] = "VmHWM could not be reset: inference peak includes loading"
    if not args.no_eval:
        reset_peak_rss()
        with np.load(args.data) as data:
            x = np.ascontiguousarray(data["x"], dtype=np.float32)
            y = data["y"] if "y" in data.files else None
        if args.limit:
            x = x[: args.limit]
        logits = predict_all(model, x)
        result.update(n_eval=int(len(x)), eval_batch=64 if model.dynamic_batch else 1,
                      peak_rss_eval_mb=peak_rss_mb(), logits_shape=list(logits.shape),
                      logits_b64=base64.b64encode(logits.tobytes()).decode("ascii"))
        if y is not None:
            result["accuracy"] = float((logits.argmax(axis=1) == y[: len(x)]).mean())
    result["peak_rss_mb"] = peak_inference  # the footprint a device needs to run the model
    result["machine"] = machine_facts()
    return result


def machine_facts() -> dict:
    return {
        "arch": platform.machine(),
        "system": platform.system(),
        "cpu": _cpu_name(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Measure one model on one runtime; print JSON.")
    p.add_argument("--model", required=True, help=".onnx or .tflite file")
    p.add_argument("--data", required=True, help=".npz with x (inputs) and optional y (labels)")
    p.add_argument("--runtime", required=True, choices=sorted(RUNTIMES))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--min-runs", type=int, default=200)
    p.add_argument("--min-seconds", type=float, default=1.0)
    p.add_argument("--max-seconds", type=float, default=60.0)
    p.add_argument("--limit", type=int, default=0, help="evaluate only the first N inputs")
    p.add_argument("--no-eval", action="store_true", help="latency only: skip predicting every input")
    p.add_argument("--max-temp-c", type=float, default=0.0,
                   help="before timing, wait until the hottest thermal zone is at most this (0: don't)")
    p.add_argument("--cool-timeout-s", type=float, default=120.0, help="wait at most this long to cool down")
    p.add_argument("--compare-model", help="A/B: also time this artifact, interleaved with --model "
                   "in blocks (latency only); its samples are compare_samples_ms")
    p.add_argument("--compare-data", help="inputs of --compare-model (default: --data)")
    p.add_argument("--output", help="write the JSON here instead of stdout")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    code = 0
    try:
        result = run_pair(args) if args.compare_model else run(args)
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

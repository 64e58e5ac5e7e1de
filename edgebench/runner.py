"""The runner: measures one artifact on one runtime and prints one JSON document.

It is the only edgebench code that runs on a target device, so it imports nothing but the
Python standard library, numpy and the one runtime it is asked for (onnxruntime or
ai-edge-litert). Copy this single file to a Raspberry Pi with no torch installed and run::

    python3 runner.py --model model.onnx --data inputs.npz --runtime onnxruntime --threads 1

`inputs.npz` holds `x` (float32 inputs, NCHW) and optionally `y` (integer labels). The runner
measures batch-1 latency on the first input (warm-up, then until both `--min-runs` and
`--min-seconds` are reached, at most `--max-seconds`), then predicts every input once for
accuracy, and prints (to stdout, or `--output FILE`) a JSON document with the raw latency
samples, CPU time, accuracy, the logits (base64 float32) and facts about the machine.
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

    def __init__(self, path: str, threads: int):
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise Unavailable(f"onnxruntime is not installed ({INSTALL_HINT['onnxruntime']})") from exc
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

    def __init__(self, path: str, threads: int):
        try:
            from ai_edge_litert import interpreter as litert
        except ImportError as exc:
            raise Unavailable(f"ai-edge-litert is not installed ({INSTALL_HINT['tflite']})") from exc
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


def peak_rss_mb() -> float | None:
    """This process's peak resident memory (VmHWM), in MB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    except Exception:  # noqa: BLE001
        return None


def read_rapl_uj() -> int | None:
    """Package energy counters (Intel/AMD RAPL) summed, in µJ; None where absent or unreadable."""
    import glob

    total, found = 0, False
    for path in glob.glob("/sys/class/powercap/intel-rapl:[0-9]*/energy_uj"):
        try:
            with open(path) as f:
                total += int(f.read().strip())
            found = True
        except (OSError, ValueError):
            return None
    return total if found else None


def measure_latency(call, warmup: int, min_runs: int, min_seconds: float, max_seconds: float):
    """Time `call()` after `warmup` calls until both minimums are met; return ms samples, CPU s."""
    for _ in range(warmup):
        call()
    clock = time.perf_counter_ns
    samples: list[int] = []
    append = samples.append
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
    return [s / 1e6 for s in samples], cpu


def predict_all(model, x, batch_size: int = 64):
    import numpy as np

    if model.dynamic_batch:
        parts = [model.predict(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    else:
        parts = [model.predict(x[i : i + 1]) for i in range(len(x))]
    return np.concatenate(parts).astype(np.float32).reshape(len(x), -1)


def run(args: argparse.Namespace) -> dict:
    _pin_threads(args.threads)
    try:
        import numpy as np
    except ImportError as exc:
        raise Unavailable("numpy is not installed (pip install numpy)") from exc

    started = time.perf_counter()
    data = np.load(args.data)
    x = data["x"].astype(np.float32)
    if args.limit:
        x = x[: args.limit]
    model = RUNTIMES[args.runtime](args.model, args.threads)
    load_s = time.perf_counter() - started
    rapl_before = read_rapl_uj()
    samples, cpu = measure_latency(
        model.timed_call(x[:1]), args.warmup, args.min_runs, args.min_seconds, args.max_seconds
    )
    rapl_after = read_rapl_uj()
    result: dict = {
        "status": "ok",
        "runner_version": RUNNER_VERSION,
        "runtime": args.runtime,
        "runtime_version": model.version,
        "threads": args.threads,
        "latency_samples_ms": samples,
        "cpu_time_s": cpu,
        "load_s": load_s,
        # Energy of warm-up + timed loop as measured by RAPL, where the machine has it.
        "rapl_uj": rapl_after - rapl_before if rapl_before is not None and rapl_after is not None and rapl_after >= rapl_before else None,
    }
    if not args.no_eval:
        logits = predict_all(model, x)
        result.update(n_eval=int(len(x)), logits_shape=list(logits.shape),
                      logits_b64=base64.b64encode(logits.tobytes()).decode("ascii"))  # fmt: skip
        if "y" in data.files:
            y = data["y"][: len(x)]
            result["accuracy"] = float((logits.argmax(axis=1) == y).mean())
    result["peak_rss_mb"] = peak_rss_mb()
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
    p.add_argument("--output", help="write the JSON here instead of stdout")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    code = 0
    try:
        result = run(args)
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

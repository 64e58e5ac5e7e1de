"""Runner adapter for onnxruntime (CPU execution provider). Staged beside runner.py on a device:
imports only the standard library, numpy and onnxruntime."""

from __future__ import annotations

INSTALL_HINT = "pip install onnxruntime"


def import_runtime():
    import onnxruntime

    return onnxruntime


class Model:
    """An onnxruntime session with the input prepared once, so the timed call is bare."""

    def __init__(self, path: str, threads: int, options: dict | None = None):
        ort = import_runtime()
        self.path, self.threads = path, threads
        so = self._options(ort, threads)
        self.session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.version = ort.__version__
        self.dynamic_batch = all(not isinstance(i.shape[0], int) for i in self.session.get_inputs())

    @staticmethod
    def _options(ort, threads: int):
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        return so

    def feed(self, xs: list) -> dict:
        """The model's inputs by name, from one array per input in the model's order."""
        return dict(zip(self.input_names, xs))

    def timed_call(self, xs: list):
        """Return a zero-argument callable that runs one inference on `xs` (one array per input)."""
        run, feed = self.session.run, self.feed(xs)
        return lambda: run(None, feed)

    def predict(self, xs: list) -> list:
        """Every output, in the graph's order."""
        return self.session.run(None, self.feed(xs))

    def _profiled(self, x, calls: int) -> tuple[list[float], list[dict]]:
        """Run `calls` inferences in a second session made like the measured one plus profiling
        (a temp dir holds the file): each call's wall ms and the profile's events."""
        import glob
        import json
        import os
        import tempfile
        import time

        ort = import_runtime()
        with tempfile.TemporaryDirectory(prefix="edgebench-ort-") as tmp:
            so = self._options(ort, self.threads)
            so.enable_profiling = True
            so.profile_file_prefix = os.path.join(tmp, "profile")
            session = ort.InferenceSession(self.path, so, providers=["CPUExecutionProvider"])
            run, feed, clock, wall = session.run, self.feed(x), time.perf_counter_ns, []
            for _ in range(calls):
                t0 = clock()
                run(None, feed)
                wall.append((clock() - t0) / 1e6)
            session.end_profiling()
            events = []
            for path in glob.glob(os.path.join(tmp, "*.json")):
                with open(path) as f:
                    events += json.load(f)
        return wall, events

    def executed(self, x) -> dict:
        """The kernels this device runs: one profiled inference in a second session made the
        same way (profiling is off in the measured one), each kernel's op and input types.
        The host turns them into precision fields (edgebench.export.precision_onnx.read_ort_kernels):
        onnxruntime picks kernels per CPU (fp16 stays fp16 on ARMv8.2, not on x86)."""
        import platform

        _, events = self._profiled(x, 1)
        kernels = [[e["args"].get("op_name"), [next(iter(t)) for t in e["args"].get("input_type_shape", [])]]
                   for e in events if _is_kernel(e)]
        return {"kernels": kernels,
                "source": f"onnxruntime {self.version} CPU kernels run on {platform.machine()} (profiled)"}

    def profile(self, x, runs: int, warmup: int) -> dict:
        """Per-node time: warmup+runs inferences in a profiled session; the "Node" events
        (`<node>_kernel_time`, dur in µs) are split into runs by the "model_run" windows and the
        first `warmup` runs dropped. Profiling inflates the total (1.5-3x, onnxruntime #20238,
        #11997): `profiled_run_ms` says by how much against the clean p50."""
        import bisect

        if __package__:
            from .runner_facts import node_profile
        else:
            from runner_facts import node_profile

        wall, events = self._profiled(x, warmup + runs)
        windows = sorted((e["ts"], e["ts"] + e.get("dur", 0)) for e in events
                         if e.get("cat") == "Session" and e.get("name") == "model_run")
        starts, per_run = [w[0] for w in windows], [[] for _ in windows]
        for e in sorted((e for e in events if _is_kernel(e)), key=lambda e: e["ts"]):
            i = bisect.bisect_right(starts, e["ts"]) - 1  # the run whose window holds this event
            if i >= 0 and e["ts"] <= windows[i][1]:
                args = e.get("args", {})
                per_run[i].append((e["name"][: -len("_kernel_time")], args.get("op_name"), args.get("provider"),
                                   _precision(args), e.get("dur", 0) / 1000))
        if len(per_run) != warmup + runs:
            raise RuntimeError(f"onnxruntime profile has {len(per_run)} model_run events, expected {warmup + runs}")
        return node_profile(per_run[warmup:], warmup, f"onnxruntime {self.version} profiling (enable_profiling, "
                            "Node *_kernel_time events)", wall[warmup:])


INT8_OPS = ("ConvInteger", "MatMulInteger", "QGemm", "DynamicQuantizeMatMul", "MatMulIntegerToFloat")
ONNX_PRECISIONS = {"float": "fp32", "float16": "fp16", "bfloat16": "bf16", "uint8": "int8", "int8": "int8"}


def _is_kernel(event: dict) -> bool:
    return event.get("cat") == "Node" and str(event.get("name", "")).endswith("_kernel_time")


def _precision(args: dict) -> str | None:
    """fp32/fp16/bf16/int8 from the op (quantized kernels) or the element type of its first input."""
    op = args.get("op_name") or ""
    if op.startswith("QLinear") or op in INT8_OPS:
        return "int8"
    types = args.get("input_type_shape") or []
    return ONNX_PRECISIONS.get(next(iter(types[0]), None)) if types else None

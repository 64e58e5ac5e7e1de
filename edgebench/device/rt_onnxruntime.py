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
        self.input_name = self.session.get_inputs()[0].name
        self.version = ort.__version__
        batch = self.session.get_inputs()[0].shape[0]
        self.dynamic_batch = not isinstance(batch, int)

    @staticmethod
    def _options(ort, threads: int):
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        return so

    def timed_call(self, x):
        """Return a zero-argument callable that runs one inference on `x`."""
        run, feed = self.session.run, {self.input_name: x}
        return lambda: run(None, feed)

    def predict(self, x):
        return self.session.run(None, {self.input_name: x})[0]

    def executed(self, x) -> dict:
        """The kernels this device runs: one profiled inference in a second session made the
        same way (profiling is off in the measured one), each kernel's op and input types.
        The host turns them into precision fields (edgebench.precision_onnx.read_ort_kernels):
        onnxruntime picks kernels per CPU (fp16 stays fp16 on ARMv8.2, not on x86)."""
        import glob
        import json
        import os
        import platform
        import tempfile

        ort = import_runtime()
        with tempfile.TemporaryDirectory(prefix="edgebench-ort-") as tmp:
            so = self._options(ort, self.threads)
            so.enable_profiling = True
            so.profile_file_prefix = os.path.join(tmp, "profile")
            session = ort.InferenceSession(self.path, so, providers=["CPUExecutionProvider"])
            session.run(None, {self.input_name: x})
            session.end_profiling()
            events = [e for f in glob.glob(os.path.join(tmp, "*.json")) for e in json.load(open(f))]
        kernels = [[e["args"].get("op_name"), [next(iter(t)) for t in e["args"].get("input_type_shape", [])]]
                   for e in events if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time")]
        return {"kernels": kernels,
                "source": f"onnxruntime {ort.__version__} CPU kernels run on {platform.machine()} (profiled)"}

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
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        self.session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
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

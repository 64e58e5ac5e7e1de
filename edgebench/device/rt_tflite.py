"""Runner adapter for LiteRT (ai-edge-litert). Staged beside runner.py on a device: imports only
the standard library, numpy and ai-edge-litert."""

from __future__ import annotations

INSTALL_HINT = "pip install ai-edge-litert (or: pip install 'edgebench[tflite]')"
# Model has no `profile`: the runner answers --profile-runs with this (exit 3).
NO_PROFILE = ("tflite has no per-op profiler in the Python interpreter "
              "(the host estimates per-layer time from MACs)")


def import_runtime():
    from ai_edge_litert import interpreter

    return interpreter


class Model:
    """An ai-edge-litert interpreter; int8 inputs/outputs are (de)quantized with their params."""

    def __init__(self, path: str, threads: int, options: dict | None = None):
        litert = import_runtime()
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


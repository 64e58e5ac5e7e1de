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
    """An ai-edge-litert interpreter; int8 inputs/outputs are (de)quantized with their params.

    Inputs and outputs follow the model's signature order (litert-torch keeps the PyTorch
    forward's argument and output order there), else the interpreter's tensor order."""

    def __init__(self, path: str, threads: int, options: dict | None = None):
        litert = import_runtime()
        self.interpreter = litert.Interpreter(model_path=path, num_threads=threads)
        self.interpreter.allocate_tensors()
        self.inputs = self._ordered(self.interpreter.get_input_details(), "inputs")
        self.outputs = self._ordered(self.interpreter.get_output_details(), "outputs")
        self.output_names = [d["name"] for d in self.outputs]
        try:
            from importlib.metadata import version

            self.version = version("ai-edge-litert")
        except Exception:  # noqa: BLE001 - a version is a fact, not a requirement
            self.version = "unknown"
        self.dynamic_batch = False

    def _ordered(self, details: list, side: str) -> list:
        signatures = self.interpreter.get_signature_list() or {}
        if len(signatures) == 1 and len(details) > 1:
            runner = self.interpreter.get_signature_runner(next(iter(signatures)))
            by_index = {d["index"]: d for d in details}
            named = runner.get_input_details() if side == "inputs" else runner.get_output_details()
            order = [by_index.get(d["index"]) for d in named.values()]
            if all(order) and len(order) == len(details):
                return order
        return details

    @staticmethod
    def _quantize(detail: dict, x):
        import numpy as np

        dtype = detail["dtype"]
        if x.dtype == dtype:
            return x
        if dtype in (np.float32, np.int32, np.int64) or not detail["quantization"][0]:
            return x.astype(dtype)  # float inputs, or token ids the converter narrowed to int32
        scale, zero = detail["quantization"]
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)

    @staticmethod
    def _dequantize(detail: dict, y):
        import numpy as np

        if detail["dtype"] == np.float32 or not detail["quantization"][0]:
            return y.astype(np.float32)
        scale, zero = detail["quantization"]
        return (y.astype(np.float32) - zero) * scale

    def timed_call(self, xs: list):
        interp = self.interpreter
        feeds = [(d["index"], self._quantize(d, x)) for d, x in zip(self.inputs, xs)]
        set_tensor, invoke = interp.set_tensor, interp.invoke

        def call():
            for index, xq in feeds:
                set_tensor(index, xq)
            invoke()

        return call

    def predict(self, xs: list) -> list:
        for d, x in zip(self.inputs, xs):
            self.interpreter.set_tensor(d["index"], self._quantize(d, x))
        self.interpreter.invoke()
        return [self._dequantize(d, self.interpreter.get_tensor(d["index"])) for d in self.outputs]

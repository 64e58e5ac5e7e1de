"""Runner adapter for OpenVINO (CPU plugin), reading an .onnx directly. Staged beside runner.py
on a device: imports only the standard library, numpy and openvino.

OpenVINO chooses kernels per device, so the precision that ran is read back from the compiled
model (each node's `runtimePrecision` and `primitiveType`, e.g. `brgconv_avx2_f32`, `acl_f16`)
and reported by `executed()`. Options: `inference_precision` ("f32", "f16", "bf16") sets
INFERENCE_PRECISION_HINT; unset, OpenVINO's default for the device applies (f16 on ARMv8.2).
"""

from __future__ import annotations

import platform
import struct

INSTALL_HINT = "pip install openvino (on aarch64: openvino==2026.4.1, a manylinux_2_35 wheel)"
COMPUTE_LAYERS = ("Convolution", "GroupConvolution", "Deconvolution", "FullyConnected", "MatMul",
                  "FullyConnectedCompressed", "GemmAcl")
PRECISIONS = {"f32": "fp32", "f16": "fp16", "bf16": "bf16", "i8": "int8", "u8": "int8"}
AT_HWCAP = 16
HWCAP_ASIMDDP = 1 << 20  # aarch64: the ARMv8.2 dot-product instructions


def import_runtime():
    import openvino

    return openvino


def has_dot_product() -> bool | None:
    """On aarch64, whether the CPU has the dot-product (from AT_HWCAP); None elsewhere or unknown."""
    if platform.machine() not in ("aarch64", "arm64"):
        return None
    try:
        with open("/proc/self/auxv", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    for key, value in struct.iter_unpack("<QQ", raw[: len(raw) // 16 * 16]):
        if key == AT_HWCAP:
            return bool(value & HWCAP_ASIMDDP)
    return None


class Unsupported(Exception):
    """The runtime is installed but cannot run this model on this CPU; the runner reports it
    as unavailable (a fact about the device), not as an error."""


class Model:
    def __init__(self, path: str, threads: int, options: dict | None = None):
        ov = import_runtime()
        options = options or {}
        core = ov.Core()
        model = core.read_model(path)
        config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
        if options.get("inference_precision"):
            config["INFERENCE_PRECISION_HINT"] = options["inference_precision"]
        quantized = any(op.get_type_name() == "FakeQuantize" for op in model.get_ordered_ops())
        self._core, self._model, self._config = core, model, config  # profile() compiles its own
        try:
            self.compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:
            if quantized and has_dot_product() is False:
                # Measured under qemu 7.2: small QDQ CNNs do compile on a Cortex-A72 (some layers on
                # acl_I8, the rest fp32); a model that does not is reported with the likely cause.
                raise Unsupported(
                    "OpenVINO could not compile this int8 model on a CPU without the ARMv8.2 "
                    "dot-product (asimddp), which its ARM int8 kernels use "
                    f"(compile failed: {str(exc).strip().splitlines()[0][:120]})") from exc
            raise
        self.request = self.compiled.create_infer_request()
        self.tensor_type = ov.Tensor
        self.version = ov.__version__.split("-")[0]
        self.dynamic_batch = all(i.get_partial_shape()[0].is_dynamic for i in model.inputs)
        self.output_names = [next(iter(o.get_names()), f"out{k}") for k, o in enumerate(model.outputs)]
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        # Read back from the compiled model, not echoed from the request.
        self.settings = {"inference_precision": hint.to_string() if hasattr(hint, "to_string") else str(hint),
                         "inference_num_threads": int(self.compiled.get_property("INFERENCE_NUM_THREADS"))}

    def _set_inputs(self, request, xs: list) -> None:
        for k, x in enumerate(xs):
            request.set_input_tensor(k, self.tensor_type(x))

    def timed_call(self, xs: list):
        request = self.request
        self._set_inputs(request, xs)
        return request.infer

    def predict(self, xs: list) -> list:
        self._set_inputs(self.request, xs)
        self.request.infer()
        return [self.request.get_output_tensor(k).data.copy() for k in range(len(self.compiled.outputs))]

    def executed(self, x=None) -> dict:
        """The precision the compiled model computes in: its compute layers' runtime precision."""
        counts: dict[str, int] = {}
        kernels: dict[str, int] = {}
        for op in self.compiled.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            if info["layerType"].value not in COMPUTE_LAYERS:
                continue
            precision = PRECISIONS.get(info["runtimePrecision"].value, info["runtimePrecision"].value)
            counts[precision] = counts.get(precision, 0) + 1
            kernel = info["primitiveType"].value
            kernels[kernel] = kernels.get(kernel, 0) + 1
        if not counts:
            compute = None
        elif len(counts) == 1:
            compute = next(iter(counts))
        else:
            compute = "mixed"
        listed = ", ".join(f"{k} x{n}" for k, n in sorted(kernels.items()))
        return {
            "compute_precision": compute,
            "precision_ops": counts,
            "precision_note": f"OpenVINO compiled kernels: {listed}" if listed else "no compute layers found",
            "precision_source": f"openvino {self.version} compiled model (runtimePrecision), "
                                f"inference_precision={self.settings['inference_precision']}",
        }

    def profile(self, x, runs: int, warmup: int) -> dict:
        """Per-node time: a second compiled model with the same config plus PERF_COUNT, warmup+runs
        infers on one request. The CPU plugin's real_time is each node's mean over every infer
        since compiling (whole µs, rounded down; measured: 2329, 1169, 781 µs after 1, 2, 3
        infers), so the measured runs' mean is (total after all - total after warm-up) / runs,
        good to about (warmup + runs) / runs µs per node."""
        import datetime
        import time

        if __package__:
            from .runner_facts import node_profile
        else:
            from runner_facts import node_profile

        compiled = self._core.compile_model(self._model, "CPU", {**self._config, "PERF_COUNT": True})
        request = compiled.create_infer_request()
        self._set_inputs(request, x)

        def totals(count: int) -> dict:  # node -> (info, µs over all `count` infers so far)
            return {p.node_name: (p, p.real_time / datetime.timedelta(microseconds=1) * count)
                    for p in request.profiling_info if p.status.name == "EXECUTED"} if count else {}

        for _ in range(warmup):
            request.infer()
        before, wall, clock = totals(warmup), [], time.perf_counter_ns
        for _ in range(runs):
            t0 = clock()
            request.infer()
            wall.append((clock() - t0) / 1e6)
        means = [(name, p.node_type, p.exec_type, exec_precision(p.exec_type),
                  max(0.0, (total - before.get(name, (None, 0))[1]) / runs / 1000))
                 for name, (p, total) in totals(warmup + runs).items()]
        return node_profile([means], warmup, f"openvino {self.version} PERF_COUNT (profiling_info real_time, "
                            "cumulative mean differenced over the measured runs)", wall)


def exec_precision(exec_type: str) -> str | None:
    """The precision a kernel ran in, from its exec_type's suffix: jit_avx2_FP32 -> fp32, jit_avx2_I8
    -> int8, acl_f16 -> fp16; None where there is none (undef)."""
    suffix = exec_type.rpartition("_")[2].lower()
    return PRECISIONS.get({"fp32": "f32", "fp16": "f16"}.get(suffix, suffix))

"""Runner adapter for ExecuTorch (XNNPACK delegate + portable kernels), reading a `.pte`.

Staged beside runner.py on a device: the standard library, numpy and one of two runtimes:
- the official `executorch` wheel: its pybindings link libtorch, so **torch is imported** (the
  one runner adapter that needs it: ExecuTorch's Python runtime cannot load without it). We load
  `executorch.extension.pybindings._C`, not the documented `executorch.runtime`, whose
  `portable_lib` imports all of `executorch.exir` (torchao included) only to issue an
  "experimental API" warning: 4-5 s on top of torch's 1-2 s (measured). Same extension module.
- `executorch-numpy-runtime` (third party, torch-free, Python >= 3.12; ExecuTorch 1.3.1 inside,
  measured to run programs written by 1.5.1): used when the official one is not installed, or
  with `--runtime-option flavor=numpy`. It is what the emulated aarch64 targets run: PyPI's
  aarch64 torch 2.13.0 is a CUDA build whose pins do not resolve there.

A `.pte` has static shapes (memory-planned at batch 1): `dynamic_batch` is False. Each input
is cast to the program's input dtype (fp16 programs take half tensors, token ids stay ints).
A program this device cannot load (an operator without a kernel, another ExecuTorch version,
fp16 on a core without ARMv8.2 fp16) raises Unsupported: the runner reports it unavailable.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

INSTALL_HINT = ("pip install executorch==1.5.1 torch (a .pte runs on the ExecuTorch version that wrote it); "
                "torch-free on Python >= 3.12: pip install executorch-numpy-runtime")
# XNNPACK names its kernels "<Op> (<layout>, <types>) <algo> #n", e.g. "Fully Connected (NC, QS8,
# QC8W) GEMM #1", "Convolution (NHWC, QDU8, F32, QC8W) IGEMM #1" (dynamic int8): the types say
# what ran. Checked in this order: a quantized type anywhere makes the kernel int8.
XNN_PRECISIONS = (("QC4W", "int4"), ("QDU8", "int8-dynamic"), ("QD8", "int8-dynamic"), ("QS8", "int8"),
                  ("QU8", "int8"), ("QC8", "int8"), ("F16", "fp16"), ("BF16", "bf16"), ("F32", "fp32"))
COMPUTE_KERNELS = ("Convolution", "Deconvolution", "Fully Connected", "Batch Matrix Multiply")
# XNNPACK kernels that move or convert data; named as the layout/quantize ops edgebench's
# module map knows (edgebench.export.module_map), so profiles give them rows of their own.
LAYOUT_KERNELS = {"Transpose": "Transpose", "Static Transpose": "Transpose", "Copy": "Reorder",
                  "Static Reshape": "Reorder", "Convert": "Cast"}
# c10 ScalarType codes (TensorInfo.dtype(), metadata "scalar_type") -> numpy dtype names.
SCALAR_TYPES = {0: "uint8", 1: "int8", 2: "int16", 3: "int32", 4: "int64", 5: "float16", 6: "float32",
                7: "float64", 11: "bool"}
ETDUMP_BUFFER = 0  # no intermediate outputs: a debug buffer that fills up aborts the process (measured)
AT_HWCAP, HWCAP_ASIMDHP = 16, 1 << 10


def import_runtime(flavor: str = "") -> Any:
    """The official runtime when installed (and not flavor=numpy), else executorch-numpy-runtime."""
    try:
        if flavor == "numpy":
            raise ImportError("flavor=numpy asked for", name="executorch")
        return _official()
    except ImportError as official_missing:
        try:
            import executorch_numpy_runtime

            return executorch_numpy_runtime
        except ImportError:
            raise official_missing from None


def _official() -> Any:
    import executorch.kernels.quantized  # noqa: F401 - registers quantized_decomposed kernels (10 ms)
    import torch  # noqa: F401 - first: _C links libtorch
    from executorch.extension.pybindings import _C

    return _C


def version(dist: str = "executorch") -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version(dist)
    except PackageNotFoundError:  # a version is a fact, not a requirement
        return "unknown"


class Unsupported(Exception):
    """This device cannot run the program: the runner reports it as unavailable."""


class Model:
    def __init__(self, path: str, threads: int, options: dict | None = None):
        options = options or {}
        try:
            et = import_runtime(options.get("flavor", ""))
        except ImportError as exc:  # only when a flavor was asked for: the runner imported one already
            raise Unsupported(f"executorch runtime flavor {options.get('flavor')!r} not installed: {exc}") from exc
        self.path, self.threads, self._et = path, threads, et
        self.dynamic_batch = False
        if hasattr(et, "_load_program"):
            self._open_official(et, path, threads)
        else:
            self._open_numpy(et, path)

    def _open_official(self, et, path: str, threads: int) -> None:
        import torch

        self._torch: Any = torch
        # The threadpool is process-wide and XNNPACK takes its size when a method is loaded.
        et._unsafe_reset_threadpool(threads)
        self.version = version()
        try:
            self.program = et._load_program(path)
            self.method = self.program.load_method("forward")
        except RuntimeError as exc:  # "Missing operator", a program of another version, fp16 on ARMv8.0
            raise Unsupported(f"ExecuTorch {self.version} cannot load {path} ({_line(exc)}); a .pte runs on the "
                              f"ExecuTorch version that wrote it{_fp16_hint()}") from exc
        meta = self.method.method_meta()
        self.inputs = [(tuple(meta.input_tensor_meta(i).sizes()), int(meta.input_tensor_meta(i).dtype()))
                       for i in range(meta.num_inputs())]
        self.settings = {"threads": int(et._threadpool_get_thread_count()), "flavor": "official",
                         "input_dtypes": [SCALAR_TYPES.get(c, str(c)) for _, c in self.inputs]}

    def _open_numpy(self, en, path: str) -> None:
        """executorch-numpy-runtime 1.4: no thread setting (XNNPACK's pool takes every core),
        no ETDump (no kernel names, no per-op times), outputs always copied."""
        self._torch = None
        self.version = f"{en.__et_version__} (executorch-numpy-runtime {version('executorch-numpy-runtime')})"
        try:
            self.method = en.Runtime.get().load_program(path).load_method("forward")
            self.inputs = [(tuple(m["shape"]), int(m["scalar_type"])) for m in self.method.metadata["inputs"]]
            # This runtime initialises the delegate at the first call: fail here, as a device fact.
            self.method([self._array(_zeros(shape), k) for k, (shape, _) in enumerate(self.inputs)])
        except en.ExecuTorchError as exc:
            raise Unsupported(f"executorch-numpy-runtime (ExecuTorch {en.__et_version__}) cannot run {path} on "
                              f"this CPU ({_line(exc)}){_fp16_hint()}") from exc
        self.settings = {"threads": None, "flavor": "executorch-numpy-runtime",
                         "input_dtypes": [SCALAR_TYPES.get(c, str(c)) for _, c in self.inputs],
                         "threads_note": "no thread setting in executorch-numpy-runtime: XNNPACK's pool"}

    def _array(self, x, k: int):
        import numpy as np

        shape, code = self.inputs[k]
        return np.ascontiguousarray(np.asarray(x).reshape(shape), dtype=SCALAR_TYPES.get(code, "float32"))

    def _feed(self, xs: list) -> list:
        """One array per program input, in its dtype and static shape (torch tensors for the official runtime)."""
        arrays = [self._array(x, k) for k, x in enumerate(xs)]
        return [self._torch.from_numpy(a) for a in arrays] if self._torch is not None else arrays

    def timed_call(self, xs: list) -> Callable[[], Any]:
        """set_inputs + execute, outputs not cloned: the runtime's own cost (~1.5 µs over a bare
        `execute()`, measured; `executorch.runtime`'s `execute` clones and adds ~3 µs). With
        executorch-numpy-runtime: its call, which always copies the outputs."""
        import functools

        if self._torch is None:
            return functools.partial(self.method, self._feed(xs))
        return functools.partial(self.method, self._feed(xs), False)

    def predict(self, xs: list) -> list:
        """Every output, float32, with the program's (batch-1) shapes."""
        import numpy as np

        if self._torch is None:
            return [np.asarray(o, dtype=np.float32) for o in self.method(self._feed(xs))]
        return [o.float().numpy() for o in self.method(self._feed(xs), True)]

    # ---- what ran, per op: an ETDump-enabled program beside the measured one -----------------

    def _profiled(self, xs: list, calls: int) -> tuple[list[float], list[list[tuple]]]:
        """`calls` inferences in a second program with ETDump on (median 1.2-1.8x slower,
        measured): each call's wall ms and events, read by `read_etdump` (executorch.devtools
        runs a flatc binary, and no subprocess runs under qemu-user; it also imports pandas)."""
        import os
        import tempfile
        import time

        program = self._et._load_program(self.path, enable_etdump=True, debug_buffer_size=ETDUMP_BUFFER)
        method = program.load_method("forward")
        inputs, wall, clock = self._feed(xs), [], time.perf_counter_ns
        for _ in range(calls):
            t0 = clock()
            method(inputs, False)
            wall.append((clock() - t0) / 1e6)
        with tempfile.TemporaryDirectory(prefix="edgebench-et-") as tmp:
            dump = os.path.join(tmp, "run.etdp")
            program.write_etdump_result_to_file(dump, os.path.join(tmp, "debug.bin"))
            with open(dump, "rb") as f:
                runs = read_etdump(f.read())
        runs = [r for r in runs if any(e[0] == "Method::execute" for e in r)]
        return wall, runs[-calls:]

    def executed(self, xs: list) -> dict:
        """What ran, from one profiled run: XNNPACK's compute kernels by precision, every kernel by
        family, and the ops left to portable kernels (ExecuTorch's fallback: reference code).
        The host turns it into precision fields (edgebench.export.precision_mobile)."""
        if self._torch is None:
            return {"flavor": "executorch-numpy-runtime", "runtime_version": self.version,
                    "unread": "executorch-numpy-runtime writes no ETDump: kernels not read on the device"}
        _, runs = self._profiled(xs, 1)
        compute: dict[str, int] = {}
        kernels: dict[str, int] = {}
        portable: dict[str, int] = {}
        delegate_calls = 0
        for name, op, kernel, precision, _ in _nodes(runs[0]):
            family = name.rpartition("/")[2].rpartition("#")[0]
            if name.endswith("/(rest)"):
                delegate_calls += 1
            elif kernel.startswith("XNNPACK "):
                kernels[family] = kernels.get(family, 0) + 1
                if precision and family in COMPUTE_KERNELS:
                    compute[precision] = compute.get(precision, 0) + 1
            elif kernel == "portable":
                portable[op] = portable.get(op, 0) + 1
        return {"flavor": "official", "runtime_version": self.version, "xnnpack_compute": compute,
                "xnnpack_kernels": kernels, "portable_ops": portable, "delegate_calls": delegate_calls,
                "source": f"executorch {self.version} ETDump (XNNPACK kernel names, OPERATOR_CALL events)"}

    def profile(self, xs: list, runs: int, warmup: int) -> dict:
        """Per-node time from ETDump: each XNNPACK kernel (whole µs: XNNPACK's resolution), each
        delegate call's rest, each portable op. Nodes are named so the export's module map can
        find them: `xnnpack<k>/<kernel family>#<i>` (the i-th such kernel of the k-th delegate
        call), `xnnpack<k>/(rest)`, `op<instruction>` for a portable op."""
        if self._torch is None:
            raise Unsupported("executorch-numpy-runtime has no per-op profiler (no ETDump)")
        if __package__:
            from .runner_facts import node_profile
        else:
            from runner_facts import node_profile

        wall, per_run = self._profiled(xs, warmup + runs)
        measured = [_nodes(r) for r in per_run[warmup:]]
        return node_profile(measured, warmup, f"executorch {self.version} ETDump (XNNPACK kernel events, "
                            "DELEGATE_CALL, OPERATOR_CALL)", wall[warmup:])


def _nodes(events: list[tuple]) -> list[tuple]:
    """One run's events -> (name, op, kernel, precision, ms). ETDump writes an event when it ends,
    so a delegate's kernels come before its DELEGATE_CALL and `native_call_<op>` before its
    OPERATOR_CALL; the delegate's time outside its kernels becomes its own "(rest)" node."""
    nodes: list[tuple] = []
    inner: list[tuple[str, int]] = []
    op_name, k = None, 0
    for name, delegate_id, instruction, ns in events:
        if name is None and delegate_id:
            inner.append((delegate_id, ns))
        elif name == "DELEGATE_CALL":
            seen: dict[str, int] = {}
            # "Convert (NC)" names no types: in a delegate of int8 kernels it (de)quantizes.
            quantized = any(_xnn_precision(kernel) in ("int8", "int8-dynamic") for kernel, _ in inner)
            for kernel_name, kernel_ns in inner:
                family = kernel_name.partition(" (")[0]
                i = seen[family] = seen.get(family, -1) + 1
                op = LAYOUT_KERNELS.get(family, family)
                if family == "Convert" and (quantized or _xnn_precision(kernel_name) in ("int8", "int8-dynamic")):
                    op = "QuantizeLinear"  # float <-> int8 conversions are quantize/dequantize work
                nodes.append((f"xnnpack{k}/{family}#{i}", op, "XNNPACK " + kernel_name.rpartition(" #")[0],
                              _xnn_precision(kernel_name), kernel_ns / 1e6))
            rest = max(0, ns - sum(t for _, t in inner))
            nodes.append((f"xnnpack{k}/(rest)", "DELEGATE_CALL", "XNNPACK delegate", None, rest / 1e6))
            inner, k = [], k + 1
        elif name and name.startswith("native_call_"):
            op_name = name[len("native_call_"):]
        elif name == "OPERATOR_CALL":
            nodes.append((f"op{instruction}", op_name, "portable", None, ns / 1e6))
    return nodes


def _xnn_precision(kernel_name: str) -> str | None:
    types = kernel_name.partition("(")[2].partition(")")[0].split(", ")[1:]  # drop the layout
    return next((p for tag, p in XNN_PRECISIONS if tag in types), None)


def _line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def _fp16_hint() -> str:
    """Why an fp16 program fails here, when this is an aarch64 core without ARMv8.2 fp16
    arithmetic (measured under qemu: Cortex-A72 "xnn_status_unsupported_hardware", A76 runs it)."""
    import platform

    if platform.machine() not in ("aarch64", "arm64"):
        return ""
    try:
        with open("/proc/self/auxv", "rb") as f:
            raw = f.read()
    except OSError:
        return ""
    hwcap = dict(struct.iter_unpack("<QQ", raw[: len(raw) // 16 * 16])).get(AT_HWCAP, 0)
    return "" if hwcap & HWCAP_ASIMDHP else " (this CPU has no asimdhp: XNNPACK runs no fp16 kernels on it)"


def _zeros(shape):
    import numpy as np

    return np.zeros(shape, dtype=np.float32)


# ---- a stdlib reader of ETDump (flatcc, size-prefixed; executorch/devtools/etdump/*.fbs) ---------

def read_etdump(data: bytes) -> list[list[tuple]]:
    """Each RunData's profile events as (name, delegate_debug_id_str, instruction_id, end-start ns).
    Field numbers follow etdump_schema_flatcc.fbs: ETDump{version, run_data}, RunData{name,
    bundled_input_index, allocators, events}, Event{profile_event, ...}, ProfileEvent{name,
    chain_index, instruction_id, delegate_debug_id_int, delegate_debug_id_str, metadata, start, end}."""
    buf = memoryview(data)[4:]  # size prefix

    def u32(p: int) -> int:
        return struct.unpack_from("<I", buf, p)[0]

    def field(table: int, i: int) -> int:  # absolute position of field i, or 0 when absent
        vtable = table - struct.unpack_from("<i", buf, table)[0]
        if 4 + 2 * i >= struct.unpack_from("<H", buf, vtable)[0]:
            return 0
        off = struct.unpack_from("<H", buf, vtable + 4 + 2 * i)[0]
        return table + off if off else 0

    def ref(p: int) -> int:
        return p + u32(p)

    def string(table: int, i: int) -> str | None:
        p = field(table, i)
        if not p:
            return None
        s = ref(p)
        return bytes(buf[s + 4: s + 4 + u32(s)]).decode("utf-8", "replace")

    def tables(table: int, i: int) -> list[int]:
        p = field(table, i)
        if not p:
            return []
        v = ref(p)
        return [ref(v + 4 + 4 * k) for k in range(u32(v))]

    def scalar(table: int, i: int, fmt: str, default: int) -> int:
        p = field(table, i)
        return struct.unpack_from(fmt, buf, p)[0] if p else default

    runs = []
    for run in tables(u32(0), 1):
        events = []
        for event in tables(run, 3):
            p = field(event, 0)
            if not p:
                continue
            pe = ref(p)
            ns = scalar(pe, 7, "<Q", 0) - scalar(pe, 6, "<Q", 0)
            events.append((string(pe, 0), string(pe, 4), scalar(pe, 2, "<i", -1), ns))
        runs.append(events)
    return runs

"""Runner adapter for ncnn (CPU), reading a pnnx-converted `.param` with its `.bin` beside it.

Staged beside runner.py on a device: the standard library, numpy and ncnn (the wheel itself
imports nothing else: ~10 ms, measured). pnnx drops the batch axis and names the blobs
in0, in1, ... / out0, out1, ...: one row per input goes in, one batch-1 row per output comes out.

Options (`--runtime-option`, a profile's `[runtime.ncnn]`): `fp16 = "auto" | "on" | "off"`
sets use_fp16_storage, use_fp16_packed and use_fp16_arithmetic together. "auto" (the default)
is on for weights stored in fp16 (an fp16 variant) and off for fp32 weights, so an fp32 variant
is the fp32 reference (ncnn's own default, all on, computes it in fp16 on ARMv8.2 and stores
blobs in fp16 on x86: 1.3e-4 relative error instead of 6.6e-7, measured). Each of those keys
(and `use_bf16_storage`) may also be set alone (1/0). ncnn does not sanitize them (it echoes
what was set), so `executed()` derives what ran from the options and the CPU: fp16 arithmetic
needs ARMv8.2 asimdhp; fp16 storage is used on ARM and on x86 with F16C.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from typing import Any

INSTALL_HINT = "pip install ncnn"
# Model has no `profile`: the runner answers --profile-runs with this (exit 3).
NO_PROFILE = ("ncnn has no per-op profiler in its Python build (NCNN_BENCHMARK is off; "
              "the host estimates per-layer time from MACs)")
FP16_KEYS = ("use_fp16_storage", "use_fp16_packed", "use_fp16_arithmetic")
COMPUTE_LAYERS = ("Convolution", "ConvolutionDepthWise", "Convolution1D", "ConvolutionDepthWise1D", "Convolution3D",
                  "Deconvolution", "DeconvolutionDepthWise", "InnerProduct", "Gemm", "MatMul", "MultiHeadAttention")
# The tag before each weight blob in a .bin (ncnn's ModelBinFromDataReader): what it is stored in.
WEIGHT_TAGS = {0x01306B47: "fp16", 0x000D4B38: "int8", 0x0002C056: "fp32", 0: "fp32"}
TRUE = ("1", "on", "true", "True", "yes")


def import_runtime():
    import ncnn

    return ncnn


class Unsupported(Exception):
    """The .param names layers this ncnn build does not have: the runner reports unavailable."""


def read_param(path: str) -> list[tuple[str, str, list[str], list[str]]]:
    """(type, name, bottoms, tops) per layer of an ncnn text .param (magic, counts, one line each)."""
    with open(path) as f:
        lines = [line.split() for line in f if line.strip()]
    if not lines or lines[0] != ["7767517"]:
        raise ValueError(f"{path} is not an ncnn text .param (magic 7767517)")
    layers = []
    for parts in lines[2:]:
        kind, name, n_in, n_out = parts[0], parts[1], int(parts[2]), int(parts[3])
        layers.append((kind, name, parts[4:4 + n_in], parts[4 + n_in:4 + n_in + n_out]))
    return layers


def unsupported_layers(layers, ncnn=None) -> dict[str, int]:
    """Layer types the runtime cannot create, with counts. With ncnn: `create_layer` returns None
    (it also catches types in ncnn's registry but compiled out of the wheel, e.g. ArgMax, which
    `layer_to_index` still knows). Without: what pnnx writes for ops it could not map (names
    with `.` or `::`: pnnx.Expression, torch.gt, aten::...)."""
    bad: dict[str, int] = {}
    for kind, *_ in layers:
        missing = ncnn.create_layer(kind) is None if ncnn is not None else ("." in kind or "::" in kind)
        if missing:
            bad[kind] = bad.get(kind, 0) + 1
    return bad


def weight_storage(bin_path: str) -> str:
    """What the first weight blob of a .bin is stored in (pnnx writes all of them alike)."""
    with open(bin_path, "rb") as f:
        head = f.read(4)
    return WEIGHT_TAGS.get(struct.unpack("<I", head)[0], "fp32") if len(head) == 4 else "fp32"


def _blob_order(name: str) -> tuple[int, str]:
    digits = name.lstrip("abcdefghijklmnopqrstuvwxyz_")
    return (int(digits) if digits.isdigit() else 0, name)


class Model:
    def __init__(self, path: str, threads: int, options: dict | None = None):
        ncnn = import_runtime()
        options = options or {}
        self.path, self.threads, self._ncnn = path, threads, ncnn
        self.layers = read_param(path)
        bad = unsupported_layers(self.layers, ncnn)
        if bad:  # load_param would print "layer X not exists or registered" and return -1
            listed = ", ".join(f"{k} x{n}" for k, n in sorted(bad.items()))
            raise Unsupported(f"ncnn {ncnn.__version__} has no layer {listed} (ops pnnx could not map to ncnn)")
        weights = os.path.splitext(path)[0] + ".bin"
        self.weights = weight_storage(weights)
        asked = str(options.get("fp16", "auto"))
        fp16 = self.weights == "fp16" if asked == "auto" else asked in TRUE
        net = ncnn.Net()
        opt = net.opt
        opt.num_threads = threads
        opt.use_vulkan_compute = False
        for key in FP16_KEYS:
            setattr(opt, key, fp16)
        for key in (*FP16_KEYS, "use_bf16_storage"):
            if key in options:
                setattr(opt, key, str(options[key]) in TRUE)
        net.opt = opt  # before load_param: layers pick their kernels while loading
        if net.load_param(path) != 0 or net.load_model(weights) != 0:
            raise RuntimeError(f"ncnn could not load {path} and {weights}")
        self.net = net
        self.input_names = sorted(net.input_names(), key=_blob_order)
        self.output_names = sorted(net.output_names(), key=_blob_order)
        self.version = ncnn.__version__
        self.dynamic_batch = False
        # Read back from the net (ncnn echoes what was set: see the module docstring).
        self.settings = {"num_threads": int(net.opt.num_threads),
                         **{k: bool(getattr(net.opt, k)) for k in (*FP16_KEYS, "use_bf16_storage", "use_packing_layout")},
                         "fp16": asked, "weights": self.weights}

    def _mats(self, xs: list) -> list:
        """(blob name, Mat, array) per input; the array keeps the Mat's memory alive."""
        import numpy as np

        out = []
        for name, x in zip(self.input_names, xs):
            row = np.ascontiguousarray(np.asarray(x)[0], dtype=np.float32)  # pnnx dropped the batch axis
            out.append((name, self._ncnn.Mat(row), row))
        return out

    def timed_call(self, xs: list) -> Callable[[], Any]:
        """A new extractor per call (an extractor caches blobs: reusing one would return its cached
        outputs), input Mats made once: ~3 µs less than making them in each call (measured)."""
        mats = self._mats(xs)
        create, outputs = self.net.create_extractor, self.output_names

        def call():
            ex = create()
            for name, mat, _ in mats:
                ex.input(name, mat)
            return [ex.extract(name) for name in outputs]

        return call

    def predict(self, xs: list) -> list:
        import numpy as np

        ex = self.net.create_extractor()
        for name, mat, _ in self._mats(xs):
            ex.input(name, mat)
        out = []
        for name in self.output_names:
            rc, mat = ex.extract(name)
            if rc != 0:
                raise RuntimeError(f"ncnn extract {name} failed ({rc})")
            out.append(np.array(mat, dtype=np.float32)[None])  # the batch axis pnnx dropped
        return out

    def executed(self, xs=None) -> dict:
        """Precision fields: what the options make ncnn do on this CPU (it reports no kernels)."""
        ncnn, s = self._ncnn, self.settings
        arm = bool(ncnn.cpu_support_arm_neon())
        asimdhp = bool(ncnn.cpu_support_arm_asimdhp())
        fp16_math = s["use_fp16_arithmetic"] and asimdhp
        # x86 ncnn stores fp16 only with F16C; every AVX2 CPU has it (the wheel has no f16c probe).
        fp16_store = s["use_fp16_storage"] and (arm or bool(ncnn.cpu_support_x86_avx2()))
        compute = "fp16" if fp16_math else "fp32"
        counts: dict[str, int] = {}
        for kind, *_ in self.layers:
            if kind in COMPUTE_LAYERS:
                counts[kind] = counts.get(kind, 0) + 1
        n = sum(counts.values())
        storage = "fp16 storage (weights and blobs)" if fp16_store else "fp32 storage"
        why = "" if fp16_math or not s["use_fp16_arithmetic"] else " (fp16 arithmetic asked, no ARMv8.2 asimdhp here)"
        return {"compute_precision": compute, "precision_ops": {compute: counts},
                "precision_note": f"{compute}: all {n} conv/matmul layers compute in {compute}; {storage}{why}",
                "precision_source": f"ncnn {self.version} options x CPU features (arm={int(arm)}, "
                                    f"asimdhp={int(asimdhp)}); ncnn reports no kernels"}

"""What precision an artifact really computes in, read from the graph its runtime will run.

A scheme asks for a precision; the runtime decides what runs. On this x86 host, onnxruntime
1.32 turns every fp16 Conv/Gemm back into float32 at load (the saved optimized graph holds
float32 weights and float32 ops), and a TFLite fp16 file DEQUANTIZEs its float16 weights to
float32 before the first conv. A record that said "fp16" for those would be costed as fp16
and was not. So after export the artifact's graph is read and every record carries:

- ``compute_precision``: one of
    ``"fp32"``          every conv/matmul op computes in float32 (whatever the weights are stored in);
    ``"bf16"``          every conv/matmul op computes in bfloat16 (OpenVINO's default for fp32
                        models on x86 CPUs with AVX-512 BF16 or AMX: "fp32 (ran bf16)");
    ``"fp16"``          every conv/matmul op computes in float16;
    ``"int8"``          every conv/matmul op computes on int8 with calibrated activation scales;
    ``"int8-dynamic"``  every conv/matmul op computes on int8 weights and activations quantized
                        at run time (onnxruntime ConvInteger / DynamicQuantizeMatMul, TFLite
                        hybrid kernels: float tensor in, int8 weights);
    ``"mixed"``         the conv/matmul ops split over several of the above (see precision_ops);
    ``None``            the inspection failed (the reason is in precision_note).
  Only ops that carry the MACs decide it (conv, matmul, gemm and their quantized forms); other
  ops that stayed float in an int8 model (activations, pools, softmax) are named in the note.
- ``weight_precision``: what the conv/matmul weights are stored in (fp32, fp16, int8, mixed).
- ``precision_note``: one line for humans, e.g. ``"int8: all 6 conv/matmul ops compute on int8;
  float: HardSigmoid, ReduceMean"``; it starts with ``"<asked> did not take: "`` when the
  asked scheme is not what computes, ``"<asked> partly took: mixed: ..."`` when only some ops.
- ``precision_ops``: ``{precision: {op_type: count}}`` over every op that computes (layout
  and conversion ops such as Reshape, Transpose, Q/DQ and Cast are left out).
- ``precision_source``: what was read, e.g. ``"onnxruntime 1.32.0 CPU optimized graph on x86_64"``.

The graph is read by the reader of the artifact's format (`precision_onnx.inspect_onnx`,
`precision_tflite.inspect_tflite`, named by `edgebench.runtimes.FORMATS`); both describe it in
per-op precisions that `summarize` turns into the fields above.

`took(asked, compute_precision)` says whether a scheme took (None when unknown), and
`precision_label` gives the short legend text ("int8", "fp16 (ran fp32)", "int8 (ran mixed)").

    >>> info = inspect_artifact(Path("model.onnx"), "onnx", asked="fp16")  # doctest: +SKIP
    >>> info["compute_precision"], took("fp16", info["compute_precision"])  # doctest: +SKIP
    ('fp32', False)

The host reads the graph after export, which is the host's view. Runtimes whose kernels
depend on the CPU read it again on the device (`Runtime.precision_from = "runner"`): the
runner's onnxruntime adapter profiles one inference and reports each kernel's op and input
types (`precision_onnx.read_ort_kernels` turns them into these fields: an fp16 model computes
in fp16 on a Cortex-A76, in fp32 on a Cortex-A72 or x86), and OpenVINO's reports the compiled
model's runtime precisions. Records carry the device's reading; variant.json keeps the host's.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

COMPUTE_PRECISIONS = ("fp32", "bf16", "fp16", "int8", "int8-dynamic", "mixed")
# What each asked precision or scheme accepts as "took". int8 MACs on run-time quantized
# activations are int8 compute, so a plain "int8" ask (the record's `precision`) takes either.
ACCEPTS: dict[str, frozenset[str]] = {
    "fp32": frozenset({"fp32"}),
    "fp16": frozenset({"fp16"}),
    "int8": frozenset({"int8", "int8-dynamic"}),
    "int8_static": frozenset({"int8"}),
    "qat": frozenset({"int8"}),
    "int8_dynamic": frozenset({"int8-dynamic", "int8"}),
}

def took(asked: str | None, compute_precision: str | None) -> bool | None:
    """Whether the asked precision (a record's `precision` or a scheme name) is what computes.

    None when either is unknown; False for "mixed" (the scheme only partly took).

    >>> took("int8", "int8-dynamic"), took("fp16", "fp32"), took("int8", "mixed"), took("fp32", None)
    (True, False, False, None)
    """
    if not asked or not compute_precision or asked not in ACCEPTS:
        return None
    return compute_precision in ACCEPTS[asked]


def precision_label(asked: str | None, compute_precision: str | None) -> str:
    """A short legend/table label: what computed when the ask took, else "<asked> (ran <what>)".

    >>> precision_label("int8", "int8"), precision_label("fp16", "fp32"), precision_label("int8", None)
    ('int8', 'fp16 (ran fp32)', 'int8')
    """
    verdict = took(asked, compute_precision)
    if verdict is None:
        return asked or compute_precision or "?"
    return compute_precision if verdict else f"{asked} (ran {compute_precision})"


_READER: list = []  # the reader process (a one-worker pool), made on first use, remade after a crash


def inspect_artifact(path: Path, fmt: str, asked: str | None = None) -> dict[str, Any]:
    """inspect_onnx / inspect_tflite by format; never raises: a failure gives compute_precision None.

    The reader runs in a child process (one, kept for the run): it loads the artifact in its
    runtime, and a runtime that crashes on a model (measured: onnxruntime 1.32's full graph
    optimization segfaults on a small ViT's fp16 export with a dynamic batch) must not take the
    run down with it — the crash becomes this artifact's note, and its records say what the
    runner then met. The first call pays the child's start (~1 s), later ones ~10-50 ms.

    >>> inspect_artifact(Path("missing.onnx"), "onnx")["compute_precision"] is None  # doctest: +SKIP
    True
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    if not _READER:
        import atexit

        _READER.append(ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")))
        atexit.register(_close_reader)  # before the interpreter tears down what the pool's thread needs
    try:
        return _READER[0].submit(inspect_here, str(path), fmt, asked).result(timeout=300)
    except BrokenProcessPool:
        _READER.pop().shutdown(wait=False, cancel_futures=True)
        from edgebench.runtimes import FORMATS

        reader = FORMATS[fmt].inspected_as if fmt in FORMATS else fmt
        return _not_read(f"{reader} crashed loading this artifact (its process died: a segfault or abort)")
    except Exception as exc:  # noqa: BLE001 - a timeout, a pool that cannot start: a note, not a crash
        return _not_read(f"{type(exc).__name__}: {exc}")


def _close_reader() -> None:
    while _READER:
        _READER.pop().shutdown(wait=True, cancel_futures=True)


def inspect_here(path: str | Path, fmt: str, asked: str | None = None) -> dict[str, Any]:
    """The precision fields of an artifact, read in this process (see `inspect_artifact`)."""
    from edgebench.runtimes import FORMATS, resolve  # the one table of readers, by format

    try:
        if fmt not in FORMATS:
            raise ValueError(f"no precision inspection for format {fmt!r}")
        return resolve(FORMATS[fmt].inspector)(Path(path), asked)
    except Exception as exc:  # noqa: BLE001 - a failed read-back is a fact of the record, not a crash
        lines = [s for s in str(exc).splitlines() if s.strip()]
        return _not_read(f"{type(exc).__name__}: {lines[0][:200] if lines else ''}")


def _not_read(why: str) -> dict[str, Any]:
    return {"compute_precision": None, "weight_precision": None, "precision_ops": {},
            "precision_note": f"precision not read: {why}", "precision_source": None}


def summarize(
    compute: list[tuple[str, str]],
    others: list[tuple[str, str]],
    weights: list[str],
    asked: str | None,
    source: str,
    fp16_fallback: str,
) -> dict[str, Any]:
    """The record fields from per-op precisions (see the module docstring for the vocabulary)."""
    counts: dict[str, Counter] = {}
    for op, prec in compute + others:
        counts.setdefault(prec, Counter())[op] += 1
    known = [(op, prec) for op, prec in compute if prec != "unknown"]
    decided_by = known or [(op, prec) for op, prec in others if prec != "unknown"]
    compute_precision = _single(Counter(prec for _, prec in decided_by))
    weight_precision = _single(Counter(w for w in weights if w != "unknown"))

    n = len(known)
    if compute_precision is None:
        note = "precision not read: no op with a known element type"
    elif not n:
        note = f"{compute_precision}: no conv/matmul op"
    elif compute_precision == "mixed":
        groups = Counter(prec for _, prec in known).most_common()
        note = "mixed: " + ", ".join(f"{k} of {n} conv/matmul ops {prec} ({_ops(known, prec)})" for prec, k in groups)
    elif compute_precision == "int8":
        note = f"int8: all {n} conv/matmul ops compute on int8"
    elif compute_precision == "int8-dynamic":
        note = f"int8-dynamic: all {n} conv/matmul ops compute on int8 weights and activations quantized at run time"
    elif weight_precision not in (None, "mixed", compute_precision):
        note = f"{weight_precision} storage, {compute_precision} compute: all {n} conv/matmul ops compute in {compute_precision}"
        if weight_precision == "fp16":
            note += f" ({fp16_fallback})"
    else:
        note = f"{compute_precision}: all {n} conv/matmul ops compute in {compute_precision}"
    if len(known) < len(compute):
        note += f"; {len(compute) - len(known)} conv/matmul ops of unknown type"
    if compute_precision in ("int8", "int8-dynamic", "mixed"):
        floats = sorted({op for op, prec in others if prec in ("fp32", "fp16", "bf16")})
        if floats:
            note += f"; float: {', '.join(floats)}"
    verdict = took(asked, compute_precision)
    if verdict is False:
        note = f"{asked} {'partly took' if compute_precision == 'mixed' else 'did not take'}: {note}"
    return {
        "compute_precision": compute_precision,
        "weight_precision": weight_precision,
        "precision_note": note,
        "precision_ops": {prec: dict(sorted(c.items())) for prec, c in sorted(counts.items())},
        "precision_source": source,
    }


def _ops(ops: list[tuple[str, str]], precision: str) -> str:
    """'QLinearConv, FULLY_CONNECTED x2' for the ops of one precision."""
    counts = Counter(op for op, prec in ops if prec == precision)
    return ", ".join(op if k == 1 else f"{op} x{k}" for op, k in sorted(counts.items()))


def _single(counts: Counter) -> str | None:
    if not counts:
        return None
    return next(iter(counts)) if len(counts) == 1 else "mixed"

"""Slow exports (TFLite) in a second process, while this one compresses the next variant.

A TFLite export (litert-torch: torch.export, MLIR lowering, PT2E calibration, a check against
torch) takes 3-9 s per variant and uses one core; compressing a variant (training) uses the
other, with the demo's `[train] threads = 1`. Overlapping them took the demo's TFLite exports
(79 s of 267 s, measured here) off its critical path. Measuring never overlaps: every export
has finished, and the worker has stopped, before the first runner starts.

    >>> worker = ExportWorker.start({"tflite"})   # None where it cannot help (one core, no extra)
    >>> job = worker.submit("tflite", model, request, path)   # request: artifacts.ExportRequest
    >>> job.result()                             # (the artifact's entry of variant.json, seconds)

The model travels as a pickle of the module written by this process into the variant's folder
(`torch.save(model)`), loaded by the worker and deleted once exported; a model that cannot be
pickled (a class defined inside a function, say) is exported here instead.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MODEL_FILE = ".export-model.pt"


def _importable(module: str) -> bool:
    # A module blocked in this process (sys.modules[name] = None, as the tests do to stand for
    # a plain install) must stay blocked: the worker would not know and export anyway.
    if module in sys.modules:
        return sys.modules[module] is not None
    return importlib.util.find_spec(module) is not None


def _warm(modules: tuple[str, ...]) -> None:
    """Import the exporters in the worker while the baseline trains (litert-torch: ~5 s).

    Quietly: litert-torch's imports log to the raw file descriptors (TensorFlow's absl and
    oneDNN lines, torchao's "Failed to load ..._C_mxfp8...so" for CUDA kernels a CPU build
    lacks), which the user's terminal would otherwise show on every run, --quiet or not."""
    import importlib

    import torch  # noqa: F401

    from edgebench.export.tflite import quiet_output

    with quiet_output():
        for module in modules:
            try:
                importlib.import_module(module)
            except ImportError:  # the export itself says how to install it, once, in its record
                pass


def _export_job(fmt: str, model_file: str, request, path: str) -> dict:
    import time

    import torch

    from edgebench.runtimes import FORMATS, resolve

    started = time.perf_counter()
    messages: list[str] = []
    # weights_only=False is safe here: this file is the pickle this edgebench process wrote of
    # the model it built a moment ago, not a file from a user (those load with weights_only).
    model = torch.load(model_file, map_location="cpu", weights_only=False)
    torch.set_num_threads(1)
    entry = resolve(FORMATS[fmt].exporter)(model, request, Path(path), messages.append, "")
    return {"entry": entry, "messages": messages, "seconds": time.perf_counter() - started}


@dataclass
class Job:
    """One export running in the worker; `result()` waits for its artifact entry."""

    future: Future
    fmt: str
    model_file: Path
    request: Any
    path: Path

    def result(self, log=lambda _m: None, name: str = "") -> tuple[dict, float]:
        """(the artifact's entry of variant.json, seconds the export itself took)."""
        import time

        from edgebench.runtimes import FORMATS, resolve

        started = time.perf_counter()
        try:
            done = self.future.result()
        except Exception as exc:  # noqa: BLE001 - a worker that died: export here from the saved model
            import torch

            log(f"{name}: {self.fmt} worker failed ({type(exc).__name__}: {exc}); exporting in this process")
            model = torch.load(self.model_file, map_location="cpu", weights_only=False)  # our own file
            entry = resolve(FORMATS[self.fmt].exporter)(model, self.request, self.path, log, name)
            seconds = time.perf_counter() - started
        else:
            entry, seconds = done["entry"], done["seconds"]
            for message in done["messages"]:
                log(f"{name}{message}")
        self.model_file.unlink(missing_ok=True)
        return entry, seconds


class ExportWorker:
    """One spawned process that makes the artifacts of `background` formats (spawn, not fork: torch's thread pools
    do not survive a fork)."""

    def __init__(self, formats: set[str]) -> None:
        import multiprocessing

        from edgebench.runtimes import FORMATS

        self.formats = formats
        self.pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        self.pool.submit(_warm, tuple(m for f in sorted(formats) for m in FORMATS[f].exporter_needs))

    @classmethod
    def start(cls, formats: set[str]) -> ExportWorker | None:
        """A worker for those of `formats` that export in the background, or None where it
        cannot help: one CPU, none of them background, or their exporter's extra not installed
        (then the in-process export says "unavailable" as before)."""
        from edgebench.runtimes import FORMATS

        slow = {f for f in formats if FORMATS[f].background and all(map(_importable, FORMATS[f].exporter_needs))}
        if (os.cpu_count() or 1) < 2 or not slow:
            return None
        return cls(slow)

    def submit(self, fmt: str, model: Any, request: Any, path: Path) -> Job | None:
        """Start exporting `model` to `path`; None when this worker does not make `fmt` or the
        model cannot travel (export it here)."""
        import torch

        if fmt not in self.formats:
            return None
        model_file = path.with_name(MODEL_FILE)
        try:
            torch.save(model, model_file)
        except Exception:  # noqa: BLE001 - unpicklable (a local class, a closure): export in-process
            model_file.unlink(missing_ok=True)
            return None
        portable = request.portable()
        future = self.pool.submit(_export_job, fmt, str(model_file), portable, str(path))
        return Job(future, fmt, model_file, portable, path)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

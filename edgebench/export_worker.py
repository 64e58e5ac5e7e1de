"""TFLite exports in a second process, while this one compresses the next variant.

A TFLite export (litert-torch: torch.export, MLIR lowering, PT2E calibration, a check against
torch) takes 3-9 s per variant and uses one core; compressing a variant (training) uses the
other, with the demo's `[train] threads = 1`. Overlapping them took the demo's TFLite exports
(79 s of 267 s, measured here) off its critical path. Measuring never overlaps: every export
has finished, and the worker has stopped, before the first runner starts.

    >>> worker = TfliteWorker.start()            # None where it cannot help (one core, no extra)
    >>> job = worker.submit(model, data, path, "int8_static", per_channel=False)
    >>> job.result()                             # the artifact's entry of variant.json

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

import numpy as np

MODEL_FILE = ".export-model.pt"


@dataclass(frozen=True)
class ExportData:
    """The slices of the data set an export needs (what `_export_tflite` reads of a Dataset)."""

    x_test: np.ndarray
    x_calib: np.ndarray


def _tflite_extra_importable() -> bool:
    # A module blocked in this process (sys.modules[name] = None, as the tests do to stand for
    # a plain install) must stay blocked: the worker would not know and export anyway.
    if "litert_torch" in sys.modules:
        return sys.modules["litert_torch"] is not None
    return importlib.util.find_spec("litert_torch") is not None


def _warm() -> None:
    """Import the converter in the worker while the baseline trains (~5 s)."""
    import litert_torch  # noqa: F401
    import torch  # noqa: F401


def _export_job(model_file: str, data: ExportData, path: str, scheme: str, per_channel: bool) -> dict:
    import time

    import torch

    from edgebench.variants import _export_tflite

    started = time.perf_counter()
    messages: list[str] = []
    # weights_only=False is safe here: this file is the pickle this edgebench process wrote of
    # the model it built a moment ago, not a file from a user (those load with weights_only).
    model = torch.load(model_file, map_location="cpu", weights_only=False)
    torch.set_num_threads(1)
    entry = _export_tflite(model, data, Path(path), scheme, per_channel, messages.append, "")
    return {"entry": entry, "messages": messages, "seconds": time.perf_counter() - started}


@dataclass
class Job:
    """One export running in the worker; `result()` waits for its artifact entry."""

    future: Future
    model_file: Path
    data: ExportData
    path: Path
    scheme: str
    per_channel: bool

    def result(self, log=lambda _m: None, name: str = "") -> tuple[dict, float]:
        """(the artifact's entry of variant.json, seconds the export itself took)."""
        import time

        from edgebench.variants import _export_tflite

        started = time.perf_counter()
        try:
            done = self.future.result()
        except Exception as exc:  # noqa: BLE001 - a worker that died: export here from the saved model
            import torch

            log(f"{name}: tflite worker failed ({type(exc).__name__}: {exc}); exporting in this process")
            model = torch.load(self.model_file, map_location="cpu", weights_only=False)  # our own file
            entry = _export_tflite(model, self.data, self.path, self.scheme, self.per_channel, log, name)
            seconds = time.perf_counter() - started
        else:
            entry, seconds = done["entry"], done["seconds"]
            for message in done["messages"]:
                log(f"{name}{message}")
        self.model_file.unlink(missing_ok=True)
        return entry, seconds


class TfliteWorker:
    """One spawned process that makes TFLite artifacts (spawn, not fork: torch's thread pools
    do not survive a fork)."""

    def __init__(self) -> None:
        import multiprocessing

        self.pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        self.pool.submit(_warm)

    @classmethod
    def start(cls) -> TfliteWorker | None:
        """A worker, or None where it cannot help: one CPU, or the TFLite extra not installed
        (then the in-process export says "unavailable" as before)."""
        if (os.cpu_count() or 1) < 2 or not _tflite_extra_importable():
            return None
        return cls()

    def submit(self, model: Any, data: Any, path: Path, scheme: str, per_channel: bool) -> Job | None:
        """Start exporting `model` to `path`; None when the model cannot travel (export it here)."""
        import torch

        model_file = path.with_name(MODEL_FILE)
        try:
            torch.save(model, model_file)
        except Exception:  # noqa: BLE001 - unpicklable (a local class, a closure): export in-process
            model_file.unlink(missing_ok=True)
            return None
        subset = ExportData(np.ascontiguousarray(data.x_test[:128]), np.ascontiguousarray(data.x_calib))
        future = self.pool.submit(_export_job, str(model_file), subset, str(path), scheme, per_channel)
        return Job(future, model_file, subset, path, scheme, per_channel)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

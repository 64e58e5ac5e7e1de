"""Compression methods: one file each, registered here by the `method` decorator.

A method is a frozen dataclass of its parameters (what a `{ method = "...", ... }` step in an
experiment holds) with an `apply(model, ctx)` that returns a *new* model and never edits its
input. Methods that belong to a runtime's exporter (int8/fp16 quantization) also say so via
`export_scheme`, and the pipeline quantizes at export.

    >>> from edgebench.compress import METHODS
    >>> step = METHODS["prune"](kind="structured", ratio=0.5)
    >>> smaller = step.apply(model, ctx)
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

METHODS: dict[str, type] = {}
# One module per method; importing it registers it.
_MODULES = ("prune", "quantize", "cluster", "distill", "lowrank", "compact")


def method(name: str):
    """Class decorator: register a step dataclass under `name`."""

    def register(cls: type) -> type:
        cls.method = name
        METHODS[name] = cls
        return cls

    return register


def method_name(step: Any) -> str:
    return step.method


@dataclass
class StepContext:
    """What a step may use besides the model: data, training defaults, the baseline, progress.

    `data` is an `edgebench.data.Dataset`; `train` a `TrainConfig`; `teacher` the trained
    baseline model (for distillation); `log` a callable that reports progress.
    """

    data: Any
    train: Any
    seed: int = 0
    teacher: Any = None
    model_config: Any = None
    log: Any = print
    notes: dict = field(default_factory=dict)  # steps may leave facts for the record


def _load_all() -> None:
    for module in _MODULES:
        try:
            importlib.import_module(f"edgebench.compress.{module}")
        except ModuleNotFoundError as exc:  # a method file not written yet
            if exc.name != f"edgebench.compress.{module}":
                raise


_load_all()

"""Compression methods: one file each, registered in `METHODS` by the `method` decorator.

Stage 3 of the flow: takes the trained baseline (an nn.Module) and a chain of steps, gives a
new nn.Module per variant; the export stage then makes its artifacts. The `METHODS` table of
modules lives in `edgebench.registry`, so config can validate names without importing this.

A method is a frozen dataclass of its parameters (what a `{ method = "...", ... }` step in an
experiment holds) with an `apply(model, ctx)` that returns a *new* model and never edits its
input. Methods that belong to a runtime's exporter (int8/fp16 quantization) also say so via
`export_scheme`, and the pipeline quantizes at export.

A method module imports only the standard library and edgebench at its top: torch is imported
inside `apply` (or by the helper modules it calls), so reading and validating an experiment
never needs torch.

    >>> from edgebench.compress import METHODS
    >>> step = METHODS.get("prune")(kind="structured", ratio=0.5)
    >>> smaller = step.apply(model, ctx)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgebench.registry import METHODS  # the table of method modules


def method(name: str):
    """Class decorator: register a step dataclass in `METHODS` under `name`."""

    def register(cls: type) -> type:
        cls.method = name
        return METHODS.register(name)(cls)

    return register


def method_name(step: Any) -> str:
    return step.method


@dataclass
class StepContext:
    """What a step may use besides the model: data, training defaults, the baseline, progress.

    `data` is an `edgebench.model.data.Dataset`; `train` a `TrainConfig`; `teacher` the trained
    baseline model (for distillation); `log` a callable that reports progress.
    """

    data: Any
    train: Any
    seed: int = 0
    teacher: Any = None
    model_config: Any = None
    log: Any = print
    notes: dict = field(default_factory=dict)  # steps may leave facts for the record


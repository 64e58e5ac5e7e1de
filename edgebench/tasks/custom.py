"""custom: the user's own metric and loss, imported like a model factory.

    [task]
    evaluate = "mytask:auc"          # (outputs, targets, inputs) -> float
    loss = "mytask:reconstruction"   # (outputs, targets, inputs) -> scalar tensor
    metric = "auc"
    higher_is_better = true

`evaluate` gets the outputs of the variant on the target's runtime as a list of float32 numpy
arrays (one per model output), the targets (`y_test`, or a dict of the `y_test:<name>` arrays)
and the inputs (a list, one array per model input), all for the same samples: the whole test
set once, then resamples of it for the interval (so it must work on any subset, repeats
included). `loss` gets the same as torch tensors (outputs and inputs as tuples) for a batch.
Either may take fewer of the three arguments: they are passed by name to those it declares.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np

from edgebench.registry import user_function
from edgebench.tasks import Task, as_numpy_targets, register
from edgebench.tasks.arrays import as_list

ARGUMENTS = ("outputs", "targets", "inputs")


def _by_name(fn: Callable, ref: str) -> Callable:
    """`fn` called with the arguments it names among outputs, targets, inputs (positionally if it
    names none of them)."""
    params = inspect.signature(fn).parameters
    named = [a for a in ARGUMENTS if a in params]
    if not named:
        return lambda outputs, targets, inputs: fn(*[outputs, targets, inputs][: len(params)])
    return lambda outputs, targets, inputs: fn(**{a: v for a, v in zip(ARGUMENTS, (outputs, targets, inputs))
                                                 if a in named})


@register("custom")
class Custom(Task):
    metric = "metric"
    higher_is_better = True
    default_resamples = 200  # each resample calls the user's evaluate on a resampled test set

    def __init__(self, cfg):
        super().__init__(cfg)
        self._evaluate = _by_name(user_function(cfg.evaluate, "[task] evaluate"), cfg.evaluate)
        self._loss = _by_name(user_function(cfg.loss, "[task] loss"), cfg.loss) if cfg.loss else None
        self._distill = user_function(cfg.distill_loss, "[task] distill_loss") if cfg.distill_loss else None
        if cfg.metric is None:
            self.metric = cfg.evaluate.rpartition(":")[2]

    def loss(self, outputs: tuple, targets: Any, inputs: Any) -> Any:
        if self._loss is None:
            from edgebench.errors import ConfigError

            raise ConfigError('training or fine-tuning needs [task] loss = "package.module:function" '
                              "(or give trained [model] weights and no fine-tuning steps)")
        return self._loss(outputs, targets, inputs if isinstance(inputs, tuple) else (inputs,))

    def distill_loss(self, student: tuple, teacher: tuple, targets: Any, inputs: Any, alpha: float,
                     temperature: float) -> Any:
        if self._distill is not None:
            return self._distill(student, teacher, targets, inputs)
        return super().distill_loss(student, teacher, targets, inputs, alpha, temperature)

    def prepare(self, outputs: list[np.ndarray], targets: Any, inputs: Any) -> tuple:
        n = len(outputs[0])
        return outputs, targets, inputs, n

    def value(self, prepared: tuple, idx: np.ndarray | None = None) -> float:
        outputs, targets, inputs, n = prepared
        if idx is None:
            idx = np.arange(n)
        outs = [o[idx] for o in outputs]
        ys = targets[idx] if targets is not None else None
        xs = as_list(inputs[idx])
        return float(self._evaluate(outs, as_numpy_targets(ys), xs))

"""Tasks: what a model's outputs mean, how they are judged, and how the model learns them.

Stage 1 of the flow, before the model: takes `[task]` (and the data's target arrays); gives the
loss that trains and fine-tunes, the distillation loss between a teacher's and a student's
outputs, and the scoring of a variant's outputs on the target's runtime — per sample where it
can, so every metric gets an interval and a paired difference from the baseline
(`edgebench.tasks.scoring`). One file per built-in task, registered in `TASKS`
(`edgebench.registry`): classify (top-1, the default), detect (mAP), regress (MAE), anomaly
(AUC), and custom (the user's own `evaluate` and `loss`). `arrays` holds the helpers that feed
a model one input or several and read any number of outputs.

    >>> task = make_task(TaskConfig(kind="regress"))
    >>> task.metric, task.higher_is_better
    ('mae', False)
    >>> prepared = task.prepare([np.array([[1.0], [2.0]])], np.array([1.5, 2.0]), [x])
    >>> task.value(prepared), task.value(prepared, np.array([1, 1]))
    (0.25, 0.0)

Torch is imported inside the methods that train, so reading an experiment never needs it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgebench.config.task import TaskConfig
from edgebench.registry import TASKS


def register(name: str):
    """Class decorator: register a Task subclass in TASKS under `name`."""

    def add(cls: type) -> type:
        cls.name = name
        return TASKS.register(name)(cls)

    return add


class Task:
    """The base of every task. Subclasses set `metric`, `higher_is_better` and implement
    `loss`, `prepare` and `value` (and `per_sample` when the metric is a mean over samples)."""

    name = "task"
    metric = "metric"
    higher_is_better = True
    percent = False  # shown in % (accuracy), not as a plain number
    default_resamples = 1000  # bootstrap resamples unless [task] resamples says (fewer: costly metrics)

    def __init__(self, cfg: TaskConfig):
        self.cfg = cfg
        if cfg.metric:
            self.metric = cfg.metric
        if cfg.higher_is_better is not None:
            self.higher_is_better = cfg.higher_is_better

    # ---- which output ------------------------------------------------------------------------

    def pick(self, outputs: Any, names: list[str] | None = None) -> Any:
        """The output this task reads: `[task] output`, an index or a name."""
        which = self.cfg.output
        if isinstance(which, str):
            if not names or which not in names:
                raise ValueError(f"[task] output = {which!r}: the model's outputs are {names}")
            which = names.index(which)
        return outputs[which]

    # ---- training ----------------------------------------------------------------------------

    def loss(self, outputs: tuple, targets: Any, inputs: Any) -> Any:
        raise NotImplementedError

    def distill_loss(self, student: tuple, teacher: tuple, targets: Any, inputs: Any, alpha: float,
                     temperature: float) -> Any:
        """Output matching by default: (1 - alpha) of the task's loss on the labels plus alpha of
        the mean squared difference from the teacher's outputs (every output the two share)."""
        import torch.nn.functional as F

        match = sum(F.mse_loss(s, t.detach()) for s, t in zip(student, teacher) if s.shape == t.shape)
        return (1 - alpha) * self.loss(student, targets, inputs) + alpha * match

    # ---- scoring -----------------------------------------------------------------------------

    def prepare(self, outputs: list[np.ndarray], targets: Any, inputs: list[np.ndarray] | Any) -> Any:
        """The per-sample work, done once (decode, match, score); `value` then reads subsets."""
        raise NotImplementedError

    def value(self, prepared: Any, idx: np.ndarray | None = None) -> float:
        """The metric on the samples `idx` (all by default; repeats allowed: bootstrap)."""
        raise NotImplementedError

    def per_sample(self, prepared: Any) -> np.ndarray | None:
        """Per-sample values whose mean is the metric, or None when it is not a mean."""
        return None

    def extras(self, prepared: Any) -> dict:
        """More numbers for the record's `metric` beside the value (detect: mAP@0.5:0.95)."""
        return {}

    @property
    def resamples(self) -> int:
        return self.cfg.resamples or self.default_resamples

    def describe(self) -> dict:
        return {"kind": self.name, "metric": self.metric, "higher_is_better": self.higher_is_better}


def make_task(cfg: TaskConfig | None = None) -> Task:
    """The Task an experiment's `[task]` names (classify by default)."""
    cfg = cfg or TaskConfig()
    return TASKS.get(cfg.resolved_kind)(cfg)


def as_numpy_targets(y: Any) -> Any:
    """Targets for user code: an array, or a dict of arrays for several."""
    from edgebench.tasks.arrays import Arrays

    return dict(y.items()) if isinstance(y, Arrays) else y

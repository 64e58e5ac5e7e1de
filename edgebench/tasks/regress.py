"""regress: a number (or a vector) per input, judged by the mean absolute error (lower is better).

Targets are float arrays of any shape per sample; the scored output is reshaped to them.
Training: mean squared error. A sample's error is the mean over its target's elements, so the
metric is a mean over samples and its interval comes from them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgebench.tasks import Task, register


@register("regress")
class Regress(Task):
    metric = "mae"
    higher_is_better = False

    def loss(self, outputs: tuple, targets: Any, inputs: Any) -> Any:
        import torch.nn.functional as F

        out = self.pick(outputs)
        return F.mse_loss(out.reshape(targets.shape), targets.to(out.dtype))

    def prepare(self, outputs: list[np.ndarray], targets: Any, inputs: Any) -> np.ndarray:
        out = self.pick(outputs)
        y = np.asarray(targets, dtype=np.float64)[: len(out)]
        return np.abs(out.reshape(y.shape) - y).reshape(len(y), -1).mean(1)

    def value(self, prepared: np.ndarray, idx: np.ndarray | None = None) -> float:
        return float(prepared.mean() if idx is None else prepared[idx].mean())

    def per_sample(self, prepared: np.ndarray) -> np.ndarray:
        return prepared

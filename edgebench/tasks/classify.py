"""classify: one label per input, judged by top-1 accuracy (the default task).

The scored output is `[task] output` (the first by default: a model returning
`(logits, embedding)` is scored on its logits). Training: cross-entropy; distillation: Hinton's
soft targets on the logits (KL at a temperature, scaled by T^2) beside the labels' loss.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgebench.tasks import Task, register


@register("classify")
class Classify(Task):
    metric = "accuracy"
    higher_is_better = True
    percent = True

    def loss(self, outputs: tuple, targets: Any, inputs: Any) -> Any:
        import torch.nn.functional as F

        return F.cross_entropy(self.pick(outputs), targets)

    def distill_loss(self, student: tuple, teacher: tuple, targets: Any, inputs: Any, alpha: float,
                     temperature: float) -> Any:
        import torch.nn.functional as F

        s, t = self.pick(student), self.pick(teacher).detach()
        soft = F.kl_div(F.log_softmax(s / temperature, 1), F.softmax(t / temperature, 1),
                        reduction="batchmean") * temperature**2
        return (1 - alpha) * F.cross_entropy(s, targets) + alpha * soft

    def prepare(self, outputs: list[np.ndarray], targets: Any, inputs: Any) -> np.ndarray:
        logits = self.pick(outputs)
        return (logits.reshape(len(logits), -1).argmax(1) == np.asarray(targets)[: len(logits)]).astype(np.float64)

    def value(self, prepared: np.ndarray, idx: np.ndarray | None = None) -> float:
        return float(prepared.mean() if idx is None else prepared[idx].mean())

    def per_sample(self, prepared: np.ndarray) -> np.ndarray:
        return prepared

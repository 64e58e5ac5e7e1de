"""`[task]`: what the model's outputs mean and how a variant is judged.

    [task]
    kind = "classify"            # classify (default) | detect | regress | anomaly
    # or the user's own, imported like a model factory:
    # evaluate = "mytask:auc"    # (outputs, targets, inputs) -> float, on any subset of the test set
    # loss = "mytask:mse"        # (outputs, targets, inputs) -> scalar tensor, to train and fine-tune
    # metric = "auc"             # the name tables and charts use
    # higher_is_better = true

Names are checked against the task table (`edgebench.registry.TASKS`) without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgebench.errors import ConfigError, did_you_mean


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


@dataclass(frozen=True)
class TaskConfig:
    kind: str | None = None  # None: "custom" when evaluate is given, else "classify"
    # Which output the built-in task reads: an index or an output name (e.g. a model that
    # returns (logits, embedding) is scored on output 0).
    output: int | str = 0
    evaluate: str | None = None
    loss: str | None = None
    distill_loss: str | None = None  # (student_outputs, teacher_outputs, targets, inputs) -> tensor
    metric: str | None = None
    higher_is_better: bool | None = None
    # bootstrap resamples for the metric's interval and its paired difference (default: the
    # task's, 1000; 200 where each resample recomputes a costly metric: detect, custom)
    resamples: int | None = None
    # detect: the host's post-processing (decoding and NMS are not in the exported graph)
    score_threshold: float = 0.05
    iou_threshold: float = 0.5
    max_detections: int = 50

    def __post_init__(self):
        from edgebench.registry import TASKS

        kind = self.resolved_kind
        if kind not in TASKS:
            names = TASKS.names()
            raise ConfigError(f"[task] kind = {kind!r} is not one of {', '.join(names)}{did_you_mean(kind, names)}")
        for key in ("evaluate", "loss", "distill_loss"):
            ref = getattr(self, key)
            _require(ref is None or (":" in ref and all(ref.split(":", 1))),
                     f'[task] {key} = {ref!r}: expected "package.module:function"')
        if kind == "custom":
            _require(self.evaluate is not None, '[task] kind = "custom" needs evaluate = "package.module:function"')
        _require(self.resamples is None or self.resamples >= 100,
                 "[task] resamples must be >= 100 (the 95 % interval needs them)")
        _require(0 <= self.score_threshold < 1 and 0 < self.iou_threshold <= 1 and self.max_detections >= 1,
                 "[task] score_threshold must be in [0, 1), iou_threshold in (0, 1], max_detections >= 1")

    @property
    def resolved_kind(self) -> str:
        if self.kind is not None:
            return self.kind
        return "custom" if self.evaluate else "classify"

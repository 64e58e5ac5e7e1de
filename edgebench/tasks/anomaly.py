"""anomaly: a score per input, judged by the ROC AUC against normal (0) / anomalous (1) labels.

What MLPerf Tiny's anomaly detection benchmark reports. The score is the model's output when it
gives one number per input; when it gives back something the shape of its input (an
autoencoder), the score is the reconstruction's mean squared error. Training: that
reconstruction error on the (normal) training inputs, or, for a model that scores directly, a
binary cross-entropy on labelled training data. AUC is not a mean over samples: its interval
resamples the inputs (bootstrap) and recomputes it (`auc`, equal to sklearn's roc_auc_score).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgebench.tasks import Task, register
from edgebench.tasks.arrays import as_list


def reconstructs(out_shape: tuple, in_shape: tuple) -> bool:
    return tuple(out_shape[1:]) == tuple(in_shape[1:])


@register("anomaly")
class Anomaly(Task):
    metric = "auc"
    higher_is_better = True

    def loss(self, outputs: tuple, targets: Any, inputs: Any) -> Any:
        import torch.nn.functional as F

        out = self.pick(outputs)
        x = inputs[0] if isinstance(inputs, tuple) else inputs
        if reconstructs(tuple(out.shape), tuple(x.shape)):
            return F.mse_loss(out, x)
        return F.binary_cross_entropy_with_logits(out.reshape(len(out)), targets.float())

    def prepare(self, outputs: list[np.ndarray], targets: Any, inputs: Any) -> tuple[np.ndarray, np.ndarray]:
        out = self.pick(outputs)
        x = as_list(inputs)[0][: len(out)]
        if reconstructs(out.shape, x.shape):
            scores = ((out - x.astype(np.float32)) ** 2).reshape(len(out), -1).mean(1)
        else:
            scores = out.reshape(len(out), -1)[:, 0]
        return scores.astype(np.float64), np.asarray(targets)[: len(out)].astype(int)

    def value(self, prepared: tuple[np.ndarray, np.ndarray], idx: np.ndarray | None = None) -> float:
        scores, labels = prepared
        if idx is not None:
            scores, labels = scores[idx], labels[idx]
        return auc(labels, scores)

    def values(self, prepared: tuple[np.ndarray, np.ndarray], idx: np.ndarray) -> np.ndarray:
        """`value` for each row of resampled indices (B, n): the bootstrap, vectorized."""
        scores, labels = prepared
        idx = np.atleast_2d(idx)
        return auc_many(labels[idx], scores[idx])


def auc_many(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """`auc` of each row of (B, n) labels and scores (the bootstrap's resamples at once)."""
    from scipy.stats import rankdata

    positive = labels == 1
    n1, n0 = positive.sum(axis=1), (~positive).sum(axis=1)
    ranks = rankdata(scores, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = ((ranks * positive).sum(axis=1) - n1 * (n1 + 1) / 2) / (n1 * n0)
    return np.where((n1 > 0) & (n0 > 0), out, np.nan)


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney U statistic over the ranks (ties averaged, as sklearn's
    roc_auc_score gives, checked in tests/tasks): ~50x faster than roc_auc_score on 500 inputs,
    which matters when every bootstrap resample recomputes it. NaN with one class only."""
    from scipy.stats import rankdata

    positive = labels == 1
    n1, n0 = int(positive.sum()), int((~positive).sum())
    if not n1 or not n0:
        return float("nan")  # a resample with one class only: AUC is undefined there
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))

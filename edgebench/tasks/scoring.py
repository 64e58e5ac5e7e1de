"""A variant's metric with its uncertainty, and how close its outputs are to the baseline's.

`metric_fields` gives the record's `metric {name, value, ci95, delta, delta_ci95, delta_p,
higher_is_better, n, resamples}`: the value on the n test inputs; its 95 % interval; the
difference from the baseline scored on the same inputs, target and runtime, with its interval
from a *paired* bootstrap (the same resampled inputs for both, so what both get right or wrong
cancels) and a two-sided bootstrap p. Resampling is scipy's (`scipy.stats.bootstrap`, percentile
intervals): vectorized over the per-sample values for metrics that are means over samples
(accuracy, MAE); recomputed on each resample of the inputs for those that are not (AUC, mAP).
(BCa's jackknife cost ~1 s a record on 1,800 inputs for intervals within 0.1 pt of these.)

`output_fidelity` gives, per output, SQNR (dB), cosine similarity and max abs error of the
variant's outputs against the baseline's on the same target and runtime: it separates
variants whose metric saturates, for any task.

    >>> fields = metric_fields(task, task.prepare(outs, y, x), task.prepare(base_outs, y, x), n=len(y))
    >>> fields["value"], fields["delta_ci95"]          # doctest: +SKIP
    (0.874, [-0.012, 0.004])
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from edgebench.tasks import Task


def _finite(values: Any) -> list[float] | None:
    out = [float(v) for v in np.atleast_1d(values)]
    return out if all(math.isfinite(v) for v in out) else None


def _p_from(distribution: np.ndarray) -> float:
    """Two-sided bootstrap p of "no difference": twice the smaller tail at 0, counted as
    (k + 1) / (B + 1) so that it is never 0 on B resamples."""
    d = distribution[np.isfinite(distribution)]
    if not len(d):
        return float("nan")
    tail = min(int((d <= 0).sum()), int((d >= 0).sum()))
    return float(min(1.0, 2 * (tail + 1) / (len(d) + 1)))


def metric_fields(task: Task, prepared: Any, base: Any | None, n: int, resamples: int | None = None,
                  seed: int = 0) -> dict:
    """The record's `metric` dict (see the module docstring); `base` is the baseline's prepared
    scores on the same inputs, or None (the baseline itself, or none measured there)."""
    from scipy.stats import bootstrap

    resamples = resamples or task.resamples
    value = task.value(prepared)
    out: dict = {"name": task.metric, "value": value, "higher_is_better": task.higher_is_better, "n": n,
                 "ci95": None, "delta": None, "delta_ci95": None, "delta_p": None, "resamples": resamples,
                 **task.extras(prepared)}
    if n < 2:
        return out
    rng = np.random.default_rng(seed)
    per_sample = task.per_sample(prepared)
    base_per_sample = task.per_sample(base) if base is not None else None
    if per_sample is not None:
        if np.ptp(per_sample) > 0:
            ci = bootstrap((per_sample,), np.mean, n_resamples=resamples, method="percentile", random_state=rng)
            out["ci95"] = _finite([ci.confidence_interval.low, ci.confidence_interval.high])
        else:
            out["ci95"] = [value, value]
    else:
        ci = bootstrap((np.arange(n),), _statistic(task, prepared), vectorized=hasattr(task, "values"),
                       n_resamples=resamples, method="percentile", random_state=rng)
        out["ci95"] = _finite([ci.confidence_interval.low, ci.confidence_interval.high])
    if base is None:
        return out
    out["delta"] = value - task.value(base)
    if per_sample is not None and base_per_sample is not None:
        diff = per_sample - base_per_sample
        if np.ptp(diff) == 0:
            out["delta_ci95"], out["delta_p"] = [float(diff[0])] * 2, 1.0 if diff[0] == 0 else 0.0
            return out
        res = bootstrap((diff,), np.mean, n_resamples=resamples, method="percentile", random_state=rng)
    else:
        res = bootstrap((np.arange(n),), _statistic(task, prepared, base), vectorized=hasattr(task, "values"),
                        n_resamples=resamples, method="percentile", random_state=rng)
    out["delta_ci95"] = _finite([res.confidence_interval.low, res.confidence_interval.high])
    out["delta_p"] = _p_from(np.asarray(res.bootstrap_distribution))
    return out


def _statistic(task: Task, prepared: Any, base: Any | None = None):
    """The bootstrap's statistic on resampled test indices: the metric (or its difference from
    the baseline's on the same resample); over a batch of resamples at once where the task
    can (`Task.values`: detect, anomaly), one resample at a time otherwise (the user's own)."""
    if hasattr(task, "values"):
        def many(i, axis=-1):
            i = np.asarray(i)
            flat = i.reshape(-1, i.shape[-1])
            v = task.values(prepared, flat) - (task.values(base, flat) if base is not None else 0.0)
            return v.reshape(i.shape[:-1])

        return many
    if base is None:
        return lambda i: task.value(prepared, i)
    return lambda i: task.value(prepared, i) - task.value(base, i)


def output_fidelity(outputs: list[np.ndarray], base: list[np.ndarray] | None, names: list[str]) -> dict | None:
    """Per output: SQNR in dB (10 log10 of the baseline's energy over the difference's; null and
    `identical: true` when equal), cosine similarity and max abs error against the baseline's."""
    if base is None or len(base) != len(outputs):
        return None
    fields: dict = {}
    for name, got, ref in zip(names, outputs, base):
        if got.shape != ref.shape:
            fields[name] = {"sqnr_db": None, "cosine": None, "max_abs": None,
                            "note": f"shape {list(got.shape)} differs from the baseline's {list(ref.shape)}"}
            continue
        g, r = got.astype(np.float64).ravel(), ref.astype(np.float64).ravel()
        noise = float(((g - r) ** 2).sum())
        signal = float((r**2).sum())
        norms = float(np.linalg.norm(g) * np.linalg.norm(r))
        fields[name] = {
            # Identical outputs have no noise: SQNR is infinite, which JSON cannot hold (null + identical).
            "sqnr_db": round(10 * math.log10(signal / noise), 3) if noise > 0 and signal > 0 else None,
            "cosine": round(float(g @ r) / norms, 6) if norms > 0 else None,
            "max_abs": float(np.abs(g - r).max()) if g.size else 0.0,
            **({"identical": True} if noise == 0 else {}),
        }
    return fields

"""A variant's outputs on a target's runtime → the record's metric, fidelity and accuracy fields.

The runner sends back every output of the model on every test input. They are saved in the run
folder (`logits/<variant>__<target>__<runtime>.npy`, a classifier's scored output, as always;
`outputs/<variant>__<target>__<runtime>.npz`, every output by name, for any other task or a
model with several outputs), scored by the experiment's task against the test targets, and
compared with the baseline's outputs on the same target and runtime:

- `metric {name, value, ci95, delta, delta_ci95, delta_p, higher_is_better, n, resamples}`
  (edgebench.tasks.scoring), for every task;
- `fidelity {<output>: {sqnr_db, cosine, max_abs}}` per output, against the baseline;
- for classify, as before: `accuracy`, its Wilson `accuracy_ci95`, the exact McNemar
  `accuracy_delta_p`, `agreement` (top-1 matches) and `logit_rel_err`.

    >>> evalset = EvalSet.load(run_dir, make_task(exp.task))
    >>> fields = score_outputs(evalset, "int8", "local", "onnxruntime", result, run_dir)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgebench.tasks import Task, make_task
from edgebench.tasks.arrays import ArrayLike


@dataclass
class EvalSet:
    """The test inputs and targets of a run (its eval.npz) and the task that scores them; the
    baseline's prepared scores are kept per (target, runtime) once computed."""

    task: Task
    inputs: ArrayLike | None
    targets: ArrayLike | None
    _base: dict = field(default_factory=dict)

    @classmethod
    def load(cls, run_dir: Path, task: Task | None = None) -> EvalSet:
        from edgebench.model.data import eval_inputs, eval_targets

        path = run_dir / "eval.npz"
        return cls(task or make_task(), eval_inputs(path), eval_targets(path))

    @classmethod
    def of(cls, labels_or_set: Any) -> EvalSet | None:
        """An EvalSet as given, or a classifier's labels (what callers passed before tasks)."""
        if labels_or_set is None or isinstance(labels_or_set, EvalSet):
            return labels_or_set
        return cls(make_task(), None, np.asarray(labels_or_set))


def _stem(variant: str, target: str, runtime: str) -> str:
    return f"{variant}__{target}__{runtime}"


def save_outputs(run_dir: Path, stem: str, outputs: list[np.ndarray], names: list[str], task: Task) -> None:
    if task.name == "classify":
        (run_dir / "logits").mkdir(exist_ok=True)
        np.save(run_dir / "logits" / f"{stem}.npy", task.pick(outputs, names))
    if task.name != "classify" or len(outputs) > 1:
        (run_dir / "outputs").mkdir(exist_ok=True)
        np.savez(run_dir / "outputs" / f"{stem}.npz", **dict(zip(names, outputs)))


def load_outputs(run_dir: Path, stem: str, task: Task) -> list[np.ndarray] | None:
    """The outputs saved for `stem`, or None."""
    many = run_dir / "outputs" / f"{stem}.npz"
    if many.is_file():
        with np.load(many, allow_pickle=False) as z:
            return [z[k] for k in z.files]
    one = run_dir / "logits" / f"{stem}.npy"
    return [np.load(one)] if one.is_file() else None


def score_outputs(evalset: EvalSet, variant: str, target: str, runtime: str, result: dict, run_dir: Path,
                  names: list[str] | None = None) -> dict:
    """The record's scoring fields from a (merged) runner result; the outputs are saved under
    `names` (the model's own, from its export), else as the runtime named them."""
    from edgebench.device.runner import decode_outputs
    from edgebench.measure.accuracy import mcnemar_p, wilson_interval
    from edgebench.tasks.scoring import metric_fields, output_fidelity

    task = evalset.task
    outputs = decode_outputs(result)
    runtime_names = [o["name"] for o in result.get("outputs") or []]
    names = names if names and len(names) == len(runtime_names) else runtime_names
    n = int(result.get("n_eval") or (len(outputs[0]) if outputs else 0))
    save_outputs(run_dir, _stem(variant, target, runtime), outputs, names, task)
    # The baseline is compared with itself (agreement 1, identical outputs), as records always had.
    base = outputs if variant == "baseline" else load_outputs(run_dir, _stem("baseline", target, runtime), task)
    fields: dict = {"n_eval": n, "fidelity": output_fidelity(outputs, base, names) if base is not None else None}
    if evalset.targets is None:
        return fields
    targets = evalset.targets[:n]
    inputs = evalset.inputs[:n] if evalset.inputs is not None else None
    prepared = task.prepare(outputs, targets, inputs)
    key = (target, runtime)
    if variant == "baseline":
        evalset._base[key] = prepared
    elif base is not None and key not in evalset._base and len(base[0]) == n:
        evalset._base[key] = task.prepare(base, targets, inputs)
    base_prepared = evalset._base.get(key) if variant != "baseline" else None
    fields["metric"] = metric_fields(task, prepared, base_prepared, n)
    if task.name == "classify":
        logits = task.pick(outputs, names)
        correct = prepared.astype(bool)
        fields["accuracy"] = float(correct.mean())
        fields["accuracy_ci95"] = list(wilson_interval(int(correct.sum()), n))
        fields["metric"]["ci95"] = fields["accuracy_ci95"]  # one interval for accuracy: Wilson's
        if base_prepared is not None:
            fields["accuracy_delta_p"] = fields["metric"]["delta_p"] = mcnemar_p(base_prepared.astype(bool), correct)
        base_logits = task.pick(base, names) if base is not None else None
        if base_logits is not None and base_logits.shape == logits.shape:
            fields["agreement"] = float((logits.argmax(1) == base_logits.argmax(1)).mean())
            fields["logit_rel_err"] = float(np.linalg.norm(logits - base_logits) / max(np.linalg.norm(base_logits), 1e-12))
    return fields

"""`edgebench sensitivity EXPERIMENT`: the drop of the task's metric when only one layer is compressed.

For every Conv/Linear layer of the experiment's baseline, that layer alone is pruned (magnitude,
`--ratio`) or has its weights int8-quantized (`--bits`, symmetric fake quantization), and the
model is evaluated; the layers that hurt most are the ones to spare (`prune`'s `per_layer` and
`skip_sensitive`). This per-layer analysis follows Distiller's sensitivity analysis (Zmora et
al., 2019; Han et al. 2015 §4). The score is the task's metric (top-1 accuracy for a classifier,
mAP@0.5 for a detector, the user's own `evaluate`...), in torch on the test split, not on a
target runtime: it ranks layers, it is not a deployment figure. `drop` is how much worse, in the
metric's units, whichever way is better; where a split has no targets (an anomaly model's
calibration split), the layer's relative change of the outputs stands in.

    $ edgebench sensitivity experiment.toml --method prune --ratio 0.7
    >>> rows = layer_sensitivity(model, data, "prune", ratio=0.7)   # sorted, worst first
    >>> rows[0]["layer"], rows[0]["drop"]
    ('features.0.0', 0.31)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SPLITS = ("test", "calib")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("experiment", help="experiment .toml (its model, data and [train])")
    p.add_argument("--method", choices=("prune", "quantize"), default="prune",
                   help="prune: zero the smallest weights of one layer; quantize: int8 weights of one layer")  # fmt: skip
    p.add_argument(
        "--ratio",
        type=float,
        default=0.5,
        help="prune: share of the layer's weights zeroed (default 0.5)",
    )
    p.add_argument("--bits", type=int, default=8, help="quantize: weight bits (default 8)")
    p.add_argument(
        "--out", type=Path, help="output folder (default results/sensitivity-<experiment name>/)"
    )


def _compress_weight(w, method: str, ratio: float, bits: int):
    """One layer's weight as the method leaves it (a new tensor)."""
    import torch

    if method == "prune":
        from edgebench.compress.layers import magnitude_mask

        return w * magnitude_mask([w], ratio)[0]
    qmax = 2 ** (bits - 1) - 1
    scale = max(float(w.abs().max()) / qmax, 1e-12)
    return torch.fake_quantize_per_tensor_affine(w, scale, 0, -qmax, qmax)


def layer_sensitivity(
    model, data, method: str = "prune", ratio: float = 0.5, bits: int = 8, split: str = "test"
) -> list[dict]:
    """One row per Conv/Linear layer, worst first: {layer, type, params, score, drop}.

    `score` is top-1 accuracy on the split and `drop` the uncompressed model's accuracy minus
    it. `split="calib"` (the calibration split, held out from training) is what `prune`'s
    `skip_sensitive` uses, so no step ever looks at the test set. The model is not modified.
    """
    import copy

    import torch

    from edgebench.compress.layers import prunable_layers
    from edgebench.config import choice

    choice(method, ("prune", "quantize"), "method")
    choice(split, SPLITS, "split")
    model = copy.deepcopy(model).eval()
    score = _scorer(model, data, split)
    base = score()
    rows = []
    for name, module in prunable_layers(model):
        original = module.weight.detach().clone()
        with torch.no_grad():
            module.weight.copy_(_compress_weight(original, method, ratio, bits))
        value = score()
        with torch.no_grad():
            module.weight.copy_(original)  # restore: only one layer is compressed at a time
        drop = (base - value) if score.higher_is_better else (value - base)
        rows.append({"layer": name, "type": type(module).__name__, "params": int(original.numel()),
                     "score": round(value, 6), "drop": round(drop, 6)})  # fmt: skip
    rows.sort(key=lambda r: (-r["drop"], r["layer"]))
    return rows


def _scorer(model, data, split: str):
    """A zero-argument function scoring `model` (as it is when called) on the split, with a
    `higher_is_better` attribute: top-1 agreement with the labels for a classifier (the
    uncompressed model's predictions stand in for calibration labels it lacks), the task's
    metric otherwise, or 1 - relative output change where the split has no targets."""
    import numpy as np

    from edgebench.model.train import predict_logits, predict_outputs

    task = data.task
    x = data.x_test if split == "test" else data.x_calib
    y = data.y_test if split == "test" else data.y_calib
    if task.name == "classify":
        ref = predict_logits(model, x).argmax(1)
        labels = y if y is not None else ref

        def score() -> float:
            return float((predict_logits(model, x).argmax(1) == labels).mean())

        score.higher_is_better = True
    elif y is not None:
        def score() -> float:
            return task.value(task.prepare(predict_outputs(model, x), y, x))

        score.higher_is_better = task.higher_is_better
    else:
        ref_out = predict_outputs(model, x)

        def score() -> float:
            out = predict_outputs(model, x)
            change = max(float(np.linalg.norm(o - r) / max(np.linalg.norm(r), 1e-12)) for o, r in zip(out, ref_out))
            return 1.0 - change

        score.higher_is_better = True
    return score


def plot(rows: list[dict], path: Path, title: str, percent: bool = True) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 0.35 * len(rows) + 1.2))
    ax.barh(
        [r["layer"] for r in rows][::-1], [(100 if percent else 1) * r["drop"] for r in rows][::-1], color="#c0504d"
    )
    ax.set_xlabel("accuracy drop (points)" if percent else "drop of the task's metric (its units)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def table(rows: list[dict], metric: str = "accuracy", percent: bool = True) -> str:
    head = (metric, "drop (pts)") if percent else (metric, "drop")
    lines = [("layer", "type", "params", *head)]
    lines += [
        (r["layer"], r["type"], str(r["params"]),
         f"{100 * r['score']:.1f}%" if percent else f"{r['score']:.4g}",
         f"{100 * r['drop']:+.1f}" if percent else f"{r['drop']:+.4g}")
        for r in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)) for line in lines)


def main(args) -> int:
    from edgebench.config import load_experiment, require
    from edgebench.model.baseline import prepare_data, train_baseline
    from edgebench.model.train import evaluate
    from edgebench.progress import Log

    require(0 <= args.ratio < 1, f"--ratio {args.ratio}: must be in [0, 1)")
    require(2 <= args.bits <= 16, f"--bits {args.bits}: must be between 2 and 16")
    log = Log(quiet=args.quiet or args.json)
    exp = load_experiment(args.experiment)
    data = prepare_data(exp, log)
    model = train_baseline(exp, data, log)  # the same (cached) baseline the pipeline uses
    what = (
        f"{args.ratio:.0%} magnitude pruning"
        if args.method == "prune"
        else f"int{args.bits} weights"
    )
    log(f"sensitivity: {what}, one layer at a time, torch {data.task.metric} on the test split")
    rows = layer_sensitivity(model, data, args.method, args.ratio, args.bits)
    out = args.out or Path("results") / f"sensitivity-{exp.name}"
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "experiment": exp.name, "method": args.method, "ratio": args.ratio, "bits": args.bits,
        "measured_on": "test split, torch", "metric": data.task.metric,
        "baseline_accuracy": evaluate(model, data.x_test, data.y_test, data.task),
        "layers": rows,
    }  # fmt: skip
    (out / "sensitivity.json").write_text(json.dumps(result, indent=2))
    png = plot(rows, out / "sensitivity.png", f"{exp.name}: {data.task.metric} drop with {what} of one layer",
               percent=data.task.percent)
    if args.json:
        print(json.dumps({"out": str(out), "layers": rows}))
    elif not args.quiet:
        print(table(rows, data.task.metric, data.task.percent))
        base = result["baseline_accuracy"]
        shown = f"{100 * base:.1f}%" if data.task.percent else f"{base:.4g}"
        print(f"\nbaseline {data.task.metric} {shown}; wrote {out / 'sensitivity.json'}, {png}")
    return 0

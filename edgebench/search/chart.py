"""The search's chart: best-so-far against trials, and the explored points over accuracy vs the
first objective with the budget lines; the best marked."""

from __future__ import annotations

from pathlib import Path

from edgebench.search import OBJECTIVES, metric

UNITS = {"latency": "p50 ms", "size": "size KB", "energy": "energy mJ"}


def draw_search(study, result: dict, base_record: dict, path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    import optuna

    objective = result["minimize"][0]
    scale = 1 / 1024 if objective == "size" else 1.0
    done = [t for t in study.get_trials(deepcopy=False)
            if t.state == optuna.trial.TrialState.COMPLETE and "pruned_before_export" not in t.user_attrs]
    if not done:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.6))
    feasible = [all(c <= 0 for c in t.user_attrs.get("constraints", [1])) for t in done]
    xs = [t.number for t in done]
    ys = [t.values[0] * scale for t in done]
    ax1.scatter([x for x, f in zip(xs, feasible, strict=True) if f], [y for y, f in zip(ys, feasible, strict=True) if f],
                color="tab:green", label="within budgets", zorder=3)
    ax1.scatter([x for x, f in zip(xs, feasible, strict=True) if not f], [y for y, f in zip(ys, feasible, strict=True) if not f],
                color="tab:gray", marker="x", label="outside budgets", zorder=3)
    best, steps_x, steps_y = None, [], []
    for x, y, f in zip(xs, ys, feasible, strict=True):
        if f and (best is None or y < best):
            best = y
        if best is not None:
            steps_x.append(x)
            steps_y.append(best)
    if steps_x:
        ax1.step(steps_x, steps_y, where="post", color="tab:green", label="best so far")
    base = (metric(base_record, OBJECTIVES[objective]) or float("nan")) * scale
    ax1.axhline(base, color="black", ls=":", lw=1, label=f"baseline {base:.4g}")
    ax1.set_xlabel("trial")
    ax1.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax1.set_ylabel(f"{UNITS[objective]} (measured on the target)")
    ax1.set_title(f"best so far ({result['device_trials']} measured on the device, "
                  f"{result['pruned_before_export']} pruned before export)", fontsize=10)
    ax1.legend(fontsize=8)
    ax1.grid(alpha=0.3)
    drops = [t.user_attrs.get("accuracy_drop_pt", 0.0) for t in done]
    # Accuracy in %, or the task's metric in its units (drawn so that up is better either way).
    percent = base_record.get("accuracy") is not None
    task_metric = base_record.get("metric") or {}
    sign = 1 if percent or task_metric.get("higher_is_better", True) else -1
    base_acc = (base_record.get("accuracy") or 0.0) * 100 if percent else (task_metric.get("value") or 0.0)
    accs = [base_acc - sign * d for d in drops]
    ax2.scatter([y for y, f in zip(ys, feasible, strict=True) if f], [a for a, f in zip(accs, feasible, strict=True) if f],
                color="tab:green", zorder=3)
    ax2.scatter([y for y, f in zip(ys, feasible, strict=True) if not f], [a for a, f in zip(accs, feasible, strict=True) if not f],
                color="tab:gray", marker="x", zorder=3)
    ax2.scatter([base], [base_acc], color="black", marker="s", label="baseline", zorder=4)
    ax2.axhline(base_acc - sign * result["budgets"]["accuracy_drop_pt"], color="tab:red", ls="--", lw=1,
                label=f"max drop {result['budgets']['accuracy_drop_pt']:g}{' pt' if percent else ''}")
    if objective == "latency" and "max_p90_ms" in result["budgets"]:
        ax2.axvline(result["budgets"]["max_p90_ms"], color="tab:orange", ls="--", lw=1, label="max p90 (on p90)")
    if objective == "size" and "max_size" in result["budgets"]:
        ax2.axvline(result["budgets"]["max_size"] / 1024, color="tab:orange", ls="--", lw=1, label="max size")
    if result["best"]:
        b = result["best"]
        bx = {"latency": b["metrics"]["p50_ms"], "size": (b["metrics"]["size_bytes"] or 0) / 1024,
              "energy": b["metrics"]["energy_mj"]}[objective]
        by = (b["metrics"]["accuracy"] or 0) * 100 if percent else ((b["metrics"].get("metric") or {}).get("value") or 0)
        ax2.scatter([bx], [by], s=160, facecolors="none", edgecolors="tab:red",
                    linewidths=2, label=f"best: {b['variant']}", zorder=5)
    ax2.set_xlabel(f"{UNITS[objective]} (measured)")
    ax2.set_ylabel("accuracy % (target's runtime)" if percent else f"{task_metric.get('name', 'metric')} (target's runtime)")
    if sign < 0:
        ax2.invert_yaxis()  # lower is better: up stays better
    ax2.set_title("explored variants", fontsize=10)
    ax2.legend(fontsize=8)
    ax2.grid(alpha=0.3)
    fig.suptitle("edgebench search", fontsize=12)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    fig.savefig(path.with_suffix(".svg"))
    plt.close(fig)
    return path


"""`edgebench search`: the fastest (or smallest, or least energy) variant within the user's
budgets, measured on the target device.

Optuna proposes compression chains from a space (edgebench.search.space); each trial is an
ordinary variant — built, exported, measured on the target's runtime, written as a record with
its `trial` number — so the report, charts, gate and profile work on a search run unchanged.
Budgets are constraints (Optuna's constraints_func): the accuracy drop against the baseline
measured on the same target and runtime, and optionally size, p90 and peak memory. One
objective uses TPE, several NSGA-II (a Pareto set). The study is a journal file in the run
folder, so a killed search resumes where it stopped (`--resume RUN_DIR`).

Frugal with device time: a trial whose torch accuracy already breaks the drop budget is pruned
before any export or measurement; a chain already measured (or no chain: the baseline) reuses
that record; the search reports how many trials ran on the device and for how long.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgebench.errors import ConfigError

OBJECTIVES = {"latency": ("latency_ms", "p50"), "size": ("size_bytes", None), "energy": ("energy_mj", "value")}
# Torch accuracy is the float model's on the host; the runtime's may differ a little (int8
# kernels, fp16): a trial is pruned before export only beyond the budget plus this slack.
TORCH_SLACK_PT = 0.5


@dataclass(frozen=True)
class Settings:
    """A search's budgets, objective(s) and limits (from the command line over `[search]`)."""

    target: str
    runtime: str
    # accuracy points against the baseline on the same target/runtime; for another task, the
    # drop in its metric's own units (0.02 of mAP, 0.05 of MAE: worse by, whichever way is better)
    max_drop: float = 1.0
    max_size: int | None = None  # bytes
    max_p90_ms: float | None = None
    max_rss_mb: float | None = None
    minimize: tuple[str, ...] = ("latency",)
    trials: int | None = 40
    max_minutes: float | None = None
    max_device_trials: int | None = None  # stop once this many trials were measured on the device
    seed: int = 0
    space: dict = field(default_factory=dict)
    sampler: str = "auto"  # "auto": TPE (one objective) or NSGA-II; "grid": every point of a finite space


    def __post_init__(self):
        if self.sampler not in ("auto", "grid"):
            raise ConfigError(f"sampler = {self.sampler!r}: choose auto or grid")
        if not self.minimize or any(m not in OBJECTIVES for m in self.minimize):
            raise ConfigError(f"--minimize {','.join(self.minimize)}: choose from {', '.join(OBJECTIVES)}")
        if self.max_drop < 0:
            raise ConfigError("--max-drop must be >= 0 (accuracy points, or the task metric's units)")
        if self.trials is None and self.max_minutes is None:
            raise ConfigError("give --trials N and/or --max-minutes M")
        if self.trials is not None and self.trials < 1:
            raise ConfigError("--trials must be >= 1")
        for name in ("max_size", "max_p90_ms", "max_rss_mb", "max_minutes", "max_device_trials"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive")

    def budgets(self) -> dict:
        """Each budget that is set: {name: (record path, limit)}."""
        out = {"accuracy_drop_pt": (None, self.max_drop)}
        for name, path in (("max_size", ("size_bytes", None)), ("max_p90_ms", ("latency_ms", "p90")),
                           ("max_rss_mb", ("peak_rss_mb", None))):
            if getattr(self, name) is not None:
                out[name] = (path, getattr(self, name))
        return out


def quality_drop(base: dict, record: dict) -> float:
    """How much worse `record` is than `base` (same target and runtime): accuracy in points, any
    other task's metric in its own units, whichever way is better (negative: better)."""
    if base.get("accuracy") is not None:
        return (base["accuracy"] - (record.get("accuracy") or 0.0)) * 100
    b, m = base.get("metric") or {}, record.get("metric") or {}
    if b.get("value") is None or m.get("value") is None:
        return float("inf")
    return (b["value"] - m["value"]) if b.get("higher_is_better", True) else (m["value"] - b["value"])


def quality_text(record: dict) -> str:
    """'accuracy 91.2%' or 'auc 0.934' for logs and summaries."""
    if record.get("accuracy") is not None:
        return f"accuracy {record['accuracy'] * 100:.1f}%"
    m = record.get("metric") or {}
    return f"{m.get('name', 'metric')} {m['value']:.4g}" if m.get("value") is not None else "no metric"


def metric(record: dict, path: tuple[str, str | None]) -> float | None:
    key, sub = path
    value = record.get(key)
    if sub is not None:
        value = (value or {}).get(sub) if isinstance(value, dict) else None
    return None if value is None else float(value)

"""The search loop: an Optuna study whose trials are variants measured on the target.

On the device pool (`--cluster`) the target is an edgebench.pool.remote.RemoteTarget: a trial's
rounds are jobs on the target's board, or spread over its class, and as many trials run at once
as the target has boards (Optuna's threads; TPE with a constant liar so parallel trials differ).
Builds go to the pool's `cpu` workers or the local `--jobs` processes, else run here one at a
time. The confirmation round runs on one board, so the p50s it compares come from one device.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path

import numpy as np

from edgebench.search import OBJECTIVES, TORCH_SLACK_PT, Settings, metric, quality_drop
from edgebench.search.space import make_space, suggest

STUDY = "search"
CONFIRM_TOP = 3  # the fastest trials within budgets measured again, together, before naming the best


def open_study(run_dir: Path, settings: Settings, log, parallel: bool = False):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own line per trial says it all
    storage = JournalStorage(JournalFileBackend(str(run_dir / "search.journal")))
    if settings.sampler == "grid":
        from edgebench.search.space import grid, make_space

        sampler = optuna.samplers.GridSampler(grid(make_space(settings.space)), seed=settings.seed)
    elif len(settings.minimize) == 1:
        startup = max(4, min(10, (settings.trials or 30) // 4))
        sampler = optuna.samplers.TPESampler(seed=settings.seed, n_startup_trials=startup, constant_liar=parallel)
    else:
        sampler = optuna.samplers.NSGAIISampler(seed=settings.seed, population_size=max(4, min(20, (settings.trials or 40) // 4)))
    study = optuna.create_study(storage=storage, sampler=sampler, study_name=STUDY, load_if_exists=True,
                                directions=["minimize"] * len(settings.minimize))
    stale = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.RUNNING]
    for t in stale:  # the trial a killed search was in: failed, its number not reused
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        log(f"search: trial {t.number} was interrupted; marked failed, the search goes on")
    return study


class Search:
    """Everything one trial needs: the experiment, data, baseline, target, records."""

    def __init__(self, exp, settings: Settings, data, baseline, target, profile, run_dir: Path, run_id: str, log,
                 pool=None):
        from edgebench.measure.records import RecordLog
        from edgebench.measure.rounds import run_options

        self.exp, self.settings, self.data, self.baseline = exp, settings, data, baseline
        self.target, self.profile, self.run_dir, self.run_id, self.log = target, profile, run_dir, run_id, log
        self.pool, self.remote = pool, hasattr(target, "on_board")  # builds there; measured there (RemoteTarget)
        self.lock, self.build_lock = threading.Lock(), threading.Lock()
        self.in_flight: dict[str, threading.Event] = {}  # chain -> set once its trial is done
        self.shared = None  # (experiment, baseline state, data) scattered to the build workers once
        self.confirmed_on: str | None = None
        self.confirmed_ratios: dict[str, dict] = {}  # variant -> latency_ratio of the confirmation rounds
        self.records = RecordLog(run_dir)
        self.options = run_options(exp).for_target(profile)
        self.space = make_space(settings.space)
        self.base_record: dict | None = None
        self.base_torch: float | None = None  # the baseline's task metric in torch (accuracy for a classifier)
        self.evalset = None

    def torch_floor(self) -> TorchFloor:
        task = self.data.task
        return TorchFloor(self.base_torch, self.settings.max_drop, percent=task.name == "classify",
                          higher_is_better=task.higher_is_better)

    def rounds(self, variants: list, target=None) -> list[tuple]:
        """[(variant, merged runner result)]: every variant in the run's rounds, interleaved, on
        `target` (default: the search's), as jobs on the pool when it is a RemoteTarget."""
        from edgebench.measure.rounds import measure_rounds

        target = target or self.target
        if self.remote:
            from edgebench.pool.remote import pool_rounds

            return pool_rounds(target, variants, self.settings.runtime, self.options, self.run_dir)
        return list(measure_rounds(variants, target, self.settings.runtime, self.options, self.run_dir, lambda _m: None))

    def build(self, variant, keep):
        """Build (and export) one trial's variant: on the pool's build workers when there are
        any, else here, one at a time (the exporters are not thread-safe)."""
        from edgebench.export.variants import build_variant
        from edgebench.runtimes import format_of

        formats = {format_of(self.settings.runtime)}
        client = self.pool.builder() if self.pool is not None else None
        if client is None:
            with self.build_lock:
                return build_variant(self.exp, variant, self.baseline, self.data, self.run_dir, formats, lambda _m: None,
                                     keep=keep)
        from edgebench.pool.jobs import build

        with self.lock:
            if self.shared is None:
                self.shared = client.scatter([self.exp, self.baseline.state_dict(), self.data], broadcast=True)
        exp, state, data = self.shared
        future = client.submit(build, exp, variant, state, data, str(Path(self.run_dir).resolve()), formats, keep,
                               resources={"cpu": 1}, pure=False, key=f"build-{variant.name}-{time.time_ns()}")
        try:
            return future.result()[0]
        except Exception as exc:  # noqa: BLE001 - a lost build worker fails this trial, not the search
            raise RuntimeError(f"build job lost: {type(exc).__name__}: {exc}") from None

    def measure(self, variant) -> dict:
        """Measure one built variant on the target; its record, appended to records.jsonl."""
        from edgebench.measure.outputs import EvalSet
        from edgebench.measure.rounds import make_measured_record

        if self.evalset is None:  # the test inputs and targets, scored by the experiment's task
            self.evalset = EvalSet.load(self.run_dir, self.data.task)
        labels = self.evalset
        record = None
        for v, result in self.rounds([variant]):
            record = make_measured_record(v, self.profile, self.settings.runtime, result, self.options, self.run_dir,
                                          self.run_id, labels)
        return record

    def objective(self, trial):
        steps = suggest(trial, self.space, self.exp.train.lr)
        trial.set_user_attr("steps", steps)
        signature = json.dumps(steps, sort_keys=True)
        with self.lock:
            same, busy = self._measured(signature), self.in_flight.get(signature)
            if same is None and busy is None:
                self.in_flight[signature] = threading.Event()
        if busy is not None:  # a parallel trial builds this chain now: take its record when it is done
            busy.wait()
            same = self._measured(signature)  # None: it failed or was pruned there; built again here
        if same is not None:  # this chain (or none: the baseline) was measured already
            trial.set_user_attr("reused", same["variant"])
            self.log(f"trial {trial.number}: {_chain(steps)}: measured already as {same['variant']}, reused")
            return self._score(trial, same)
        try:
            return self._build_and_measure(trial, steps, signature)
        finally:
            with self.lock:
                if busy is None:
                    self.in_flight.pop(signature).set()

    def _build_and_measure(self, trial, steps: list[dict], signature: str):
        from edgebench.config import Variant, parse_step

        name = f"trial-{trial.number:03d}"
        variant = Variant(name, tuple(parse_step(s, f"trial {trial.number}") for s in steps))
        keep = self.torch_floor()
        started = time.perf_counter()
        built = self.build(variant, keep)
        trial.set_user_attr("build_s", round(time.perf_counter() - started, 2))
        if built.info.get("pruned"):
            self.log(f"trial {trial.number}: {_chain(steps)}: pruned before export: {built.info['pruned']}")
            return self._unmeasured(trial, built.info)
        if built.error:
            self.log(f"trial {trial.number}: {_chain(steps)}: {built.error}")
            raise RuntimeError(built.error)  # a failed trial (Optuna records it), the search goes on
        record = self.measure(built)
        record["trial"], record["search_signature"] = trial.number, signature
        with self.lock:
            self.records.append(record)
        trial.set_user_attr("variant", name)
        trial.set_user_attr("device_s", record.get("measure_s") or 0.0)
        if record["status"] != "ok":
            self.log(f"trial {trial.number}: {_chain(steps)}: {record['error']}")
            raise RuntimeError(record["error"])
        return self._score(trial, record)

    def confirm(self, feasible: list, top: int = CONFIRM_TOP) -> dict[str, float]:
        """Measure the `top` fastest trials within budgets again, with the baseline, in one set
        of interleaved rounds: a minimum over many noisy trials favours a lucky measurement (the
        winner's curse), so the best is chosen on these p50s. {variant: p50 ms}, baseline included."""
        from edgebench.export.variants import load_variant

        ranked = sorted(feasible, key=lambda t: t.values[0])
        # the baseline (a trial whose chain is empty reuses it) is measured once, as the reference
        names = list(dict.fromkeys(n for t in ranked if (n := t.user_attrs.get("variant")) not in (None, "baseline")))[:top]
        variants = [v for v in (load_variant(self.run_dir, n) for n in ["baseline", *names] if n) if v is not None]
        if len(variants) < 3:  # the baseline and one candidate: nothing to choose between
            return {}
        target, self.confirmed_on = self.target, self.profile.name
        if self.remote:  # one board: p50s compared across boards would compare the boards too
            boards = target.live_boards()
            if not boards:
                self.log("confirmation skipped: no board of the target is left in the pool")
                return {}
            self.confirmed_on = boards[0]
            target = target.on_board(boards[0])
        from edgebench.measure.latency import latency_ratio

        out, boards, rounds = {}, set(), {}
        for v, result in self.rounds(variants, target):  # in-process: each timed beside the baseline
            boards |= {b.strip() for b in str(result.get("board") or "").split(",") if b.strip()}
            if result.get("status") == "ok":
                out[v.name] = float(np.median(result["latency_samples_ms"]))
                rounds[v.name] = (result.get("latency_rounds") or [], result.get("stopped_by"))
        base = [r.get("p50") for r in rounds.get("baseline", ([], None))[0]]
        self.confirmed_ratios = {  # the statistics of the run's table: ratio to the baseline, 95 % interval
            name: ratio for name, (r, why) in rounds.items()
            if (ratio := latency_ratio(r, why, self.options.precision, name == "baseline", base)) is not None}
        self.confirmed_on = ", ".join(sorted(boards)) or self.confirmed_on  # where the rounds really ran
        self.log(f"confirming the fastest within budgets on {self.confirmed_on}, measured again together: "
                 + ", ".join(f"{n} {p:.4g} ms" for n, p in out.items()))
        return out

    def enough(self, study, _trial) -> None:
        """Optuna callback: stop at `max_device_trials` trials measured on the device."""
        limit = self.settings.max_device_trials
        if limit and sum("device_s" in t.user_attrs for t in study.get_trials(deepcopy=False)) >= limit:
            self.log(f"search: {limit} trials measured on the device (--max-device-trials): stopping")
            study.stop()

    def _unmeasured(self, trial, info: dict):
        """A trial pruned before export still teaches the sampler where the budget breaks: it
        completes as infeasible (its drop budget violated by the torch accuracy's margin), with
        the baseline's value as a placeholder objective that no summary or chart reads."""
        drop = self.torch_floor().drop(info)
        violation = drop - self.settings.max_drop
        trial.set_user_attr("pruned_before_export", info["pruned"])
        trial.set_user_attr("accuracy_drop_pt", round(drop, 3))
        trial.set_user_attr("constraints", [violation])
        trial.set_constraint("accuracy_drop_pt", violation)
        for name, _budget in list(self.settings.budgets().items())[1:]:
            trial.set_constraint(name, 0.0)  # not measured: only the accuracy budget is known to break
        values = [metric(self.base_record, OBJECTIVES[m]) for m in self.settings.minimize]
        return values[0] if len(values) == 1 else values

    def _measured(self, signature: str) -> dict | None:
        if signature == "[]":
            return self.base_record
        return next((r for r in self.records.records
                     if r.get("search_signature") == signature and r["status"] == "ok"), None)

    def _score(self, trial, record: dict):
        """The objective value(s); the budgets' margins as Optuna constraints (<= 0: met)."""
        drop = quality_drop(self.base_record, record)
        constraints = []
        for name, (path, limit) in self.settings.budgets().items():
            value = drop if path is None else metric(record, path)
            constraints.append(float("inf") if value is None else value - limit)
            trial.set_constraint(name, constraints[-1])  # the samplers steer by these (Optuna >= 5)
        trial.set_user_attr("constraints", constraints)
        trial.set_user_attr("variant", record["variant"])
        trial.set_user_attr("accuracy_drop_pt", round(drop, 3))
        values = [metric(record, OBJECTIVES[m]) for m in self.settings.minimize]
        feasible = all(c <= 0 for c in constraints)
        self.log(f"trial {trial.number}: {_chain(trial.user_attrs['steps'])}: "
                 + ", ".join(f"{m} {v:.4g}" for m, v in zip(self.settings.minimize, values, strict=True))
                 + f", drop {drop:+.3g}{' pt' if self.base_record.get('accuracy') is not None else ''}"
                 + ("" if feasible else " (outside the budgets)"))
        return values[0] if len(values) == 1 else values


@dataclasses.dataclass(frozen=True)
class TorchFloor:
    """build_variant's `keep`: a trial whose torch score is already beyond the drop budget (plus
    a slack: TORCH_SLACK_PT points of accuracy, or half the budget of another metric) is not
    exported. A plain object, so it travels to a build worker."""

    base_torch: float
    max_drop: float
    percent: bool = True  # accuracy: the drop in points
    higher_is_better: bool = True

    def drop(self, info: dict) -> float:
        value = info.get("torch_metric", info.get("torch_accuracy"))
        if value is None:
            return 0.0
        diff = (self.base_torch - value) if self.higher_is_better else (value - self.base_torch)
        return diff * (100 if self.percent else 1)

    def __call__(self, info: dict) -> str | None:
        slack = TORCH_SLACK_PT if self.percent else 0.5 * self.max_drop
        if info.get("torch_metric", info.get("torch_accuracy")) is not None and self.drop(info) > self.max_drop + slack:
            unit = " pt" if self.percent else ""
            return (f"its torch score is {self.drop(info):.3g}{unit} under the baseline's, more than the "
                    f"{self.max_drop:g}{unit} budget (+{slack:g}{unit} slack)")
        return None


def _chain(steps: list[dict]) -> str:
    if not steps:
        return "(no compression)"
    parts = []
    for s in steps:
        args = ", ".join(f"{k}={v}" for k, v in s.items() if k != "method")
        parts.append(f"{s['method']}({args})")
    return " -> ".join(parts)


def _ties(ratios: dict[str, dict], best: str) -> list[str]:
    """The confirmed variants whose ratio interval overlaps the best one's: as fast, as far as
    the rounds can tell (the baseline included)."""
    ci = ratios[best].get("ci95")
    if not ci:
        return []
    return [n for n, r in ratios.items() if n != best and r.get("ci95") and r["ci95"][0] <= ci[1] and r["ci95"][1] >= ci[0]]


def summary(study, search: Search, run_dir: Path) -> dict:
    """{run_dir, best, pareto, trials, device_trials, device_seconds}, best kept, not first."""
    import optuna

    done = [t for t in study.get_trials(deepcopy=False)
            if t.state == optuna.trial.TrialState.COMPLETE and "pruned_before_export" not in t.user_attrs]
    feasible = [t for t in done if all(c <= 0 for c in t.user_attrs.get("constraints", [1.0]))]
    by_variant = {r["variant"]: r for r in search.records.records if r["status"] == "ok"}
    pareto = _pareto(feasible)
    best = best_trial(done)
    confirmed = search.confirm(feasible) if search.settings.minimize == ("latency",) else {}
    ratios, ties = search.confirmed_ratios, []
    if confirmed:  # the winner by the confirming re-measurement, not by one trial's luck
        candidates = [t for t in feasible if t.user_attrs.get("variant") in confirmed]
        by_ratio = all(t.user_attrs["variant"] in ratios for t in candidates)  # beside the baseline: steadier
        best = min(candidates, key=lambda t: (ratios[t.user_attrs["variant"]]["value"] if by_ratio
                                              else confirmed[t.user_attrs["variant"]]))
        ties = _ties(ratios, best.user_attrs["variant"]) if by_ratio else []
    measured = [t for t in study.get_trials(deepcopy=False) if "device_s" in t.user_attrs]
    out = {
        "run_dir": str(run_dir),
        "best": _describe(best, by_variant, search.settings) if best else None,
        "confirmed_p50_ms": confirmed,
        "confirmed_ratio": {n: {k: r.get(k) for k in ("value", "ci95", "significant", "rounds", "paired")}
                            for n, r in ratios.items()} if confirmed else {},
        "confirmed_ties": ties,
        "confirmed_on": search.confirmed_on if confirmed else None,
        "pareto": [_describe(t, by_variant, search.settings) for t in pareto],
        "trials": len(study.get_trials(deepcopy=False)),
        "pruned_before_export": sum("pruned_before_export" in t.user_attrs for t in study.get_trials(deepcopy=False)),
        "device_trials": len(measured),
        "device_seconds": round(sum(t.user_attrs["device_s"] for t in measured) + (search.base_record or {}).get("measure_s", 0.0), 2),
        "baseline": {"p50_ms": metric(search.base_record, ("latency_ms", "p50")),
                     "size_bytes": search.base_record.get("size_bytes"), "accuracy": search.base_record.get("accuracy"),
                     "metric": search.base_record.get("metric"),
                     "energy_mj": metric(search.base_record, ("energy_mj", "value"))},
        "budgets": {k: v for k, (_p, v) in search.settings.budgets().items()},
        "minimize": list(search.settings.minimize),
    }
    return out


def best_trial(done: list):
    """The best trial that meets every budget (the first objective's lowest), not the first to
    pass; None when none does."""
    feasible = [t for t in done if all(c <= 0 for c in t.user_attrs.get("constraints", [1.0]))]
    return min(feasible, key=lambda t: (t.values[0], t.number)) if feasible else None


def _pareto(trials: list) -> list:
    def dominates(a, b):
        return all(x <= y for x, y in zip(a.values, b.values, strict=True)) and a.values != b.values

    return sorted([t for t in trials if not any(dominates(o, t) for o in trials)], key=lambda t: t.values)


def _describe(trial, by_variant: dict, settings: Settings) -> dict:
    record = by_variant.get(trial.user_attrs.get("variant"), {})
    names = list(settings.budgets())
    margins = {n: round(-c, 6) for n, c in zip(names, trial.user_attrs.get("constraints", []), strict=False)}
    return {"trial": trial.number, "variant": trial.user_attrs.get("variant"), "steps": trial.user_attrs.get("steps"),
            "chain": _chain(trial.user_attrs.get("steps") or []),
            "metrics": {"p50_ms": metric(record, ("latency_ms", "p50")), "p90_ms": metric(record, ("latency_ms", "p90")),
                        "size_bytes": record.get("size_bytes"), "accuracy": record.get("accuracy"),
                        "metric": record.get("metric"),
                        "accuracy_drop_pt": trial.user_attrs.get("accuracy_drop_pt"),
                        "peak_rss_mb": record.get("peak_rss_mb"),
                        "energy_mj": metric(record, ("energy_mj", "value"))},
            "margins": margins}


def settings_of(manifest: dict) -> Settings:
    raw = dict(manifest["search"])
    raw["minimize"] = tuple(raw.get("minimize") or ("latency",))
    return Settings(**raw)


def settings_dict(settings: Settings) -> dict:
    return dataclasses.asdict(settings)

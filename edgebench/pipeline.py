"""The whole flow: experiment → variants → artifacts → every target's runtimes → records → report.

    >>> run_dir = run_experiment(load_experiment("experiment.toml"), out=Path("results"))

Every job is a plain function of paths and JSON, so a distributed engine can run them later:
building a variant is here, measuring one on a target's runtime is `edgebench.measure.rounds`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import shutil
import time
from pathlib import Path

from edgebench.config import Experiment
from edgebench.errors import ConfigError, EdgebenchError
from edgebench.export.variants import BuiltVariant, build_variant, load_variant
from edgebench.measure.records import new_run_id, repair_tail, update_manifest, write_manifest
from edgebench.measure.rounds import measure_all
from edgebench.runtimes import format_of
from edgebench.targets import TargetProfile, load_targets, open_target


def prepare_run_dir(exp: Experiment, out: Path | None, resume: Path | None) -> tuple[Path, str, Experiment]:
    if resume is not None:
        manifest_path = resume / "manifest.json"
        if not manifest_path.exists():
            raise ConfigError(f"--resume {resume}: not a run folder (no manifest.json)")
        manifest = json.loads(manifest_path.read_text())
        repair_tail(resume / "records.jsonl")
        return resume, manifest["run_id"], exp
    exp_dict = exp.to_dict()
    run_id = new_run_id(exp_dict)
    run_dir = (out or Path("results")) / run_id
    run_dir.mkdir(parents=True, exist_ok=False)
    return run_dir, run_id, exp


def load_run_data(exp: Experiment, log):
    """The experiment's data, split and preprocessed as declared; bad data fails here, early."""
    from edgebench.model.baseline import prepare_data

    log(f"data: {exp.data.source} (image_size {exp.data.image_size}), task {exp.task.resolved_kind}")
    data = prepare_data(exp, log)
    inputs = ", ".join(f"{k} {list(v)}" for k, v in data.describe().get("inputs", {}).items()) or str(data.input_shape)
    what = f"{data.num_classes} classes" if data.task.name in ("classify", "detect") else f"metric {data.task.metric}"
    log(f"data: {len(data.x_train)} train, {len(data.x_calib)} calibration, {len(data.x_test)} test, "
        f"{what}, input {inputs}, normalize {data.normalize}")
    return data


def make_all_variants(exp: Experiment, data, run_dir: Path, formats: set[str], log, pool=None) -> list[BuiltVariant]:
    """Train (or load) the baseline and build every variant, reusing what a resumed run has;
    with a pool that has `cpu` workers, the variants are built there, in parallel."""
    from edgebench.config import Variant
    from edgebench.export.worker import ExportWorker

    data.save_eval(run_dir / "eval.npz")
    variants = (Variant("baseline"), *exp.variants)
    existing = {v.name: load_variant(run_dir, v.name) for v in variants}
    for name in [n for n, v in existing.items() if v is not None]:
        log(f"{name}: already built in this run")
    todo = [v for v in variants if existing[v.name] is None]
    if not todo:
        return [existing[v.name] for v in variants]
    baseline = baseline_model(exp, data, run_dir, log)
    if pool is not None and pool.cpu_workers():
        from edgebench.pool.build import build_with_pool

        built = build_with_pool(pool, exp, todo, baseline, data, run_dir, formats, log)
        return [existing[v.name] or built[v.name] for v in variants]
    # TFLite exports overlap the next variant's compression in a second process; every one has
    # finished (and the worker stopped) before this returns, so nothing overlaps measuring.
    worker = ExportWorker.start(formats)
    made: dict[str, BuiltVariant] = {}
    try:
        for index, variant in enumerate(todo):
            log(f"variant {index + 1}/{len(todo)}: {variant.name}")
            made[variant.name] = build_variant(exp, variant, baseline, data, run_dir, formats, log, worker)
        made = {name: v.finish(log) for name, v in made.items()}
    finally:
        if worker is not None:
            worker.close()
    return [existing[v.name] or made[v.name] for v in variants]


def baseline_model(exp: Experiment, data, run_dir: Path, log):
    """The trained (or loaded) baseline model; a model that fails here is one clear error."""
    from edgebench.model.baseline import train_baseline

    started = time.perf_counter()
    try:
        baseline = train_baseline(exp, data, log=log)
    except EdgebenchError:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's model or data: one clear line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise EdgebenchError(f"baseline: {exp.model.factory} failed to train or load: "
                             f"{type(exc).__name__}: {first}") from exc
    update_manifest(run_dir, baseline_s=round(time.perf_counter() - started, 2))
    return baseline


def run_experiment(
    exp: Experiment, targets: list[str] | None = None, out: Path | None = None, resume: Path | None = None, log=print,
    runtimes: list[str] | None = None, dashboard: bool = False,
) -> Path:
    """Run the whole flow; return the run folder.

    Everything that can be wrong with the input is found before any training: the targets
    (reached, the qemu rootfs prepared; with `[run] cluster`, served by a worker of the pool),
    the data, every step's parameters (when the experiment was read). A run that fails before
    it measured anything leaves no folder.
    """
    if targets:
        exp = dataclasses.replace(exp, run=dataclasses.replace(exp.run, targets=tuple(targets)))
    if runtimes:  # validated by RunConfig (an unknown name exits 2 here)
        exp = dataclasses.replace(exp, run=dataclasses.replace(exp.run, runtimes=tuple(runtimes)))
    with contextlib.ExitStack() as stack:
        pool, pool_targets = None, None
        if exp.run.cluster or exp.run.jobs:
            from edgebench.pool import Pool

            pool = stack.enter_context(Pool.open(exp.run.cluster, exp.run.jobs, log, dashboard, exp.run.tls,
                                                 exp.run.insecure))
        if exp.run.cluster:  # the devices are the pool's workers (each checked its device as it started)
            pool_targets = pool.resolve(exp.run.targets)
            profiles = [t.profile for t in pool_targets]
        else:
            profiles = load_targets(list(exp.run.targets))  # bad names fail before any work
            check_targets(profiles, exp.run.runtimes, log)
        data = load_run_data(exp, log)
        run_dir, run_id, exp = prepare_run_dir(exp, out, resume)
        log(f"run {run_id}: {run_dir}")
        with removed_if_nothing_measured(run_dir, keep=resume is not None):
            write_manifest(run_dir, run_id, exp.to_dict(), targets=[dataclasses.asdict(p) for p in profiles],
                           data=data.describe())
            formats = {format_of(r) for r in exp.run.runtimes}
            variants = make_all_variants(exp, data, run_dir, formats, log, pool)
            if pool_targets is not None:
                from edgebench.pool.measure import measure_with_pool

                measure_with_pool(pool, exp, pool_targets, variants, run_dir, run_id, log)
            else:
                measure_all(exp, profiles, variants, run_dir, run_id, log)
    update_manifest(run_dir, finished=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    finish_report(run_dir, log)  # records.csv, plots, report.html, report.md
    return run_dir


def check_targets(profiles: list[TargetProfile], runtimes: tuple[str, ...], log) -> None:
    """Reach every target before any compression; prepare what prepares itself (the qemu rootfs).

    An unreachable target is an error now (exit 2), not forty error records after minutes of
    compressing; a runtime missing on a reachable target only warns (its records will say
    "unavailable" and how to install it).
    """
    from edgebench.errors import TargetError

    for profile in profiles:
        target = open_target(profile)
        try:
            if getattr(target, "needs_prepare", lambda: False)():
                log(f"{profile.name}: preparing the target once (edgebench targets --prepare {profile.name})")
                target.prepare(log=log)
            status = target.check()
        finally:
            target.close()
        if not status.reachable:
            raise TargetError(f"target {profile.name!r} is not usable: {'; '.join(status.problems)} "
                              "(or leave it out with --targets)")
        wanted = [r for r in runtimes if r in profile.runtimes]
        skipped = [r for r in runtimes if r not in profile.runtimes]
        if skipped:
            log(f"{profile.name}: not measured with {', '.join(skipped)}: the profile lists only "
                f"{', '.join(profile.runtimes)} (add it to the profile's runtimes if the device has it)")
        for problem in status.problems:
            if any(r in problem for r in wanted):
                log(f"{profile.name}: warning: {problem}")


@contextlib.contextmanager
def removed_if_nothing_measured(run_dir: Path, keep: bool):
    """Delete a new run folder when the run fails before its first record: half-made folders
    of failed starts are litter. An interrupted run with records stays, for --resume."""
    try:
        yield
    except BaseException:
        if not keep and not (run_dir / "records.jsonl").exists():
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def finish_report(run_dir: Path, log) -> None:
    from edgebench.analyze.report import write_reports

    write_reports(run_dir, log=log)


def compress_only(exp: Experiment, out: Path | None = None, log=print) -> Path:
    data = load_run_data(exp, log)
    run_dir, run_id, exp = prepare_run_dir(exp, out, None)
    with removed_if_nothing_measured(run_dir, keep=False):
        write_manifest(run_dir, run_id, exp.to_dict(), command="compress", data=data.describe())
        make_all_variants(exp, data, run_dir, {format_of(r) for r in exp.run.runtimes}, log)
    return run_dir

"""The whole flow: experiment → variants → artifacts → every target's runtimes → records → report.

    >>> run_dir = run_experiment(load_experiment("experiment.toml"), out=Path("results"))

Every job is a plain function of paths and JSON, so a distributed engine can run them later.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import time
from pathlib import Path

import numpy as np

from edgebench.config import Experiment
from edgebench.errors import ConfigError
from edgebench.records import (
    RecordLog,
    latency_summary,
    make_record,
    new_run_id,
    repair_tail,
    write_manifest,
)
from edgebench.targets import RunOptions, TargetProfile, load_targets, open_target
from edgebench.variants import FORMAT_OF, BuiltVariant, build_variant, load_variant


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


def make_all_variants(exp: Experiment, run_dir: Path, formats: set[str], log) -> tuple[list[BuiltVariant], object]:
    """Train (or load) the baseline and build every variant, reusing what a resumed run has."""
    from edgebench.config import Variant
    from edgebench.data import load_data
    from edgebench.train import train_baseline

    log(f"data: {exp.data.source} (image_size {exp.data.image_size})")
    data = load_data(exp.data, seed=exp.seed)
    log(f"data: {len(data.x_train)} train, {len(data.x_calib)} calibration, {len(data.x_test)} test, "
        f"{data.num_classes} classes, input {data.input_shape}")
    data.save_eval(run_dir / "eval.npz")
    baseline = None
    built = []
    for variant in (Variant("baseline"), *exp.variants):
        existing = load_variant(run_dir, variant.name)
        if existing is not None:
            log(f"{variant.name}: already built in this run")
            built.append(existing)
            continue
        if baseline is None:
            started = time.perf_counter()
            baseline = train_baseline(exp, data, log=log)
            write_manifest(run_dir, "", {}, baseline_s=round(time.perf_counter() - started, 2))
        log(f"variant {len(built) + 1}/{len(exp.variants) + 1}: {variant.name}")
        built.append(build_variant(exp, variant, baseline, data, run_dir, formats, log))
    return built, data


def _fidelity(logits: np.ndarray, base: np.ndarray | None) -> tuple[float | None, float | None]:
    if base is None or base.shape != logits.shape:
        return None, None
    agreement = float((logits.argmax(1) == base.argmax(1)).mean())
    rel = float(np.linalg.norm(logits - base) / max(np.linalg.norm(base), 1e-12))
    return agreement, rel


def measure_variant(
    variant: BuiltVariant, profile: TargetProfile, target, runtime: str, options: RunOptions, run_dir: Path, run_id: str
) -> dict:
    """One record: the runner's measurement of one variant on one target's runtime."""
    fmt = FORMAT_OF[runtime]
    record = make_record(run_id=run_id, variant=variant.name, target=profile.name, runtime=runtime,
                         emulated=profile.emulated, **variant.static_fields(fmt))  # fmt: skip
    artifact, why = variant.artifact(fmt)
    if artifact is None:
        return {**record, "status": "error", "error": why}
    try:
        result = target.measure(artifact, run_dir / "eval.npz", runtime, options)
    except Exception as exc:  # noqa: BLE001 - a target failure is a record, and the sweep goes on
        result = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
    machine = dict(result.get("machine") or {})
    machine.update(runtime_version=result.get("runtime_version"), threads=options.threads)
    record["machine"] = machine
    record["emulated"] = bool(result.get("emulated", profile.emulated))
    if result.get("status") != "ok":
        return {**record, "status": "error", "error": result.get("error", "unknown runner failure")}
    samples = result["latency_samples_ms"]
    logits = np.frombuffer(base64.b64decode(result["logits_b64"]), dtype=np.float32).reshape(result["logits_shape"])
    logits_dir = run_dir / "logits"
    logits_dir.mkdir(exist_ok=True)
    np.save(logits_dir / f"{variant.name}__{profile.name}__{runtime}.npy", logits)
    base_path = logits_dir / f"baseline__{profile.name}__{runtime}.npy"
    base = np.load(base_path) if base_path.exists() else None
    agreement, rel = _fidelity(logits, base)
    record.update(
        latency_ms=latency_summary(samples), latency_samples_ms=samples,
        peak_rss_mb=result.get("peak_rss_mb"), cpu_time_s=result.get("cpu_time_s"),
        accuracy=result.get("accuracy"), agreement=agreement, logit_rel_err=rel,
        n_eval=result.get("n_eval"), rapl_uj=result.get("rapl_uj"),
    )  # fmt: skip
    record["energy_mj"] = _energy(record, profile)
    return record


def _energy(record: dict, profile: TargetProfile) -> dict:
    from edgebench.energy import estimate

    return estimate(record, profile.power)


def run_options(exp: Experiment) -> RunOptions:
    r = exp.run
    return RunOptions(threads=r.threads, warmup=r.warmup, min_runs=r.min_runs, min_seconds=r.min_seconds,
                      max_seconds=r.max_seconds, timeout_s=r.timeout_s)  # fmt: skip


def measure_all(exp, profiles, variants, run_dir, run_id, log) -> RecordLog:
    records = RecordLog(run_dir)
    base_options = run_options(exp)
    plan = [(p, rt) for p in profiles for rt in exp.run.runtimes if rt in p.runtimes]
    total = len(plan) * len(variants)
    count = 0
    for profile, runtime in plan:
        target = open_target(profile)
        options = base_options.for_target(profile)
        try:
            for variant in variants:  # the baseline first: the others are compared with it
                count += 1
                if (variant.name, profile.name, runtime) in records.done:
                    continue
                started = time.perf_counter()
                record = measure_variant(variant, profile, target, runtime, options, run_dir, run_id)
                record["measure_s"] = round(time.perf_counter() - started, 2)
                records.append(record)
                log(f"[{count}/{total}] {profile.name} {runtime} {variant.name}: {summarize(record)}")
        finally:
            target.close()
    return records


def summarize(record: dict) -> str:
    if record["status"] != "ok":
        return f"error: {record['error']}"
    lat = record["latency_ms"]
    acc = record.get("accuracy")
    return (f"p50 {lat['p50']:.3f} ms, acc {acc * 100:.1f}%, {record['size_bytes'] / 1024:.0f} KB"
            if acc is not None else f"p50 {lat['p50']:.3f} ms")


def run_experiment(
    exp: Experiment, targets: list[str] | None = None, out: Path | None = None, resume: Path | None = None, log=print
) -> Path:
    """Run the whole flow; return the run folder."""
    profiles = load_targets(targets or list(exp.run.targets))  # bad names fail before any work
    if targets:
        exp = dataclasses.replace(exp, run=dataclasses.replace(exp.run, targets=tuple(targets)))
    run_dir, run_id, exp = prepare_run_dir(exp, out, resume)
    log(f"run {run_id}: {run_dir}")
    write_manifest(run_dir, run_id, exp.to_dict(), targets=[dataclasses.asdict(p) for p in profiles])
    formats = {FORMAT_OF[r] for r in exp.run.runtimes}
    variants, _ = make_all_variants(exp, run_dir, formats, log)
    measure_all(exp, profiles, variants, run_dir, run_id, log)
    finish_report(run_dir, log)  # records.csv, plots, report.html, report.md
    write_manifest(run_dir, run_id, exp.to_dict(), finished=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    return run_dir


def finish_report(run_dir: Path, log) -> None:
    from edgebench.analyze.report import write_reports

    write_reports(run_dir, log=log)


def compress_only(exp: Experiment, out: Path | None = None, log=print) -> Path:
    run_dir, run_id, exp = prepare_run_dir(exp, out, None)
    write_manifest(run_dir, run_id, exp.to_dict(), command="compress")
    make_all_variants(exp, run_dir, {FORMAT_OF[r] for r in exp.run.runtimes}, log)
    return run_dir

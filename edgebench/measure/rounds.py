"""Measuring built variants on a target's runtime: runner rounds, merged into one record each.

    >>> records = measure_all(exp, profiles, variants, run_dir, run_id, log)

A variant is measured in `[run] rounds` runner processes, interleaved with the other variants
(a burst of load hits them all alike); its rounds are merged into one record, its outputs scored
by the task and compared with the baseline's on the same target and runtime
(edgebench.measure.outputs: metric with its paired difference, fidelity), priced in energy and
appended to records.jsonl as soon as it is final. With `[run] profile`, each measured record is
also profiled per layer on the same target (edgebench.measure.profiling) and links its profile file.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edgebench.config import Experiment
from edgebench.export.variants import BuiltVariant
from edgebench.measure.outputs import EvalSet, score_outputs
from edgebench.measure.records import RecordLog, latency_summary, make_record, round_summary
from edgebench.runtimes import format_of
from edgebench.runtimes import runtime as runtime_of
from edgebench.targets import RunOptions, TargetProfile, open_target
from edgebench.tasks import make_task


def measure_rounds(variants: list[BuiltVariant], target, runtime: str, options: RunOptions, run_dir: Path, log,
                   reference: BuiltVariant | None = None):
    """Measure every variant in runner processes (rounds), interleaved: round 1 of each, then 2...

    With `options.paired` each variant but the reference (`reference`, else the one named
    "baseline") is timed beside the reference's artifact in the same process; after
    `options.rounds`, rounds are added to the variants whose ratio is not yet within
    ±`options.precision` (edgebench.measure.latency.stop_reason). Yields (variant, merged runner
    result) as each variant's rounds end, the reference first. A variant that fails in a round is
    not measured again; one with no artifact yields its reason.
    """
    from edgebench.measure.latency import stop_reason

    fmt = format_of(runtime)
    if reference is None:
        reference = next((v for v in variants if v.name == "baseline"), None)
    beside = reference.artifact(fmt)[0] if options.paired and reference is not None else None
    results: dict[str, list[dict]] = {v.name: [] for v in variants}
    alone: set[str] = set() if reference is None else {reference.name}  # timed without a partner
    reference_p50s: list[float] | None = None
    todo = list(variants)
    for index in range(max(options.rounds, options.max_rounds)):
        for variant in todo:
            artifact, why = variant.artifact(fmt)
            done = results[variant.name]
            if artifact is None:
                done[:] = [{"status": "error", "error": why, "measure_s": 0.0}]
            elif not done or done[-1].get("status") == "ok":
                pair = beside if beside is not None and variant.name not in alone else None
                result = _measure(target, artifact, run_dir, runtime, options.round(index), pair)
                if pair is not None and result.get("status") != "ok":  # beside the baseline only? alone, then
                    retry = _measure(target, artifact, run_dir, runtime, options.round(index), None)
                    if retry.get("status") == "ok":
                        alone.add(variant.name)
                        retry["pair_note"] = f"timed alone: beside the baseline it failed ({result.get('error')})"
                        result = retry
                done.append(result)
            if variant is reference and done and done[-1].get("status") != "ok":
                beside = None  # a baseline that fails here: the others are timed alone
        if index + 1 < options.rounds:
            log(f"{target.profile.name} {runtime}: round {index + 1}/{options.rounds} measured")
            continue
        finished = []
        for variant in todo:
            done = results[variant.name]
            ok = bool(done) and done[-1].get("status") == "ok"
            why = stop_reason([round_summary_of(r) for r in done], sum(r["measure_s"] for r in done), options) \
                if ok else "error"
            if why is not None:
                finished.append((variant, why))
        for variant, why in finished:
            todo.remove(variant)
            merged = merge_rounds(results[variant.name])
            merged["stopped_by"] = why
            if variant is reference:
                merged["latency_reference"] = True
                reference_p50s = [r["p50"] for r in merged.get("latency_rounds") or []]
            elif reference_p50s:  # used where the rounds were not paired: compared over processes
                merged["reference_p50s"] = reference_p50s
            yield variant, merged
        if not todo:
            break
        log(f"{target.profile.name} {runtime}: round {index + 2}: {len(todo)} variant(s) whose ratio to "
            f"{reference.name if reference else 'the baseline'} is not yet within ±{options.precision:.0%}")


def _measure(target, artifact: Path, run_dir: Path, runtime: str, options: RunOptions, beside: Path | None) -> dict:
    """One runner process on `artifact`, timed beside `beside` (the baseline's artifact) if given."""
    started = time.perf_counter()
    data = run_dir / "eval.npz"
    try:
        if beside is None:
            result = target.measure(artifact, data, runtime, options)
        else:
            result = target.measure(artifact, data, runtime, options, compare=(beside, data), extra_args=["--paired"])
    except Exception as exc:  # noqa: BLE001 - a target failure is a record; the sweep goes on
        result = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
    result["measure_s"] = time.perf_counter() - started
    result["board"], result["worker"] = target.profile.name, "in-process"
    return result


def round_summary_of(result: dict) -> dict:
    """A round's statistics (edgebench.measure.records.round_summary), with its `ratio` to the
    baseline timed beside it (p50 over p50) when it was paired."""
    from edgebench.measure.latency import round_ratio

    summary = round_summary(result.get("latency_samples_ms") or [])
    if result.get("compare_samples_ms"):
        summary["ratio"] = round_ratio(result["latency_samples_ms"], result["compare_samples_ms"])
    return summary


def merge_rounds(results: list[dict]) -> dict:
    """One runner result from several rounds (runner processes): samples pooled and kept per
    round, CPU time and energy summed, times of a phase as their median, memory as its worst
    round; accuracy and logits from the first round (the only one that predicts every input)."""
    failed = [r for r in results if r.get("status") != "ok"]
    if failed:
        return failed[0]
    merged = dict(results[0])
    for key in ("compare_samples_ms", "compare_cpu_time_s"):  # the baseline's, beside it: kept per round as `ratio`
        merged.pop(key, None)
    merged["latency_samples_ms"] = [s for r in results for s in r["latency_samples_ms"]]
    merged["latency_rounds"] = [{**round_summary_of(r),
                                 **{k: r[k] for k in ("measured_at", "board") if r.get(k)}} for r in results]
    notes = [r["pair_note"] for r in results if r.get("pair_note")]
    if notes:
        merged["pair_note"] = notes[0]
    windows = [r["measured_at"] for r in results if r.get("measured_at")]
    merged["measured_at"] = {"start": min(w["start"] for w in windows), "end": max(w["end"] for w in windows)} if windows else None
    for key in ("board", "worker"):  # who measured: one name, or each distinct one in round order
        names = list(dict.fromkeys(r[key] for r in results if r.get(key)))
        merged[key] = ", ".join(names) if names else None
    merged["cpu_time_s"] = sum(r.get("cpu_time_s") or 0.0 for r in results)
    for key in ("load_s", "import_s", "first_inference_ms"):
        values = [r[key] for r in results if r.get(key) is not None]
        merged[key] = float(np.median(values)) if values else None
    for key in ("rss_after_load_mb", "peak_rss_inference_mb", "peak_rss_mb"):
        values = [r[key] for r in results if r.get(key) is not None]
        merged[key] = max(values) if values else None
    rapl = [r.get("rapl_uj") for r in results]
    merged["rapl_uj"] = sum(rapl) if all(v is not None for v in rapl) else None  # type: ignore[arg-type]
    merged["conditions"] = merge_conditions([r.get("conditions") or {} for r in results])
    merged["rounds"] = len(results)
    merged["measure_s"] = sum(r["measure_s"] for r in results)
    return merged


def merge_conditions(rounds: list[dict]) -> dict:
    """The run conditions of a variant's rounds in one dict: the lowest clock and the highest
    temperature seen (throttling shows there), any throttling flag, load before and after."""
    readings = [r.get(when) or {} for r in rounds for when in ("before", "after")]
    clocks = [(x.get("cpu_mhz") or {}).get("cur") for x in readings]
    clocks = [c for c in clocks if c is not None]
    maxima = [(x.get("cpu_mhz") or {}).get("max") for x in readings]
    maxima = [m for m in maxima if m is not None]
    temps = [x["temp_c"] for x in readings if x.get("temp_c") is not None]
    flags = [x["throttled"] for x in readings if x.get("throttled") is not None]
    loads = [x.get("load_avg_1m") for x in readings]
    cooling = [r["cooling"] for r in rounds if r.get("cooling")]
    out: dict = {
        "cpu_mhz": min(clocks) if clocks else None,
        "cpu_mhz_max": max(maxima) if maxima else None,
        "temp_c": max(temps) if temps else None,
        # A Pi reports 0x0 when it never throttled; any other value of any round is kept.
        "throttled": next((f for f in flags if f not in ("0x0", "0")), flags[0] if flags else None),
        "load_avg": {"before": loads[0] if loads else None, "after": loads[-1] if loads else None},
        "unreadable": (rounds[0].get("unreadable") if rounds else None) or {},
    }
    if out["cpu_mhz_max"] is None:
        out["unreadable"] = {**out["unreadable"],
                             "cpu_mhz_max": out["unreadable"].get("cpu_mhz") or "no cpufreq maximum"}
    if cooling:
        out["cooling"] = {"max_temp_c": cooling[0].get("max_temp_c"),
                          "waited_s": round(sum(c.get("waited_s") or 0.0 for c in cooling), 2),
                          "cooled": all(c.get("cooled") for c in cooling)}
    return out


def make_measured_record(
    variant: BuiltVariant, profile: TargetProfile, runtime: str, result: dict, options: RunOptions, run_dir: Path,
    run_id: str, labels: EvalSet | np.ndarray | None = None,
) -> dict:
    """The record of one variant on one target's runtime, from the (merged) runner result.

    `labels`: the run's EvalSet (test inputs, targets and task; a classifier's labels alone do
    too): the outputs are scored by the task, with the paired difference from the baseline's
    outputs on the same target and runtime (edgebench.measure.outputs).
    """
    fmt = format_of(runtime)
    record = make_record(run_id=run_id, variant=variant.name, target=profile.name, runtime=runtime,
                         emulated=profile.emulated, **variant.static_fields(fmt))  # fmt: skip
    machine = dict(result.get("machine") or {})
    machine.update(runtime_version=result.get("runtime_version"), threads=options.threads)
    record["machine"] = machine
    record["emulated"] = bool(result.get("emulated", profile.emulated))
    if result.get("status") != "ok":
        return {**record, "status": "error", "error": result.get("error", "unknown runner failure"),
                "board": result.get("board"), "worker": result.get("worker")}
    samples = result["latency_samples_ms"]
    evalset = EvalSet.of(labels) or EvalSet(make_task(), None, None)
    started = time.perf_counter()
    try:
        scores = score_outputs(evalset, variant.name, profile.name, runtime, result, run_dir,
                               variant.info.get("output_names"))
        scores["score_s"] = round(time.perf_counter() - started, 3)  # host-side scoring: decode, metric, bootstrap
    except Exception as exc:  # noqa: BLE001 - the user's metric or an odd output: this record's error
        return {**record, "status": "error", "error": f"scoring the outputs failed: {type(exc).__name__}: {exc}",
                "board": result.get("board"), "worker": result.get("worker")}
    record.update(scores)
    record.update(
        latency_ms=latency_summary(samples), latency_samples_ms=samples,
        latency_rounds=result.get("latency_rounds") or [round_summary(samples)],
        import_s=result.get("import_s"), load_s=result.get("load_s"), first_inference_ms=result.get("first_inference_ms"),
        rss_after_load_mb=result.get("rss_after_load_mb"),
        peak_rss_inference_mb=result.get("peak_rss_inference_mb"),
        peak_rss_eval_mb=result.get("peak_rss_eval_mb"),
        peak_rss_mb=result.get("peak_rss_mb"), cpu_time_s=result.get("cpu_time_s"),
        eval_batch=result.get("eval_batch"),
        rapl_uj=result.get("rapl_uj"), conditions=result.get("conditions"),
        rounds=result.get("rounds", 1), measure_s=round(result.get("measure_s", 0.0), 2),
        measured_at=result.get("measured_at"), board=result.get("board"), worker=result.get("worker"),
    )  # fmt: skip
    record.update(_latency_intervals(record["latency_rounds"], result, options))
    if record.get("accuracy") is None and result.get("accuracy") is not None:  # the runner's own top-1
        record["accuracy"] = result["accuracy"]
    for note in ("memory_note", "peak_rss_note"):
        if result.get(note):
            record[note] = result[note]
    if result.get("runtime_settings"):
        record["runtime_settings"] = result["runtime_settings"]
    artifact, _ = variant.artifact(fmt)
    device = runtime_of(runtime).device_precision(result.get("executed"), artifact, record.get("precision"))
    if device:  # what runs on this device, read back by the runner, over the host's reading
        record.update({k: v for k, v in device.items() if k != "weight_precision" or v})
    record["energy_mj"] = _energy(record, profile)
    return record


def _latency_intervals(rounds: list[dict], result: dict, options: RunOptions) -> dict:
    """`latency_p50_ci95` and `latency_ratio` (edgebench.measure.latency) of a measured record."""
    from edgebench.measure.latency import latency_ratio, p50_interval

    out = {"latency_p50_ci95": p50_interval([r.get("p50") for r in rounds]),
           "latency_ratio": latency_ratio(rounds, result.get("stopped_by"), options.precision,
                                          reference=bool(result.get("latency_reference")),
                                          baseline_p50s=result.get("reference_p50s"))}
    if result.get("pair_note"):
        out["pair_note"] = result["pair_note"]
    return out


def _energy(record: dict, profile: TargetProfile) -> dict:
    from edgebench.measure.energy import estimate

    return estimate(record, profile.power)


def run_options(exp: Experiment) -> RunOptions:
    r = exp.run
    return RunOptions(threads=r.threads, warmup=r.warmup, min_runs=r.min_runs, min_seconds=r.min_seconds,
                      max_seconds=r.max_seconds, timeout_s=r.timeout_s, rounds=r.rounds, paired=r.paired,
                      precision=r.precision, max_rounds=r.max_rounds)  # fmt: skip


def measure_all(exp, profiles, variants, run_dir, run_id, log) -> RecordLog:
    """Every variant on every (target, runtime); each record appended as soon as it is final."""
    from edgebench.measure.profiling import DEFAULT_RUNS

    records = RecordLog(run_dir)
    base_options = run_options(exp)
    profile_runs = DEFAULT_RUNS if exp.run.profile is True else int(exp.run.profile)
    evalset = EvalSet.load(run_dir, make_task(exp.task))
    plan = [(p, rt) for p in profiles for rt in exp.run.runtimes if rt in p.runtimes]
    total, count = len(plan) * len(variants), 0
    for profile, runtime in plan:
        todo = [v for v in variants if (v.name, profile.name, runtime) not in records.done]
        count += len(variants) - len(todo)
        if not todo:
            continue
        target = open_target(profile)
        options = base_options.for_target(profile)
        try:
            # The baseline first: the others are compared with it.
            # (a resumed run pairs with the baseline measured before it)
            reference = next((v for v in variants if v.name == "baseline"), None)
            for variant, result in measure_rounds(todo, target, runtime, options, run_dir, log, reference):
                record = make_measured_record(variant, profile, runtime, result, options, run_dir, run_id, evalset)
                if profile_runs and record["status"] == "ok":
                    _profile(target, options, run_dir, record, profile_runs, log)
                records.append(record)
                count += 1
                log(f"[{count}/{total}] {profile.name} {runtime} {variant.name}: {summarize(record)}")
        finally:
            target.close()
    return records


def _profile(target, options: RunOptions, run_dir: Path, record: dict, runs: int, log) -> None:
    """`[run] profile`: the record's per-layer profile on the same target, right after its
    measurement (never during another's); the record links the file, or says why there is none."""
    from edgebench.measure.profiling import profile_on, profile_path

    doc = profile_on(target, options.round(0), run_dir, record, runs)
    record["profile"] = str(profile_path(run_dir, record["variant"], record["target"], record["runtime"])
                            .relative_to(run_dir))
    if doc.get("status") != "ok":
        record["profile_error"] = doc.get("error")
        log(f"{record['target']} {record['runtime']} {record['variant']}: no profile: {doc.get('error')}")
    elif not doc.get("measured"):
        record["profile_note"] = doc.get("label")


def summarize(record: dict) -> str:
    if record["status"] != "ok":
        return f"error: {record['error']}"
    lat = record["latency_ms"]
    p50 = f"p50 {lat['p50']:.3f} ms{ratio_text(record.get('latency_ratio'), ' ')}"
    acc = record.get("accuracy")
    if acc is not None:
        return f"{p50}, acc {acc * 100:.1f}%, {record['size_bytes'] / 1024:.0f} KB"
    metric = record.get("metric") or {}
    if metric.get("value") is not None:
        return f"{p50}, {metric['name']} {metric['value']:.4g}, {record['size_bytes'] / 1024:.0f} KB"
    return p50


def ratio_text(ratio: dict | None, prefix: str = "") -> str:
    """'×0.56 [0.55–0.57]' (with ' n.s.' when the interval holds 1.0); '' for none or the baseline.

    >>> ratio_text({"value": 1.01, "ci95": [0.98, 1.04], "significant": False, "rounds": 4})
    '×1.01 [0.98–1.04] n.s.'
    """
    if not isinstance(ratio, dict) or ratio.get("value") is None or ratio.get("reference"):
        return ""
    ci = ratio.get("ci95")
    text = f"×{ratio['value']:.3g}" + (f" [{ci[0]:.3g}–{ci[1]:.3g}]" if ci else f" ({ratio.get('rounds')} round)")
    return prefix + text + (" n.s." if ratio.get("significant") is False else "")

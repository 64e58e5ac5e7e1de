"""Measuring through the pool: every (variant, target, runtime, round) a job on its device.

Rounds are submitted interleaved (round 1 of every variant, then round 2, ...), as in the
in-process loop; a job takes its target's token (`board:<name>` or `class:<class>`), so one
device runs one measurement at a time. Results stream back; a variant's record is made and
appended to records.jsonl as soon as its last round is in (the baseline's first on each target
and runtime: the others are compared with it), so a killed client keeps every finished record
and `--resume` goes on from there.

Faults: a worker that dies mid-job has its job rescheduled by Dask on another worker holding the
token (another board of the class); a job whose token no live worker holds any more becomes an
error record naming the lost board; a board whose device stops answering is retired from the
pool for the rest of the run, its reason kept in the manifest (`pool.removed`) for the report.

`[run] profile`: a measured record's per-layer profile is one more job on its target's token
(the board it names, or one of its class), urgent so it runs next there; the record is appended
once its profile is in, linking the file as the in-process run does. It never overlaps another
measurement: the worker has one thread and the token.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

LOST_GRACE_S = 10.0  # a token with no live worker this long: its queued jobs are lost
STATUS_EVERY_S = 15.0
CHECK_EVERY_S = 1.0  # how often the client looks for tokens no live worker holds
PROFILE = "profile"  # the round index of a profile job in the loop's bookkeeping


def measure_with_pool(pool, exp, targets, variants, run_dir: Path, run_id: str, log):
    from distributed import as_completed

    from edgebench.measure.profiling import DEFAULT_RUNS
    from edgebench.measure.records import RecordLog, update_manifest
    from edgebench.measure.rounds import _profile as link_profile
    from edgebench.measure.rounds import make_measured_record, merge_rounds, run_options, summarize
    from edgebench.pool.jobs import blob, measure_round
    from edgebench.runtimes import format_of

    records = RecordLog(run_dir)
    base = run_options(exp)
    profile_runs = DEFAULT_RUNS if exp.run.profile is True else int(exp.run.profile)
    from edgebench.measure.outputs import EvalSet
    from edgebench.tasks import make_task

    labels = EvalSet.load(run_dir, make_task(exp.task))  # the test inputs and targets, scored by the task
    eval_blob = pool.client.scatter(blob(run_dir / "eval.npz"), broadcast=True)
    by_name = {v.name: v for v in variants}
    job_retried: dict[tuple, str] = {}  # (key, round) -> the board it was first sent to

    def submit(job, key, t, index, priority=0):
        return pool.client.submit(measure_round, *job, resources={t.resource: 1}, pure=False, priority=priority,
                                  key=f"measure-{key[0]}-{t.name}-{key[2]}-r{index}-{time.time_ns()}")

    plan = [(t, rt) for t in targets for rt in exp.run.runtimes if rt in t.profile.runtimes]
    futures, meta, results = {}, {}, defaultdict(list)
    expected, blobs, missing = {}, {}, []
    reference_p50s: dict[tuple, list] = {}  # (target, runtime) -> the baseline's per-round p50s
    for t, rt in plan:
        options = base.for_target(t.profile)
        todo = [v for v in variants if (v.name, t.name, rt) not in records.done]
        # Each variant timed beside the baseline in the same runner process; a fixed number of
        # rounds here (rounds are not added for precision on the pool: its jobs are submitted at once).
        beside = by_name["baseline"].artifact(format_of(rt))[0] if options.paired and "baseline" in by_name else None
        if beside is not None and beside not in blobs:
            blobs[beside] = pool.client.scatter(blob(beside))
        for index in range(options.rounds):
            for v in todo:
                artifact, why = v.artifact(format_of(rt))
                key = (v.name, t.name, rt)
                if artifact is None:
                    if index == 0:  # nothing to measure: its error record is made below
                        results[key].append((0, {"status": "error", "error": why, "measure_s": 0.0}))
                        expected[key] = 1
                        missing.append((key, options))
                    continue
                expected[key] = options.rounds
                if artifact not in blobs:
                    blobs[artifact] = pool.client.scatter(blob(artifact))
                job = (blobs[artifact], eval_blob, rt, options.round(index))
                if beside is not None and v.name != "baseline":
                    job += (["--paired"], blobs[beside])
                fut = submit(job, key, t, index)
                futures[fut.key], meta[fut.key] = fut, (key, t, options, index, job)
    profiles = {t.name: t for t in targets}
    pending_baseline = {(t, rt) for (v, t, rt) in expected if v == "baseline"}
    held: list[tuple] = []
    total, count = len(expected), 0

    def finish(key, options):
        nonlocal count
        name, tname, rt = key
        if name != "baseline" and (tname, rt) in pending_baseline:
            held.append((key, options))
            return
        rounds = [r for _, r in sorted(results.pop(key), key=lambda ir: ir[0])]  # round 0 evaluated
        merged = merge_rounds(rounds)
        merged["stopped_by"], merged["latency_reference"] = "rounds", name == "baseline"
        merged["reference_p50s"] = reference_p50s.get((tname, rt))  # where rounds were not paired
        record = make_measured_record(by_name[name], profiles[tname].profile, rt, merged, options,
                                      run_dir, run_id, labels)
        retried = [r["retried_after"] for r in rounds if r.get("retried_after")]
        if retried:  # rounds first sent to a board that stopped answering, measured on another
            record["retried_after"] = retried
        if profile_runs and record["status"] == "ok":  # appended when its profile is in
            artifact, _ = by_name[name].artifact(format_of(rt))
            job = (blobs[artifact], eval_blob, rt, options.round(0), ["--profile-runs", str(profile_runs)])
            fut = submit(job, key, profiles[tname], PROFILE, priority=1)
            futures[fut.key], meta[fut.key] = fut, (key, profiles[tname], options, PROFILE, record)
            done.add(fut)
            return
        publish(record)

    def publish(record):
        nonlocal count
        name, tname, rt = key = (record["variant"], record["target"], record["runtime"])
        records.append(record)
        count += 1
        log(f"[{count}/{total}] {tname} {rt} {name} on {record.get('board') or '?'}: {summarize(record)}")
        if name == "baseline":
            reference_p50s[key[1:]] = [r.get("p50") for r in record.get("latency_rounds") or []]
            pending_baseline.discard(key[1:])
            for args in [h for h in held if h[0][1:] == key[1:]]:
                held.remove(args)
                finish(*args)

    done = as_completed(list(futures.values()), with_results=False)
    for key, options in missing:
        finish(key, options)
    lost_since: dict[str, float] = {}
    finished: dict[str, int] = defaultdict(int)  # rounds answered per target
    last_status = last_check = time.monotonic()
    while futures or held:
        if not futures:  # a baseline that never came: the others are recorded without it (and profiled)
            pending_baseline.clear()
            for args in list(held):
                held.remove(args)
                finish(*args)
            continue
        batch = done.next_batch(block=False)
        for fut in batch:
            if fut.key not in meta:  # cancelled below (its token had no live worker): recorded there
                continue
            key, t, options, index, job = meta.pop(fut.key)
            futures.pop(fut.key, None)
            try:
                result = fut.result()
            except Exception as exc:  # noqa: BLE001 - KilledWorker and the like: this job's record says so
                result = {"status": "error", "error": f"lost: {type(exc).__name__}: {exc}", "measure_s": 0.0}
            if index == PROFILE:  # `job` is the record waiting for its profile
                if result.get("unreachable") and result.get("board") not in pool.removed:
                    _retire(pool, result, update_manifest, run_dir, log)
                link_profile(Answered(result), options, run_dir, job, profile_runs, log)
                publish(job)
                continue
            if result.get("unreachable"):
                if result.get("board") not in pool.removed:
                    _retire(pool, result, update_manifest, run_dir, log)
                if len(t.boards) > 1 and not job_retried.get((key, index)):  # another board of the class
                    job_retried[(key, index)] = result["board"]
                    again = submit(job, key, t, index)
                    futures[again.key], meta[again.key] = again, (key, t, options, index, job)
                    done.add(again)
                    log(f"{t.name} {key[2]} {key[0]} round {index + 1}: {result['board']} unreachable, "
                        "retried on another board of the class")
                    continue
            if job_retried.get((key, index)):
                result["retried_after"] = job_retried[(key, index)]
            results[key].append((index, result))
            finished[t.name] += 1
            if len(results[key]) == expected[key]:
                finish(key, options)
        if not batch:
            time.sleep(0.1)
        now = time.monotonic()
        if now - last_check < CHECK_EVERY_S:
            continue
        last_check = now  # asking the scheduler for its workers is an RPC: not on every wake-up
        alive = {r for w in pool.workers().values() for r, n in w["resources"].items() if n}
        for fkey, fut in list(futures.items()):
            key, t, options, index, _job = meta[fkey]
            if t.resource in alive:
                lost_since.pop(t.resource, None)
                continue
            since = lost_since.setdefault(t.resource, now)
            if now - since >= LOST_GRACE_S:
                fut.cancel()
                futures.pop(fkey)
                meta.pop(fkey)
                why = pool.removed.get(t.name) or "its worker died or left the pool"
                if index == PROFILE:
                    link_profile(Answered({"status": "error", "error": f"lost: no worker holding {t.resource} "
                                                                        f"is left ({why})"}), options, run_dir, _job,
                                 profile_runs, log)
                    publish(_job)
                    continue
                results[key].append((index, {"status": "error", "measure_s": 0.0,
                                             "error": f"lost: no worker holding {t.resource} is left ({why}); "
                                                      "--resume retries it"}))
                if len(results[key]) == expected[key]:
                    finish(key, options)
        if now - last_status >= STATUS_EVERY_S:
            last_status = now
            log(_status(pool, futures, meta, finished))
    return records


class Answered:
    """A target whose `measure` answers a runner result a pool job already took (a profile job:
    it ran on the board; its document is made here, by edgebench.measure.profiling)."""

    def __init__(self, result: dict):
        self.result = result

    def measure(self, *_args, **_kwargs) -> dict:
        return self.result


def _retire(pool, result: dict, update_manifest, run_dir: Path, log) -> None:
    pool.retire(result, log)
    update_manifest(run_dir, pool={"removed": dict(pool.removed)})


def _status(pool, futures: dict, meta: dict, finished: dict) -> str:
    """One line: jobs queued / running / done per target, from the scheduler's view."""
    processing = pool.client.processing()
    running = {k for keys in processing.values() for k in keys}
    per: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for fkey in futures:
        per[meta[fkey][1].name][1 if fkey in running else 0] += 1
    parts = [f"{name}: {per[name][0]} queued, {per[name][1]} running, {finished.get(name, 0)} done"
             for name in sorted({*per, *finished})]
    return "pool: " + ("; ".join(parts) if parts else "idle")

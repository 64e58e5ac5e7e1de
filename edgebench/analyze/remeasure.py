"""A/B: measure the reference run's artifacts and the candidate's again, interleaved, here and now.

`edgebench check CANDIDATE_RUN --baseline REFERENCE_RUN` compares latency the way
`asv continuous` compares two commits: both artifacts of each (variant, target, runtime) run
on the same target and runtime, with the same threads, round after round; each round is one
fresh runner process that loads both and alternates blocks of ~5 ms of calls between them
(A B B A ...), so whatever the machine does meanwhile (neighbours, frequency, a slower runtime
build) hits both alike and cancels in their ratio. The process is the unit of replication
(its memory layout, its luck with the scheduler); the interleaving inside it is what makes a
round's ratio steady: for a 20-µs model under load, the round-to-round sd of log(B/A) was
18-31 % with one process per artifact and 1-2 % interleaved in one. A whole-model slowdown, invisible to a
rule relative to the run's own reference model, shows as it is.

    >>> plan = plan_ab(reference_side, candidate_side, ABOptions())
    >>> outcomes, stored_why = measure_ab(plan, GateOptions(), ABOptions(), log=print)

Each round: every open pair, in a shuffled order (a burst of load hits a slice of every pair),
one process timing both artifacts, which one loads and runs first alternating between rounds; pairs stop after `min_rounds` once `latency_gate.decided` says more rounds
cannot change their side of the line, at the latest after `max_rounds`. An artifact identical
(sha256) to the reference's on the same runtime cannot differ in latency by the artifact: it
is not measured unless asked (`--measure-identical`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edgebench.analyze.baseline import Side
from edgebench.analyze.latency_gate import decided, paired_test, sample_stat
from edgebench.analyze.regressions import GateOptions, LatencyOutcome, judged
from edgebench.errors import EdgebenchError

if typing.TYPE_CHECKING:
    from edgebench.targets import RunOptions, Target, TargetProfile, TargetStatus

Key = tuple[str, str, str]
# Each runner process times each artifact for `seconds` and at least MIN_RUNS runs (a slow
# model). Measured here (2-core VM, a 0.4 ms CNN, runner start-up ~0.3 s): the per-process
# minimum's round-to-round sd was 1.9 % with 0.1 s of timing and 1.4 % with 0.2 s, for +20 %
# wall time per process; 0.05 s gave 2.5 % with larger outliers (13.8 %) (one process per
# artifact then; interleaved in one process the spread is smaller still). Start-up dominates.
MIN_RUNS = 10


@dataclass(frozen=True)
class ABOptions:
    """How much to measure. Simulated by resampling measured per-process minima of one model
    during heavy neighbour load (45 % of processes slowed by 7-37 %), the defaults raised a false
    alarm on an unchanged pair 0.25 % of the time and caught +20 % 99.5 % and +25 % 99.9 %,
    in 5.7, 10.9 and 7.8 rounds on average; with little load 4.4-6.2 rounds. Measured for real
    by benchmarks/gate_noise.py (4.2-6.8 rounds on average per case, all four targets met)."""

    min_rounds: int = 4  # two blocks of both orders: an order effect cancels before any verdict
    max_rounds: int = 16
    seconds: float = 0.1  # of timing per artifact in each runner process
    measure_identical: bool = False
    seed: int = 0  # of the shuffled pair order: the same runs give the same schedule


@dataclass
class Pair:
    """One (variant, target, runtime) measured A/B, and its per-round statistics so far."""

    key: Key
    index: int
    reference: Path
    candidate: Path
    reference_data: Path
    candidate_data: Path
    reference_values: list[float] = field(default_factory=list)
    candidate_values: list[float] = field(default_factory=list)
    error: str | None = None
    failed_side: str | None = None  # "reference" | "candidate"
    done: bool = False


@dataclass
class Plan:
    pairs: list[Pair] = field(default_factory=list)
    identical: dict[Key, str] = field(default_factory=dict)  # key -> sha256 prefix
    stored: dict[Key, str] = field(default_factory=dict)  # key -> why it is judged on stored samples
    profiles: dict[str, TargetProfile | str] = field(default_factory=dict)  # a profile, or why none
    options: dict[str, RunOptions] = field(default_factory=dict)  # per target name
    notes: list[str] = field(default_factory=list)


def sha256(path: Path) -> str:
    """Of the artifact and its external-data side file, if it has one (ONNX `<name>.data`)."""
    digest = hashlib.sha256()
    for part in (path, path.with_name(path.name + ".data")):
        if part.exists():
            digest.update(part.read_bytes())
    return digest.hexdigest()


def artifact(run_dir: Path, variant: str, fmt: str) -> Path | None:
    """RUN/variants/<variant>/<file> of `fmt` as variant.json names it, if it is on disk."""
    import json

    info_path = run_dir / "variants" / variant / "variant.json"
    try:
        name = json.loads(info_path.read_text())["artifacts"][fmt]["file"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    path = info_path.parent / str(name)
    return path if path.is_file() else None


def manifest_profiles(manifest: dict, notes: list[str]) -> dict[str, TargetProfile | str]:
    """TargetProfiles rebuilt from manifest["targets"] (name -> profile, or -> why not)."""
    from edgebench.targets import profile_from_table

    out: dict[str, TargetProfile | str] = {}
    for table in manifest.get("targets") or []:
        if not isinstance(table, dict) or not isinstance(table.get("name"), str):
            continue
        dropped: list[str] = []
        try:
            out[table["name"]] = profile_from_table(table, f"target {table['name']!r} of the run's manifest", dropped)
        except EdgebenchError as exc:
            out[table["name"]] = f"its profile in the manifest is not usable ({exc})"
        if dropped:
            notes.append(f"note: target {table['name']}: manifest keys this edgebench does not know were "
                         f"ignored: {', '.join(sorted(dropped))}")
    return out


def run_options(manifest: dict, profile: TargetProfile, seconds: float) -> RunOptions:
    """The run's threads, warm-up and timeout with the profile's overrides; A/B's own timing."""
    from edgebench.targets import RunOptions

    run = (manifest.get("experiment") or {}).get("run") or {}
    defaults = RunOptions()
    base = RunOptions(threads=int(run.get("threads") or defaults.threads),
                      warmup=int(run.get("warmup") if run.get("warmup") is not None else defaults.warmup),
                      timeout_s=float(run.get("timeout_s") or defaults.timeout_s))
    options = base.for_target(profile)
    return dataclasses.replace(options, min_runs=MIN_RUNS, min_seconds=2 * seconds, max_seconds=max(10.0, 40 * seconds),
                               eval_limit=0, rounds=1, evaluate=False)


def _usable(profile: TargetProfile, runtime: str, cache: dict[str, TargetStatus | str]) -> str | None:
    """None when the target can run `runtime` now, else why not (checked once per target)."""
    from edgebench.targets import open_target

    if profile.name not in cache:
        try:
            target = open_target(profile)
            try:
                cache[profile.name] = target.check()
            finally:
                target.close()
        except Exception as exc:  # noqa: BLE001 - an unusable target falls back to stored samples
            cache[profile.name] = f"{type(exc).__name__}: {exc}"
    status = cache[profile.name]
    if isinstance(status, str):
        return f"target {profile.name} unusable now ({status})"
    if not status.reachable:
        return f"target {profile.name} unreachable now ({'; '.join(status.problems) or 'no reason given'})"
    if status.runtimes.get(runtime) is None:
        return f"{runtime} not available on {profile.name} now ({'; '.join(status.problems) or 'not installed'})"
    return None


def plan_ab(reference: Side, candidate: Side, ab: ABOptions, refuse: str | None = None) -> Plan:
    """Which pairs to measure, which are identical, and which stay on stored samples (and why).

    `refuse` (e.g. "--no-remeasure") sends every pair to stored samples with that reason.
    """
    plan = Plan()
    keys = [k for k, r in candidate.by_key().items()
            if r.get("status", "ok") == "ok" and reference.by_key().get(k, {}).get("status", "x") == "ok"]
    if refuse is None and (reference.run_dir is None or candidate.run_dir is None):
        refuse = ("the baseline is a saved JSON" if reference.run_dir is None else "this run is not a run folder") \
            + " (no artifacts to re-measure)"
    if refuse is not None:
        plan.stored = dict.fromkeys(keys, refuse)
        return plan
    assert reference.run_dir is not None and candidate.run_dir is not None
    plan.profiles = manifest_profiles(candidate.manifest, plan.notes)
    status_cache: dict[str, TargetStatus | str] = {}
    for key in keys:
        variant, target, runtime = key
        fmt = str(candidate.by_key()[key].get("format") or _format_of(runtime))
        ref_art = artifact(reference.run_dir, variant, fmt)
        cand_art = artifact(candidate.run_dir, variant, fmt)
        if ref_art and cand_art and not ab.measure_identical:
            digest = sha256(cand_art)
            if digest == sha256(ref_art):
                changed = machine_change(reference.by_key()[key], candidate.by_key()[key])
                if changed:  # the same file: only the runtime or machine can explain a change
                    plan.stored[key] = (f"identical artifacts but {changed}: measuring the file again here runs "
                                        "one runtime only, so the stored numbers are compared")
                else:  # the same bytes on the same runtime: nothing to measure
                    plan.identical[key] = digest[:12]
                continue
        profile = plan.profiles.get(target)
        data = (reference.run_dir / "eval.npz", candidate.run_dir / "eval.npz")
        why = (None if ref_art else f"no {fmt} artifact of the reference run on disk") or \
            (None if cand_art else f"no {fmt} artifact of this run on disk")
        if why is None and profile is None:
            why = f"no profile of target {target!r} in the run's manifest"
        elif why is None and isinstance(profile, str):
            why = f"target {target}: {profile}"
        elif why is None and profile.emulated:  # type: ignore[union-attr]
            why = f"{target} is emulated: its timings are not re-measured"
        why = why or next((f"no eval data {d.name} in {d.parent}" for d in data if not d.is_file()), None)
        why = why or _usable(profile, runtime, status_cache)
        if why:
            plan.stored[key] = why
            continue
        if target not in plan.options:
            plan.options[target] = run_options(candidate.manifest, profile, ab.seconds)
        plan.pairs.append(Pair(key, len(plan.pairs), ref_art, cand_art, *data))  # type: ignore[arg-type]
    return plan


def machine_change(reference: dict, candidate: dict) -> str:
    """'runtime_version 1.31.0 → 1.32.0' (and cpu, threads) where the two records were measured
    differently; '' where they agree or do not say.

    >>> machine_change({"machine": {"runtime_version": "1.31"}}, {"machine": {"runtime_version": "1.32"}})
    'runtime_version 1.31 → 1.32'
    """
    from edgebench.analyze.baseline import MACHINE_FACTS

    a, b = reference.get("machine") or {}, candidate.get("machine") or {}
    return "; ".join(f"{k} {a[k]} → {b[k]}" for k in MACHINE_FACTS
                     if a.get(k) is not None and b.get(k) is not None and str(a[k]) != str(b[k]))


def _measure_one(target: Target, pair: Pair, side: str, runtime: str, options: RunOptions, stat: str) -> float | str:
    """One runner process on one side's artifact: its statistic, or the error it gave."""
    artifact_path = pair.reference if side == "reference" else pair.candidate
    data = pair.reference_data if side == "reference" else pair.candidate_data
    try:
        result = target.measure(artifact_path, data, runtime, options)
    except Exception as exc:  # noqa: BLE001 - a failing process is this pair's outcome, not a crash
        return f"{type(exc).__name__}: {exc}"
    samples = result.get("latency_samples_ms") or []
    if result.get("status") != "ok" or not samples:
        return str(result.get("error") or "the runner returned no latency samples")
    return sample_stat(samples, stat)


def _measure_both(target: Target, pair: Pair, runtime: str, options: RunOptions, stat: str,
                  swap: bool) -> tuple[float, float] | str:
    """One runner process timing both artifacts, interleaved in blocks: (reference, candidate)
    statistics, or the error. `swap` makes the candidate the runner's first model (so neither
    side always loads first)."""
    first, second = ((pair.candidate, pair.candidate_data), (pair.reference, pair.reference_data)) if swap \
        else ((pair.reference, pair.reference_data), (pair.candidate, pair.candidate_data))
    try:
        result = target.measure(first[0], first[1], runtime, options, compare=second)
    except Exception as exc:  # noqa: BLE001 - a failing process is this pair's outcome, not a crash
        return f"{type(exc).__name__}: {exc}"
    a, b = result.get("latency_samples_ms") or [], result.get("compare_samples_ms") or []
    if result.get("status") != "ok" or not a or not b:
        return str(result.get("error") or "the runner returned no latency samples")
    values = sample_stat(a, stat), sample_stat(b, stat)
    return (values[1], values[0]) if swap else values


def measure_ab(plan: Plan, options: GateOptions, ab: ABOptions,
               log: Callable[[str], None]) -> tuple[dict[Key, LatencyOutcome], dict[Key, str]]:
    """Measure the planned pairs; return the latency outcome of each pair measured or
    identical, and {key: why} for pairs that fell back to stored samples (the reference
    artifact failed to run here)."""
    from edgebench.targets import open_target

    outcomes: dict[Key, LatencyOutcome] = {
        key: LatencyOutcome("ok", None, None, f"identical artifact (sha256 {digest}…): not measured", "reference")
        for key, digest in plan.identical.items()}
    targets: dict[str, Target] = {}
    rng = random.Random(ab.seed)
    stat, effect, alpha = options.latency_stat, options.latency_effect, options.alpha
    try:
        for index in range(ab.max_rounds):
            active = [p for p in plan.pairs if not p.done]
            if not active:
                break
            rng.shuffle(active)
            for pair in active:
                name, runtime = pair.key[1], pair.key[2]
                if name not in targets:
                    targets[name] = open_target(plan.profiles[name])
                swap = (index + pair.index) % 2 == 1
                values = _measure_both(targets[name], pair, runtime, plan.options[name], stat, swap)
                if isinstance(values, str):
                    # Which artifact failed? Each alone once: the reference's failure sends the
                    # pair to stored samples, the candidate's fails its check.
                    for side in ("reference", "candidate"):
                        alone = _measure_one(targets[name], pair, side, runtime, plan.options[name], stat)
                        if isinstance(alone, str):
                            pair.error, pair.failed_side = alone, side
                            break
                    else:
                        pair.error, pair.failed_side = values, "candidate"
                    pair.done = True
                    continue
                pair.reference_values.append(values[0])
                pair.candidate_values.append(values[1])
            rounds = index + 1
            for pair in active:
                if pair.done:
                    continue
                if rounds >= ab.max_rounds or (rounds >= ab.min_rounds and rounds % 2 == 0 and decided(
                        pair.reference_values, pair.candidate_values, effect, alpha)):
                    pair.done = True
            still = sum(not p.done for p in plan.pairs)
            log(f"A/B round {rounds}: {len(active)} pair(s) measured, {still} still undecided"
                + ("" if still else ", done"))
    finally:
        for target in targets.values():
            target.close()
    stored_why: dict[Key, str] = {}
    for pair in plan.pairs:
        if pair.error and pair.failed_side == "reference":
            stored_why[pair.key] = f"the reference artifact failed to run here: {pair.error}"
        elif pair.error:
            outcomes[pair.key] = LatencyOutcome("FAIL", None, None, f"A/B: this run's artifact failed to run here: "
                                                f"{pair.error}", "reference")
        else:
            result = paired_test(pair.reference_values, pair.candidate_values, effect, alpha)
            reference = _geomean(pair.reference_values)
            outcomes[pair.key] = judged(result, reference, "reference")
    return outcomes, stored_why


def _geomean(values: list[float]) -> float:
    import math

    return math.exp(sum(math.log(v) for v in values) / len(values))


def describe(plan: Plan, stored_why: dict[Key, str], total: int) -> str:
    """The first line of the output: which mode judged latency, and why.

    >>> describe(Plan(stored={("int8", "local", "onnxruntime"): "--no-remeasure"}), {}, 1)
    'mode: stored samples — --no-remeasure — 1 record(s) compared'
    """
    measured = len(plan.pairs) - len(stored_why)
    stored = {**plan.stored, **stored_why}
    reasons = sorted(set(stored.values()))
    why = "; ".join(reasons[:3]) + ("; …" if len(reasons) > 3 else "")
    tail = f" — {total} record(s) compared"
    if not measured and not plan.identical:
        return f"mode: stored samples — {why}{tail}" if stored else f"mode: no latency to compare{tail}"
    parts = [f"{measured} pair(s) of artifacts re-measured here now, interleaved with the reference run's"
             ] if measured else []
    if plan.identical:
        n = len(plan.identical)
        parts.append(f"{n} identical to the reference (not measured)" if parts or stored
                     else f"every artifact is identical to the reference's ({n}): nothing to measure")
    if stored:
        parts.append(f"{len(stored)} on stored samples ({why})")
    return "mode: A/B — " + "; ".join(parts) + tail


def _format_of(runtime: str) -> str:
    """The record's "format" when it has none: its runtime's (a runtime unknown here: its name)."""
    from edgebench.runtimes import RUNTIMES

    return RUNTIMES.get(runtime).format if runtime in RUNTIMES else runtime

"""`edgebench check RUN_DIR`: the regression gate. Exit 0 pass, 1 regression, 2 bad input.

    edgebench check results/NEW --baseline results/MAIN            # A/B: re-measures both runs' artifacts
    edgebench check results/NEW --baseline baselines/main.json    # stored mode: the saved statistics
    edgebench check results/NEW --budget budget.toml              # hard limits

- **budgets** (`--budget FILE`, `[[budget]]` tables, budgets.py): hard limits per variant glob,
  target and runtime.
- **a baseline** (`--baseline` an earlier run folder, or a JSON written by `--save-baseline`):
  status, footprint, accuracy and latency of every (variant, target, runtime), each judged on
  its own against the same one in the baseline (regressions.py). Latency: when both runs'
  artifacts are on disk, measured again here, interleaved (A/B, remeasure.py); otherwise from
  the stored per-round statistics (latency_gate.py). The first output line says which. Then
  every variant of a target/runtime together (shift.py): a shift of the whole run fails even
  when each variant alone is unsure of it.

    >>> main(build_parser().parse_args(["check", "results/NEW", "--baseline", "results/MAIN"]))
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from edgebench.analyze import format_table
from edgebench.analyze.baseline import Side, context_notes, load_side, save_baseline
from edgebench.analyze.budgets import Budget, check_budgets, load_budgets
from edgebench.analyze.latency_gate import LATENCY_STATS, check_stat
from edgebench.analyze.regressions import Check, GateOptions, check_baseline
from edgebench.analyze.remeasure import ABOptions, describe, measure_ab, plan_ab
from edgebench.analyze.shift import shift_checks
from edgebench.errors import ConfigError, EdgebenchError

HELP = "regression gate: check a run against budgets and/or a baseline (exit 1 on regression)"
HEADERS = ["variant", "target/runtime", "metric", "limit / baseline", "value", "verdict", "detail"]
__all__ = ["Budget", "Check", "GateOptions", "ABOptions", "add_arguments", "main", "run_gate"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d, ab = GateOptions(), ABOptions()
    parser.add_argument("run_dir", help="a results/<run-id>/ folder (or its records.jsonl)")
    parser.add_argument("--baseline", help="an earlier run folder (A/B re-measuring) or a baseline JSON "
                                           "from --save-baseline (stored samples)")
    parser.add_argument("--budget", help="a budget TOML file with [[budget]] tables")
    parser.add_argument("--save-baseline", metavar="PATH", help="write this run as a baseline JSON")
    parser.add_argument("--markdown", metavar="PATH", help="also write the table as markdown (CI summary)")
    parser.add_argument("--no-remeasure", action="store_true",
                        help="judge latency on the stored per-round statistics even when both runs' artifacts "
                             "are on disk (machine drift between the runs then does not cancel)")
    parser.add_argument("--measure-identical", action="store_true",
                        help="A/B: measure pairs whose artifacts are byte-identical too (default: ok unmeasured)")
    parser.add_argument("--min-rounds", type=int, default=ab.min_rounds,
                        help="A/B: rounds before a pair may stop (default %(default)s)")
    parser.add_argument("--max-rounds", type=int, default=ab.max_rounds,
                        help="A/B: rounds at most; a pair stops earlier once decided (default %(default)s)")
    parser.add_argument("--process-seconds", type=float, default=ab.seconds,
                        help="A/B: timed seconds per runner process (default %(default)s)")
    parser.add_argument("--latency-effect", type=float, default=d.latency_effect,
                        help="growth of a variant's latency needed to fail, with significance (default %(default)s)")
    parser.add_argument("--alpha", type=float, default=d.alpha,
                        help="significance level of the one-sided latency tests (default %(default)s)")
    parser.add_argument("--latency-stat", choices=LATENCY_STATS, default=d.latency_stat,
                        help="per-process statistic compared (default %(default)s: neighbours only ever slow "
                             "a process down; its fastest run is the least disturbed)")
    parser.add_argument("--accuracy-drop", type=float, default=d.accuracy_drop,
                        help="allowed absolute accuracy drop vs the baseline (default %(default)s)")
    parser.add_argument("--metric-drop", type=float, default=d.metric_drop,
                        help="a task metric other than accuracy (mAP, MAE, AUC, yours): allowed loss vs the "
                             "baseline, in the metric's units (default: 1%% of the baseline's value)")
    parser.add_argument("--footprint-tolerance", type=float, default=d.footprint_tolerance,
                        help="allowed relative growth of size/params/MACs (default %(default)s)")


def _options(args: argparse.Namespace) -> tuple[GateOptions, ABOptions]:
    options = GateOptions(latency_effect=args.latency_effect, alpha=args.alpha, accuracy_drop=args.accuracy_drop,
                          metric_drop=args.metric_drop, footprint_tolerance=args.footprint_tolerance, latency_stat=check_stat(args.latency_stat))
    if not 0 < options.alpha < 1 or options.latency_effect < 0:
        raise ConfigError("--alpha must be in (0, 1) and --latency-effect >= 0")
    if not 2 <= args.min_rounds <= args.max_rounds or args.process_seconds <= 0:
        raise ConfigError("need 2 <= --min-rounds <= --max-rounds and --process-seconds > 0")
    ab = ABOptions(min_rounds=args.min_rounds, max_rounds=args.max_rounds, seconds=args.process_seconds,
                   measure_identical=args.measure_identical)
    return options, ab


def run_gate(candidate: Side, reference: Side | None, budgets: list[Budget], options: GateOptions,
             ab: ABOptions, remeasure: bool = True, log=lambda message: None) -> tuple[list[str], list[Check]]:
    """The gate without the command line: (first lines: mode and notes, checks).

    >>> lines, checks = run_gate(load_side(new, "run"), load_side(old, "baseline"), [], GateOptions(), ABOptions())
    >>> lines[0]
    'mode: A/B — 4 pair(s) of artifacts re-measured here now, ...'
    """
    checks = check_budgets(candidate.records, budgets)
    if reference is None:
        return ["mode: budgets only (no --baseline)"], checks
    plan = plan_ab(reference, candidate, ab, None if remeasure else "--no-remeasure")
    if plan.pairs:
        log(f"A/B: {len(plan.pairs)} pair(s) of artifacts, {ab.min_rounds}-{ab.max_rounds} rounds of two runner "
            f"processes each ({ab.seconds:g} s timed per process), interleaved")
    measured, stored_why = measure_ab(plan, options, ab, log)
    checks += check_baseline(reference, candidate, options, measured, {**plan.stored, **stored_why})
    # Every variant of a target/runtime together: a uniform shift each one alone is unsure of.
    checks += shift_checks(reference, candidate, plan.pairs, set(measured), options, checks)
    remeasured = {key[1:] for key in measured}
    compared = len(set(reference.by_key()) & set(candidate.by_key()))
    lines = [describe(plan, stored_why, compared)] + plan.notes + context_notes(reference, candidate, remeasured)
    return lines, checks


def summary(checks: list[Check]) -> str:
    failed = sum(c.failed for c in checks)
    unsure = sum(c.verdict == "unsure" for c in checks)
    return (f"{len(checks)} checks, {failed} failed" + (f", {unsure} unsure" if unsure else "")
            + (" — REGRESSION" if failed else " — pass"))


def main(args: argparse.Namespace) -> int:
    from edgebench.progress import Log

    as_json, quiet = getattr(args, "json", False), getattr(args, "quiet", False)
    if not (args.baseline or args.budget or args.save_baseline):
        raise ConfigError("nothing to check: give --baseline and/or --budget (or --save-baseline PATH)")
    options, ab = _options(args)
    # Every input is read before any work: a malformed one is exit 2, never a half-run gate.
    budgets = load_budgets(args.budget) if args.budget else []
    candidate = load_side(args.run_dir, "run")
    if candidate.run_dir is None:
        raise EdgebenchError(f"run {args.run_dir}: a baseline JSON, not a run (give it as --baseline)")
    reference = load_side(args.baseline, "baseline") if args.baseline else None
    say = (lambda *a: None) if as_json else print
    if args.save_baseline:
        n = save_baseline(candidate, args.save_baseline)
        say(f"saved a baseline of {n} records to {args.save_baseline}")
        if not (args.baseline or args.budget):
            return 0
    lines, checks = run_gate(candidate, reference, budgets, options, ab, remeasure=not args.no_remeasure,
                             log=Log(quiet=quiet or as_json))
    failed = [c for c in checks if c.failed]
    flagged = [c for c in checks if c.verdict == "unsure"]
    text = summary(checks)
    if as_json:
        print(json.dumps({"passed": not failed, "mode": lines[0], "notes": lines[1:],
                          "checks": [dataclasses.asdict(c) for c in checks]}))
    else:
        for line in lines:
            print(line)
        if checks:
            shown = failed + flagged if quiet else checks
            print(format_table([c.row() for c in shown], HEADERS))
        for line in [c.line() for c in failed + flagged] + [text]:
            print(line)
    if args.markdown:
        body = format_table([c.row() for c in checks], HEADERS, markdown=True) if checks else "no checks"
        head = "".join(f"{line}  \n" for line in lines)
        Path(args.markdown).expanduser().write_text(f"### edgebench check: {text}\n\n{head}\n{body}\n")
    return 1 if failed else 0

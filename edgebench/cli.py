"""The `edgebench` command line. Heavy libraries are imported only by the command that runs.

Each subcommand lives in a module with `add_arguments(parser)` and a main function; this file
is the one table that names them.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from edgebench import __version__
from edgebench.errors import EdgebenchError

# name: (module, help, add_arguments, main)
COMMANDS = {
    "run": ("edgebench.cli", "run the whole flow (no file: the built-in demo)", "add_run_arguments", "run_command"),
    "init": ("edgebench.cli", "write the demo experiment as a file to edit", "add_init_arguments", "init_command"),
    "compress": ("edgebench.cli", "only make and export the variants", "add_compress_arguments", "compress_command"),
    "report": ("edgebench.analyze.report", "redraw plots and reports from a run's records", "add_arguments", "main"),
    "check": ("edgebench.analyze.check", "regression gate: exit 0 pass, 1 regression, 2 bad input", "add_arguments", "main"),
    "compare": ("edgebench.analyze.compare", "side-by-side table of two runs", "add_arguments", "main"),
    "profile": ("edgebench.pool.profile", "per-layer time on a target, mapped to PyTorch modules; diff two variants",
                "add_arguments", "main"),  # edgebench.analyze.profile, and --cluster: on the board that measured it
    "explain": ("edgebench.analyze.explain", "per-layer numerics against the fp32 baseline on a target: where the accuracy goes",
                "add_arguments", "main"),
    "targets": ("edgebench.targets.command", "list target profiles and whether each is usable now", "add_arguments", "main"),
    "search": ("edgebench.search.command", "search compression chains for the best variant within budgets, measured on the target",
               "add_arguments", "main"),
    "worker": ("edgebench.pool.worker", "serve one device to a Dask scheduler (edgebench run --cluster)", "add_arguments", "main"),
    "pool": ("edgebench.pool.command", "the device pool's certificates (edgebench pool certs DIR)", "add_arguments", "main"),
    "sensitivity": ("edgebench.compress.sensitivity", "accuracy drop per layer when only that layer is pruned/quantized", "add_arguments", "main"),
}


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("experiment", nargs="?", help="experiment .toml (default: the built-in demo)")
    p.add_argument("--targets", help="comma-separated profile names or .toml paths (overrides the experiment)")
    p.add_argument("--runtimes", help="comma-separated runtimes, e.g. onnxruntime,openvino (overrides the experiment)")
    p.add_argument("--out", type=Path, default=Path("results"), help="folder for run folders (default: results)")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="finish an interrupted run, skipping what is done")
    from edgebench.pool import add_pool_arguments

    add_pool_arguments(p)
    p.add_argument("--dashboard", action="store_true", help="print the Dask dashboard's address")


def add_compress_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("experiment", help="experiment .toml")
    p.add_argument("--out", type=Path, default=Path("results"))


def add_init_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", nargs="?", default="experiment.toml", help="where to write (default: experiment.toml)")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.add_argument("--task", choices=("classify", "detect"), default="classify",
                   help="which built-in demo: classify (cluttered digits, the default) or detect (digit scenes, mAP)")


def _log(args):
    from edgebench.progress import Log

    return Log(quiet=args.quiet or args.json)


def run_command(args) -> int:
    from edgebench.config import load_experiment, resumed_experiment
    from edgebench.measure.records import read_records
    from edgebench.pipeline import run_experiment

    if args.resume and not args.experiment:
        exp = resumed_experiment(args.resume)
    else:
        exp = load_experiment(args.experiment)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()] if args.targets else None
    runtimes = [r.strip() for r in args.runtimes.split(",") if r.strip()] if args.runtimes else None
    from edgebench.pool import with_pool_arguments

    exp = with_pool_arguments(exp, args)
    run_dir = run_experiment(exp, targets=targets, out=args.out, resume=args.resume, log=_log(args), runtimes=runtimes,
                             dashboard=args.dashboard)
    records = read_records(run_dir / "records.jsonl")
    code, why = run_status(records)
    failed = sum(r["status"] != "ok" for r in records)
    if args.json:
        print(json.dumps({"run_dir": str(run_dir), "records": len(records), "errors": failed, "exit": code,
                          "why": why}))
    elif args.quiet:  # no progress and no table, but where the results are
        print(f"{len(records)} records ({failed} errors) in {run_dir}/")
    else:
        print(summary_table(records))
        print(f"\n{len(records)} records ({failed} errors) in {run_dir}/")
        for name in ("report.md", "report.html", "records.jsonl"):
            if (run_dir / name).exists():
                print(f"  {run_dir / name}")
    if code and not args.json:
        print(f"edgebench: {why}", file=sys.stderr)
    return code


def run_status(records: list[dict]) -> tuple[int, str]:
    """The exit status of a run: 0 when everything that could run ran; 1 when some record is
    an error, or nothing was measured at all. A runtime that is not installed on a target
    ("unavailable: ...") is reported in its records and does not fail the run."""
    ok = sum(r["status"] == "ok" for r in records)
    errors = [r for r in records if r["status"] != "ok" and not str(r.get("error") or "").startswith("unavailable")]
    if errors:
        first = errors[0]
        return 1, (f"{len(errors)} of {len(records)} records are errors, e.g. {first['variant']} on "
                   f"{first['target']}/{first['runtime']}: {str(first.get('error'))[:200]}")
    if not ok:
        return 1, "nothing was measured: every record is unavailable (see `edgebench targets`)"
    return 0, "ok"


def summary_table(records: list[dict]) -> str:
    from edgebench.analyze.intervals import ratio_text
    from edgebench.export.precision import precision_label

    metric = next((r["metric"] for r in records if r.get("status") == "ok" and r.get("accuracy") is None
                   and (r.get("metric") or {}).get("value") is not None), None)
    name = f"{metric['name']} (95% CI)" if metric else "accuracy (95% CI)"
    rows = [("variant", "target", "runtime", "size KB", "p50 ms", "× baseline [95% CI]", name, "Δ" if metric else "Δ pt",
             "computes")]
    most = max((r.get("n_eval") or 0 for r in records), default=0)
    for r in records:
        if r["status"] != "ok":
            rows.append((r["variant"], r["target"], r["runtime"], "-", "-", "-", "error", "", (r["error"] or "")[:60]))
            continue
        size = f"{r['size_bytes'] / 1024:.1f}" if r.get("size_bytes") else "-"
        text = _score_text(r, metric is not None)
        n = r.get("n_eval")
        if n and n < most:  # a subset (e.g. the QEMU profile's first 100 inputs) says so
            text += f" n={n}"
        p50 = f"{r['latency_ms']['p50']:.3f}" + (" emulated" if r.get("emulated") else "")  # not a device's speed
        rows.append((r["variant"], r["target"], r["runtime"], size, p50, ratio_text(r.get("latency_ratio")), text,
                     _delta(records, r, metric is not None), precision_label(r.get("precision"), r.get("compute_precision"))))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def _score_text(r: dict, by_metric: bool) -> str:
    """Accuracy in % with its interval, or (another task) the metric's value with its interval."""
    if by_metric:
        m = r.get("metric") or {}
        if m.get("value") is None:
            return "-"
        ci = m.get("ci95")
        return f"{m['value']:.4g}" + (f" ({ci[0]:.4g}–{ci[1]:.4g})" if ci else "")
    acc, ci = r.get("accuracy"), r.get("accuracy_ci95")
    text = "-" if acc is None else f"{acc * 100:.1f}%"
    if acc is not None and ci:
        text += f" ({ci[0] * 100:.1f}–{ci[1] * 100:.1f})"
    return text


def _delta(records: list[dict], record: dict, by_metric: bool = False) -> str:
    """The difference from the baseline on the same target/runtime, '(n.s.)' when the paired
    test on the same inputs (McNemar for accuracy, the bootstrap for another metric) does not
    call it significant."""
    from edgebench.measure.accuracy import significant

    if by_metric:
        m = record.get("metric") or {}
        if record["variant"] == "baseline" or m.get("delta") is None:
            return ""
        mark = {True: " *", False: " (n.s.)", None: ""}[significant(m.get("delta_p"))]
        return f"{m['delta']:+.3g}{mark}"
    base = next((b for b in records if b["variant"] == "baseline" and b["status"] == "ok"
                 and (b["target"], b["runtime"]) == (record["target"], record["runtime"])), None)
    if record["variant"] == "baseline" or base is None or None in (base.get("accuracy"), record.get("accuracy")):
        return ""
    delta = (record["accuracy"] - base["accuracy"]) * 100
    mark = {True: " *", False: " (n.s.)", None: ""}[significant(record.get("accuracy_delta_p"))]
    return f"{delta:+.1f}{mark}"


def compress_command(args) -> int:
    from edgebench.config import load_experiment
    from edgebench.pipeline import compress_only

    run_dir = compress_only(load_experiment(args.experiment), out=args.out, log=_log(args))
    print(json.dumps({"run_dir": str(run_dir)}) if args.json else f"variants in {run_dir / 'variants'}/")
    return 0


def init_command(args) -> int:
    from edgebench.config import DEMO_PATH, DEMOS

    path = Path(args.path)
    if path.exists() and not args.force:
        raise EdgebenchError(f"{path} exists; use --force to overwrite it")
    path.write_text(DEMOS.get(args.task, DEMO_PATH).read_text())
    print(json.dumps({"path": str(path)}) if args.json else f"wrote {path}: edit it, then `edgebench run {path}`")
    return 0


def build_parser() -> argparse.ArgumentParser:
    def flags(default):
        # The same flags before and after the subcommand; SUPPRESS keeps the subparser
        # from overwriting a flag given before it.
        p = argparse.ArgumentParser(add_help=False)
        p.add_argument("--quiet", "-q", action="store_true", default=default, help="no progress output")
        p.add_argument("--json", action="store_true", default=default, help="machine-readable output on stdout")
        return p

    common = flags(argparse.SUPPRESS)
    parser = argparse.ArgumentParser(
        prog="edgebench",
        description="Which compressed variant of my model should I deploy on this device?",
        parents=[flags(False)],
    )
    parser.add_argument("--version", action="version", version=f"edgebench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text, add, _) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, parents=[common])
        getattr(importlib.import_module(module), add)(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    module, _, _, fn = COMMANDS[args.command]
    try:
        return int(getattr(importlib.import_module(module), fn)(args) or 0)
    except EdgebenchError as exc:
        print(f"edgebench: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("edgebench: interrupted; records written so far are kept (use --resume RUN_DIR)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

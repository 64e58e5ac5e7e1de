"""`edgebench search EXPERIMENT --target T --runtime R --max-drop PT --minimize latency --trials N`.

With `--cluster tls://SCHED:8786 --tls DIR` (or `[run] cluster`/`tls`) `--target` names a board
or a class of the device pool and the trials are measured there (edgebench.search.study).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from edgebench.errors import ConfigError, EdgebenchError
from edgebench.search import quality_text

HELP = "search compression chains for the best variant within budgets, measured on the target"
KEYS = ("target", "runtime", "max_drop", "max_size", "max_p90_ms", "max_rss_mb", "minimize", "trials", "max_minutes",
        "max_device_trials", "seed", "space", "sampler")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("experiment", nargs="?", help="experiment .toml (its [search] table gives defaults; none: the demo)")
    p.add_argument("--target", help="target profile to measure on (default: [search] target, else the first [run] target)")
    p.add_argument("--runtime", help="runtime (default: [search] runtime, else the first [run] runtime)")
    p.add_argument("--max-drop", type=float, metavar="PT",
                   help="drop budget against the baseline: accuracy points (default 1), or for another task "
                        "its metric's own units (e.g. 0.02 of mAP or AUC)")
    p.add_argument("--max-size", type=int, metavar="BYTES", help="artifact size budget")
    p.add_argument("--max-p90-ms", type=float, metavar="MS", help="p90 latency budget")
    p.add_argument("--max-rss-mb", type=float, metavar="MB", help="peak inference memory budget")
    p.add_argument("--minimize", help="latency, size or energy; several comma-separated: a Pareto set")
    p.add_argument("--trials", type=int, help="trials to run (default 40)")
    p.add_argument("--max-minutes", type=float, help="stop starting trials after this long")
    p.add_argument("--max-device-trials", type=int, metavar="N",
                   help="stop once N trials were measured on the device (pruned and reused trials cost none)")
    p.add_argument("--out", type=Path, default=Path("results"), help="folder for run folders (default: results)")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue a killed search's study")
    from edgebench.pool import add_pool_arguments

    add_pool_arguments(p)


def resolve(args, exp) -> tuple:
    """Settings from the command line over `[search]` over the experiment's [run]."""
    from edgebench.search import Settings

    table = dict(exp.search)
    unknown = sorted(set(table) - set(KEYS))
    if unknown:
        raise ConfigError(f"[search]: unknown key {unknown[0]!r} (valid: {', '.join(KEYS)})")
    for key in KEYS:
        value = getattr(args, key, None)
        if value is not None:
            table[key] = value
    table.setdefault("target", exp.run.targets[0])
    table.setdefault("runtime", exp.run.runtimes[0])
    minimize = table.get("minimize", "latency")
    table["minimize"] = tuple(m.strip() for m in minimize.split(",")) if isinstance(minimize, str) else tuple(minimize)
    try:
        settings = Settings(**table)
    except TypeError as exc:
        raise ConfigError(f"[search]: {exc}") from None
    from edgebench.search.space import make_space

    space = make_space(settings.space)  # a wrong space exits 2 now, not at trial 1
    if settings.sampler == "grid":
        from edgebench.search.space import grid

        grid(space)
    run = dataclasses.replace(exp.run, targets=(settings.target,), runtimes=(settings.runtime,))
    return settings, dataclasses.replace(exp, run=run)


def main(args: argparse.Namespace) -> int:
    from edgebench.config import load_experiment, resumed_experiment
    from edgebench.pool import with_pool_arguments
    from edgebench.progress import Log

    log = Log(quiet=args.quiet or args.json)
    if args.resume:
        from edgebench.search.study import settings_of

        manifest_path = args.resume / "manifest.json"
        if not manifest_path.is_file() or "search" not in json.loads(manifest_path.read_text()):
            raise ConfigError(f"--resume {args.resume}: not a search run folder (no search in manifest.json)")
        exp = with_pool_arguments(resumed_experiment(args.resume), args)
        settings = settings_of(json.loads(manifest_path.read_text()))
        if args.trials is not None or args.max_minutes is not None:
            settings = dataclasses.replace(settings, trials=args.trials or settings.trials,
                                           max_minutes=args.max_minutes or settings.max_minutes)
    else:
        settings, exp = resolve(args, with_pool_arguments(load_experiment(args.experiment), args))
    out = run_search(exp, settings, args.out, args.resume, log)
    if args.json:
        print(json.dumps(out))
    elif not args.quiet:
        print(render(out))
    return 0 if out["best"] else 1


def run_search(exp, settings, out: Path, resume: Path | None, log) -> dict:
    import contextlib

    with contextlib.ExitStack() as stack:
        pool, target = None, None
        if exp.run.cluster or exp.run.jobs:
            from edgebench.pool import Pool

            pool = stack.enter_context(Pool.open(exp.run.cluster, exp.run.jobs, log, False, exp.run.tls,
                                                 exp.run.insecure))
        if exp.run.cluster:  # a board or a class of the pool (each worker checked its device as it started)
            (target,) = pool.resolve([settings.target])
        return _search(exp, settings, out, resume, log, pool, target)


def _search(exp, settings, out: Path, resume: Path | None, log, pool, pool_target) -> dict:
    from edgebench.config import Variant
    from edgebench.export.variants import build_variant, load_variant
    from edgebench.measure.records import update_manifest, write_manifest
    from edgebench.pipeline import (
        baseline_model,
        check_targets,
        load_run_data,
        prepare_run_dir,
        removed_if_nothing_measured,
    )
    from edgebench.runtimes import format_of
    from edgebench.search.study import Search, open_study, settings_dict, summary
    from edgebench.targets import load_targets, open_target

    (profile,) = [pool_target.profile] if pool_target else load_targets([settings.target])
    if settings.runtime not in profile.runtimes:
        raise ConfigError(f"target {profile.name!r} does not list runtime {settings.runtime!r} "
                          f"(it has {', '.join(profile.runtimes)})")
    _optuna()
    if pool_target is None:
        check_targets([profile], (settings.runtime,), log)
    data = load_run_data(exp, log)
    run_dir, run_id, exp = prepare_run_dir(exp, out, resume)
    log(f"search {run_id}: {run_dir}")
    with removed_if_nothing_measured(run_dir, keep=resume is not None):
        if resume is None:
            write_manifest(run_dir, run_id, exp.to_dict(), command="search", search=settings_dict(settings),
                           targets=[dataclasses.asdict(profile)], data=data.describe())
        data.save_eval(run_dir / "eval.npz")
        baseline = baseline_model(exp, data, run_dir, log)
        if pool_target is not None:
            from edgebench.pool.remote import RemoteTarget

            target = RemoteTarget.of(pool, pool_target, run_dir, log)
            log(f"search on the pool: {pool_target.name} ({', '.join(pool_target.boards)}), "
                f"{len(pool_target.boards)} trial(s) at a time")
        else:
            target = open_target(profile)
        if pool is not None:
            log(f"builds: on {pool.cpu_workers()} pool worker(s)" if pool.builder() else "builds: in this process")
        try:
            search = Search(exp, settings, data, baseline, target, profile, run_dir, run_id, log, pool)
            base = load_variant(run_dir, "baseline") or build_variant(
                exp, Variant("baseline"), baseline, data, run_dir, {format_of(settings.runtime)}, log)
            search.base_torch = base.info.get("torch_metric", base.info.get("torch_accuracy"))
            key = ("baseline", profile.name, settings.runtime)
            search.base_record = next((r for r in search.records.records if (r["variant"], r["target"], r["runtime"]) == key
                                       and r["status"] == "ok"), None)
            if search.base_record is None:
                record = search.measure(base)
                search.records.append(record)
                if record["status"] != "ok":
                    raise EdgebenchError(f"the baseline could not be measured on {profile.name}/{settings.runtime}: "
                                         f"{record['error']}")
                search.base_record = record
            log(f"baseline on {profile.name}/{settings.runtime}: p50 {search.base_record['latency_ms']['p50']:.4g} ms, "
                f"{quality_text(search.base_record)}")
            parallel = len(pool_target.boards) if pool_target else 1  # one trial per board at a time
            if parallel > 1:
                _load_registries()
            study = open_study(run_dir, settings, log, parallel > 1)
            remaining = None if settings.trials is None else max(0, settings.trials - len(study.trials))
            if remaining != 0:
                study.optimize(search.objective, n_trials=remaining, catch=(RuntimeError,), callbacks=[search.enough],
                               timeout=settings.max_minutes * 60 if settings.max_minutes else None, n_jobs=parallel)
            result = summary(study, search, run_dir)  # re-measures the top candidates: the target is still open
        finally:
            target.close()
    (run_dir / "search.json").write_text(json.dumps(result, indent=1))
    import datetime as dt

    update_manifest(run_dir, search_result={k: result[k] for k in ("trials", "device_trials", "device_seconds")},
                    finished=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    from edgebench.analyze.report import write_reports
    from edgebench.search.chart import draw_search
    from edgebench.search.section import write_search_section

    draw_search(study, result, search.base_record, run_dir / "plots" / "search.png")
    write_search_section(run_dir)
    write_reports(run_dir, log=log)
    return result


def _load_registries() -> None:
    """Fill every registry (methods, runtimes, ...) before trials run in threads: a registry
    fills itself on first use, and a thread looking while another fills it saw a partial table
    ("unknown method 'quantize' (valid: prune)")."""
    import contextlib

    from edgebench import registry

    for table in vars(registry).values():
        if isinstance(table, registry.Registry):
            with contextlib.suppress(Exception):  # a table that cannot load says so when it is used
                len(table)


def _optuna() -> None:
    import importlib.util

    if importlib.util.find_spec("optuna") is None:
        raise ConfigError("edgebench search needs Optuna: pip install 'edgebench[search]'")


def render(out: dict) -> str:
    from edgebench.analyze.intervals import ratio_text

    lines = [f"{out['trials']} trials, {out['device_trials']} measured on the device "
             f"({out['device_seconds']:.1f} s of device time), {out['pruned_before_export']} pruned before export",
             f"budgets: {', '.join(f'{k} {v:g}' for k, v in out['budgets'].items())}; minimize {', '.join(out['minimize'])}"]
    best = out["best"]
    if not best:
        lines.append("no trial met the budgets: widen them (--max-drop) or the space, or run more trials")
        return "\n".join(lines)
    m = best["metrics"]
    confirmed = out.get("confirmed_p50_ms") or {}
    lines += [f"best: {best['variant']} (trial {best['trial']}): {best['chain']}",
              f"  p50 {m['p50_ms']:.4g} ms, p90 {m['p90_ms']:.4g} ms, {m['size_bytes'] / 1024:.1f} KB, "
              f"{quality_text(m)} (drop {m['accuracy_drop_pt']:+.3g}{' pt' if m.get('accuracy') is not None else ''})",
              "  margins: " + ", ".join(f"{k} {v:+.4g}" for k, v in best["margins"].items())]
    ratios = out.get("confirmed_ratio") or {}
    if best["variant"] in confirmed and "baseline" in confirmed:
        times = (f"× {ratio_text(ratios[best['variant']])}" if best["variant"] in ratios
                 else f"{confirmed[best['variant']] / confirmed['baseline']:.2f}x")
        lines.append(f"  measured again with the other top candidates{' on ' + out['confirmed_on'] if out.get('confirmed_on') else ''}: p50 {confirmed[best['variant']]:.4g} ms against "
                     f"the baseline's {confirmed['baseline']:.4g} ms ({times}); "
                     + ", ".join(f"{n} {v:.4g}" for n, v in confirmed.items() if n not in (best["variant"], "baseline")))
    if out.get("confirmed_ties"):
        lines.append(f"  tied with it within the 95 % intervals: {', '.join(out['confirmed_ties'])} "
                     "(no faster, no slower, as far as the rounds can tell)")
    key = {"latency": "p50_ms", "size": "size_bytes", "energy": "energy_mj"}[out["minimize"][0]]
    base, mine = out["baseline"].get(key), m.get(key)
    if best["variant"] in confirmed and "baseline" in confirmed:  # side by side beats two separate runs
        base, mine = confirmed["baseline"], confirmed[best["variant"]]
    if base is not None and mine is not None and base <= mine:
        lines.append(f"  note: the baseline itself (no compression) is as good or better on {out['minimize'][0]} "
                     f"({base:.4g} against {mine:.4g}): compression does not pay on this target/runtime here")
    if len(out["pareto"]) > 1:
        lines.append(f"Pareto set ({len(out['pareto'])}): " + "; ".join(f"{p['variant']}" for p in out["pareto"]))
    lines.append(f"run folder: {out['run_dir']} (report.html, plots/search.png, search.json)")
    return "\n".join(lines)

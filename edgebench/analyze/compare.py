"""`edgebench compare RUN_A RUN_B`: two runs side by side, with ratios B/A.

    $ edgebench compare results/RUN_A results/RUN_B
    variant  target/runtime     metric          A       B       B/A    95% CI
    int8     local/onnxruntime  latency_ms.p50  0.0581  0.0544  0.936  0.902–0.971

Latency carries the statistics of the run's own table (edgebench.measure.latency): the p50's
B/A over the two runs' rounds (Welch t on the log per-round p50s: the runs were measured apart,
so drift between them does not cancel), and `latency_ratio.value` — each variant against its own
baseline, timed beside it — whose B/A interval combines the two ratios' intervals and so is free
of the machine's drift. "n.s." marks an interval that holds 1.0.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edgebench.analyze import KEY, fmt, format_table, read_records

HELP = "show two runs side by side per (variant, target, runtime), with ratios B/A"
METRICS = ("size_bytes", "size_gzip_bytes", "params", "macs", "latency_ms.p50", "latency_ms.p90",
           "latency_ratio.value", "peak_rss_mb", "energy_mj.value", "accuracy", "metric.value", "agreement")
HEADERS = ["variant", "target/runtime", "metric", "A", "B", "B/A", "95% CI"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_a", help="the reference run (folder or records.jsonl)")
    parser.add_argument("run_b", help="the run compared with it")
    parser.add_argument("--metrics", default=",".join(METRICS),
                        help="comma-separated metrics to show (default: %(default)s)")
    parser.add_argument("--markdown", metavar="PATH", help="also write the table as markdown")


def _value(record: dict | None, metric: str) -> float | None:
    value: object = record
    for part in metric.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def compare_runs(run_a: str | Path, run_b: str | Path, metrics: tuple[str, ...] = METRICS) -> list[dict]:
    """One dict per (variant, target, runtime, metric) present in either run: a, b, ratio."""
    a = {tuple(r.get(k) for k in KEY): r for r in read_records(run_a)}
    b = {tuple(r.get(k) for k in KEY): r for r in read_records(run_b)}
    rows = []
    for key in sorted(set(a) | set(b), key=lambda k: tuple(map(str, k))):
        ra, rb = a.get(key), b.get(key)
        for side, record in (("A", ra), ("B", rb)):
            if record is not None and record.get("status") != "ok":
                rows.append({"key": key, "metric": f"status ({side})", "a": None, "b": None,
                             "ratio": None, "note": f"error: {record.get('error')}"})
        for metric in metrics:
            va, vb = _value(ra, metric), _value(rb, metric)
            if va is None and vb is None:
                continue
            label = metric
            if metric == "metric.value":  # the task's metric (mAP, MAE, AUC...): a classifier's is accuracy above
                if _value(ra, "accuracy") is not None or _value(rb, "accuracy") is not None:
                    continue
                label = str(((ra or rb).get("metric") or {}).get("name", metric))
            ratio = vb / va if va and vb is not None else None
            note = ""
            n_a, n_b = _value(ra, "n_eval"), _value(rb, "n_eval")
            if metric in ("accuracy", "agreement", "metric.value") and n_a and n_b and n_a != n_b:
                # 100 emulated inputs against 1,800: not the same measurement, never compared silently
                note = f"{fmt(va, 4)} (n={n_a:.0f}) vs {fmt(vb, 4)} (n={n_b:.0f}): different inputs, not compared"
                ratio = None
            ci = _interval(metric, ra, rb) if ratio is not None else None
            rows.append({"key": key, "metric": label, "a": va, "b": vb, "ratio": ratio, "note": note,
                         "ci95": ci, "significant": None if ci is None else not ci[0] <= 1.0 <= ci[1]})
    return rows


def _interval(metric: str, ra: dict | None, rb: dict | None) -> list[float] | None:
    """The 95 % interval of B/A for the latency metrics that have one: the p50 over the runs'
    rounds, or one ratio to the baseline over another (t on the sum of their log variances)."""
    import math

    from edgebench.measure.latency import unpaired_ratio

    if metric == "latency_ms.p50":
        p50s = [[r.get("p50") for r in (x or {}).get("latency_rounds") or [] if isinstance(r, dict)] for x in (ra, rb)]
        welch = unpaired_ratio(p50s[1], p50s[0])
        return welch["ci95"] if welch else None
    if metric == "latency_ratio.value":
        sides = [(x or {}).get("latency_ratio") or {} for x in (ra, rb)]
        if any(s.get("reference") for s in sides) or not all(s.get("sd") is not None and (s.get("rounds") or 0) > 1
                                                                for s in sides):
            return None
        from scipy.stats import t

        log = math.log(sides[1]["value"] / sides[0]["value"])
        se = math.sqrt(sum(s["sd"] ** 2 / s["rounds"] for s in sides))
        h = float(t.ppf(0.975, min(s["rounds"] for s in sides) - 1)) * se  # conservative df
        return [math.exp(log - h), math.exp(log + h)]
    return None


def main(args: argparse.Namespace) -> int:
    metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
    rows = compare_runs(args.run_a, args.run_b, metrics)
    if getattr(args, "json", False):
        print(json.dumps([{**r, "key": dict(zip(KEY, r["key"], strict=False))} for r in rows]))
        return 0
    table = [[str(r["key"][0]), f"{r['key'][1]}/{r['key'][2]}", r["metric"],
              r["note"] or fmt(r["a"], 4), "" if r["note"] else fmt(r["b"], 4),
              "" if r["note"] else (f"{r['ratio']:.3f}" if r["ratio"] is not None else "—"),
              "" if not r["ci95"] else f"{r['ci95'][0]:.3f}–{r['ci95'][1]:.3f}" + (" n.s." if not r["significant"] else "")]
             for r in rows]
    print(format_table(table, HEADERS))
    if args.markdown:
        Path(args.markdown).expanduser().write_text(
            f"### edgebench compare\n\nA = `{args.run_a}`, B = `{args.run_b}`\n\n"
            + format_table(table, HEADERS, markdown=True) + "\n")
    return 0

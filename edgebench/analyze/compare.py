"""`edgebench compare RUN_A RUN_B`: two runs side by side, with ratios B/A.

    $ edgebench compare results/RUN_A results/RUN_B
    variant  target/runtime     metric          A       B       B/A
    int8     local/onnxruntime  latency_ms.p50  0.0581  0.0544  0.936
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edgebench.analyze import KEY, fmt, format_table, read_records

HELP = "show two runs side by side per (variant, target, runtime), with ratios B/A"
METRICS = ("size_bytes", "size_gzip_bytes", "params", "macs", "latency_ms.p50", "latency_ms.p90",
           "peak_rss_mb", "energy_mj.value", "accuracy", "metric.value", "agreement")
HEADERS = ["variant", "target/runtime", "metric", "A", "B", "B/A"]


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
            rows.append({"key": key, "metric": label, "a": va, "b": vb, "ratio": ratio, "note": note})
    return rows


def main(args: argparse.Namespace) -> int:
    metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
    rows = compare_runs(args.run_a, args.run_b, metrics)
    if getattr(args, "json", False):
        print(json.dumps([{**r, "key": dict(zip(KEY, r["key"], strict=False))} for r in rows]))
        return 0
    table = [[str(r["key"][0]), f"{r['key'][1]}/{r['key'][2]}", r["metric"],
              r["note"] or fmt(r["a"], 4), "" if r["note"] else fmt(r["b"], 4),
              "" if r["note"] else (f"{r['ratio']:.3f}" if r["ratio"] is not None else "—")]
             for r in rows]
    print(format_table(table, HEADERS))
    if args.markdown:
        Path(args.markdown).expanduser().write_text(
            f"### edgebench compare\n\nA = `{args.run_a}`, B = `{args.run_b}`\n\n"
            + format_table(table, HEADERS, markdown=True) + "\n")
    return 0

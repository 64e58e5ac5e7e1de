"""Where the accuracy goes in the demo: how long `edgebench explain` takes, what it names, and what
keep_float = "auto:1" buys back.

Runs the demo on local with onnxruntime, LiteRT and OpenVINO (or takes a run folder made so),
then times `edgebench explain RUN` over every variant on all three runtimes (one runner process
per artifact, the baseline once per runtime, then the chart and the report), and prints:
- the wall time of the explanations (target: under 2 minutes for the demo's variants x 3 runtimes);
- the module each runtime ranks first for the planted int8-hostile variant (expected
  features.2.0.conv, the `stress` layer) and the next one's added dB;
- for int8-hostile and int8-hostile-auto1 on each runtime: accuracy with its 95 % interval,
  the share of int8's loss that auto:1 recovers (target >= 70 %), size and the p50 ratio to the
  baseline with its interval (same run, same machine).

    python benchmarks/explain_demo.py [--run RUN_DIR] [--inputs 300]

Timings depend on the machine and its load: run it on a quiet one.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNTIMES = ("onnxruntime", "tflite", "openvino")


def edgebench(*args: str, timeout: float = 3600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgebench", *args], capture_output=True, text=True, timeout=timeout)


def interval(ci) -> str:
    return f"[{ci[0] * 100:.1f}–{ci[1] * 100:.1f}]" if ci else ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a demo run on local with the three runtimes (default: run it)")
    parser.add_argument("--inputs", type=int, default=300)
    args = parser.parse_args()
    run = args.run
    if run is None:
        started = time.perf_counter()
        proc = edgebench("run", "--runtimes", ",".join(RUNTIMES), "--out", tempfile.mkdtemp(prefix="explain-demo-"),
                         "--json")  # fmt: skip
        if proc.returncode not in (0, 1):
            raise SystemExit(proc.stderr[-3000:])
        run = Path(json.loads(proc.stdout)["run_dir"])
        print(f"demo run: {run} ({time.perf_counter() - started:.0f} s)")
    records = [json.loads(line) for line in (run / "records.jsonl").read_text().splitlines() if line.strip()]
    by = {(r["variant"], r["runtime"]): r for r in records}
    variants = sorted({r["variant"] for r in records if r.get("steps") and r.get("status") == "ok"})

    started = time.perf_counter()
    proc = edgebench("explain", str(run), "--inputs", str(args.inputs))
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    docs = [json.loads(p.read_text()) for p in (run / "explanations").glob("*.json")]
    ok = sum(d.get("status") == "ok" for d in docs)
    print(f"edgebench explain: {len(variants)} variants x {len(RUNTIMES)} runtimes = {len(docs)} explanations "
          f"({ok} ok) in {seconds:.1f} s, chart and report included; target < 120 s")

    for runtime in RUNTIMES:
        doc = next((d for d in docs if d["variant"] == "int8-hostile" and d["runtime"] == runtime), None)
        if doc is None or doc.get("status") != "ok":
            print(f"  {runtime}: no explanation of int8-hostile")
            continue
        ranked = sorted((r for r in doc["rows"] if r.get("added_db") is not None), key=lambda r: r["added_db"])
        first, second = ranked[0], ranked[1]
        print(f"  {runtime}: int8-hostile's culprit {first['module']} (adds {first['added_db']:.1f} dB; "
              f"next {second['module'] or '(top level)'} {second['added_db']:.1f} dB)")

    print("\nvariant             runtime      accuracy [95% CI]     recovered  size KB  p50 x baseline [95% CI]")
    for runtime in RUNTIMES:
        base = by.get(("baseline", runtime))
        hostile = by.get(("int8-hostile", runtime))
        for name in ("baseline", "int8-hostile", "int8-hostile-auto1"):
            r = by.get((name, runtime))
            if not r or r.get("status") != "ok":
                continue
            recovered = ""
            if name == "int8-hostile-auto1" and base and hostile:
                lost = base["accuracy"] - hostile["accuracy"]
                recovered = f"{(r['accuracy'] - hostile['accuracy']) / lost * 100:.0f} %" if lost > 0 else "-"
            ratio = r.get("latency_ratio") or {}
            ci = ratio.get("ci95") or [None, None]
            speed = f"{ratio['value']:.3f} [{ci[0]:.3f}–{ci[1]:.3f}]" if ratio.get("value") and ci[0] else "1"
            print(f"{name:<19} {runtime:<12} {r['accuracy'] * 100:5.1f}% {interval(r.get('accuracy_ci95')):<14} "
                  f"{recovered:>9}  {r['size_bytes'] / 1000:7.1f}  {speed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

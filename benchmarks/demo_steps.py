"""Time per step of the demo: training, each variant's compression and exports, each measurement.

    python benchmarks/demo_steps.py                 # runs the demo into a temp folder, empty cache
    python benchmarks/demo_steps.py RUN_DIR         # or reads a finished run

Prints one row per variant (steps, ONNX export, TFLite export, measuring on each runtime) and
the totals; the demo's budget is 3 min 30 s on a 2-core machine. TFLite exports run in a second
process while the next variant is compressed, so the steps' sum exceeds the wall time. The
load average before and after is printed: a wall time taken under load says little.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

BUDGET_S = 210.0


def main() -> int:
    load_before = os.getloadavg()
    if len(sys.argv) > 1:
        run_dir, wall = Path(sys.argv[1]), None
    else:
        out = Path(tempfile.mkdtemp(prefix="eb-demo-"))
        # An empty cache, as a new user's first run has: the baseline is trained, not loaded.
        env = {**os.environ, "EDGEBENCH_CACHE": str(out / "cache")}
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "edgebench", "run", "--out", str(out), "--json"],
                              capture_output=True, text=True, env=env)  # fmt: skip
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return 1
        run_dir = Path(json.loads(proc.stdout)["run_dir"])
    manifest = json.loads((run_dir / "manifest.json").read_text())
    measure: dict[str, dict[str, float]] = defaultdict(dict)
    for line in (run_dir / "records.jsonl").read_text().splitlines():
        r = json.loads(line)
        measure[r["variant"]][f"{r['target']}/{r['runtime']}"] = r.get("measure_s") or 0.0
    columns = sorted({k for v in measure.values() for k in v})
    infos = {p.name: json.loads((p / "variant.json").read_text()) for p in (run_dir / "variants").iterdir()}
    background = any(i.get("timings_s", {}).get("tflite_in_background") for i in infos.values())
    header = ["variant", "steps s", "onnx s (float export + quantize)", "tflite s (in background)" if background else "tflite s",
              *[f"{c} s" for c in columns]]
    rows, totals = [], defaultdict(float)
    for vdir in sorted((run_dir / "variants").iterdir(), key=lambda p: (p.name != "baseline", p.stat().st_mtime)):
        t = infos[vdir.name].get("timings_s", {})
        row = [vdir.name, t.get("steps", 0.0), t.get("float_onnx", 0.0) + t.get("onnx", 0.0), t.get("tflite", 0.0),
               *[measure[vdir.name].get(c, 0.0) for c in columns]]  # fmt: skip
        for name, value in zip(header[1:], row[1:]):
            totals[name] += value
        rows.append(row)
    rows.append(["TOTAL", *[totals[h] for h in header[1:]]])
    widths = [max(len(str(r[i]) if isinstance(r[i], str) else f"{r[i]:.1f}") for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join((c if isinstance(c, str) else f"{c:.1f}").rjust(w) for c, w in zip(r, widths)))
    print(f"\nbaseline training (or cache load): {manifest.get('baseline_s', 0):.1f} s")
    # Moved here from tests/test_demo.py: a p50 ratio holds on a quiet machine only (slim50's
    # onnxruntime p50 came out 0.50x quiet, up to 0.83x with a neighbour on the cores).
    p50 = {(r["variant"], r["runtime"]): r["latency_ms"]["p50"] for r in map(json.loads,
           (run_dir / "records.jsonl").read_text().splitlines()) if r.get("status") == "ok"}
    for runtime in ("onnxruntime", "tflite"):
        if ("slim50", runtime) in p50 and ("baseline", runtime) in p50:
            print(f"slim50 p50 / baseline p50 on {runtime}: {p50['slim50', runtime] / p50['baseline', runtime]:.2f} "
                  "(target at most 0.85 on a quiet machine)")
    if wall is not None:
        print(f"whole demo, wall clock: {wall:.1f} s (budget {BUDGET_S:.0f} s)")
        load_after = os.getloadavg()
        print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min), "
              f"{load_after[1]:.2f} (5 min): other work on the machine inflates the times above")
    return 0


if __name__ == "__main__":
    sys.exit(main())

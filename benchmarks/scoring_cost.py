"""What scoring on the host costs next to measuring: both built-in demos, or runs you give.

Every record keeps `score_s` (the host's decoding, the task's metric, its bootstrap interval and
the paired difference, per-output fidelity; saving the outputs) beside `measure_s` (the runner
rounds on the target). This prints both per run and their ratio, per task. Target: scoring
under 10 % of measuring on the demos.

    python benchmarks/scoring_cost.py                 # runs the classify and detect demos (~6-8 min)
    python benchmarks/scoring_cost.py RUN_DIR ...     # or reads finished runs
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path


def run_demo(task: str, folder: Path) -> Path:
    exp = folder / f"{task}.toml"
    subprocess.run([sys.executable, "-m", "edgebench", "init", "--task", task, str(exp), "--force"], check=True,
                   capture_output=True)
    proc = subprocess.run([sys.executable, "-m", "edgebench", "run", str(exp), "--out", str(folder / task), "--json",
                           "--quiet"], capture_output=True, text=True)
    if proc.returncode not in (0, 1):
        raise SystemExit(proc.stderr[-2000:])
    return Path(json.loads(proc.stdout)["run_dir"])


def summarize(run: Path) -> tuple[str, float, float, int]:
    records = [json.loads(line) for line in (run / "records.jsonl").read_text().splitlines()]
    ok = [r for r in records if r.get("status") == "ok"]
    metric = next(((r.get("metric") or {}).get("name") for r in ok), "?")
    return metric, sum(r.get("score_s") or 0.0 for r in ok), sum(r.get("measure_s") or 0.0 for r in ok), len(ok)


def main() -> int:
    runs = [Path(a) for a in sys.argv[1:]]
    if not runs:
        folder = Path(tempfile.mkdtemp(prefix="eb-scoring-"))
        runs = [run_demo(task, folder) for task in ("classify", "detect")]
    print(f"{'run':40} {'metric':9} {'records':>7} {'scoring s':>10} {'measuring s':>12} {'ratio':>6}")
    for run in runs:
        metric, score_s, measure_s, n = summarize(run)
        ratio = score_s / measure_s if measure_s else float("nan")
        print(f"{run.name:40} {metric:9} {n:7d} {score_s:10.1f} {measure_s:12.1f} {ratio:6.3f}")
    print("target: scoring under 10 % of measuring (ratio < 0.10)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

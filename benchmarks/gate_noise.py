"""How often does the latency gate cry wolf, and how often does it catch a real slowdown?

Measured on THIS machine with the real runner and onnxruntime:

1. build two small ONNX CNNs: `small` and `big`, the same net with one more 3×3 conv block
   (~25% more MACs, which must also make it >= 10% slower — checked and printed);
2. run the runner on each N+1 times, alternating small/big so slow drifts hit both alike;
3. false alarms: the gate (`check.compare_records`) on run i vs run i+1 of the same model
   (2N comparisons; target: at most 1 in 20);
   detection: the gate on small run i (baseline) vs big run i — latency check only, since
   the MAC count alone would catch it (target: N in N).

    python benchmarks/gate_noise.py            # ~2 minutes on 2 cores; --runs 20 --seconds 1.5
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgebench.analyze import format_table  # noqa: E402
from edgebench.analyze.check import LATENCY_STATS, GateOptions, compare_records, latency_stat  # noqa: E402

RUNNER = ROOT / "edgebench" / "runner.py"
SIDE, WIDTH, CLASSES = 32, 16, 10


def build_cnn(path: Path, blocks: int, seed: int = 0) -> dict:
    """stem 3×3 conv 1→WIDTH, `blocks` × (3×3 conv WIDTH→WIDTH + ReLU), global pool, linear.

    Written with onnx.helper (no torch needed); returns params and MACs, counted here.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits, params, macs = [], [], 0, 0
    x, c_in = "x", 1
    for i in range(blocks + 1):
        w = (rng.standard_normal((WIDTH, c_in, 3, 3)) * np.sqrt(2 / (9 * c_in))).astype(np.float32)
        b = np.zeros(WIDTH, np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes.append(helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        params += w.size + b.size
        macs += SIDE * SIDE * WIDTH * c_in * 9
        x, c_in = f"r{i}", WIDTH
    fc = (rng.standard_normal((WIDTH, CLASSES)) * 0.3).astype(np.float32)
    inits += [numpy_helper.from_array(fc, "fc"), numpy_helper.from_array(np.zeros(CLASSES, np.float32), "fcb")]
    nodes += [helper.make_node("GlobalAveragePool", [x], ["pool"]),
              helper.make_node("Flatten", ["pool"], ["flat"]),
              helper.make_node("Gemm", ["flat", "fc", "fcb"], ["logits"])]
    params += fc.size + CLASSES
    macs += WIDTH * CLASSES
    graph = helper.make_graph(
        nodes, f"cnn{blocks}", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, SIDE, SIDE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", CLASSES])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return {"params": int(params), "macs": int(macs), "size_bytes": path.stat().st_size}


def measure(model: Path, data: Path, out: Path, seconds: float) -> dict:
    """One real runner process, as a target would start it; returns its JSON document."""
    cmd = [sys.executable, str(RUNNER), "--model", str(model), "--data", str(data), "--runtime",
           "onnxruntime", "--threads", "1", "--warmup", "50", "--min-runs", "200",
           "--min-seconds", str(seconds), "--output", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    return json.loads(out.read_text())


def to_record(variant: str, result: dict, facts: dict) -> dict:
    """The fields of a record the gate reads, built from the runner's output."""
    samples = result["latency_samples_ms"]
    return {"variant": variant, "target": "local", "runtime": "onnxruntime", "status": result["status"],
            **facts, "accuracy": result.get("accuracy"), "latency_samples_ms": samples,
            "latency_ms": {"p50": float(np.median(samples)), "p90": float(np.percentile(samples, 90)),
                           "n": len(samples)},
            "machine": {**result["machine"], "runtime_version": result["runtime_version"]}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="comparisons per kind (default 20)")
    parser.add_argument("--seconds", type=float, default=1.5, help="timed seconds per runner call")
    parser.add_argument("--dump", metavar="PATH", help="also write every run's record as JSON here")
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        facts = {"small": build_cnn(folder / "small.onnx", 4), "big": build_cnn(folder / "big.onnx", 5)}
        rng = np.random.default_rng(0)
        np.savez(folder / "data.npz", x=rng.standard_normal((16, 1, SIDE, SIDE)).astype(np.float32),
                 y=rng.integers(0, CLASSES, 16))
        runs: dict[str, list[dict]] = {"small": [], "big": []}
        for i in range(args.runs + 1):
            for name in ("small", "big"):
                result = measure(folder / f"{name}.onnx", folder / "data.npz", folder / "out.json", args.seconds)
                # The gate compares a variant with itself across runs: same name for both models.
                runs[name].append(to_record("cnn", result, facts[name]))
            print(f"\rround {i + 1}/{args.runs + 1}", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
    if args.dump:
        Path(args.dump).write_text(json.dumps(runs))

    def latency_failed(checks: list) -> bool:
        return any(c.failed and c.metric.startswith("latency") for c in checks)

    rows, results = [], {}
    for stat in LATENCY_STATS:  # the same runs judged with each statistic of the effect
        options = GateOptions(latency_stat=stat)
        for name in ("small", "big"):
            pairs = [compare_records(runs[name][i], runs[name][i + 1], options) for i in range(args.runs)]
            ratios = [latency_stat(runs[name][i + 1]["latency_samples_ms"], stat)
                      / latency_stat(runs[name][i]["latency_samples_ms"], stat) for i in range(args.runs)]
            alarms = sum(any(c.failed for c in p) for p in pairs)
            results[f"false_alarms_{name}_{stat}"] = alarms
            rows.append([stat, f"same model ({name}), run i vs i+1", f"{alarms}/{args.runs} fail",
                         f"{min(ratios):.3f}–{max(ratios):.3f}", "≤ 1 in 20"])
        caught = [compare_records(runs["small"][i], runs["big"][i], options) for i in range(args.runs)]
        ratios = [latency_stat(runs["big"][i]["latency_samples_ms"], stat)
                  / latency_stat(runs["small"][i]["latency_samples_ms"], stat) for i in range(args.runs)]
        results[f"detected_{stat}"] = detected = sum(latency_failed(p) for p in caught)
        rows.append([stat, "big vs small (latency check only)", f"{detected}/{args.runs} fail",
                     f"{min(ratios):.3f}–{max(ratios):.3f}", f"{args.runs} in {args.runs}"])
        rows.append([stat, "big vs small (whole gate, MACs too)",
                     f"{sum(any(c.failed for c in p) for p in caught)}/{args.runs} fail", "", ""])
    small_p50 = statistics.median(r["latency_ms"]["p50"] for r in runs["small"])
    big_p50 = statistics.median(r["latency_ms"]["p50"] for r in runs["big"])
    print(f"models: small {facts['small']['macs']:,} MACs, p50 {small_p50:.3f} ms; big "
          f"{facts['big']['macs']:,} MACs (+{facts['big']['macs'] / facts['small']['macs'] - 1:.1%}), "
          f"p50 {big_p50:.3f} ms (+{big_p50 / small_p50 - 1:.1%})")
    print(f"gate: latency fails when the statistic grows >= {GateOptions().latency_effect:.0%} "
          f"and Mann-Whitney U p < {GateOptions().alpha}; {args.runs + 1} runs per model of "
          f">= {args.seconds} s each, alternating\n")
    print(format_table(rows, ["effect on", "comparison", "gate verdicts", "ratio range", "target"]))
    print(f"\n{time.perf_counter() - started:.0f} s")
    default = GateOptions().latency_stat
    alarms = results[f"false_alarms_small_{default}"] + results[f"false_alarms_big_{default}"]
    ok = alarms <= max(1, 2 * args.runs // 20) and results[f"detected_{default}"] == args.runs
    print(f"default ({default}): " + ("PASS" if ok else "FAIL: the gate is too noisy or too blind here"))
    print(f"big model slower by {big_p50 / small_p50 - 1:.1%} (p50, median over runs): "
          + ("ok" if big_p50 / small_p50 >= 1.10 else "NOT >= 10%: make it bigger"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

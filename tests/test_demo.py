"""The built-in demo, run as a user runs it, holds the project's promises on this machine.

One `edgebench run` of the demo (local target, onnxruntime and TFLite), then the thresholds
the compressor issue set, each measured in the same run, so machine noise cancels in ratios.

Accuracy limits are statistical, not one-image coin tosses: seeded CPU training is not
bit-identical across CPUs, so a limit is what was measured here plus three standard errors
of the paired difference (sqrt(discordant pairs) / n on the demo's 1,800 test images), and
"not worse" between two variants is an exact McNemar test on the same test inputs.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgebench.measure.records import FIELDS, read_records

pytestmark = [pytest.mark.slow, pytest.mark.tflite]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("demo")
    proc = subprocess.run([sys.executable, "-m", "edgebench", "run", "--out", str(out), "--json"],
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = Path(json.loads(proc.stdout)["run_dir"])
    records = read_records(run_dir / "records.jsonl")
    return {"dir": run_dir, "by": {(r["variant"], r["runtime"]): r for r in records}, "records": records}


def ratio(demo, variant: str, key: str, runtime: str = "onnxruntime") -> float:
    by = demo["by"]
    return _get(by[(variant, runtime)], key) / _get(by[("baseline", runtime)], key)


def drop(demo, variant: str, runtime: str = "onnxruntime") -> float:
    """Accuracy drop against the baseline, in points."""
    by = demo["by"]
    return 100 * (by[("baseline", runtime)]["accuracy"] - by[(variant, runtime)]["accuracy"])


def correct(demo, variant: str, runtime: str = "onnxruntime") -> np.ndarray:
    """Per test input: did `variant` predict the label? From the run's saved logits."""
    logits = np.load(demo["dir"] / "logits" / f"{variant}__local__{runtime}.npy")
    return logits.argmax(1) == np.load(demo["dir"] / "eval.npz")["y"]


def mcnemar_worse_p(reference: np.ndarray, candidate: np.ndarray) -> float:
    """One-sided exact McNemar p-value that `candidate` is worse than `reference` on the same inputs.

    Only the discordant inputs count: b where only the reference is right, c where only the
    candidate is; under "no difference" b ~ Binomial(b + c, 1/2), and p = P(X >= b).
    """
    b = int((reference & ~candidate).sum())
    n = b + int((~reference & candidate).sum())
    return sum(math.comb(n, k) for k in range(b, n + 1)) / 2**n if n else 1.0


def _get(record: dict, key: str) -> float:
    value = record
    for part in key.split("."):
        value = value[part]
    return value


def test_every_record_is_ok_and_complete(demo):
    assert len(demo["records"]) == 2 * 19  # baseline + 18 variants, on two runtimes
    for r in demo["records"]:
        assert r["status"] == "ok", (r["variant"], r["runtime"], r["error"])
        assert set(FIELDS) <= set(r)
    for name in ("report.html", "report.md", "records.csv", "manifest.json"):
        assert (demo["dir"] / name).is_file()


def test_baseline_is_accurate_on_a_test_set_that_resolves_a_point(demo):
    base = demo["by"][("baseline", "onnxruntime")]
    # Not saturated (plain digits: 99.4% of 360, where one image is 0.3 pt): measured 89.9%.
    assert 0.85 <= base["accuracy"] <= 0.97
    assert base["n_eval"] >= 1500 and len(correct(demo, "baseline")) == base["n_eval"]
    # ~5 us is the fixed cost of an onnxruntime call here: the model must dwarf it
    # (the 20x20 demo CNN: ~0.07-0.11 ms; its half-width students ~0.03-0.05 ms).
    assert base["latency_ms"]["p50"] >= 10 * 0.005


# Measured on this machine (2 cores, 2026-12-03, onnxruntime, 1,800 test images; "se" is the
# standard error of the paired difference, sqrt(discordant) / n). Each accuracy limit is the
# measured drop + 3 se, rounded up to half a point: a run on another CPU trains slightly
# different models, and one-image limits failed there (issue 9).


def test_linear_quantization(demo):
    assert ratio(demo, "int8", "size_bytes") <= 0.35  # measured 0.29
    assert drop(demo, "int8") <= 1.5  # measured 0.4 pt, se 0.25
    # Logits move more on the harder data than on plain digits (5.1% measured, 1-2% there).
    assert demo["by"][("int8", "onnxruntime")]["logit_rel_err"] <= 0.1
    assert ratio(demo, "fp16", "size_bytes") <= 0.6  # measured 0.51
    assert drop(demo, "fp16") <= 0.5  # measured 0.0 pt (no input changed its answer)
    assert drop(demo, "int8-dynamic") <= 1.0  # measured 0.1 pt, se 0.2
    assert drop(demo, "qat-int8") <= 1.5  # measured 0.2 pt, se 0.4


def test_a_planted_int8_hostile_layer_is_named_by_explain_and_kept_float_by_auto(demo):
    # int8-hostile: the baseline with one layer made int8-hostile by `stress` (features.2.0 gets a
    # repeated input channel with +/-50x weights that cancel in float); same fp32 function.
    proc = subprocess.run([sys.executable, "-m", "edgebench", "explain", str(demo["dir"]), "--variant", "int8-hostile",
                           "--json"], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(proc.stdout)
    for runtime in ("onnxruntime", "tflite"):
        lost = drop(demo, "int8-hostile", runtime)
        assert lost >= 10, runtime  # measured 26.3 and 26.4 pt
        ranked = sorted((r for r in rows if r["runtime"] == runtime and r["added_db"] is not None),
                        key=lambda r: r["added_db"])
        assert ranked[0]["module"] == "features.2.0.conv", ranked[:3]  # measured 8.6 dB, the next >= 32 dB
        fixed = demo["by"][("int8-hostile-auto1", runtime)]
        assert fixed["kept_float"] == ["features.2.0.conv"] and fixed["compute_precision"] == "mixed"
        # keep_float = "auto:1" recovers at least 70 % of the loss (measured: all of it, 90.0 %)
        assert drop(demo, "int8-hostile-auto1", runtime) <= 0.3 * lost, runtime


def test_pruning(demo):
    sparse = demo["by"][("sparse80", "onnxruntime")]
    assert sparse["nonzero_params"] <= 0.22 * sparse["params"]  # measured 0.205
    assert ratio(demo, "sparse80", "size_gzip_bytes") <= 0.45  # measured 0.30
    assert drop(demo, "sparse80") <= 2.5  # measured 0.7 pt, se 0.45
    assert ratio(demo, "slim50", "macs") <= 0.55  # measured 0.26
    # Its speed-up (p50 0.50x quiet, up to 0.83x with a neighbour on the cores) is a quiet-machine
    # verdict: benchmarks/demo_steps.py prints it. MACs do not depend on the machine.
    assert drop(demo, "slim50") <= 3.5  # measured 1.6 pt, se 0.55


def test_clustering_and_low_rank(demo):
    assert ratio(demo, "kmeans4", "size_gzip_bytes") <= 0.4  # measured 0.28
    assert drop(demo, "kmeans4") <= 1.0  # measured 0.1 pt, se 0.3
    assert drop(demo, "deep-compression") <= 3.5  # measured 1.7 pt, se 0.5
    for variant in ("lowrank-svd", "lowrank-tucker2"):
        assert ratio(demo, variant, "params") <= 0.6  # measured 0.58 and 0.38
        assert drop(demo, variant) <= 2.0  # measured -0.6 and 0.0 pt, se 0.45 and 0.5


def test_distillation_and_compact_students(demo):
    # Each KD student is not significantly worse than the same student trained without the
    # teacher, by an exact one-sided McNemar test on the same 1,800 inputs. At alpha = 0.01
    # over the three pairs (Bonferroni, 0.0033 each), a fresh machine fails this by chance
    # less than once in a hundred runs even if distillation did nothing. Measured: every KD
    # student 0.2-0.6 pt above its twin (p of "worse" 0.62-0.84).
    for kd in ("kd-logits", "kd-feature", "kd-relation"):
        p = mcnemar_worse_p(correct(demo, "kd-logits-nokd"), correct(demo, kd))
        assert p >= 0.01 / 3, (kd, p)
    for student in ("compact-mobilenet", "compact-shufflenet"):
        assert ratio(demo, student, "params") <= 0.5  # measured 0.37 and 0.44
    # measured 2.9 pt (se 0.7), 2.4 pt (se 0.7), 0.1 pt (se 0.6)
    for student, limit in (("kd-logits", 5.0), ("compact-mobilenet", 4.5), ("compact-shufflenet", 2.0)):
        assert drop(demo, student) <= limit, student


def test_tflite_matches_torch(demo):
    by = demo["by"]
    base = by[("baseline", "tflite")]
    assert base["export_rel_err"] < 1e-4
    assert abs(base["accuracy"] - base["torch_accuracy"]) <= 0.005
    for (variant, runtime), r in by.items():
        if runtime == "tflite":  # every TFLite variant is a working model
            assert r["accuracy"] >= by[(variant, "onnxruntime")]["accuracy"] - 0.03, variant


def test_the_gate_catches_a_budget_the_demo_breaks(demo, tmp_path):
    budget = tmp_path / "budget.toml"
    budget.write_text('[[budget]]\nvariant = "int8"\nmax_size_bytes = 1000\n')
    proc = subprocess.run([sys.executable, "-m", "edgebench", "check", str(demo["dir"]), "--budget", str(budget)],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 1
    line = next(ln for ln in proc.stdout.splitlines() if "FAIL" in ln and "int8" in ln)
    size = demo["by"][("int8", "onnxruntime")]["size_bytes"]
    assert "size_bytes" in line and "1,000" in line.replace("1000", "1,000")
    assert f"{size:,}" in line or str(size) in line

"""ExecuTorch and ncnn end to end on this machine: a sweep (baseline, int8, fp16, a pruned
variant) measured with onnxruntime, ExecuTorch and ncnn through the real runner. Every record is
ok or "unavailable" with its reason; fp32 answers match onnxruntime's; records say what ran (the
XNNPACK share and ops left to portable kernels, ncnn's fp16 options read back); `edgebench
profile` gives measured per-module rows for an ExecuTorch record.

What ncnn computes an fp16 variant in is the CPU's call (fp16 arithmetic needs ARMv8.2
asimdhp): expected from this machine's features, never from the author's."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("torch")
pytest.importorskip("executorch.exir")
pytest.importorskip("ncnn")
pytest.importorskip("pnnx")

from conftest import write_experiment  # noqa: E402

pytestmark = pytest.mark.slow

VARIANTS = """
[[variant]]
name = "int8"
steps = [{ method = "quantize", scheme = "int8_static" }]

[[variant]]
name = "fp16"
steps = [{ method = "quantize", scheme = "fp16" }]

[[variant]]
name = "pruned50"
steps = [{ method = "prune", kind = "structured", ratio = 0.5, finetune_epochs = 1 }]
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mobile")
    exp = write_experiment(folder, variants=VARIANTS,
                           **{'runtimes = ["onnxruntime"]': 'runtimes = ["onnxruntime", "executorch", "ncnn"]'})
    proc = subprocess.run([sys.executable, "-m", "edgebench", "run", str(exp), "--out", str(folder / "runs"), "--quiet"],
                          capture_output=True, text=True, timeout=900, cwd=folder)
    assert proc.returncode == 0, proc.stderr[-2000:]  # "unavailable" records do not fail a run
    (run_dir,) = (folder / "runs").iterdir()
    records = {(r["variant"], r["runtime"]): r for r in map(json.loads, (run_dir / "records.jsonl").read_text().splitlines())}
    return run_dir, records


def test_every_variant_is_measured_or_unavailable_with_its_reason(run):
    _, records = run
    assert len(records) == 12
    for (variant, runtime), r in records.items():
        if (variant, runtime) == ("int8", "ncnn"):  # no int8 route without ncnn2int8
            assert r["status"] == "error" and r["error"].startswith("unavailable") and "ncnn2int8" in r["error"]
        else:
            assert r["status"] == "ok", (variant, runtime, r.get("error"))


def test_fp32_answers_match_onnxruntime_on_the_same_inputs(run):
    _, records = run
    for variant in ("baseline", "pruned50"):
        ort = records[(variant, "onnxruntime")]
        for runtime in ("executorch", "ncnn"):
            r = records[(variant, runtime)]
            assert r["n_eval"] == ort["n_eval"]
            assert abs(r["accuracy"] - ort["accuracy"]) <= 0.005, (variant, runtime)
            assert r["format"] == {"executorch": "pte", "ncnn": "ncnn"}[runtime]


def test_executorch_records_say_what_xnnpack_ran(run):
    _, records = run
    base, int8 = records[("baseline", "executorch")], records[("int8", "executorch")]
    # The demo CNN is convs, pooling and a Linear: XNNPACK takes all of it, and says so on the device.
    assert base["delegation"]["share"] == 1.0 and base["delegation"]["fallback_ops"] == {}
    assert base["delegation"]["ran"]["portable_ops"] == {} and base["delegation"]["ran"]["delegate_calls"] == 1
    assert base["compute_precision"] == "fp32" and "every op ran in XNNPACK" in base["precision_note"]
    assert int8["compute_precision"] == "int8" and "ETDump" in int8["precision_source"]
    assert int8["size_bytes"] < base["size_bytes"]
    assert abs(int8["accuracy"] - base["accuracy"]) <= 0.03  # a quarter-width CNN on 8x8 digits
    assert base["runtime_settings"]["threads"] == 1 and base["machine"]["runtime_version"]
    assert base["import_s"] > 0  # its Python runtime imports torch: measured apart from loading


def test_ncnn_fp16_options_are_set_per_record_and_read_back(run):
    from edgebench.device.runner_facts import machine_facts

    _, records = run
    base, fp16 = records[("baseline", "ncnn")], records[("fp16", "ncnn")]
    keys = ("use_fp16_storage", "use_fp16_packed", "use_fp16_arithmetic")
    assert [base["runtime_settings"][k] for k in keys] == [False] * 3  # fp32 is the reference
    assert [fp16["runtime_settings"][k] for k in keys] == [True] * 3
    assert fp16["weight_precision"] == "fp16" and fp16["size_bytes"] < base["size_bytes"]
    here = machine_facts()
    arm_fp16 = here["arch"] == "aarch64" and "asimdhp" in (here["cpu_features"] or ())
    assert fp16["compute_precision"] == ("fp16" if arm_fp16 else "fp32"), fp16["precision_note"]
    assert base["compute_precision"] == "fp32"


def test_profile_gives_measured_rows_per_module_for_executorch(run):
    run_dir, _ = run
    proc = subprocess.run([sys.executable, "-m", "edgebench", "profile", str(run_dir), "--variant", "baseline",
                           "--runtime", "executorch", "--runs", "20", "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(proc.stdout)
    assert rows and all(row["status"] == "ok" and not row["approximate"] for row in rows)
    modules = {row["module"] for row in rows}
    # Each XNNPACK kernel is found in the export's map: the demo CNN's convs and its classifier.
    assert {"features.0.0", "classifier"} <= modules and "(unattributed)" not in modules
    assert abs(sum(row["share"] for row in rows) - 1.0) < 1e-6
    doc = json.loads((run_dir / "profiles" / "baseline__local__executorch.json").read_text())
    assert doc["measured"] and 0 < doc["coverage"] <= 1.5 and doc["node_sum_ms"] > 0

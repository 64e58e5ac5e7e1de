"""OpenVINO end to end on this machine: the variants' .onnx files (fp32, fp16, QDQ int8) run
through a real sweep; accuracy matches onnxruntime's on the same artifacts and inputs, and the
records say which precision the compiled model executes and how many threads it used."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("openvino")
pytest.importorskip("torch")

from conftest import write_experiment  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ov")
    exp = write_experiment(folder, variants="""
[[variant]]
name = "int8"
steps = [{ method = "quantize", scheme = "int8_static" }]

[[variant]]
name = "fp16"
steps = [{ method = "quantize", scheme = "fp16" }]
""", **{'runtimes = ["onnxruntime"]': 'runtimes = ["onnxruntime", "openvino"]', "threads = 1\nwarmup": "threads = 2\nwarmup"})
    proc = subprocess.run([sys.executable, "-m", "edgebench", "run", str(exp), "--out", str(folder / "runs"), "--quiet"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (run,) = (folder / "runs").iterdir()
    return {(r["variant"], r["runtime"]): r for r in map(json.loads, (run / "records.jsonl").read_text().splitlines())}


def test_every_variant_runs_on_openvino(records):
    ov = [r for (v, rt), r in records.items() if rt == "openvino"]
    assert {r["variant"] for r in ov} == {"baseline", "int8", "fp16"}
    assert all(r["status"] == "ok" for r in ov), [r.get("error") for r in ov]


def test_accuracy_matches_onnxruntime_on_the_same_artifact(records):
    for variant in ("baseline", "int8", "fp16"):
        ort, ov = records[(variant, "onnxruntime")], records[(variant, "openvino")]
        assert ort["n_eval"] == ov["n_eval"] and ort["size_bytes"] == ov["size_bytes"]
        assert abs(ort["accuracy"] - ov["accuracy"]) <= 0.005, (variant, ort["accuracy"], ov["accuracy"])


def test_the_precision_that_ran_is_read_back_from_the_compiled_model(records):
    base, int8, fp16 = (records[(v, "openvino")] for v in ("baseline", "int8", "fp16"))
    assert base["compute_precision"] == "fp32"
    assert int8["compute_precision"] == "int8" and "I8" in int8["precision_note"]
    # x86 without AVX512-FP16: the fp16 file's weights are decompressed and it computes in fp32.
    assert fp16["compute_precision"] == "fp32" and fp16["weight_precision"] == "fp16"
    assert all("compiled model" in r["precision_source"] for r in (base, int8, fp16))


def test_the_thread_count_is_honoured(records):
    for variant in ("baseline", "int8"):
        assert records[(variant, "openvino")]["runtime_settings"]["inference_num_threads"] == 2

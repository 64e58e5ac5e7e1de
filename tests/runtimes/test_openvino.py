"""OpenVINO end to end on this machine: the variants' .onnx files (fp32, fp16, QDQ int8) run
through a real sweep; accuracy matches onnxruntime's on the same artifacts and inputs, and the
records say which precision the compiled model executes and how many threads it used.

What an fp32 model computes in depends on the CPU: bf16 by default on x86 with AVX-512 BF16 or
AMX, fp32 on other x86. The expectation is read from this machine's CPU features (and checked
against the plugin's own default), and a target that pins `inference_precision = "f32"` must
compute in fp32 exactly, on every CPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("openvino")
pytest.importorskip("torch")

from conftest import capability_id, fp32_runs_as, write_experiment  # noqa: E402

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
""", **{'runtimes = ["onnxruntime"]': 'runtimes = ["onnxruntime", "openvino"]', "threads = 1\nwarmup": "threads = 2\nwarmup",
          'targets = ["local"]': 'targets = ["local", "local-f32.toml"]'})
    local = (Path(__file__).resolve().parents[2] / "edgebench" / "profiles" / "local.toml").read_text()
    (folder / "local-f32.toml").write_text(local.replace('name = "local"', 'name = "local-f32"')
                                            + '\n[runtime.openvino]\ninference_precision = "f32"\n')
    proc = subprocess.run([sys.executable, "-m", "edgebench", "run", str(exp), "--out", str(folder / "runs"), "--quiet"],
                          capture_output=True, text=True, timeout=600, cwd=folder)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (run,) = (folder / "runs").iterdir()
    records = list(map(json.loads, (run / "records.jsonl").read_text().splitlines()))
    pinned = {(r["variant"], r["runtime"]): r for r in records if r["target"] == "local-f32"}
    return {(r["variant"], r["runtime"]): r for r in records if r["target"] == "local"} | {"pinned": pinned}


def test_every_variant_runs_on_openvino(records):
    ov = [r for key, r in records.items() if key != "pinned" and key[1] == "openvino"]
    ov += [r for (_, rt), r in records["pinned"].items() if rt == "openvino"]
    assert {r["variant"] for r in ov} == {"baseline", "int8", "fp16"} and len(ov) == 6
    assert all(r["status"] == "ok" for r in ov), [r.get("error") for r in ov]


def test_accuracy_matches_onnxruntime_on_the_same_artifact(records):
    # Pinned to f32, OpenVINO computes what onnxruntime computes: at most one of 360 answers
    # differs. At its CPU's default (bf16 on AVX-512 BF16: 8 significant bits per activation)
    # borderline inputs may flip: a few of 360 (measured here, bf16: 0 to 2).
    for by, limit in ((records["pinned"], 0.005), (records, 0.005 if fp32_runs_as("openvino")[0] == "fp32" else 0.02)):
        for variant in ("baseline", "int8", "fp16"):
            ort, ov = records[(variant, "onnxruntime")], by[(variant, "openvino")]
            assert ort["n_eval"] == ov["n_eval"] and ort["size_bytes"] == ov["size_bytes"]
            assert abs(ort["accuracy"] - ov["accuracy"]) <= limit, (variant, ov["target"], ort["accuracy"], ov["accuracy"])


@pytest.mark.parametrize("expected", [fp32_runs_as("openvino")[0]], ids=[capability_id("openvino")])
def test_the_plugin_defaults_to_the_precision_the_cpu_features_say(expected):
    import openvino as ov

    hint = ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT")
    said = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}[hint.to_string()]
    assert said == expected, f"OpenVINO says {said}; edgebench read {fp32_runs_as('openvino')}"


@pytest.mark.parametrize("expected", [fp32_runs_as("openvino")[0]], ids=[capability_id("openvino")])
def test_the_precision_that_ran_is_read_back_from_the_compiled_model(records, expected):
    base, int8, fp16 = (records[(v, "openvino")] for v in ("baseline", "int8", "fp16"))
    why = fp32_runs_as("openvino", base["machine"])[1]
    assert base["machine"].get("cpu_features") is not None, base["machine"]
    # fp32 runs as the CPU decides (bf16 on AVX-512 BF16 / AMX x86); the record says so.
    assert base["compute_precision"] == expected, (base["precision_note"], why)
    assert base["runtime_settings"]["inference_precision"] == {"fp32": "f32", "bf16": "bf16"}[expected]
    assert int8["compute_precision"] == "int8" and "I8" in int8["precision_note"]
    # x86 without AVX512-FP16 arithmetic: the fp16 file's weights are decompressed and it
    # computes in what the plugin computes fp32 models in.
    assert fp16["compute_precision"] == expected and fp16["weight_precision"] == "fp16", fp16["precision_note"]
    assert all("compiled model" in r["precision_source"] for r in (base, int8, fp16))


def test_a_profile_that_pins_f32_computes_in_fp32_on_every_cpu(records):
    base, fp16 = (records["pinned"][(v, "openvino")] for v in ("baseline", "fp16"))
    assert base["compute_precision"] == "fp32" and base["runtime_settings"]["inference_precision"] == "f32"
    assert fp16["compute_precision"] == "fp32" and fp16["weight_precision"] == "fp16"
    assert "inference_precision=f32" in base["precision_source"]


def test_the_thread_count_is_honoured(records):
    for variant in ("baseline", "int8"):
        assert records[(variant, "openvino")]["runtime_settings"]["inference_num_threads"] == 2

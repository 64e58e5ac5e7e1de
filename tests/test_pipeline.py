"""The whole flow on a tiny experiment: real training, real ONNX export, real onnxruntime."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import write_experiment

from edgebench.cli import run_status
from edgebench.config import load_experiment
from edgebench.measure.records import FIELDS, read_records
from edgebench.pipeline import run_experiment

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-run")
    exp = load_experiment(write_experiment(folder))
    return run_experiment(exp, out=folder / "results", log=lambda m: None)


def test_results_layout(tiny_run):
    for name in ("manifest.json", "records.jsonl", "records.csv", "report.md"):
        assert (tiny_run / name).is_file(), name
    assert list((tiny_run / "plots").glob("*.png"))
    for variant in ("baseline", "int8", "fp16"):
        assert (tiny_run / "variants" / variant / "model.onnx").is_file()
        info = json.loads((tiny_run / "variants" / variant / "variant.json").read_text())
        assert info["parent"] == (None if variant == "baseline" else "baseline")
    manifest = json.loads((tiny_run / "manifest.json").read_text())
    assert manifest["schema_version"] == 1 and manifest["finished"]
    assert manifest["experiment"]["name"] == "tiny" and "commit" in manifest["git"]


def test_every_record_has_every_field(tiny_run):
    records = read_records(tiny_run / "records.jsonl")
    # The baseline's record comes first; the others as their rounds end (a busy machine may add
    # rounds to one variant, whose record then comes after the next one's).
    assert records[0]["variant"] == "baseline" and sorted(r["variant"] for r in records) == ["baseline", "fp16", "int8"]
    for r in records:
        assert set(FIELDS) <= set(r), set(FIELDS) - set(r)
        assert r["status"] == "ok", r["error"]
        for key in ("size_bytes", "size_gzip_bytes", "params", "nonzero_params", "macs", "peak_rss_mb", "cpu_time_s", "accuracy"):
            assert r[key] > 0, key
        assert r["latency_ms"]["n"] == len(r["latency_samples_ms"]) >= 20
        # Three interleaved runner processes at least; more only where a ratio to the baseline was
        # not yet within +-precision (a busy machine), and the record says so.
        assert 3 <= r["rounds"] <= 10 and r["measure_s"] > 0
        stopped_by = r["latency_ratio"]["stopped_by"]
        assert stopped_by in (("rounds", "precision") if r["rounds"] == 3 else ("precision", "max_rounds", "max_seconds"))
        assert r["latency_ms"]["p50"] <= r["latency_ms"]["p90"] <= r["latency_ms"]["p99"]
        assert {"arch", "system", "cpu", "runtime_version", "threads"} <= set(r["machine"])
    base, int8, fp16 = ({r["variant"]: r for r in records}[v] for v in ("baseline", "int8", "fp16"))
    assert base["agreement"] == 1.0 and base["logit_rel_err"] == 0.0
    assert int8["size_bytes"] < 0.7 * base["size_bytes"]
    assert 0 < int8["logit_rel_err"] < 0.2 and int8["agreement"] > 0.9
    assert fp16["logit_rel_err"] < 0.01


def test_records_say_what_each_phase_cost_and_how_sure_accuracy_is(tiny_run):
    for r in read_records(tiny_run):
        assert 0 < r["load_s"] < 10 and r["first_inference_ms"] > 0
        # Memory by phase: the runtime and model after load; inference adds little on top.
        assert 10 < r["rss_after_load_mb"] <= r["peak_rss_inference_mb"] + 1e-9 < 2000
        assert r["peak_rss_mb"] == r["peak_rss_inference_mb"] and r["peak_rss_eval_mb"] > 10
        assert len(r["latency_rounds"]) == r["rounds"] and sum(x["n"] for x in r["latency_rounds"]) == r["latency_ms"]["n"]
        assert {"cpu_mhz", "temp_c", "throttled", "load_avg", "unreadable"} <= set(r["conditions"])
        for key, value in r["conditions"].items():  # a reading is a value, or None with its reason
            if value is None:
                assert key in r["conditions"]["unreadable"], key
        assert r["n_eval"] == 360
        low, high = r["accuracy_ci95"]
        assert low < r["accuracy"] < high or r["accuracy"] == 1.0
        assert high - low < 0.1
        energy = r["energy_mj"]
        assert energy["value"] > 0 and energy["scope"] and energy["source"]
    base, int8, _ = read_records(tiny_run)
    assert base["accuracy_delta_p"] is None and 0 <= int8["accuracy_delta_p"] <= 1


def test_second_run_uses_the_cached_baseline(tmp_path):
    exp = load_experiment(write_experiment(tmp_path, variants=""))
    logs: list[str] = []
    run_experiment(exp, out=tmp_path / "a", log=logs.append)
    logs.clear()
    run_experiment(exp, out=tmp_path / "b", log=logs.append)
    assert any("loaded trained weights from cache" in m for m in logs)
    assert not any("epoch" in m for m in logs)


UNEXPORTABLE = '''
import torch
from torch import nn

class Branchy(nn.Module):
    """Data-dependent control flow: torch.export cannot capture it."""
    def __init__(self, num_classes=10, in_channels=1):
        super().__init__()
        self.fc = nn.Linear(in_channels * 64, num_classes)
    def forward(self, x):
        y = self.fc(x.flatten(1))
        if float(y.sum()) > 0:
            return y
        return -y

def build(num_classes, in_channels):
    return Branchy(num_classes, in_channels)
'''


def test_model_that_cannot_export_is_an_error_record_and_the_run_exits_1(tmp_path):
    (tmp_path / "usermodels.py").write_text(UNEXPORTABLE)
    exp_file = write_experiment(tmp_path, **{'factory = "demo_cnn"': 'factory = "usermodels:build"',
                                             "kwargs = { width = 0.25 }": ""})  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "edgebench", "run", str(exp_file), "--out", str(tmp_path / "r"),
                           "--json"], capture_output=True, text=True, env=env, timeout=300)
    summary = json.loads(proc.stdout)
    records = read_records(Path(summary["run_dir"]) / "records.jsonl")
    assert len(records) == 3  # every variant is recorded, none silently dropped
    assert all(r["status"] == "error" and r["error"].startswith("ONNX export failed") for r in records)
    # A run of nothing but errors is not a success.
    assert proc.returncode == 1 and summary["exit"] == 1 and "3 of 3 records are errors" in summary["why"]


def test_run_status_rule():
    ok = {"variant": "a", "target": "t", "runtime": "r", "status": "ok"}
    unavailable = {**ok, "status": "error", "error": "unavailable: ai-edge-litert is not installed"}
    broken = {**ok, "status": "error", "error": "TFLite export failed"}
    assert run_status([ok, unavailable])[0] == 0  # a runtime not installed is reported, not failed
    assert run_status([ok, broken])[0] == 1
    assert run_status([unavailable]) == (1, "nothing was measured: every record is unavailable (see `edgebench targets`)")


CRASHING = '''
from torch import nn

class Crash(nn.Module):
    def __init__(self, num_classes=10, in_channels=1):
        super().__init__()
        self.fc = nn.Linear(4, num_classes)
    def forward(self, x):
        if self.training:   # takes the data (the probe runs it in eval mode); training fails at once
            raise RuntimeError("boom")
        return self.fc(x.flatten(1)[:, :4])

class WrongShape(Crash):
    def forward(self, x):
        return self.fc(x)   # wrong shape for 8x8 inputs

def build(num_classes, in_channels):
    return Crash(num_classes, in_channels)

def wrong(num_classes, in_channels):
    return WrongShape(num_classes, in_channels)
'''


@pytest.mark.parametrize("factory, says", [
    ("build", "baseline: crashing:build failed"),  # training crashes
    ("wrong", "model 'crashing:wrong' cannot take the data's inputs of shape [1, 8, 8]"),  # caught by the probe
])  # fmt: skip
def test_a_run_that_fails_before_measuring_leaves_no_folder_and_one_line(tmp_path, factory, says):
    (tmp_path / "crashing.py").write_text(CRASHING)
    exp_file = write_experiment(tmp_path, **{'factory = "demo_cnn"': f'factory = "crashing:{factory}"',
                                             "kwargs = { width = 0.25 }": ""})  # fmt: skip
    out = tmp_path / "r"
    proc = subprocess.run([sys.executable, "-m", "edgebench", "run", str(exp_file), "--out", str(out), "--quiet"],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(tmp_path)}, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(f"edgebench: error: {says}")
    assert "Traceback" not in proc.stderr
    assert not list(out.glob("*")), "a failed start left a run folder behind"


def test_an_unreachable_target_fails_before_any_training(tmp_path):
    import socket

    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    profile = tmp_path / "gone.toml"
    profile.write_text(f'name = "gone"\ntransport = "ssh"\nhost = "127.0.0.1"\nport = {port}\nconnect_timeout_s = 3\n')
    exp_file = write_experiment(tmp_path, variants='\n[[variant]]\nname = "p"\nsteps = [{ method = "prune", ratio = 0.5 }]\n')
    out = tmp_path / "r"
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "edgebench", "run", str(exp_file), "--targets", f"local,{profile}",
                           "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "target 'gone' is not usable" in proc.stderr and f"127.0.0.1:{port}" in proc.stderr
    assert "epoch" not in proc.stderr  # nothing was trained
    assert not out.exists() or not list(out.glob("*"))
    assert time.monotonic() - started < 60


def test_resume_retries_error_records_and_keeps_their_lines(tiny_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    lines = (run / "records.jsonl").read_text().splitlines()
    broken = {**json.loads(lines[1]), "status": "error", "error": "runner failed (killed by signal 9)"}
    (run / "records.jsonl").write_text("\n".join(lines + [json.dumps(broken)]) + "\n")
    assert read_records(run)[1]["status"] == "error"  # the latest record of a key is what counts
    proc = subprocess.run([sys.executable, "-m", "edgebench", "run", "--resume", str(run), "--quiet"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"3 records (0 errors) in {run}/\n"  # --quiet: no table, but where the results are
    history = read_records(run, history=True)
    assert len(history) == 5  # 3 first records, the error, and its retry
    assert [r["status"] for r in history[3:]] == ["error", "ok"]
    latest = read_records(run)
    assert sorted((r["variant"], r["status"]) for r in latest) == [("baseline", "ok"), ("fp16", "ok"), ("int8", "ok")]


def test_missing_runtime_is_an_error_record_and_the_sweep_goes_on(tmp_path):
    # A "device" Python without onnxruntime: the runner says so and the run still finishes.
    wrapper = tmp_path / "python-no-ort"
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} -c \"import sys, runpy; sys.modules['onnxruntime'] = None; "
                       f"sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')\" \"$@\"\n")  # fmt: skip
    wrapper.chmod(0o755)
    profile = tmp_path / "bare.toml"
    profile.write_text(f'name = "bare"\ntransport = "local"\npython = "{wrapper}"\nruntimes = ["onnxruntime"]\n')
    exp = load_experiment(write_experiment(tmp_path, variants=""))
    run_dir = run_experiment(exp, targets=["local", str(profile)], out=tmp_path / "r", log=lambda m: None)
    records = {r["target"]: r for r in read_records(run_dir / "records.jsonl")}
    assert records["local"]["status"] == "ok"
    assert records["bare"]["status"] == "error"
    assert "unavailable: onnxruntime is not installed (pip install onnxruntime)" in records["bare"]["error"]


def test_killed_run_keeps_its_records_and_resume_finishes_without_duplicates(tmp_path):
    # A (target, runtime)'s records are written together once its interleaved rounds end, so the
    # run is killed while the second runtime (openvino) is being measured: onnxruntime's five
    # records are final, openvino's not yet written (its 3 rounds x 5 variants take seconds).
    variants = "".join(f'\n[[variant]]\nname = "v{i}"\nsteps = [{{ method = "quantize", scheme = "fp16" }}]\n' for i in range(4))
    exp_file = write_experiment(tmp_path, variants=variants, **{"min_seconds = 0.0": "min_seconds = 0.5",
                                                                 'runtimes = ["onnxruntime"]': 'runtimes = ["onnxruntime", "openvino"]'})
    out = tmp_path / "results"
    cmd = [sys.executable, "-m", "edgebench", "run", str(exp_file), "--out", str(out), "--quiet"]
    proc = subprocess.Popen(cmd, env=os.environ.copy(), start_new_session=True)
    deadline = time.monotonic() + 240
    records_path = None
    while time.monotonic() < deadline and proc.poll() is None:
        found = list(out.glob("*/records.jsonl"))
        if found and len(read_records(found[0])) >= 5:
            records_path = found[0]
            break
        time.sleep(0.1)
    assert records_path is not None, "the run never wrote the first runtime's five records"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    kept = read_records(records_path)
    assert 5 <= len(kept) < 10 and {r["runtime"] for r in kept[:5]} == {"onnxruntime"}
    resume = [sys.executable, "-m", "edgebench", "run", "--resume", str(records_path.parent), "--quiet"]  # from the manifest
    done = subprocess.run(resume, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    final = read_records(records_path)
    pairs = [(r["variant"], r["runtime"]) for r in final]
    assert sorted(pairs) == sorted((v, rt) for v in ["baseline", "v0", "v1", "v2", "v3"] for rt in ("onnxruntime", "openvino"))
    assert final[: len(kept)] == kept  # what was measured before the kill is untouched


def test_without_the_tflite_extra_tflite_records_say_how_to_install_it(tmp_path):
    # litert-torch absent, as after a plain `pip install edgebench`: ONNX still runs.
    exp = write_experiment(tmp_path, variants="", **{'runtimes = ["onnxruntime"]': 'runtimes = ["onnxruntime", "tflite"]'})
    code = ("import sys; sys.modules['litert_torch'] = None; from edgebench.cli import main; "
            f"sys.exit(main(['run', {str(exp)!r}, '--out', {str(tmp_path / 'r')!r}, '--json']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = {r["runtime"]: r for r in read_records(Path(json.loads(proc.stdout)["run_dir"]) / "records.jsonl")}
    assert records["onnxruntime"]["status"] == "ok"
    assert records["tflite"]["status"] == "error"
    assert records["tflite"]["error"].startswith("unavailable: install edgebench[tflite]")

"""The command line: fast start (no heavy imports), help, JSON output."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def test_help_imports_nothing_heavy():
    code = ("import sys; from edgebench.cli import build_parser; build_parser().format_help(); "
            "print([m for m in ('torch', 'pandas', 'matplotlib', 'onnx', 'onnxruntime', 'sklearn') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("command", ["run", "init", "compress", "report", "check", "compare", "targets", "sensitivity"])
def test_every_command_has_help(command):
    out = subprocess.run([sys.executable, "-m", "edgebench", command, "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "usage: edgebench" in out.stdout


def test_targets_json_lists_the_shipped_profiles():
    out = subprocess.run([sys.executable, "-m", "edgebench", "targets", "local", "--json"], capture_output=True, text=True)
    assert out.returncode == 0
    (local,) = json.loads(out.stdout)
    assert local["reachable"] and local["runtimes"]["onnxruntime"]


def test_unknown_target_is_a_clear_error():
    out = subprocess.run([sys.executable, "-m", "edgebench", "run", "--targets", "lokal"], capture_output=True, text=True)
    assert out.returncode == 2
    assert "unknown target 'lokal' (did you mean \"local\"?)" in out.stderr


def test_resume_of_a_folder_that_is_not_a_run(tmp_path):
    out = subprocess.run([sys.executable, "-m", "edgebench", "run", "--resume", str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 2 and "not a run folder" in out.stderr


def test_unreachable_ssh_target_is_reported_and_fails_only_when_strict(tmp_path):
    import socket

    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    profile = tmp_path / "gone.toml"
    profile.write_text(f'name = "gone"\ntransport = "ssh"\nhost = "127.0.0.1"\nport = {port}\nconnect_timeout_s = 3\n')
    cmd = [sys.executable, "-m", "edgebench", "targets", str(profile)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    assert "UNREACHABLE" in out.stdout and f"127.0.0.1:{port}" in out.stdout
    strict = subprocess.run([*cmd, "--strict"], capture_output=True, text=True, timeout=60)
    assert strict.returncode == 1


def test_the_run_summary_labels_emulated_latency_and_subset_accuracy():
    from edgebench.cli import summary_table

    def record(target, emulated, n):
        return {"variant": "baseline", "target": target, "runtime": "onnxruntime", "status": "ok", "size_bytes": 2048,
                "latency_ms": {"p50": 0.5}, "accuracy": 0.9, "accuracy_ci95": [0.88, 0.92], "n_eval": n,
                "emulated": emulated, "precision": "fp32", "compute_precision": "fp32"}

    lines = summary_table([record("local", False, 1800), record("qemu-aarch64", True, 100)]).splitlines()
    local, qemu = lines[1], lines[2]
    assert "0.500 emulated" in qemu and "n=100" in qemu
    assert "emulated" not in local and "n=" not in local

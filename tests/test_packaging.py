"""A normal (non-editable) install works: the wheel carries the runner and the built-in profiles."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from edgebench.measure.records import read_records

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    """edgebench built as a wheel and installed into a folder of its own (dependencies from this venv)."""
    folder = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(ROOT),
                    "-w", str(folder / "dist")], check=True, capture_output=True, timeout=300)
    (wheel,) = (folder / "dist").glob("edgebench-*.whl")
    site = folder / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    work = folder / "work"  # not the checkout: nothing of it may be found from here
    work.mkdir()
    return {"site": site, "work": work, "env": {**os.environ, "PYTHONPATH": str(site)}}


def edgebench(installed: dict, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgebench", *args], cwd=installed["work"], env=installed["env"],
                          capture_output=True, text=True, timeout=timeout)


def test_the_installed_package_is_the_one_that_runs(installed):
    proc = subprocess.run([sys.executable, "-c", "import edgebench; print(edgebench.__file__)"],
                          cwd=installed["work"], env=installed["env"], capture_output=True, text=True)
    assert Path(proc.stdout.strip()).is_relative_to(installed["site"])


def test_a_wheel_install_lists_the_builtin_profiles(installed):
    proc = edgebench(installed, "targets", "--json")
    assert proc.returncode == 0, proc.stderr
    profiles = {p["name"]: p for p in json.loads(proc.stdout)}
    assert {"local", "qemu-aarch64", "rpi4", "rpi5"} <= set(profiles)
    assert Path(profiles["local"]["path"]).is_relative_to(installed["site"])
    assert profiles["local"]["reachable"]


def test_a_wheel_install_runs_the_demos_first_steps(installed):
    """`edgebench init` writes the packaged demo; its data, baseline and first variant run."""
    assert edgebench(installed, "init", "demo.toml").returncode == 0
    text = (installed["work"] / "demo.toml").read_text()
    head, first, *rest = text.split("\n[[variant]]")
    run_table = "[run]" + rest[-1].split("\n[run]", 1)[1]
    short = re.sub(r"(?m)^epochs = \d+", "epochs = 1", head) + "\n[[variant]]" + first + "\n" + run_table
    # Every runtime adapter must ship in the wheel: OpenVINO's too where it is installed.
    runtimes = ["onnxruntime"] + (["openvino"] if importlib.util.find_spec("openvino") else [])
    short = re.sub(r"(?m)^runtimes = .*", f"runtimes = {json.dumps(runtimes)}", short)
    short = re.sub(r"(?m)^min_seconds = .*", "min_seconds = 0.05", short)
    (installed["work"] / "first-steps.toml").write_text(short)
    proc = edgebench(installed, "run", "first-steps.toml", "--out", "results", "--json", timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_dir = installed["work"] / json.loads(proc.stdout)["run_dir"]
    records = read_records(run_dir)
    assert [(r["variant"], r["runtime"]) for r in records] == [
        (v, rt) for rt in runtimes for v in ("baseline", first.split('"')[1])]
    assert all(r["status"] == "ok" and r["accuracy"] is not None for r in records)
    assert (run_dir / "report.html").is_file()

"""Shared test set-up: a private model cache per test session, and a tiny experiment."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# Helpers such as tests/sshd.py are imported as plain modules.
sys.path.insert(0, str(Path(__file__).parent))

TINY_EXPERIMENT = """
name = "tiny"
seed = 0

[model]
factory = "demo_cnn"
kwargs = {{ width = 0.25 }}

[data]
source = "digits"

[train]
epochs = 3
lr = 0.05
batch_size = 64
threads = 1

{variants}

[run]
targets = ["local"]
runtimes = ["onnxruntime"]
threads = 1
warmup = 2
min_runs = 20
min_seconds = 0.0
timeout_s = 60
"""

INT8_FP16 = """
[[variant]]
name = "int8"
steps = [{ method = "quantize", scheme = "int8_static" }]

[[variant]]
name = "fp16"
steps = [{ method = "quantize", scheme = "fp16" }]
"""


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Trained baselines are cached in a folder of this test session, not the user's."""
    from edgebench.paths import cache_dir

    old = os.environ.get("EDGEBENCH_CACHE")
    rootfs = cache_dir() / "qemu-aarch64-rootfs"  # built once by CI or the user: share it
    private = tmp_path_factory.mktemp("cache")
    if rootfs.is_dir():
        (private / rootfs.name).symlink_to(rootfs)
    os.environ["EDGEBENCH_CACHE"] = str(private)
    yield
    if old is None:
        os.environ.pop("EDGEBENCH_CACHE", None)
    else:
        os.environ["EDGEBENCH_CACHE"] = old


def write_experiment(folder: Path, variants: str = INT8_FP16, **replace: str) -> Path:
    """A tiny experiment file (8x8 digits, a quarter-width demo CNN, fast measurement)."""
    text = TINY_EXPERIMENT.format(variants=variants)
    for old, new in replace.items():
        text = text.replace(old, new)
    path = folder / "experiment.toml"
    path.write_text(text)
    return path


@pytest.fixture
def tiny_experiment(tmp_path) -> Path:
    return write_experiment(tmp_path)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """A real OpenSSH server on 127.0.0.1 for one test module (see tests/sshd.py)."""
    from sshd import loopback_sshd

    with loopback_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


# --- what this machine's CPU makes a runtime compute -------------------------------------------
# A result that legitimately depends on the CPU (OpenVINO's bf16 on AVX-512 BF16, f16 on ARMv8.2)
# is expected from the capability read here, never from the machine a test was written on.


def fp32_runs_as(runtime: str, machine: dict | None = None) -> tuple[str, str]:
    """(precision, why) `runtime` computes an fp32 model in on `machine` (the runner's
    `machine` facts; default: this machine), read from its CPU features."""
    from edgebench.device.runner_facts import machine_facts
    from edgebench.runtimes import runtime as runtime_of

    machine = machine or machine_facts()
    return runtime_of(runtime).fp32_runs_as(machine.get("arch"), machine.get("cpu_features"))


def capability_id(runtime: str) -> str:
    """A test id naming what was read: e.g. 'openvino-fp32-runs-bf16-avx512_bf16'."""
    precision, why = fp32_runs_as(runtime)
    return f"{runtime}-fp32-runs-{precision}-" + why.split(":")[0].replace(" ", "_").replace("/", "+")

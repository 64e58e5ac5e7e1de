"""One `edgebench run` across every kind of target: local, aarch64 under QEMU and a Raspberry
Pi stand-in over SSH (a real sshd on loopback), on onnxruntime and TFLite, for real."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_experiment
from sshd import loopback_sshd

from edgebench.hosts import qemu_rootfs
from edgebench.measure.records import read_records
from edgebench.targets import BUILTIN_PROFILE_DIR

pytestmark = [pytest.mark.slow, pytest.mark.qemu, pytest.mark.ssh, pytest.mark.tflite]
PREPARED = qemu_rootfs.default_rootfs()  # read before conftest points the cache elsewhere


def test_demo_variants_on_local_qemu_and_ssh(tmp_path):
    if not qemu_rootfs.qemu_binary():
        pytest.fail("qemu-aarch64-static is not installed: apt-get install qemu-user-static")
    qemu_rootfs.prepare(log=print, dest=PREPARED)
    # The shipped qemu profile, evaluating every test input so accuracies compare 1:1.
    qemu_profile = tmp_path / "arm.toml"
    text = (BUILTIN_PROFILE_DIR / "qemu-aarch64.toml").read_text()
    qemu_profile.write_text(text.replace('name = "qemu-aarch64"', 'name = "arm"')
                            .replace("eval_limit = 100", "eval_limit = 0")
                            .replace('transport = "qemu"', f'transport = "qemu"\nrootfs = "{PREPARED}"'))  # fmt: skip
    variants = '[[variant]]\nname = "int8"\nsteps = [{ method = "quantize", scheme = "int8_static" }]\n'
    exp = write_experiment(tmp_path, variants=variants,
                           **{'runtimes = ["onnxruntime"]': 'runtimes = ["onnxruntime", "tflite"]'})  # fmt: skip
    with loopback_sshd(tmp_path / "sshd") as server:
        pi = server.write_profile(tmp_path / "pi.toml", runtimes=["onnxruntime", "tflite"])
        cmd = [sys.executable, "-m", "edgebench", "run", str(exp), "--out", str(tmp_path / "r"), "--json",
               "--targets", f"local,{qemu_profile},{pi}"]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        run_dir = Path(json.loads(proc.stdout)["run_dir"])

        records = read_records(run_dir / "records.jsonl")
        by_key = {(r["variant"], r["target"], r["runtime"]): r for r in records}
        assert len(records) == 2 * 3 * 2
        for r in records:
            assert r["status"] == "ok", (r["target"], r["runtime"], r["variant"], r["error"])
        for (variant, target, runtime), r in by_key.items():
            assert r["machine"]["arch"] == ("aarch64" if target == "arm" else platform.machine())  # this host's, any CPU
            assert r["emulated"] is (target == "arm")
            local = by_key[(variant, "local", runtime)]
            # Same artifact, different kernels (and machines): the same accuracy. fp32 kernels
            # agree to an image of 360; int8 kernels differ by CPU (x86 without VNNI multiplies
            # u8 x s8 pairs into saturating int16, ARM and VNNI do not), so a few may flip.
            limit = 0.015 if variant == "int8" else 0.005
            assert abs(r["accuracy"] - local["accuracy"]) <= limit, (variant, target, runtime, local["machine"])

        # A second run to the SSH target uploads no artifact again: the device's cache is
        # keyed by content hash, so only the new run's (identical) files would be sent.
        cache = Path(server.workdir / "remote cache" / "blobs")
        before = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
        again = subprocess.run([*cmd[:-1], str(pi), "--resume", str(run_dir)], capture_output=True, text=True, timeout=300)
        assert again.returncode == 0
        rerun = [sys.executable, "-m", "edgebench", "run", str(exp), "--out", str(tmp_path / "r2"), "--json", "--targets", str(pi)]
        proc2 = subprocess.run(rerun, capture_output=True, text=True, timeout=600)
        assert proc2.returncode == 0, proc2.stderr[-2000:]
        after = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
        assert after == before  # no file added or rewritten

"""The SSH target against a real OpenSSH server on 127.0.0.1 (see tests/sshd.py).

Every test goes through `ssh` and `sshd` for real: uploads, the content-addressed cache, the
runner on the "device" and each kind of failure a user meets with a Raspberry Pi.
"""

from __future__ import annotations

import shutil
import stat
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from edgebench.config.measure_settings import Measure
from edgebench.hosts.ssh import SshHost, remote_word
from edgebench.runtimes import runner_files
from edgebench.targets import Target, load_profile, open_target

try:  # tests/ is on sys.path when it is not a package (pytest's default rootdir layout)
    from sshd import LoopbackSshd, free_port, loopback_sshd, make_key
except ImportError:  # pragma: no cover - if tests/ becomes a package
    from tests.sshd import LoopbackSshd, free_port, loopback_sshd, make_key

pytestmark = pytest.mark.ssh

FAST = Measure(threads=1, warmup=2, min_runs=5, min_seconds=0.0, max_seconds=2.0, timeout_s=60)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny ONNX classifier (Flatten + Gemm, dynamic batch) and an .npz of inputs/labels."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder = tmp_path_factory.mktemp("model")
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((3, 16)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["flat"]),
         helper.make_node("Gemm", ["flat", "w", "b"], ["logits"], transB=1)],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 4, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(np.zeros(3, np.float32), "b")],
    )  # fmt: skip
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 10  # one that every onnxruntime of the last years reads
    onnx.save(proto, folder / "model.onnx")
    np.savez(folder / "inputs.npz", x=rng.standard_normal((40, 1, 4, 4)).astype(np.float32),
             y=rng.integers(0, 3, 40))  # fmt: skip
    return folder / "model.onnx", folder / "inputs.npz"


def open_ssh(sshd: LoopbackSshd, tmp_path: Path, **overrides: object) -> Target:
    return open_target(load_profile(sshd.write_profile(tmp_path / "pi.toml", **overrides)))


def test_measure_matches_local_and_second_run_uploads_nothing(sshd, model, tmp_path):
    artifact, data = model
    target = open_ssh(sshd, tmp_path)
    try:
        first = target.measure(artifact, data, "onnxruntime", FAST)
        assert first["status"] == "ok", first.get("error")
        assert len(first["latency_samples_ms"]) >= FAST.min_runs
        assert all(s > 0 for s in first["latency_samples_ms"])
        assert first["peak_rss_mb"] > 10  # the runner's own VmHWM: numpy + onnxruntime loaded
        local = open_target(load_profile("local")).measure(artifact, data, "onnxruntime", FAST)
        assert first["accuracy"] == local["accuracy"]
        assert [o["b64"] for o in first["outputs"]] == [o["b64"] for o in local["outputs"]]
        sent = [artifact.stat().st_size, data.stat().st_size]
        assert target.uploads["files"] == len(runner_files("onnxruntime")) + 2  # the runner bundle, model, inputs
        assert target.uploads["bytes"] > sum(sent)

        before = dict(target.uploads)
        second = target.measure(artifact, data, "onnxruntime", FAST)
        assert second["status"] == "ok", second.get("error")
        assert target.uploads == before
    finally:
        target.close()
    # A new connection finds the device's cache too.
    again = open_ssh(sshd, tmp_path)
    try:
        assert again.measure(artifact, data, "onnxruntime", FAST)["status"] == "ok"
        assert again.uploads == {"files": 0, "bytes": 0}
    finally:
        again.close()
    blobs = sorted(p.suffix for p in (sshd.workdir / "remote cache" / "blobs").iterdir())
    assert blobs == [".npz", ".onnx"]  # no half-written .part files left behind
    [runner] = (sshd.workdir / "remote cache" / "runners").iterdir()  # one bundle, whole
    assert runner.name.startswith("runner-")
    assert sorted(p.name for p in runner.glob("*.py")) == sorted(f.name for f in runner_files("onnxruntime"))


def test_check_lists_runtimes_and_machine(sshd, tmp_path):
    target = open_target(load_profile(sshd.write_profile(tmp_path / "pi.toml")))
    assert isinstance(target.host, SshHost)  # the host registry knows the ssh transport
    try:
        status = target.check()
    finally:
        target.close()
    import onnxruntime

    assert status.reachable, status.problems
    assert status.runtimes == {"onnxruntime": onnxruntime.__version__}
    assert status.problems == []
    assert status.machine["arch"] and status.machine["system"] == "Linux"
    assert status.machine["python"] == ".".join(map(str, sys.version_info[:3]))


def test_connection_is_shared_and_closed(sshd, model, tmp_path):
    target = open_ssh(sshd, tmp_path)
    target.check()
    socket_dir = Path(target.host._control_dir)
    assert any(p.is_socket() for p in socket_dir.iterdir())  # one ControlMaster for the host
    started = time.monotonic()
    assert target.check().reachable
    assert time.monotonic() - started < 5  # reuses the master: no new handshake needed
    target.close()
    assert not socket_dir.exists()
    target.close()  # twice is fine
    assert target.check().reachable  # and the target reconnects when used again
    target.close()


def test_unreachable_port_is_a_clear_error_within_the_timeout(sshd, model, tmp_path):
    port = free_port()  # nothing listens there
    target = open_ssh(sshd, tmp_path, port=port, connect_timeout_s=3.0)
    try:
        started = time.monotonic()
        result = target.measure(*model, "onnxruntime", FAST)
        assert time.monotonic() - started < 3.0 + 5
        status = target.check()
    finally:
        target.close()
    assert result["status"] == "error"
    assert f"127.0.0.1:{port} is unreachable" in result["error"]
    assert "connection refused" in result["error"]
    assert not status.reachable and "unreachable" in status.problems[0]


def test_refused_key_is_an_authentication_error(sshd, model, tmp_path):
    stranger = make_key(tmp_path / "stranger_key")  # not in authorized_keys
    target = open_ssh(sshd, tmp_path, identity_file=str(stranger))
    try:
        result = target.measure(*model, "onnxruntime", FAST)
    finally:
        target.close()
    assert result["status"] == "error"
    assert "authentication refused" in result["error"]
    assert str(stranger) in result["error"] and "ssh-copy-id" in result["error"]
    assert target.uploads["files"] == 0


def test_unknown_host_key_is_a_host_key_error(sshd, model, tmp_path):
    other = make_key(tmp_path / "other_host_key").with_suffix(".pub").read_text().split()
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd.port} {other[0]} {other[1]}\n")
    target = open_ssh(sshd, tmp_path, ssh_options=[f"UserKnownHostsFile={known}"])
    try:
        result = target.measure(*model, "onnxruntime", FAST)
    finally:
        target.close()
    assert "host key verification failed" in result["error"]
    assert "StrictHostKeyChecking=accept-new" in result["error"]


def test_missing_remote_python(sshd, model, tmp_path):
    target = open_ssh(sshd, tmp_path, python="/no/such/python3")
    try:
        result = target.measure(*model, "onnxruntime", FAST)
        status = target.check()
    finally:
        target.close()
    assert result["status"] == "error"
    assert result["error"].startswith("remote Python missing: `/no/such/python3` not found")
    assert target.uploads["files"] == 0  # found out before sending anything
    assert status.reachable and "remote Python missing" in status.problems[0]


def blocking_python(folder: Path, *modules: str) -> Path:
    """A "device Python" where `modules` fail to import, as on a Pi where they are not installed."""
    blocked = folder / "blocked"
    for name in modules:
        (blocked / name).mkdir(parents=True)
        (blocked / name / "__init__.py").write_text(f"raise ImportError({f'No module named {name!r}'!r})\n")
    wrapper = folder / "python"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH="{blocked}" exec "{sys.executable}" "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return wrapper


def test_missing_runtime_on_the_device(sshd, model, tmp_path):
    python = blocking_python(tmp_path, "onnxruntime")
    target = open_ssh(sshd, tmp_path, python=str(python))
    try:
        result = target.measure(*model, "onnxruntime", FAST)
        status = target.check()
    finally:
        target.close()
    assert result["status"] == "error"
    assert result["error"].startswith("unavailable: onnxruntime is not installed")
    assert f"`{python} -m pip install onnxruntime`" in result["error"]
    assert status.runtimes == {"onnxruntime": None}
    assert "pip install onnxruntime" in status.problems[0]


def test_missing_numpy_on_the_device(sshd, model, tmp_path):
    python = blocking_python(tmp_path, "numpy")
    target = open_ssh(sshd, tmp_path, python=str(python))
    try:
        result = target.measure(*model, "onnxruntime", FAST)
    finally:
        target.close()
    assert result["error"].startswith("numpy missing")
    assert "pip install numpy onnxruntime" in result["error"]


def test_run_timeout(sshd, model, tmp_path):
    slow = Measure(threads=1, warmup=0, min_runs=10**9, min_seconds=60, max_seconds=60, timeout_s=2)
    target = open_ssh(sshd, tmp_path)
    try:
        started = time.monotonic()
        result = target.measure(*model, "onnxruntime", slow)
        elapsed = time.monotonic() - started
    finally:
        target.close()
    assert result == {"status": "error", "error": "runner timed out after 2 s on 127.0.0.1"}
    assert elapsed < 2 + 10


def test_cooldown_between_runs(sshd, model, tmp_path):
    target = open_ssh(sshd, tmp_path, cooldown_s=1.5)
    options = FAST.for_target(target.profile)  # the profile's [measure] cooldown_s
    try:
        target.measure(*model, "onnxruntime", options)
        ended = time.monotonic()
        target.measure(*model, "onnxruntime", options)
        assert time.monotonic() - ended >= 1.5
    finally:
        target.close()


@pytest.mark.parametrize("folder", ["it's a \"dir\" with spaces", "$HOME;touch pwned`x`"])
def test_remote_dir_with_spaces_and_quotes(sshd, model, tmp_path, folder):
    remote = tmp_path / folder / "cache"
    target = open_ssh(sshd, tmp_path, remote_dir=str(remote))
    try:
        result = target.measure(*model, "onnxruntime", FAST)
    finally:
        target.close()
    assert result["status"] == "ok", result.get("error")
    assert len(list((remote / "blobs").iterdir())) == 2  # the literal path, nothing expanded
    assert len(list((remote / "runners").iterdir())) == 1
    assert not Path("pwned").exists() and not (Path.home() / "pwned").exists()


def test_remote_dir_under_home_expands_tilde(sshd, model, tmp_path):
    name = f".cache/edgebench-test-{uuid.uuid4().hex[:8]} x"
    target = open_ssh(sshd, tmp_path, remote_dir=f"~/{name}")
    try:
        result = target.measure(*model, "onnxruntime", FAST)
        assert result["status"] == "ok", result.get("error")
        assert (Path.home() / name / "blobs").is_dir()  # same user on loopback: same home
    finally:
        target.close()
        shutil.rmtree(Path.home() / name, ignore_errors=True)


def test_missing_sshd_fails_with_the_install_hint(monkeypatch):
    helper = sys.modules[LoopbackSshd.__module__]
    monkeypatch.setattr(helper, "SSHD", "/no/such/sshd")
    with pytest.raises(pytest.fail.Exception, match="apt-get install openssh-server"):
        with loopback_sshd():
            pass


def test_remote_word_quotes_everything_but_the_home_prefix():
    assert remote_word("~") == '"$HOME"'
    assert remote_word("~/a b") == "\"$HOME\"/'a b'"
    assert remote_word("/x/it's") == "'/x/it'\"'\"'s'"
    assert remote_word("python3") == "python3"

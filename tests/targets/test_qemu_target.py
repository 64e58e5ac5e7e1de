"""The qemu target on real qemu-aarch64-static, a real aarch64 rootfs and the real runtimes.

CI installs qemu-user-static and runs `python -m edgebench.hosts.qemu_rootfs` first; without
qemu these tests fail with what to install rather than skip, so a broken CI image shows.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgebench.config.measure_settings import Measure
from edgebench.hosts import qemu_rootfs
from edgebench.hosts.qemu import QemuHost, QemuSettings
from edgebench.targets import Target, TargetProfile, load_profile, open_target

pytestmark = pytest.mark.qemu
N_INPUTS = 48
# Where `python -m edgebench.hosts.qemu_rootfs` put the rootfs, read at import (collection),
# before conftest's session fixture points EDGEBENCH_CACHE at a private folder: the ~265 MB
# rootfs is reused across sessions instead of rebuilt in every one.
PREPARED = qemu_rootfs.default_rootfs()


@pytest.fixture(scope="module")
def rootfs() -> Path:
    if not qemu_rootfs.qemu_binary():
        pytest.fail("qemu-aarch64-static is not installed: apt-get install qemu-user-static")
    return qemu_rootfs.prepare(log=print, dest=PREPARED)  # instant when CI prepared it


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple:
    """A tiny CNN with fixed random weights and an .npz whose labels make accuracy ~0.5."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10)
    ).eval()
    x = torch.randn(N_INPUTS, 1, 8, 8)
    with torch.no_grad():
        predicted = model(x).argmax(1).numpy()
    rng = np.random.default_rng(0)
    # Half the labels agree with the model, half are random: an accuracy away from 0 and 1, so
    # a runtime that computes something else shows up as a different accuracy.
    y = np.where(np.arange(N_INPUTS) % 2 == 0, predicted, rng.integers(0, 10, N_INPUTS))
    folder = tmp_path_factory.mktemp("qemu")
    data = folder / "inputs.npz"
    np.savez(data, x=x.numpy(), y=y.astype(np.int64))
    return model, x, folder, data


@pytest.fixture(scope="module")
def qemu_target(rootfs) -> Target:
    return open_target(with_rootfs(load_profile("qemu-aarch64"), rootfs))


def with_rootfs(profile: TargetProfile, rootfs: Path) -> TargetProfile:
    return dataclasses.replace(profile, host=dataclasses.replace(profile.host, rootfs=str(rootfs)))


def _options(target) -> Measure:
    return Measure(timeout_s=300).for_target(target.profile)


def _logits(result: dict) -> np.ndarray:
    from edgebench.device.runner import decode_outputs

    return decode_outputs(result)[0]


def _same_as_native(artifact: Path, data: Path, runtime: str, qemu_target: Target) -> dict:
    emulated = qemu_target.measure(artifact, data, runtime, _options(qemu_target))
    assert emulated["status"] == "ok", emulated.get("error")
    assert emulated["emulated"] is True
    assert emulated["machine"]["arch"] == "aarch64"  # the runner's own platform.machine()
    assert emulated["runtime"] == runtime and emulated["n_eval"] == N_INPUTS
    assert len(emulated["latency_samples_ms"]) >= _options(qemu_target).min_runs
    # The runner's VmHWM, not wait4 (which carries this torch-laden pytest process's peak).
    assert 10 < emulated["peak_rss_mb"] < 400

    local = open_target(load_profile("local"))
    native = local.measure(artifact, data, runtime, _options(local))
    assert native["status"] == "ok", native.get("error")
    assert 0.1 < native["accuracy"] < 1.0
    assert emulated["accuracy"] == pytest.approx(native["accuracy"], abs=0.005)
    np.testing.assert_allclose(_logits(emulated), _logits(native), rtol=1e-3, atol=1e-4)
    return emulated


def test_rootfs_is_prepared_and_verified(rootfs, monkeypatch, tmp_path):
    monkeypatch.setenv("EDGEBENCH_CACHE", str(rootfs.parent.parent))
    assert qemu_rootfs.rootfs_path() == rootfs
    monkeypatch.setenv("EDGEBENCH_CACHE", str(tmp_path))
    assert qemu_rootfs.rootfs_path() is None
    stamp = qemu_rootfs.read_stamp(rootfs)
    assert stamp["verified"]["arch"] == "aarch64"
    assert set(stamp["wheels"]) >= {"numpy", "onnxruntime", "ai-edge-litert"}
    assert (rootfs / qemu_rootfs.PYTHON).is_file()


def test_onnx_on_aarch64_matches_native(tiny, qemu_target):
    import torch

    model, x, folder, data = tiny
    path = folder / "tiny.onnx"
    batch = torch.export.Dim("batch", min=1, max=1024)
    torch.onnx.export(model, (x[:1],), str(path), dynamo=True, external_data=False,
                      dynamic_shapes=({0: batch},), verbose=False)  # fmt: skip
    result = _same_as_native(path, data, "onnxruntime", qemu_target)
    assert result["runtime_version"] == qemu_rootfs.read_stamp(qemu_target.host.rootfs())["wheels"]["onnxruntime"]


def test_tflite_on_aarch64_matches_native(tiny, qemu_target):
    litert_torch = pytest.importorskip("litert_torch", reason="needs the tflite extra")
    model, x, folder, data = tiny
    path = folder / "tiny.tflite"
    litert_torch.convert(model.eval(), (x[:1],)).export(str(path))
    _same_as_native(path, data, "tflite", qemu_target)


def test_check_reports_versions_under_emulation(qemu_target):
    status = qemu_target.check()
    assert status.problems == []
    assert status.reachable and status.machine["arch"] == "aarch64"
    assert status.machine["emulated"] is True
    assert status.runtimes["onnxruntime"] and status.runtimes["tflite"]


def test_wrong_rootfs_is_a_clear_problem_not_a_crash(tmp_path, tiny, qemu_target):
    target = open_target(with_rootfs(qemu_target.profile, tmp_path / "no-rootfs"))
    status = target.check()
    assert not status.reachable
    assert len(status.problems) == 1
    assert str(tmp_path / "no-rootfs") in status.problems[0]
    assert "edgebench targets --prepare qemu-aarch64" in status.problems[0]

    _, _, folder, data = tiny
    result = target.measure(folder / "missing.onnx", data, "onnxruntime", _options(target))
    assert result["status"] == "error"
    assert result["error"].startswith("unavailable: ") and "--prepare qemu-aarch64" in result["error"]


def test_missing_qemu_is_reported_with_what_to_install(monkeypatch, tiny, qemu_target):
    monkeypatch.setattr(qemu_rootfs, "qemu_binary", lambda: None)
    status = qemu_target.check()
    assert not status.reachable
    assert status.problems == ["qemu-aarch64-static is not installed: apt-get install qemu-user-static"]
    _, _, folder, data = tiny
    result = qemu_target.measure(folder / "tiny.onnx", data, "onnxruntime", _options(qemu_target))
    assert result["status"] == "error" and "apt-get install qemu-user-static" in result["error"]
    assert result["emulated"] is True


def test_registry_opens_the_profile_as_a_qemu_target():
    target = open_target(load_profile("qemu-aarch64"))
    assert isinstance(target.host, QemuHost)
    assert target.profile.emulated and target.profile.transport == "qemu"
    assert target.profile.power.active_w > 0 and "emulated" in target.profile.power.source


def test_half_built_rootfs_does_not_count(tmp_path, rootfs):
    # A tree with Python but no stamp (an interrupted build) is not prepared.
    fake = tmp_path / "rootfs"
    (fake / "usr/bin").mkdir(parents=True)
    shutil.copy(rootfs / qemu_rootfs.PYTHON, fake / qemu_rootfs.PYTHON)
    assert qemu_rootfs.read_stamp(fake) is None


def test_a_failed_build_leaves_nothing_that_counts(monkeypatch, tmp_path):
    def half_build(work: Path, log) -> dict:
        (work / "rootfs" / "usr/bin").mkdir(parents=True)
        (work / "rootfs" / qemu_rootfs.PYTHON).write_text("")
        raise qemu_rootfs.TargetError("verification failed: simulated")

    monkeypatch.setattr(qemu_rootfs, "_check_host_tools", lambda: None)
    monkeypatch.setattr(qemu_rootfs, "_build", half_build)
    dest = tmp_path / "rootfs"
    with pytest.raises(qemu_rootfs.TargetError, match="simulated"):
        qemu_rootfs.prepare(log=lambda line: None, dest=dest)
    assert not dest.exists() and qemu_rootfs.read_stamp(dest) is None
    assert [p.name for p in tmp_path.iterdir()] == [".lock"]  # no build folder left behind


def test_prepare_never_replaces_a_folder_it_did_not_build(tmp_path):
    theirs = tmp_path / "my-rootfs"
    theirs.mkdir()
    (theirs / "keep.txt").write_text("mine")
    with pytest.raises(qemu_rootfs.TargetError, match="not an edgebench rootfs"):
        qemu_rootfs.prepare(log=lambda line: None, dest=theirs, force=True)
    assert (theirs / "keep.txt").read_text() == "mine"


def test_host_paths_shadowed_by_the_rootfs_are_copied_out(tmp_path):
    # qemu -L would open ROOTFS/<path> instead of the host's <path> when both exist.
    folder = tmp_path / "device"
    folder.mkdir()
    model, runner, facts = folder / "model.onnx", folder / "runner.py", folder / "runner_facts.py"
    for path in (model, runner, facts):
        path.write_bytes(b"host bytes of " + path.name.encode())
    fake_rootfs = tmp_path / "rootfs"
    host = QemuHost(QemuSettings(rootfs=str(fake_rootfs)))
    try:
        assert host.stage([model]) == [str(model.resolve())]
        assert host.stage_bundle([runner, facts]) == [str(runner.resolve()), str(facts.resolve())]
        for path in (model, facts):  # the model, and one file of the bundle, shadowed
            twin = fake_rootfs / str(path.resolve()).lstrip("/")
            twin.parent.mkdir(parents=True, exist_ok=True)
            twin.write_bytes(b"rootfs bytes")
        [seen] = host.stage([model])
        assert Path(seen).read_bytes() == b"host bytes of model.onnx" and Path(seen) != model.resolve()
        # The runner imports its siblings from its own folder: the whole bundle moves together.
        bundle = [Path(p) for p in host.stage_bundle([runner, facts])]
        assert bundle[0].parent == bundle[1].parent != folder.resolve()
        assert [p.name for p in bundle] == ["runner.py", "runner_facts.py"]
        assert bundle[1].read_bytes() == b"host bytes of runner_facts.py"
    finally:
        host.close()
    assert not Path(seen).exists()  # close() removes the copies


def test_apt_sources_give_the_hosts_debian_mirror(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: trixie trixie-updates\n"
        "Components: main\n\nTypes: deb\nURIs: http://mirror.example/debian-security\n"
        "Suites: trixie-security\nComponents: main\n"
    )
    (tmp_path / "sources.list.d" / "other.list").write_text("deb https://example.com/apt stable main\n")
    assert qemu_rootfs.debian_mirrors(tmp_path) == (
        "http://mirror.example/debian", "http://mirror.example/debian-security")
    assert qemu_rootfs.debian_mirrors(tmp_path / "none") == (
        qemu_rootfs.DEFAULT_MIRROR, qemu_rootfs.DEFAULT_SECURITY_MIRROR)

"""The Host contract, for every host in the registry: stage, stage_bundle, run, probe, close.

local always; ssh against the real loopback sshd (tests/sshd.py); qemu when the aarch64 rootfs
is prepared. A host added to `edgebench.hosts.HOSTS` without a way to open it here fails
`test_every_registered_host_is_tested`.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgebench.hosts import HOSTS, Host, qemu_rootfs, thread_env
from edgebench.hosts.local import LocalSettings
from edgebench.hosts.qemu import QemuSettings
from edgebench.hosts.ssh import SshHost, SshSettings
from edgebench.runtimes import runner_files

# Read at import, before conftest's session fixture points EDGEBENCH_CACHE at a private folder.
PREPARED = qemu_rootfs.default_rootfs()
READ_BACK = "import hashlib, sys; print(' '.join(hashlib.sha256(open(p, 'rb').read()).hexdigest() for p in sys.argv[1:]))"


def _ssh_settings(server, remote_dir: Path) -> SshSettings:
    return SshSettings(host=server.host, port=server.port, user=server.user, identity_file=str(server.identity_file),
                       ssh_options=tuple(server.ssh_options), python=sys.executable, remote_dir=str(remote_dir),
                       connect_timeout_s=5.0)  # fmt: skip


def _open_local(request, tmp_path: Path):
    return LocalSettings()


def _open_ssh(request, tmp_path: Path):
    return _ssh_settings(request.getfixturevalue("sshd"), tmp_path / "remote cache")


def _open_qemu(request, tmp_path: Path):
    if not qemu_rootfs.qemu_binary() or not qemu_rootfs.read_stamp(PREPARED):
        pytest.skip("no prepared aarch64 rootfs (python -m edgebench.hosts.qemu_rootfs)")
    return QemuSettings(rootfs=str(PREPARED))


OPENERS = {"local": _open_local, "ssh": _open_ssh, "qemu": _open_qemu}


@pytest.fixture(params=[pytest.param("local"), pytest.param("ssh", marks=pytest.mark.ssh),
                        pytest.param("qemu", marks=pytest.mark.qemu)])  # fmt: skip
def host(request, tmp_path: Path) -> Iterator[Host]:
    settings = OPENERS[request.param](request, tmp_path)
    opened = HOSTS.get(request.param)(settings, where="the test's profile")
    try:
        yield opened
    finally:
        opened.close()
        opened.close()  # twice is fine


def _files(tmp_path: Path) -> list[Path]:
    """Two different files of the same name in different folders, and one with a space in its path."""
    out = []
    for folder, text in (("a", "first"), ("b", "second"), ("c d", "third")):
        (tmp_path / folder).mkdir()
        out.append(tmp_path / folder / "model.onnx")
        out[-1].write_text(text)
    return out


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_registered_host_is_tested():
    assert set(HOSTS.names()) == set(OPENERS)


def test_staged_files_read_back_by_a_process_there(host: Host, tmp_path: Path):
    files = _files(tmp_path)
    remote = host.stage(files)
    assert len(set(remote)) == 3  # same name, different content: different places
    assert host.stage(files) == remote  # content-addressed: staging again changes nothing
    done = host.run([host.python, "-c", READ_BACK, *remote], env={}, timeout_s=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [_sha(f) for f in files]


def test_the_runner_bundle_runs_from_one_folder(host: Host):
    files = runner_files("onnxruntime")
    staged = host.stage_bundle(files)
    assert [Path(p).name for p in staged] == [f.name for f in files]
    assert len({str(Path(p).parent) for p in staged}) == 1
    # runner.py imports runner_facts by plain name: --help works only if its sibling is there.
    done = host.run([host.python, staged[0], "--help"], env={}, timeout_s=300)
    assert done.returncode == 0, done.stderr
    assert "--model" in done.stdout and "--runtime-option" in done.stdout


def test_run_passes_env_and_exit_status(host: Host):
    code = "import os, sys; print(os.environ['OMP_NUM_THREADS'], os.environ['EDGEBENCH_WORD']); sys.exit(7)"
    done = host.run([host.python, "-c", code], env={**thread_env(3), "EDGEBENCH_WORD": "a b'c"}, timeout_s=300)
    assert (done.returncode, done.stdout.strip(), done.timed_out) == (7, "3 a b'c", False)


def test_run_stops_a_process_at_its_timeout(host: Host):
    started = time.monotonic()
    done = host.run([host.python, "-c", "import time; time.sleep(60)"], env={}, timeout_s=2)
    assert done.timed_out and done.returncode != 0
    assert time.monotonic() - started < 30


def test_probe_says_what_the_python_there_has(host: Host):
    facts = host.probe({"numpy": ("numpy", "numpy"), "nothing": ("no_such_module_x", "no-such-dist-x")})
    assert facts["versions"]["numpy"] and facts["versions"]["nothing"] is None
    assert facts["errors"]["nothing"]
    assert facts["machine"]["arch"] == (host.arch or facts["machine"]["arch"])


@pytest.mark.ssh
def test_an_interrupted_bundle_upload_is_never_trusted(sshd, tmp_path, monkeypatch):
    host = SshHost(_ssh_settings(sshd, tmp_path / "remote"))
    real_upload = SshHost._upload

    def upload_one_then_die(self, path, part, timeout_s, then=""):
        real_upload(self, path, part, timeout_s, then)
        raise KeyboardInterrupt  # the user pressed ^C after the first file went over

    try:
        monkeypatch.setattr(SshHost, "_upload", upload_one_then_die)
        with pytest.raises(KeyboardInterrupt):
            host.stage_bundle(runner_files("onnxruntime"))
        runners = tmp_path / "remote" / "runners"
        assert [p.name.startswith(".") for p in runners.iterdir()] == [True]  # only a .part folder
        monkeypatch.setattr(SshHost, "_upload", real_upload)
        staged = host.stage_bundle(runner_files("onnxruntime"))
        assert host.uploads["files"] == 1 + len(runner_files("onnxruntime"))  # the bundle went over again, whole
        folder = tmp_path / "remote" / Path(staged[0]).parent
        assert sorted(p.name for p in folder.iterdir()) == sorted(f.name for f in runner_files("onnxruntime"))
    finally:
        host.close()


def test_what_an_interrupted_upload_left_is_removed_once_stale(sshd, tmp_path):
    import os
    import time

    remote = tmp_path / "remote"
    stale = remote / "runners" / ".runner-abc.part-1"
    fresh = remote / "blobs" / ".0123.npz.part-2"  # another run's upload, in flight
    for part in (stale, fresh):
        part.mkdir(parents=True)
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    host = SshHost(_ssh_settings(sshd, remote))
    try:
        host.stage_bundle(runner_files("onnxruntime"))
    finally:
        host.close()
    assert not stale.exists() and fresh.exists()

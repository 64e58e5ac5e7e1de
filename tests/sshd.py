"""A real OpenSSH server on 127.0.0.1 for tests: the SSH target runs against it as a "device".

    with loopback_sshd(tmp_path) as server:
        target = open_target(load_profile(server.write_profile(tmp_path / "pi.toml")))

Or take the module-scoped `sshd` pytest fixture. Host and client keys are throw-away keys made
by ssh-keygen in a temp dir; the client trusts the host key through its own known_hosts file,
so host key checking stays on as it does for users. The "device" Python is this venv's Python,
so it has numpy and onnxruntime. sshd missing is a failure, not a skip: CI installs it.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SSHD = "/usr/sbin/sshd"
START_TIMEOUT_S = 10.0


@dataclass
class LoopbackSshd:
    """What a test needs to reach the server."""

    host: str
    port: int
    user: str
    identity_file: Path
    known_hosts: Path
    workdir: Path
    process: subprocess.Popen = field(repr=False)

    @property
    def ssh_options(self) -> list[str]:
        # Only our own known_hosts: the user's ~/.ssh/known_hosts is neither read nor written.
        return [f"UserKnownHostsFile={self.known_hosts}", "GlobalKnownHostsFile=/dev/null"]

    def write_profile(self, path: str | Path, **overrides: object) -> Path:
        """Write a target profile that reaches this server; keys in `overrides` win. They are
        given flat (`python=...`, `cooldown_s=...`) and land in their tables ([host], [measure])."""
        from edgebench.targets.profile import from_flat

        flat: dict[str, object] = {
            "name": Path(path).stem,
            "transport": "ssh",
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "identity_file": str(self.identity_file),
            "ssh_options": self.ssh_options,
            "python": sys.executable,  # the venv's Python: the "device" has onnxruntime
            "runtimes": ["onnxruntime"],
            "threads": 1,
            "connect_timeout_s": 5.0,
            "remote_dir": str(self.workdir / "remote cache"),
        }
        flat.update(overrides)
        path = Path(path)
        path.write_text(_toml(from_flat(flat)))
        return path


def _toml(table: dict) -> str:
    """A TOML document of scalars, lists and one level of tables; JSON strings are valid TOML
    basic strings for these values."""
    lines = []
    for key, value in sorted(table.items(), key=lambda item: isinstance(item[1], dict)):
        if isinstance(value, dict):
            lines.append(f"[{key}]")
            lines.extend(_toml(value).splitlines())
            continue
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            text = "[" + ", ".join(json.dumps(v) for v in value) + "]"
        elif isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = json.dumps(value)
        lines.append(f"{key} = {text}")
    return "\n".join(lines) + "\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_key(path: Path) -> Path:
    """An unencrypted ed25519 key pair at `path` and `path`.pub."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgebench-test",
                    "-f", str(path)], check=True, capture_output=True)  # fmt: skip
    return path


def _wait_for_banner(port: int, process: subprocess.Popen, deadline: float) -> None:
    """Return once sshd answers with its SSH banner; raise if it died or never answered."""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sshd exited with status {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
                if s.recv(64).startswith(b"SSH-"):
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"sshd did not answer on 127.0.0.1:{port} within {START_TIMEOUT_S:g} s")


@contextlib.contextmanager
def loopback_sshd(workdir: str | Path | None = None) -> Iterator[LoopbackSshd]:
    """Start /usr/sbin/sshd on 127.0.0.1:<free port>; stop it on exit."""
    if not Path(SSHD).exists():
        pytest.fail(f"{SSHD} is missing: apt-get install openssh-server (the ssh tests need a real sshd)")
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="edgebench-sshd-"))
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        host_key = make_key(workdir / "host_key")
        client_key = make_key(workdir / "client_key")
        authorized = workdir / "authorized_keys"
        shutil.copy(client_key.with_suffix(".pub"), authorized)
        # sshd refuses to start without its privilege-separation directory.
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        log = open(workdir / "sshd.log", "w+b")  # noqa: SIM115 - closed by the ExitStack
        stack.callback(log.close)
        # A free port can be taken by another process before sshd binds it: try a few.
        for _attempt in range(3):
            port = free_port()
            process = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", "/dev/null", "-p", str(port), "-h", str(host_key),
                 "-o", "ListenAddress=127.0.0.1", "-o", "PidFile=none",
                 "-o", f"AuthorizedKeysFile={authorized}", "-o", "StrictModes=no",
                 "-o", "PasswordAuthentication=no", "-o", "KbdInteractiveAuthentication=no",
                 "-o", "PermitRootLogin=prohibit-password", "-o", "MaxStartups=50",
                 "-o", "Subsystem=sftp internal-sftp"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
            stack.callback(_stop, process)
            try:
                _wait_for_banner(port, process, time.monotonic() + START_TIMEOUT_S)
                break
            except RuntimeError as exc:
                _stop(process)
                log.seek(0)
                error = f"{exc}: {log.read().decode(errors='replace')[-2000:]}"
        else:
            pytest.fail(f"could not start sshd: {error}")
        known_hosts = workdir / "known_hosts"
        host_pub = host_key.with_suffix(".pub").read_text().split()
        known_hosts.write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
        yield LoopbackSshd("127.0.0.1", port, getpass.getuser(), client_key, known_hosts,
                           workdir, process)  # fmt: skip


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackSshd]:
    """A loopback sshd shared by the tests of one module."""
    with loopback_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server

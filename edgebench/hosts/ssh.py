"""A Raspberry Pi (or any Linux board) reached with the system OpenSSH client.

The system `ssh` is used, not a Python SSH library, so a user's ~/.ssh/config, keys, agent and
ProxyJump all work as they do in a terminal. All commands of one host share ONE connection
(OpenSSH ControlMaster with a socket in a private temp dir); `close()` stops it.

Files travel into a content-addressed cache under the device's `remote_dir`: a file becomes
`blobs/<sha256><suffix>`, the runner bundle `runners/runner-<digest>/` with its files under
their own names. One remote command lists what is already there and only the rest is sent, so
a re-run uploads nothing. Uploads land under a `.part` name and are renamed into place when
whole, so an interrupted upload is never taken for a staged file. Processes run in `remote_dir`.

    >>> host = SshHost(SshSettings(host="raspberrypi.local", user="pi"))
    >>> host.stage([Path("model.onnx")])
    ['blobs/3fa9...c1.onnx']
    >>> host.uploads          # files and bytes sent by this host so far
    {'files': 1, 'bytes': 61234}
"""

from __future__ import annotations

import math
import shlex
import shutil
import subprocess
import tempfile
import time
import uuid
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edgebench.config import require
from edgebench.errors import TargetError
from edgebench.hosts import (
    HOSTS,
    Completed,
    Digests,
    HostDefaults,
    HostSettings,
    blob_name,
    bundle_name,
    ssh_messages,
)
from edgebench.hosts.probe import probe_script, read_probe

CONTROL_PERSIST_S = 120  # the master outlives a crashed edgebench by this much, then exits
KILL_GRACE_S = 5  # remote `timeout -k`: SIGKILL this long after SIGTERM
NO_TASKSET = 125  # run()'s exit status when pinning was asked for and the device has no taskset
PART_STALE_MIN = 60  # an upload's .part older than this was interrupted: removed at the next upload


class SshError(TargetError):
    """ssh itself failed (unreachable, authentication, host key), or the device lacks what is needed."""


@dataclass(frozen=True)
class SshSettings(HostSettings):
    transport: str = "ssh"
    host: str = ""  # an IP, a name, or a Host alias from ~/.ssh/config
    user: str | None = None
    port: int | None = None
    identity_file: str | None = None
    ssh_options: tuple[str, ...] = ()  # each passed as -o, e.g. "StrictHostKeyChecking=accept-new"
    python: str = "python3"  # better: a venv's python, e.g. "~/edgebench-venv/bin/python"
    remote_dir: str = "~/.cache/edgebench"  # the device's content-addressed file cache
    connect_timeout_s: float = 10.0

    def __post_init__(self):
        require(bool(self.host), "ssh needs host (in [host])")
        require(self.connect_timeout_s > 0, "connect_timeout_s must be positive")


def remote_word(path: str) -> str:
    """Shell-quote a remote path or command name; a leading `~` still expands to $HOME."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


@HOSTS.register("ssh")
class SshHost(HostDefaults):
    """Processes on a device over SSH, with a content-addressed file cache there."""

    Settings = SshSettings

    def __init__(self, settings: SshSettings, where: str = "the profile"):
        self.settings = settings
        self.where = where
        self.python = settings.python
        self.place = f"on {settings.host}"
        self.uploads = {"files": 0, "bytes": 0}
        self.connect_s: float | None = None  # seconds the first command took (connect + auth)
        self._digests = Digests()
        self._resolved: dict[str, str] | None = None
        self._swept = False
        self._open_control()

    def _open_control(self) -> None:
        # Private (0700) dir: the control socket gives a shell on the device to whoever can open it.
        self._control_dir = tempfile.mkdtemp(prefix="edgebench-ssh-")
        self._control_path = str(Path(self._control_dir) / "mux")
        # Stops the master at close(), or when the host is garbage-collected or Python exits.
        self._finalizer = weakref.finalize(self, _stop_master, self._base_argv(), self.settings.host,
                                           self._control_dir)  # fmt: skip

    # ---- ssh plumbing -------------------------------------------------------------------

    def _base_argv(self) -> list[str]:
        s = self.settings
        # For each option ssh keeps the FIRST value it sees: the ones we rely on come first.
        argv = ["ssh", "-T", "-o", "BatchMode=yes",
                "-o", f"ConnectTimeout={max(1, math.ceil(s.connect_timeout_s))}",
                "-o", "ControlMaster=auto", "-o", f"ControlPath={self._control_path}",
                "-o", f"ControlPersist={CONTROL_PERSIST_S}"]  # fmt: skip
        for option in s.ssh_options:
            argv += ["-o", option]
        if s.port:
            argv += ["-p", str(s.port)]
        if s.user:
            argv += ["-l", s.user]
        if s.identity_file:
            # Only this key: an agent full of keys could exhaust the server's MaxAuthTries first.
            argv += ["-i", str(Path(s.identity_file).expanduser()), "-o", "IdentitiesOnly=yes"]
        return argv

    def _ssh(self, command: str, timeout_s: float, stdin: Path | None = None) -> tuple[int, str, str]:
        """Run `command` (a shell string) on the device; (returncode, stdout, stderr)."""
        if not self._finalizer.alive:  # used again after close(): a new connection
            self._open_control()
        argv = [*self._base_argv(), "--", self.settings.host, command]
        started = time.monotonic()
        with open(stdin, "rb") if stdin else open("/dev/null", "rb") as source:
            try:
                done = subprocess.run(argv, stdin=source, capture_output=True, timeout=timeout_s)
            except FileNotFoundError:
                return 255, "", "the OpenSSH client (`ssh`) is not installed here: apt-get install openssh-client"
            except subprocess.TimeoutExpired as exc:
                err = (exc.stderr or b"").decode(errors="replace")
                return -9, (exc.stdout or b"").decode(errors="replace"), err + "\ntimed out (local limit)"
        if self.connect_s is None and done.returncode != 255:
            self.connect_s = time.monotonic() - started
        return done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")

    def _failed(self, stderr: str) -> str:
        if self._resolved is None:
            self._resolved = ssh_messages.resolved(self._base_argv(), self.settings)
        return ssh_messages.explain(stderr, self._resolved, self.settings, self.where)

    def _remote_dir(self) -> str:
        return remote_word(self.settings.remote_dir.rstrip("/") or "/")

    def _must(self, command: str, what: str, timeout_s: float | None = None, stdin: Path | None = None) -> None:
        """Run `command` in remote_dir; raise SshError saying what failed unless it exits 0."""
        timeout_s = timeout_s or self.settings.connect_timeout_s * 2 + 10
        code, _, err = self._ssh(f"cd {self._remote_dir()} && {command}", timeout_s, stdin=stdin)
        if code != 0:
            raise SshError(self._failed(err) if code in (255, -9) else f"{what} on {self.settings.host} failed: {err.strip()}")

    def _upload(self, path: Path, part: str, timeout_s: float, then: str = "") -> None:
        """Send `path` into `part` (relative to remote_dir), then run `then` there (a rename)."""
        self._must(f"cat > {part}" + (f" && {then}" if then else ""), f"upload of {path.name}", timeout_s, stdin=path)
        self.uploads["files"] += 1
        self.uploads["bytes"] += path.stat().st_size

    # ---- the Host protocol --------------------------------------------------------------

    # unavailable(): known only by connecting; stage() and probe() say why.

    def _present(self, names: list[str]) -> set[str]:
        """Create the cache; return which of `names` (relative to remote_dir) are there. One command,
        which also finds out that the device's Python is missing before anything is sent."""
        listed = " ".join(shlex.quote(n) for n in names)
        command = (f"if mkdir -p {self._remote_dir()}/blobs {self._remote_dir()}/runners && cd {self._remote_dir()}; "
                   f"then for f in {listed}; do if [ -e \"$f\" ]; then echo \"have:$f\"; fi; done; "
                   f"else echo nodir; fi; command -v {remote_word(self.python)} >/dev/null 2>&1 || echo nopython; "
                   "exit 0")  # fmt: skip
        code, out, err = self._ssh(command, self.settings.connect_timeout_s * 2 + 10)
        if code in (255, -9):
            raise SshError(self._failed(err))
        lines = set(out.split())
        if "nodir" in lines:
            raise SshError(ssh_messages.no_remote_dir(self.settings, self.where, err.strip()))
        if "nopython" in lines:
            raise SshError(ssh_messages.python_missing(self.settings, self.where))
        return {line[5:] for line in lines if line.startswith("have:")}

    def _sweep_parts(self) -> None:
        """Once per connection, before uploading: delete what interrupted uploads left (a .part
        more than PART_STALE_MIN minutes old; a younger one may be another run's, in flight)."""
        if self._swept:
            return
        self._swept = True
        self._must(f"find blobs runners -mindepth 1 -maxdepth 1 -name '.*.part-*' -mmin +{PART_STALE_MIN} "
                   "-exec rm -rf {} + 2>/dev/null; true", "removing interrupted uploads")

    def stage(self, files: Sequence[Path], timeout_s: float = 300.0) -> list[str]:
        files = [Path(f) for f in files]
        names = [f"blobs/{blob_name(f, self._digests(f))}" for f in files]
        present = self._present(names)
        for path, name in zip(files, names, strict=True):
            if name not in present:
                self._sweep_parts()
                present.add(name)  # the same file twice in `files` travels once
                part = shlex.quote(f"blobs/.{name[6:]}.part-{uuid.uuid4().hex}")
                self._upload(path, part, timeout_s, then=f"mv -f {part} {shlex.quote(name)}")
        return names

    def stage_bundle(self, files: Sequence[Path], timeout_s: float = 300.0) -> list[str]:
        files = [Path(f) for f in files]
        folder = f"runners/{bundle_name(self._digests.bundle(files))}"
        if folder not in self._present([folder]):
            self._sweep_parts()
            part = shlex.quote(f"runners/.{folder[8:]}.part-{uuid.uuid4().hex}")
            self._must(f"mkdir -p {part}", "staging the runner")
            for f in files:
                self._upload(f, f"{part}/{shlex.quote(f.name)}", timeout_s)
            # Whole now: rename into place (another upload may have put the same bundle there first).
            self._must(f"if [ -d {folder} ]; then rm -rf {part}; else mv {part} {folder}; fi", "staging the runner")
        return [f"{folder}/{f.name}" for f in files]

    def run(self, argv: list[str], env: dict[str, str], timeout_s: float, cpus: str | None = None) -> Completed:
        words = " ".join([remote_word(argv[0]), *map(shlex.quote, argv[1:])])
        exports = " ".join(f"{name}={shlex.quote(value)}" for name, value in env.items())
        if cpus:
            words = f"taskset -c {shlex.quote(cpus)} {words}"
        pin = f"command -v taskset >/dev/null 2>&1 || exit {NO_TASKSET}; " if cpus else ""
        # The device stops a runaway process even if this side dies (where it has `timeout`).
        command = (f"mkdir -p {self._remote_dir()} && cd {self._remote_dir()} && {'export ' + exports + ' && ' if exports else ''}{pin}"
                   f"if command -v timeout >/dev/null 2>&1; then exec timeout -k {KILL_GRACE_S} {timeout_s:g} "
                   f"{words}; else exec {words}; fi")  # fmt: skip
        # The local limit leaves room for the connection and the remote timeout's own kill.
        code, out, err = self._ssh(command, timeout_s + self.settings.connect_timeout_s + KILL_GRACE_S + 5)
        return Completed(code, out, err, timed_out=code in (-9, 124, 137))

    def probe(self, wanted: dict[str, tuple[str, str]]) -> dict:
        """Reachable within the connect timeout? What the device's Python has, and the tools there."""
        py, remote_dir = remote_word(self.python), self._remote_dir()
        command = (f"uname -sm; if command -v {py} >/dev/null 2>&1; then {py} -c {shlex.quote(probe_script(wanted))}; "
                   f"else echo nopython; fi; mkdir -p {remote_dir} 2>/dev/null && [ -w {remote_dir} ] || echo nowrite; "
                   "command -v taskset >/dev/null 2>&1 || echo notaskset; exit 0")  # fmt: skip
        started = time.monotonic()
        code, out, err = self._ssh(command, self.settings.connect_timeout_s * 2 + 20)
        if code in (255, -9):
            raise SshError(self._failed(err))
        lines = out.strip().splitlines()
        facts = read_probe(out) or {"machine": {}, "versions": None, "errors": {}}
        system, _, arch = lines[0].partition(" ") if lines and not lines[0].startswith("{") else ("", "", "")
        facts["machine"] = {"system": system, "arch": arch, **facts["machine"],
                            # the whole probe: connect when not yet connected, shell, Python importing runtimes
                            "check_ms": round((time.monotonic() - started) * 1000, 1)}  # fmt: skip
        facts["tools"] = {"taskset": "notaskset" not in lines}
        problems = facts["problems"] = []
        if "nopython" in lines:
            problems.append(ssh_messages.python_missing(self.settings, self.where))
        elif facts["versions"] is None:
            problems.append(f"the device's Python failed to run a probe: {err.strip()[-300:]}: "
                            f"check that `{self.python}` works there")  # fmt: skip
        if "nowrite" in lines:
            problems.append(f"remote_dir {self.settings.remote_dir!r} is not writable on {self.settings.host}: "
                            f"set remote_dir in [host] of {self.where}")  # fmt: skip
        return facts

    def install_hint(self, requirements: list[str], runtime_hint: str = "") -> str:
        return f"there run `{self.python} -m pip install {' '.join(requirements)}` ({ssh_messages.VENV_HINT})"

    def explain(self, done: Completed) -> str | None:
        if done.returncode == 255:
            return self._failed(done.stderr)
        if done.returncode == 127:
            return ssh_messages.python_missing(self.settings, self.where)
        if done.returncode == NO_TASKSET:
            return ssh_messages.no_taskset(self.settings, self.where)
        return None

    def close(self) -> None:
        """Stop the shared connection (`ssh -O exit`) and remove its socket dir; safe to repeat."""
        self._finalizer()


def _stop_master(base_argv: list[str], host: str, control_dir: str) -> None:
    # -O exit talks to the master through the socket; no connection is made if there is none.
    if any(Path(control_dir).iterdir()):
        try:
            subprocess.run([*base_argv, "-O", "exit", "--", host], capture_output=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            pass
    shutil.rmtree(control_dir, ignore_errors=True)

"""The SSH target: a Raspberry Pi (or any Linux board) reached with the system OpenSSH client.

The system `ssh` is used, not a Python SSH library, so a user's ~/.ssh/config, keys, agent and
ProxyJump all work as they do in a terminal. All commands of one target share ONE connection
(OpenSSH ControlMaster with a socket in a private temp dir); `close()` stops it.

Files travel into a content-addressed cache on the device, `<remote_dir>/blobs/<sha256>.<ext>`:
one remote command lists which blobs are already there, only the missing ones are sent, so a
re-run uploads nothing. The runner prints one JSON document, as on every target; its peak
memory is its own VmHWM report.

    >>> target = SshTarget(load_profile("rpi4"))
    >>> target.check().runtimes
    {'onnxruntime': '1.32.0', 'tflite': '2.3.0'}
    >>> target.measure(Path("model.onnx"), Path("inputs.npz"), "onnxruntime", RunOptions())["status"]
    'ok'
    >>> target.uploads          # files and bytes sent by this target so far
    {'files': 3, 'bytes': 61234}
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shlex
import shutil
import subprocess
import tempfile
import time
import weakref
from pathlib import Path

from edgebench.runtimes import RUNTIMES
from edgebench.targets import (
    RUNNER_PATH,
    RunOptions,
    TargetProfile,
    TargetStatus,
    parse_runner_output,
)

CONTROL_PERSIST_S = 120  # the master outlives a crashed edgebench by this much, then exits
KILL_GRACE_S = 5  # remote `timeout -k`: SIGKILL this long after SIGTERM
PACKAGES = {"numpy": "numpy", **{name: rt.device_requirement for name, rt in RUNTIMES.items()}}
MODULES = {"numpy": "numpy", **{name: rt.module for name, rt in RUNTIMES.items()}}
VENV_HINT = "Raspberry Pi OS refuses system-wide pip: use a venv, see targets/rpi/README.md"

# Run on the device by check(): which runtimes import, their versions, and machine facts.
PROBE = """
import json, os, platform, sys
from importlib import import_module
from importlib.metadata import version
out = {"python": platform.python_version(), "executable": sys.executable,
       "arch": platform.machine(), "system": platform.system(), "cpu_count": os.cpu_count(),
       "versions": {}, "errors": {}}
for name, (module, dist) in %s.items():
    try:
        import_module(module)
        out["versions"][name] = version(dist)
    except Exception as exc:
        out["versions"][name] = None
        out["errors"][name] = f"{type(exc).__name__}: {exc}"
for key, path in (("model", "/sys/firmware/devicetree/base/model"), ("cpuinfo", "/proc/cpuinfo")):
    try:
        text = open(path, errors="replace").read()
    except OSError:
        continue
    if key == "model":
        out["model"] = text.strip("\\x00\\n ")
    else:
        for line in text.splitlines():
            if line.split(":")[0].strip().lower() in ("model name", "hardware", "cpu model"):
                out["cpu"] = line.split(":", 1)[1].strip()
                break
print(json.dumps(out))
"""


class SshError(Exception):
    """ssh itself failed (unreachable, authentication, host key): the message says which."""


def remote_word(path: str) -> str:
    """Shell-quote a remote path or command name; a leading `~` still expands to $HOME."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


def blob_name(path: Path, digest: str) -> str:
    # The suffix is kept (runtimes and people read it) but never trusted as shell text.
    suffix = re.sub(r"[^A-Za-z0-9.]", "", path.suffix)[:16]
    return f"{digest}{suffix}"


class SshTarget:
    """Runs the runner on a device over SSH, with a content-addressed file cache there."""

    def __init__(self, profile: TargetProfile):
        self.profile = profile
        self.uploads = {"files": 0, "bytes": 0}
        self.connect_s: float | None = None  # seconds the first command took (connect + auth)
        self._hashes: dict[tuple[str, int, int], str] = {}
        self._last_run_end: float | None = None
        self._resolved: dict[str, str] | None = None
        self._open_control()

    def _open_control(self) -> None:
        # Private (0700) dir: the control socket gives a shell on the device to whoever can open it.
        self._control_dir = tempfile.mkdtemp(prefix="edgebench-ssh-")
        self._control_path = str(Path(self._control_dir) / "mux")
        # Stops the master at close(), or when the target is garbage-collected or Python exits.
        self._finalizer = weakref.finalize(self, _stop_master, self._base_argv(),
                                           self.profile.host or "", self._control_dir)  # fmt: skip

    # ---- ssh plumbing -------------------------------------------------------------------

    def _base_argv(self) -> list[str]:
        p = self.profile
        # For each option ssh keeps the FIRST value it sees: the ones we rely on come first.
        argv = ["ssh", "-T", "-o", "BatchMode=yes",
                "-o", f"ConnectTimeout={max(1, math.ceil(p.connect_timeout_s))}",
                "-o", "ControlMaster=auto", "-o", f"ControlPath={self._control_path}",
                "-o", f"ControlPersist={CONTROL_PERSIST_S}"]  # fmt: skip
        for option in p.ssh_options:
            argv += ["-o", option]
        if p.port:
            argv += ["-p", str(p.port)]
        if p.user:
            argv += ["-l", p.user]
        if p.identity_file:
            # Only this key: an agent full of keys could exhaust the server's MaxAuthTries first.
            argv += ["-i", str(Path(p.identity_file).expanduser()), "-o", "IdentitiesOnly=yes"]
        return argv

    def _ssh(self, command: str, timeout_s: float, stdin: Path | None = None) -> tuple[int, str, str]:
        """Run `command` (a shell string) on the device; (returncode, stdout, stderr)."""
        if not self._finalizer.alive:  # used again after close(): a new connection
            self._open_control()
        argv = [*self._base_argv(), "--", self.profile.host or "", command]
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

    def _where(self) -> dict[str, str]:
        """Host, port, user and key as ssh will really use them (after ~/.ssh/config)."""
        if self._resolved is None:
            resolved = {"hostname": self.profile.host or "", "port": str(self.profile.port or 22),
                        "user": self.profile.user or "", "identityfile": ""}  # fmt: skip
            try:
                out = subprocess.run([*self._base_argv(), "-G", "--", self.profile.host or ""],
                                     capture_output=True, text=True, timeout=10).stdout  # fmt: skip
                for line in out.splitlines():
                    key, _, value = line.partition(" ")
                    if key in resolved and value and not (key == "identityfile" and resolved[key]):
                        resolved[key] = value
            except (OSError, subprocess.TimeoutExpired):
                pass
            self._resolved = resolved
        return self._resolved

    def _explain(self, stderr: str) -> str:
        """Turn ssh's exit 255 and its stderr into one clear message: what is wrong, what to do."""
        where = self._where()
        dest = f"{where['hostname']}:{where['port']}"
        login = f"{where['user']}@{self.profile.host}" if where["user"] else str(self.profile.host)
        text = stderr.lower()
        last = next((line for line in reversed(stderr.strip().splitlines()) if line.strip()), "no output")
        if "host key verification failed" in text or "host identification has changed" in text:
            return (f"host key verification failed for {dest}: the device's host key is unknown or "
                    f"has changed; check it by connecting once by hand (`ssh {login}`), or set "
                    f"ssh_options = [\"StrictHostKeyChecking=accept-new\"] in {self._profile_ref()} "
                    "to trust a new device on first use")  # fmt: skip
        if "permission denied" in text or "too many authentication failures" in text:
            key = self.profile.identity_file or where["identityfile"] or "your default keys/agent"
            return (f"authentication refused by {dest} for user {where['user'] or '?'} with key "
                    f"{key}: copy the key to the device with `ssh-copy-id -i {key}.pub {login}`, "
                    f"or set user/identity_file in {self._profile_ref()} ({last.strip()})")  # fmt: skip
        reasons = [
            ("connection refused", "connection refused (is sshd running there, on this port?)"),
            ("timed out", f"no answer within {self.profile.connect_timeout_s:g} s"),
            ("no route to host", "no route to host"),
            ("network is unreachable", "network is unreachable"),
            ("could not resolve hostname", "the host name does not resolve (for *.local names "
             "the device must announce itself over mDNS/avahi; else use its IP address)"),
            ("connection closed", "the connection was closed by the remote side"),
            ("connection reset", "the connection was reset by the remote side"),
        ]  # fmt: skip
        for needle, reason in reasons:
            if needle in text:
                return (f"host {dest} is unreachable: {reason}; check the device is on and on the "
                        f"network and `ssh {login}` works by hand, or fix host/port in "
                        f"{self._profile_ref()}")  # fmt: skip
        return f"ssh to {dest} failed: {last.strip()}"

    def _profile_ref(self) -> str:
        return self.profile.path or f"the {self.profile.name!r} profile"

    def _remote_dir(self) -> str:
        return remote_word(self.profile.remote_dir.rstrip("/") or "/")

    def _python(self) -> str:
        return remote_word(self.profile.python)

    # ---- measuring ----------------------------------------------------------------------

    def _digest(self, path: Path) -> str:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        if key not in self._hashes:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            self._hashes[key] = h.hexdigest()
        return self._hashes[key]

    def _stage(self, files: list[Path], timeout_s: float) -> tuple[list[str], set[str]]:
        """Put `files` into the device's blob cache; return their remote names and the tools there.

        One remote command creates the cache, lists which blobs are present and whether the
        Python and the helper tools exist; then only missing blobs are sent.
        """
        names = [blob_name(f, self._digest(f)) for f in files]
        blobs = self._remote_dir() + "/blobs"
        listed = " ".join(shlex.quote(n) for n in names)
        command = (
            f"if mkdir -p {blobs} && cd {blobs}; then "
            f"for f in {listed}; do if [ -f \"$f\" ]; then echo \"have:$f\"; fi; done; "
            "else echo nodir; fi; "
            f"command -v {self._python()} >/dev/null 2>&1 || echo nopython; "
            "for t in timeout taskset; do command -v $t >/dev/null 2>&1 && echo \"tool:$t\"; done; "
            "exit 0"
        )  # fmt: skip
        code, out, err = self._ssh(command, self.profile.connect_timeout_s * 2 + 10)
        if code == 255 or code == -9:
            raise SshError(self._explain(err))
        lines = set(out.split())
        if "nodir" in lines:
            raise SshError(f"cannot create {self.profile.remote_dir!r} on {self.profile.host}: "
                           f"{err.strip()}: set remote_dir in {self._profile_ref()} to a writable folder")  # fmt: skip
        if "nopython" in lines:
            raise SshError(self._python_missing())
        if self.profile.taskset and "tool:taskset" not in lines:
            raise SshError(f"taskset is not installed on {self.profile.host}: install util-linux "
                           f"there, or remove taskset from {self._profile_ref()}")  # fmt: skip
        for path, name in zip(files, names, strict=True):
            if f"have:{name}" in lines:
                continue
            part = shlex.quote(f".{name}.part") + ".$$"  # $$: concurrent uploads never collide
            code, _, err = self._ssh(f"cd {blobs} && cat > {part} && mv -f {part} {shlex.quote(name)}",
                                     timeout_s, stdin=path)  # fmt: skip
            if code != 0:
                raise SshError(self._explain(err) if code in (255, -9)
                               else f"upload of {path.name} to {self.profile.host} failed: {err.strip()}")  # fmt: skip
            self.uploads["files"] += 1
            self.uploads["bytes"] += path.stat().st_size
        return names, {line[5:] for line in lines if line.startswith("tool:")}

    def _python_missing(self) -> str:
        python = self.profile.python
        # A bare name is looked up in the PATH of a non-interactive shell, often shorter than a login's.
        where = "is not an executable file" if "/" in python else "is not in the PATH of a non-interactive ssh shell"
        return (f"remote Python missing: `{python}` not found on {self.profile.host} ({where}): "
                "install Python there (`sudo apt install python3 python3-venv`, then a venv as in "
                f"targets/rpi/README.md), or set python in {self._profile_ref()} to the full path "
                "of the venv's python")  # fmt: skip

    def _cool_down(self) -> None:
        # Pis throttle when hot: keep cooldown_s between the end of one run and the next start.
        if self.profile.cooldown_s and self._last_run_end is not None:
            wait = self.profile.cooldown_s - (time.monotonic() - self._last_run_end)
            if wait > 0:
                time.sleep(wait)

    def measure(self, artifact: Path, data: Path, runtime: str, options: RunOptions,
                compare: tuple[Path, Path] | None = None) -> dict:
        """Run the runner on the device; its JSON document, or {"status": "error", "error": ...}.

        `compare` = (artifact, data) times a second artifact interleaved with the first (A/B)."""
        files = [RUNNER_PATH, Path(artifact), Path(data), *(map(Path, compare) if compare else ())]
        try:
            (runner, model, inputs, *other), tools = self._stage(files, options.timeout_s)
        except SshError as exc:
            return {"status": "error", "error": str(exc)}
        threads = str(options.threads)
        prefix = []
        if "timeout" in tools:  # the device stops a runaway runner even if this side dies
            prefix += ["timeout", "-k", str(KILL_GRACE_S), f"{options.timeout_s:g}"]
        if self.profile.taskset:
            prefix += ["taskset", "-c", self.profile.taskset]
        args = [runner, "--model", model, "--data", inputs, "--runtime", runtime, *options.runner_args(),
                *(["--compare-model", other[0], "--compare-data", other[1]] if other else [])]
        words = [*map(shlex.quote, prefix), self._python(), *map(shlex.quote, args)]
        command = (f"cd {self._remote_dir()}/blobs && export OMP_NUM_THREADS={threads} "
                   f"OPENBLAS_NUM_THREADS={threads} MKL_NUM_THREADS={threads} && exec {' '.join(words)}")  # fmt: skip
        self._cool_down()
        # The local limit leaves room for the connection and the remote timeout's own kill.
        local_timeout = options.timeout_s + self.profile.connect_timeout_s + KILL_GRACE_S + 5
        code, out, err = self._ssh(command, local_timeout)
        self._last_run_end = time.monotonic()
        return self._result(code, out, err, runtime, options)

    def _result(self, code: int, out: str, err: str, runtime: str, options: RunOptions) -> dict:
        result = parse_runner_output(out, code, err)
        if result.get("status") == "ok":
            return result
        if not out.strip():
            if code == 255:
                return {"status": "error", "error": self._explain(err)}
            if code in (-9, 124, 137):
                return {"status": "error", "error": f"runner timed out after {options.timeout_s:g} s "
                        f"on {self.profile.host}"}  # fmt: skip
            if code == 127:
                return {"status": "error", "error": self._python_missing()}
        error = str(result.get("error", ""))
        python = self.profile.python
        if "numpy is not installed" in error or "No module named 'numpy'" in error:
            result["error"] = (f"numpy missing for {python} on {self.profile.host}: there run "
                               f"`{python} -m pip install numpy {PACKAGES.get(runtime, runtime)}` ({VENV_HINT})")  # fmt: skip
        elif code == 3 and error.startswith("unavailable"):
            package = PACKAGES.get(runtime, runtime)
            result["error"] = (f"{error} on {self.profile.host}: runtime missing on the device; "
                               f"there run `{python} -m pip install {package}` ({VENV_HINT})")  # fmt: skip
        return result

    # ---- status -------------------------------------------------------------------------

    def check(self) -> TargetStatus:
        """Reachable within the connect timeout? Which runtimes does the device's Python have?"""
        status = TargetStatus(self.profile.name, "ssh", reachable=False)
        wanted = {"numpy": MODULES["numpy"]} | {r: MODULES[r] for r in self.profile.runtimes if r in MODULES}
        probe = PROBE % json.dumps({k: [m, PACKAGES[k]] for k, m in wanted.items()})
        py = self._python()
        command = (f"uname -sm; if command -v {py} >/dev/null 2>&1; then {py} -c {shlex.quote(probe)}; "
                   f"else echo nopython; fi; mkdir -p {self._remote_dir()} 2>/dev/null && "
                   f"[ -w {self._remote_dir()} ] || echo nowrite; "
                   "command -v taskset >/dev/null 2>&1 || echo notaskset; exit 0")  # fmt: skip
        started = time.monotonic()
        code, out, err = self._ssh(command, self.profile.connect_timeout_s * 2 + 20)
        if code in (255, -9):
            status.problems.append(self._explain(err))
            return status
        status.reachable = True
        # The whole probe (connect when not yet connected, shell start, Python importing runtimes).
        status.machine["check_ms"] = round((time.monotonic() - started) * 1000, 1)
        lines = out.strip().splitlines()
        if lines and not lines[0].startswith("{"):
            system, _, arch = lines[0].partition(" ")
            status.machine.update(system=system, arch=arch)
        facts = next((json.loads(line) for line in lines if line.startswith("{")), None)
        if "nopython" in lines:
            status.problems.append(self._python_missing())
        elif facts is None:
            status.problems.append(f"the device's Python failed to run a probe: {err.strip()[-300:]}: "
                                   f"check that `{self.profile.python}` works there")  # fmt: skip
        else:
            status.machine.update({k: facts[k] for k in ("arch", "system", "python", "cpu_count",
                                                         "cpu", "model") if k in facts})  # fmt: skip
            self._runtime_problems(status, facts)
        if "nowrite" in lines:
            status.problems.append(f"remote_dir {self.profile.remote_dir!r} is not writable on "
                                   f"{self.profile.host}: set remote_dir in {self._profile_ref()}")  # fmt: skip
        if self.profile.taskset and "notaskset" in lines:
            status.problems.append(f"taskset is not installed on {self.profile.host}: install util-linux there")
        return status

    def _runtime_problems(self, status: TargetStatus, facts: dict) -> None:
        versions, python = facts["versions"], self.profile.python
        if facts.get("arch") in ("armv6l", "armv7l"):
            status.problems.append(f"{self.profile.host} runs a 32-bit OS ({facts['arch']}): "
                                   "onnxruntime and ai-edge-litert ship no 32-bit ARM wheels; "
                                   "install 64-bit Raspberry Pi OS")  # fmt: skip
        if versions.get("numpy") is None:
            status.problems.append(f"numpy is not installed for {python} on {self.profile.host}: "
                                   f"there run `{python} -m pip install numpy` ({VENV_HINT})")  # fmt: skip
        for runtime in self.profile.runtimes:
            status.runtimes[runtime] = versions.get(runtime)
            if status.runtimes[runtime] is None:
                why = facts["errors"].get(runtime, "unknown runtime").splitlines()[0][:200]
                status.problems.append(f"{runtime} is not usable for {python} on {self.profile.host} "
                                       f"({why}): there run `{python} -m pip install "
                                       f"{PACKAGES.get(runtime, runtime)}` ({VENV_HINT})")  # fmt: skip

    def close(self) -> None:
        """Stop the shared connection (`ssh -O exit`) and remove its socket dir; safe to repeat."""
        self._finalizer()


def _stop_master(base_argv: list[str], host: str, control_dir: str) -> None:
    # -O exit talks to the master through the socket; no connection is made if there is none.
    if any(Path(control_dir).iterdir()):
        try:
            subprocess.run([*base_argv, "-O", "exit", "--", host],
                           capture_output=True, timeout=10)  # fmt: skip
        except (OSError, subprocess.TimeoutExpired):
            pass
    shutil.rmtree(control_dir, ignore_errors=True)

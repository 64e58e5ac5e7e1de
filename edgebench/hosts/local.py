"""This machine: a fresh local process, started with this Python.

Files are used where they are (nothing to copy); the runner runs in place from
`edgebench/device/`. Peak memory is the runner's own VmHWM; the child's ru_maxrss from `wait4`
is only a fallback (see `Completed.peak_rss_mb`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edgebench.hosts import HOSTS, Completed, Copies, HostDefaults, HostSettings


@dataclass(frozen=True)
class LocalSettings(HostSettings):
    transport: str = "local"
    python: str = "python3"  # "python3"/"python": the Python running edgebench; else a path


@HOSTS.register("local")
class LocalHost(HostDefaults):
    """Runs processes on this machine, optionally pinned with taskset."""

    Settings = LocalSettings

    def __init__(self, settings: LocalSettings, where: str = "the profile"):
        self.settings = settings
        self.where = where
        self.python = sys.executable if settings.python in ("python3", "python") else settings.python
        self._copies = Copies("edgebench-local-")

    def stage(self, files: Sequence[Path]) -> list[str]:
        return [str(Path(f).expanduser().resolve()) for f in files]

    def stage_bundle(self, files: Sequence[Path]) -> list[str]:
        files = [Path(f).resolve() for f in files]
        if len({f.parent for f in files}) == 1:  # the runner in edgebench/device/: run in place
            return [str(f) for f in files]
        return [str(p) for p in self._copies(files, bundle=True)]

    def run(self, argv: list[str], env: dict[str, str], timeout_s: float, cpus: str | None = None) -> Completed:
        if cpus and shutil.which("taskset"):
            argv = ["taskset", "-c", cpus, *argv]
        return run_process(argv, timeout_s, {**os.environ, **env})

    def probe(self, wanted: dict[str, tuple[str, str]]) -> dict:
        """Versions from the installed distributions' metadata: nothing is imported here."""
        from importlib.metadata import PackageNotFoundError, version

        from edgebench.device.runner_facts import machine_facts

        machine = machine_facts()  # the runner's own reading of this machine (CPU, features, cores)
        facts = {"machine": machine, "versions": {}, "errors": {}, "tools": {"taskset": bool(shutil.which("taskset"))}}
        for name, (_, distribution) in wanted.items():
            try:
                facts["versions"][name] = version(distribution)
            except PackageNotFoundError:
                facts["versions"][name] = None
                facts["errors"][name] = f"{distribution} is not installed"
        return facts

    def install_hint(self, requirements: list[str], runtime_hint: str = "") -> str:
        return runtime_hint or f"pip install {' '.join(requirements)}"

    def close(self) -> None:
        self._copies.close()


def run_process(argv: list[str], timeout_s: float, env: dict | None = None) -> Completed:
    """Run argv here in its own session; kill the whole group at `timeout_s`.

    The child's ru_maxrss comes from wait4. It is only a fallback for the runner's own VmHWM:
    Linux carries the parent's peak RSS over fork into the child, so a runner started by an
    edgebench process holding torch (~900 MB) would report that instead of its own ~75 MB.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env, start_new_session=True)
        except OSError as exc:
            return Completed(127, "", f"cannot start {argv[0]}: {exc}")
        deadline = time.monotonic() + timeout_s
        timed_out = False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                os.killpg(proc.pid, 9)
                pid, status, usage = os.wait4(proc.pid, 0)
                timed_out = True
                break
            time.sleep(0.005)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    if timed_out:
        stderr += f"\ntimed out after {timeout_s:g} s"
    return Completed(proc.returncode, stdout, stderr, timed_out=timed_out, peak_rss_mb=usage.ru_maxrss / 1024)

"""The local target: the runner in a fresh subprocess of this machine's Python.

Peak memory is the runner process's VmHWM (the kernel's high-water mark), not polling.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edgebench.runtimes import runtime as runtime_of
from edgebench.targets import (
    RUNNER_PATH,
    RunOptions,
    TargetProfile,
    TargetStatus,
    parse_runner_output,
)


def run_process(argv: list[str], timeout_s: float, env: dict | None = None) -> tuple[int, str, str, float | None]:
    """Run argv; return (returncode, stdout, stderr, peak RSS MB of the child from wait4).

    On timeout the child is killed and returncode is None-like: -9 with a 'timed out' stderr.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env, start_new_session=True)
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
    return proc.returncode, stdout, stderr, usage.ru_maxrss / 1024


def runner_env(threads: int) -> dict:
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = str(threads)
    return env


class LocalTarget:
    """Runs the runner with this Python, optionally pinned with taskset."""

    def __init__(self, profile: TargetProfile):
        self.profile = profile
        self.python = sys.executable if profile.python in ("python3", "python") else profile.python

    def _prefix(self) -> list[str]:
        if self.profile.taskset and shutil.which("taskset"):
            return ["taskset", "-c", self.profile.taskset]
        return []

    def measure(self, artifact: Path, data: Path, runtime: str, options: RunOptions,
                compare: tuple[Path, Path] | None = None) -> dict:
        """The runner's JSON document; `compare` = (artifact, data) times a second artifact
        interleaved with the first in the same process (the gate's A/B)."""
        argv = [*self._prefix(), self.python, str(RUNNER_PATH), "--model", str(artifact),
                "--data", str(data), "--runtime", runtime, *options.runner_args(),
                *(["--compare-model", str(compare[0]), "--compare-data", str(compare[1])] if compare else [])]
        code, stdout, stderr, rss = run_process(argv, options.timeout_s, runner_env(options.threads))
        result = parse_runner_output(stdout, code, stderr)
        if "timed out" in stderr and result.get("status") != "ok":
            result = {"status": "error", "error": f"runner timed out after {options.timeout_s:g} s"}
        # Peak memory is the runner's own VmHWM. wait4's ru_maxrss is not used: Linux carries
        # the parent's peak RSS over fork into the child, so a runner started by an edgebench
        # process holding torch (~900 MB) would report that instead of its own ~75 MB.
        if result.get("status") == "ok" and result.get("peak_rss_mb") is None:
            result["peak_rss_mb"] = rss
        if self.profile.cooldown_s:
            time.sleep(self.profile.cooldown_s)
        return result

    def check(self) -> TargetStatus:
        status = TargetStatus(self.profile.name, "local", reachable=True)
        status.machine = {"arch": platform.machine(), "system": platform.system()}
        for runtime in self.profile.runtimes:
            status.runtimes[runtime] = runtime_version(runtime)
            if status.runtimes[runtime] is None:
                hint = runtime_of(runtime).install_hint
                status.problems.append(f"{runtime} is not installed: {hint}")
        return status

    def close(self) -> None:
        pass


def runtime_version(runtime: str) -> str | None:
    return runtime_of(runtime).host_version()

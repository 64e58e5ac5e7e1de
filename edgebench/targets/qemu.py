"""The qemu target: the runner on aarch64 Python under QEMU user-mode emulation.

It checks that a variant works and how accurate it is on ARM kernels of the real runtimes
(onnxruntime's and LiteRT's aarch64 builds) without a board. Its timings are emulated —
hundreds of times slower than native and not a Raspberry Pi's — so every result says
`"emulated": true`.

The runner, artifact and data stay where they are on the host: `qemu -L ROOTFS` looks each
absolute path up under ROOTFS first and falls back to the host path, so a host path works as
long as the same path does not exist inside the rootfs (checked; otherwise the file is copied
to a folder the rootfs does not shadow).

    >>> target = QemuTarget(load_profile("qemu-aarch64"))
    >>> target.check().problems        # [] once `edgebench targets --prepare qemu-aarch64` ran
    >>> target.measure(Path("model.onnx"), Path("inputs.npz"), "onnxruntime", RunOptions())
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from edgebench.errors import TargetError
from edgebench.targets import (
    RUNNER_PATH,
    RunOptions,
    TargetProfile,
    TargetStatus,
    parse_runner_output,
    qemu_rootfs,
)
from edgebench.targets.local import run_process, runner_env

PREPARE_HINT = "`edgebench targets --prepare qemu-aarch64` (or: python -m edgebench.targets.qemu_rootfs)"
REBUILD_HINT = "python -m edgebench.targets.qemu_rootfs --force"
QEMU_HINT = "apt-get install qemu-user-static"


class QemuTarget:
    """Runs the runner with the prepared rootfs's Python 3.11 under qemu-aarch64-static."""

    def __init__(self, profile: TargetProfile):
        self.profile = profile

    # ---- where things are -----------------------------------------------------------------

    def rootfs(self) -> Path:
        """The rootfs this profile uses: its `rootfs` key, else the edgebench cache."""
        if self.profile.rootfs:
            return Path(self.profile.rootfs).expanduser().resolve()
        return qemu_rootfs.default_rootfs()

    def _unavailable(self) -> str | None:
        """Why the target cannot run now, with what to do; None when it can."""
        if not qemu_rootfs.qemu_binary():
            return f"qemu-aarch64-static is not installed: {QEMU_HINT}"
        rootfs = self.rootfs()
        # A rootfs the user built and named in the profile has no stamp; it is used as it is
        # (check() probes it). The cache's counts only once a verified build stamped it.
        own = self.profile.rootfs and (rootfs / qemu_rootfs.PYTHON).is_file()
        if not (own or qemu_rootfs.read_stamp(rootfs)):
            where = f"`rootfs` in {self.profile.path}" if self.profile.rootfs else "the edgebench cache"
            return f"no prepared aarch64 rootfs at {rootfs} ({where}): run {PREPARE_HINT}"
        return None

    def needs_prepare(self) -> bool:
        """True when the rootfs is edgebench's to build and is not built yet (qemu is there)."""
        return (not self.profile.rootfs and qemu_rootfs.qemu_binary() is not None
                and not qemu_rootfs.read_stamp(self.rootfs()))

    # ---- the Target protocol ----------------------------------------------------------------

    def measure(self, artifact: Path, data: Path, runtime: str, options: RunOptions,
                compare: tuple[Path, Path] | None = None) -> dict:
        problem = self._unavailable()
        if problem:
            return {"status": "error", "error": f"unavailable: {problem}", "emulated": True}
        rootfs = self.rootfs()
        with tempfile.TemporaryDirectory(prefix="edgebench-qemu-") as spare:
            try:
                runner, model, inputs, *other = (_host_visible(Path(p), rootfs, Path(spare))
                                                 for p in (RUNNER_PATH, artifact, data, *(compare or ())))
            except TargetError as exc:
                return {"status": "error", "error": str(exc), "emulated": True}
            pair = ["--compare-model", str(other[0]), "--compare-data", str(other[1])] if other else []
            argv = qemu_rootfs.guest_command(rootfs, [str(runner), "--model", str(model),
                                             "--data", str(inputs), "--runtime", runtime,
                                             *options.runner_args(), *pair],
                                             cpu=self.profile.cpu or qemu_rootfs.DEFAULT_CPU)
            code, stdout, stderr, _ = run_process(argv, options.timeout_s, runner_env(options.threads))
        result = parse_runner_output(stdout, code, stderr)
        if "timed out" in stderr and result.get("status") != "ok":
            result = {"status": "error",
                      "error": f"runner timed out after {options.timeout_s:g} s (emulated)"}
        arch = result.get("machine", {}).get("arch")
        if result.get("status") == "ok" and arch != "aarch64":
            # The runner reports its own platform.machine(): anything else means it did not run
            # under emulation, and its numbers must not pass for ARM ones.
            result = {"status": "error", "error": f"runner reported arch {arch!r}, not aarch64",
                      "machine": result.get("machine", {})}
        # Peak RSS: the runner's own VmHWM is kept, not wait4's ru_maxrss. Linux carries the
        # high-water mark of the forked pre-exec image (this whole edgebench process, torch and
        # all) into the child's ru_maxrss: measured 899 MB from wait4 against 176 MB VmHWM for
        # the same run. VmHWM belongs to the exec'd qemu process alone; under qemu-user it is
        # the guest's memory plus the emulator and its translated code (native runner: ~74 MB,
        # emulated: ~98-176 MB), so it is an upper bound, not a device's RSS. Said in the record.
        if result.get("status") == "ok":
            result["peak_rss_note"] = "includes the qemu emulator (user-mode); not a device's RSS"
        result["emulated"] = True
        if self.profile.cooldown_s:
            time.sleep(self.profile.cooldown_s)
        return result

    def check(self) -> TargetStatus:
        status = TargetStatus(self.profile.name, "qemu", reachable=False)
        status.runtimes = {runtime: None for runtime in self.profile.runtimes}
        problem = self._unavailable()
        if problem:
            status.problems.append(problem)
            return status
        rootfs = self.rootfs()
        try:
            facts = qemu_rootfs.probe(rootfs)
        except TargetError as exc:
            status.problems.append(f"the rootfs at {rootfs} does not start under qemu ({exc}): "
                                   f"rebuild it with {REBUILD_HINT}")
            return status
        status.reachable = facts.get("arch") == "aarch64"
        if not status.reachable:
            status.problems.append(f"the guest reports arch {facts.get('arch')!r}, not aarch64")
        status.machine = {"arch": facts.get("arch"), "system": "Linux", "python": facts.get("python"),
                          "emulated": True, "emulator": f"qemu-aarch64 {qemu_rootfs.qemu_version()}",
                          "rootfs": str(rootfs)}
        for runtime in self.profile.runtimes:
            status.runtimes[runtime] = facts.get(runtime)  # the probe's keys are runtime names
            if status.runtimes[runtime] is None:
                status.problems.append(f"{runtime} is not in the rootfs: rebuild it with {REBUILD_HINT}")
        return status

    def prepare(self, log: Callable[[str], None] = print, force: bool = False) -> Path:
        """Build the rootfs this profile uses (once); see `edgebench.targets.qemu_rootfs`."""
        return qemu_rootfs.prepare(log=log, force=force, dest=self.rootfs())

    def close(self) -> None:
        pass


def _host_visible(path: Path, rootfs: Path, spare: Path) -> Path:
    """An absolute path of `path` that the emulated process sees as the host's file.

    qemu -L resolves an absolute path to ROOTFS/path when that exists, so a host file whose
    path also exists in the rootfs (say under /usr or /etc) would be shadowed: copy it out.
    """
    path = path.expanduser().resolve()
    if not _shadowed(path, rootfs):
        return path
    copy = spare / path.name
    if _shadowed(copy, rootfs):
        raise TargetError(f"{path} is shadowed by the rootfs at {rootfs} and so is {spare}")
    shutil.copyfile(path, copy)
    return copy


def _shadowed(path: Path, rootfs: Path) -> bool:
    return (rootfs / str(path).lstrip("/")).exists()

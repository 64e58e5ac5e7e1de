"""aarch64 under QEMU user-mode emulation: the rootfs's Python 3.11 run by qemu-aarch64-static.

It checks that a variant works and how accurate it is on ARM kernels of the real runtimes
without a board. Its timings are emulated (hundreds of times slower than native and not a
Raspberry Pi's), so its profile says `emulated = true` and every result says so too.

Files stay where they are on this machine: `qemu -L ROOTFS` looks each absolute path up under
ROOTFS first and falls back to the host path, so a host path works as long as the same path
does not exist inside the rootfs (checked; otherwise the file, or the whole runner bundle, is
copied, content-addressed, to a folder the rootfs does not shadow).

    >>> host = QemuHost(QemuSettings())
    >>> host.needs_prepare()      # True until `edgebench targets --prepare qemu-aarch64` ran
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from edgebench.errors import TargetError
from edgebench.hosts import (
    HOSTS,
    Completed,
    Copies,
    HostDefaults,
    HostSettings,
    qemu_addons,
    qemu_rootfs,
)
from edgebench.hosts.local import run_process
from edgebench.hosts.probe import probe_script, read_probe

PREPARE_HINT = "`edgebench targets --prepare qemu-aarch64` (or: python -m edgebench.hosts.qemu_rootfs)"
REBUILD_HINT = "python -m edgebench.hosts.qemu_rootfs --force"
QEMU_HINT = "apt-get install qemu-user-static"
PROBE_TIMEOUT_S = 180.0  # importing the runtimes under emulation takes seconds each


@dataclass(frozen=True)
class QemuSettings(HostSettings):
    transport: str = "qemu"
    # The emulated core (qemu -cpu): a Raspberry Pi 4's by default; "max" gave wrong int8 results.
    cpu: str = qemu_rootfs.DEFAULT_CPU
    rootfs: str | None = None  # a prepared aarch64 root filesystem; default: the edgebench cache


@HOSTS.register("qemu")
class QemuHost(HostDefaults):
    """Processes of the rootfs's Python under qemu-aarch64-static, on this machine."""

    Settings = QemuSettings
    arch = "aarch64"
    place = "under qemu"
    python = "/" + qemu_rootfs.PYTHON

    def __init__(self, settings: QemuSettings, where: str = "the profile"):
        self.settings = settings
        self.where = where
        self._copies = Copies("edgebench-qemu-")

    def rootfs(self) -> Path:
        """The rootfs this host uses: its `rootfs` setting, else the edgebench cache."""
        if self.settings.rootfs:
            return Path(self.settings.rootfs).expanduser().resolve()
        return qemu_rootfs.default_rootfs()

    def unavailable(self) -> str | None:
        if not qemu_rootfs.qemu_binary():
            return f"qemu-aarch64-static is not installed: {QEMU_HINT}"
        rootfs = self.rootfs()
        # A rootfs the user built and named in the profile has no stamp; it is used as it is
        # (the probe checks it). The cache's counts only once a verified build stamped it.
        own = self.settings.rootfs and (rootfs / qemu_rootfs.PYTHON).is_file()
        if not (own or qemu_rootfs.read_stamp(rootfs)):
            where = f"`rootfs` in {self.where}" if self.settings.rootfs else "the edgebench cache"
            return f"no prepared aarch64 rootfs at {rootfs} ({where}): run {PREPARE_HINT}"
        return None

    def needs_prepare(self, runtimes: Sequence[str] = ()) -> bool:
        """True when the rootfs is edgebench's to build and is not built yet (qemu is there), or
        lacks a runtime of `runtimes` that it installs on first use (`edgebench.hosts.qemu_addons`)."""
        if self.settings.rootfs or qemu_rootfs.qemu_binary() is None:
            return False
        return not qemu_rootfs.read_stamp(self.rootfs()) or bool(qemu_addons.missing(self.rootfs(), runtimes))

    def prepare(self, log: Callable[[str], None] = print, force: bool = False, runtimes: Sequence[str] = ()) -> Path:
        """Build the rootfs this host uses (once, with progress; see `edgebench.hosts.qemu_rootfs`)
        and install the runtimes of `runtimes` it does not have built in."""
        rootfs = qemu_rootfs.prepare(log=log, force=force, dest=self.rootfs())
        if not self.settings.rootfs:  # a rootfs the user built is used as it is
            qemu_addons.install(rootfs, runtimes, log)
        return rootfs

    def python_for(self, runtime: str) -> str:
        """Python 3.13 of the trixie tree for a runtime that needs it (ExecuTorch), else 3.11."""
        return "/" + qemu_addons.PYTHONS[qemu_addons.python_of(runtime)]

    # ---- files --------------------------------------------------------------------------

    def stage(self, files: Sequence[Path]) -> list[str]:
        paths = [Path(f).expanduser().resolve() for f in files]
        shadowed = [p for p in paths if _shadowed(p, self.rootfs())]
        copies = dict(zip(shadowed, self._visible(shadowed), strict=True))
        return [str(copies.get(p, p)) for p in paths]

    def stage_bundle(self, files: Sequence[Path]) -> list[str]:
        paths = [Path(f).resolve() for f in files]
        # The runner imports its siblings from its own folder: all of them must be visible there.
        if len({p.parent for p in paths}) == 1 and not any(_shadowed(p, self.rootfs()) for p in paths):
            return [str(p) for p in paths]
        return [str(p) for p in self._visible(paths, bundle=True)]

    def _visible(self, paths: list[Path], bundle: bool = False) -> list[Path]:
        """Copies of `paths` in a folder the rootfs does not shadow."""
        copies = self._copies(paths, bundle=bundle) if paths else []
        if any(_shadowed(c, self.rootfs()) for c in copies):
            raise TargetError(f"{paths[0]} is shadowed by the rootfs at {self.rootfs()} and so is {self._copies.folder}")
        return copies

    # ---- processes ----------------------------------------------------------------------

    def run(self, argv: list[str], env: dict[str, str], timeout_s: float, cpus: str | None = None) -> Completed:
        """Run one of the rootfs's Pythons (argv[0]: `self.python`, or `python_for` a runtime) under emulation."""
        pythons = {"/" + path: version for version, path in qemu_addons.PYTHONS.items()}
        if argv[:1] not in [[p] for p in pythons]:
            raise TargetError(f"qemu runs only the rootfs's Pythons ({', '.join(pythons)}), not {argv[:1]}")
        version = pythons[argv[0]]
        tree = qemu_addons.tree(self.rootfs(), version)
        if not (tree / qemu_addons.PYTHONS[version]).exists():  # a runtime not installed yet: the runner's answer
            why = (f"unavailable: Python {version} (for a runtime installed on first use) is not in the rootfs "
                   f"at {self.rootfs()} yet: run `edgebench targets --prepare` with this profile")
            return Completed(3, json.dumps({"status": "error", "error": why}) + "\n", "")
        command = qemu_rootfs.guest_command(tree, argv[1:], cpu=self.settings.cpu, python=qemu_addons.PYTHONS[version])
        if cpus and shutil.which("taskset"):
            command = ["taskset", "-c", cpus, *command]
        done = run_process(command, timeout_s, {**os.environ, **env})
        # Peak RSS: the runner's own VmHWM is kept, not wait4's ru_maxrss (Linux carries the
        # forked pre-exec image's high-water mark, this whole edgebench process, into the child:
        # measured 899 MB from wait4 against 176 MB VmHWM for the same run).
        return Completed(done.returncode, done.stdout, done.stderr, timed_out=done.timed_out)

    def probe(self, wanted: dict[str, tuple[str, str]]) -> dict:
        """Runtimes installed on first use are looked for where they are installed: the module and
        distribution their OnDemand names, with that tree's Python (ExecuTorch: 3.13)."""
        later = qemu_addons.on_demand([name.partition("|")[0] for name in wanted])
        base = {n: pair for n, pair in wanted.items() if n.partition("|")[0] not in later}
        done = self.run([self.python, "-c", probe_script(base)], {}, PROBE_TIMEOUT_S)
        facts = read_probe(done.stdout)
        if facts is None or done.returncode != 0:
            why = "timed out" if done.timed_out else " | ".join(done.stderr.strip().splitlines()[-3:]) or "no output"
            raise TargetError(f"the rootfs at {self.rootfs()} does not start under qemu ({why}): "
                              f"rebuild it with {REBUILD_HINT}")  # fmt: skip
        for python in sorted({spec.python for spec in later.values()}):
            names = {n: pair for n, pair in wanted.items() if n.partition("|")[0] in later
                     and later[n.partition("|")[0]].python == python}
            own = {n: (later[n.partition("|")[0]].module or pair[0], later[n.partition("|")[0]].distribution or pair[1])
                   for n, pair in names.items()}
            seen = qemu_addons.probe(self.rootfs(), python, own, cpu=self.settings.cpu)
            for name, (_, dist) in own.items():
                found = seen["versions"].get(name)
                facts["versions"][name] = found and (found if dist == wanted[name][1] else f"{found} ({dist})")
                if found is None:
                    facts["errors"][name] = seen["errors"].get(name) or "not installed"
        facts["machine"].update(system="Linux", emulated=True, rootfs=str(self.rootfs()),
                                emulator=f"qemu-aarch64 {qemu_rootfs.qemu_version()}")  # fmt: skip
        return facts

    def install_hint(self, requirements: list[str], runtime_hint: str = "") -> str:
        return (f"it is not in the rootfs: `edgebench targets --prepare PROFILE` installs the runtimes a profile "
                f"lists on first use; the base tree is rebuilt with {REBUILD_HINT}")

    def close(self) -> None:
        self._copies.close()


def _shadowed(path: Path, rootfs: Path) -> bool:
    """qemu -L resolves an absolute path to ROOTFS/path when that exists: the host file is hidden
    (in the base tree or the trixie tree, which runs with its own -L)."""
    return any((root / str(path).lstrip("/")).exists() for root in (rootfs, rootfs / qemu_addons.TRIXIE))

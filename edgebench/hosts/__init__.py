"""Hosts: the ways of reaching a device. One module each (local, qemu, ssh), one registry.

A Host knows only how to get ready, put files where a process there can read them, and start
a process; what is measured and how its output is read is written once on top of it
(`edgebench.targets.target`). Each host module declares its `[host]` settings (a frozen
dataclass, the profile's `[host]` table) and registers its class in `HOSTS`.

    >>> from edgebench.hosts import HOSTS
    >>> host = HOSTS.get("local")(HOSTS.get("local").Settings())
    >>> [remote] = host.stage([Path("inputs.npz")])           # content-addressed, atomic
    >>> host.run([host.python, "-c", "print(1)"], env={}, timeout_s=10).stdout
    '1\\n'
    >>> host.close()

The contract every host keeps (tests/hosts/test_hosts.py loops over the registry):

- `prepare(log, runtimes=...)` makes the host usable once for a profile's runtimes (qemu builds
  its rootfs and installs runtimes it lacks); `needs_prepare(runtimes)` says whether that is
  still to do; `unavailable()` says, without connecting, why it cannot run now.
- `python_for(runtime)` is the Python that runs the runner for a runtime there (qemu: Python
  3.13 of its trixie tree for ExecuTorch's torch-free runtime; elsewhere `python`).
- `stage(files)` returns, in order, paths a process started by `run` reads the files by; a
  file travels once (its name there is its sha256) and only whole files count: an interrupted
  upload is never taken for a staged file. `stage_bundle(files)` puts files together, under
  their own names, into one directory named after their content (the runner and its modules).
- `run(argv, env, timeout_s, cpus)` starts argv there (argv[0] is a program there, usually
  `host.python`) with `env` added to its environment, pinned to `cpus` if given; the process is
  killed at `timeout_s`. It returns a `Completed`.
- `probe(wanted)` returns facts about the machine and which of `wanted` imports there.
- `close()` frees what the host holds (a connection, spare copies); safe to call twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

from edgebench.registry import Registry

# The table: one module per way of reaching a device; importing it registers its Host.
HOSTS = Registry("host", modules=(
    "edgebench.hosts.local",
    "edgebench.hosts.qemu",
    "edgebench.hosts.ssh",
))  # fmt: skip

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass(frozen=True)
class HostSettings:
    """A profile's `[host]` table; each host module subclasses it with its own keys."""

    transport: str = "local"


@dataclass(frozen=True)
class Completed:
    """What a process started by `Host.run` left: exit status, output, and how it ended."""

    returncode: int
    stdout: str
    stderr: str
    timed_out: bool = False
    peak_rss_mb: float | None = None  # the child's ru_maxrss where the host can read it


class Host(Protocol):
    Settings: ClassVar[type[HostSettings]]
    settings: HostSettings
    python: str  # the command that starts Python there
    arch: str | None  # the machine a process there must report (qemu: "aarch64"), None: any
    place: str  # where, for messages: "on 127.0.0.1", "under qemu", "" for this machine

    def unavailable(self) -> str | None: ...
    def needs_prepare(self, runtimes: Sequence[str] = ()) -> bool: ...
    def prepare(self, log: Callable[[str], None] = print, force: bool = False, runtimes: Sequence[str] = ()) -> None: ...
    def python_for(self, runtime: str) -> str: ...
    def stage(self, files: Sequence[Path]) -> list[str]: ...
    def stage_bundle(self, files: Sequence[Path]) -> list[str]: ...
    def run(self, argv: list[str], env: dict[str, str], timeout_s: float, cpus: str | None = None) -> Completed: ...
    def probe(self, wanted: dict[str, tuple[str, str]]) -> dict: ...
    def install_hint(self, requirements: list[str], runtime_hint: str = "") -> str: ...
    def explain(self, done: Completed) -> str | None: ...
    def close(self) -> None: ...


def open_host(settings: HostSettings, where: str = "the profile") -> Host:
    """The Host for a profile's `[host]` settings; `where` names the profile in messages."""
    return HOSTS.get(settings.transport)(settings, where=where)


def thread_env(threads: int) -> dict[str, str]:
    """The environment that pins the math libraries' thread pools (read at their import)."""
    return dict.fromkeys(THREAD_VARIABLES, str(threads))


class Digests:
    """sha256 of local files, remembered by (path, size, mtime): a re-run hashes nothing twice."""

    def __init__(self):
        self._known: dict[tuple[str, int, int], str] = {}

    def __call__(self, path: Path) -> str:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        if key not in self._known:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            self._known[key] = h.hexdigest()
        return self._known[key]

    def bundle(self, files: Sequence[Path]) -> str:
        """One digest for files staged together: their names and contents, in order."""
        return hashlib.sha256(json.dumps([[f.name, self(f)] for f in files]).encode()).hexdigest()


def blob_name(path: Path, digest: str) -> str:
    """`<sha256><suffix>`: the suffix is kept (runtimes and people read it), never trusted as shell text."""
    suffix = "".join(c for c in path.suffix if c.isalnum() or c == ".")[:16]
    return f"{digest}{suffix}"


def bundle_name(digest: str) -> str:
    return f"runner-{digest[:32]}"


class Copies:
    """Content-addressed, atomic local copies of files (write, then rename) in a private temp
    folder made on first use and removed by `close()`: for hosts whose processes cannot read a
    file where it is (a path the qemu rootfs shadows, a runner bundle spread over folders)."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.folder: Path | None = None
        self.digests = Digests()

    def __call__(self, files: Sequence[Path], bundle: bool = False) -> list[Path]:
        """Plain files become `<sha256><suffix>`; a bundle becomes `runner-<digest>/<name>` for
        each file, the directory renamed into place only once every file is in it."""
        if self.folder is None:
            self.folder = Path(tempfile.mkdtemp(prefix=self.prefix))
        if bundle:
            final = self.folder / bundle_name(self.digests.bundle(files))
            if not final.is_dir():
                part = self.folder / f".{final.name}.part-{os.getpid()}"
                part.mkdir(parents=True, exist_ok=True)
                for f in files:
                    shutil.copyfile(f, part / f.name)
                try:
                    part.rename(final)
                except OSError:  # another process put the same bundle there first
                    shutil.rmtree(part, ignore_errors=True)
            return [final / f.name for f in files]
        out = []
        for f in files:
            final = self.folder / blob_name(f, self.digests(f))
            if not final.is_file():
                part = self.folder / f".{final.name}.part-{os.getpid()}"
                shutil.copyfile(f, part)
                part.replace(final)
            out.append(final)
        return out

    def close(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None


class HostDefaults:
    """What a host without the matter at hand does: nothing to prepare, never unavailable before
    it is tried, no failures of its own to explain. Hosts inherit it and override what applies."""

    arch: str | None = None
    place = ""

    def unavailable(self) -> str | None:
        return None

    def needs_prepare(self, runtimes: Sequence[str] = ()) -> bool:
        return False

    def prepare(self, log: Callable[[str], None] = print, force: bool = False, runtimes: Sequence[str] = ()) -> None:
        return None

    def python_for(self, runtime: str) -> str:
        return self.python  # type: ignore[attr-defined]  - every host sets its python

    def explain(self, done: Completed) -> str | None:
        return None

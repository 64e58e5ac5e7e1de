"""The aarch64 root filesystem that the qemu target runs the runner in, built once and cached.

It holds Debian bookworm's Python 3.11 (bookworm is the Debian release whose Python is 3.11)
plus the aarch64 wheels of numpy and of every runtime in `edgebench.runtimes.RUNTIMES` (each
Runtime's `device_requirement`: onnxruntime, ai-edge-litert, openvino==2026.4.1), and nothing
the runner does not need. It is built without binfmt_misc, chroot, mounts, package scripts or
privileges, so it works in CI containers and on laptops alike:

1. a separate arm64-only apt state in a temp folder lists the closure of three packages and
   downloads it; each .deb is unpacked with `dpkg -x` (`edgebench.hosts.qemu_debian`);
2. host pip downloads the aarch64 wheels (by platform tag) and installs them, without deps,
   into `usr/local/lib/python3.11/dist-packages`, which Debian's Python searches itself;
3. the stdlib is precompiled with the host's Python 3.11 (same bytecode magic), so each
   emulated start does not compile it again;
4. fake ARM `/proc/cpuinfo` and `/sys/devices/system/cpu` files (MIDR_EL1 included) go into the
   tree, and a view per emulated core (`edgebench.hosts.qemu_cpus`): onnxruntime crashes on
   import when it reads the host's x86 cpuinfo, OpenVINO segfaults without a midr_el1 file;
5. a probe under qemu imports numpy and every runtime and must report aarch64.

Only a tree that passed step 5 gets its stamp file and is renamed into place, so a broken or
half-built tree never counts as prepared.

    >>> rootfs = prepare()          # ~30-60 s the first time, instant afterwards
    >>> rootfs_path() == rootfs
    True

Also runnable: `python -m edgebench.hosts.qemu_rootfs [--force]`.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from edgebench.errors import TargetError
from edgebench.hosts.qemu_cpus import CPUS, DEFAULT_CPU, make_views, qemu_root
from edgebench.hosts.qemu_debian import (  # noqa: F401  (re-exported: callers use them from here)
    DEBIAN_PACKAGES,
    DEFAULT_MIRROR,
    DEFAULT_SECURITY_MIRROR,
    SUITE,
    check_tools,
    debian_mirrors,
    install_packages,
    run,
)
from edgebench.paths import cache_dir

# Bump when what goes into the tree changes, so old caches are rebuilt. 2: runtimes from the
# registry (openvino), MIDR_EL1 files and per-core views.
LAYOUT_VERSION = 2
BASE_WHEELS = ("numpy",)  # what the runner itself imports; the runtimes come from the registry
PYTHON = "usr/bin/python3.11"
SITE_PACKAGES = "usr/local/lib/python3.11/dist-packages"
STAMP = "edgebench-rootfs.json"
# bookworm's glibc is 2.36: every manylinux tag up to it is installable. Without the 2_28 tag
# pip silently falls back to onnxruntime 1.16, and without 2_35 to openvino 2024.0 (measured).
PLATFORM_TAGS = (*(f"manylinux_2_{minor}_aarch64" for minor in range(36, 16, -1)), "manylinux2014_aarch64")
# The probe imports what each runtime's adapter imports and reports its distribution's version
# under the runtime's name (the qemu target's check() reads them so).
PROBE = """
import importlib, json, platform, sys
from importlib.metadata import version
import numpy
facts = {"arch": platform.machine(), "python": platform.python_version(), "numpy": numpy.__version__}
for name, module, dist in json.loads(sys.argv[1]):
    importlib.import_module(module)
    facts[name] = version(dist)
print(json.dumps(facts))
"""

Log = Callable[[str], None]


# ---- where it lives and how to run things in it ----------------------------------------------


def cache_root() -> Path:
    return cache_dir("qemu-aarch64-rootfs")


def default_rootfs() -> Path:
    return cache_root() / "rootfs"


def read_stamp(rootfs: Path) -> dict | None:
    """What a verified build installed, or None when `rootfs` is not a verified, current build."""
    try:
        stamp = json.loads((Path(rootfs) / STAMP).read_text())
    except (OSError, ValueError):
        return None
    if stamp.get("layout_version") != LAYOUT_VERSION or not (Path(rootfs) / PYTHON).exists():
        return None
    return stamp


def rootfs_path() -> Path | None:
    """The prepared rootfs in the cache, or None when it has not been (fully) built."""
    path = default_rootfs()
    return path if read_stamp(path) else None


def qemu_binary() -> str | None:
    return shutil.which("qemu-aarch64-static") or shutil.which("qemu-aarch64")


def guest_command(rootfs: Path, python_args: list[str], qemu: str | None = None, cpu: str | None = DEFAULT_CPU,
                  python: str = PYTHON) -> list[str]:
    """argv that runs the rootfs's Python 3.11 (or `python`, a path in the tree) under qemu user-mode emulation.

    qemu hands the host's environment to the guest: PYTHONPATH/PYTHONHOME would point the
    aarch64 Python at x86 packages, and LD_PRELOAD/LD_LIBRARY_PATH would feed x86 libraries to
    the guest's loader. `-s` keeps the host user's ~/.local site-packages (x86) out too.
    """
    qemu = qemu or qemu_binary() or "qemu-aarch64-static"
    unset = ("PYTHONPATH", "PYTHONHOME", "PYTHONDONTWRITEBYTECODE", "PYTHONSTARTUP",
             "PYTHONUSERBASE", "LD_PRELOAD", "LD_LIBRARY_PATH")
    env = ["env"] + [a for name in unset for a in ("-u", name)]
    rootfs = Path(rootfs)
    # qemu's default CPU ("max") advertises every extension it emulates; XNNPACK then picks
    # int8 kernels that qemu 7.2 gets wrong (measured: a static-int8 .tflite scored 7% instead
    # of 89%). A named core (the Raspberry Pi 4's Cortex-A72 by default) gives the kernels a
    # real device would run, and the right answers.
    # The core's own cpuinfo and MIDR files: its view of the tree (see qemu_cpus).
    cpu_args = ["-cpu", cpu] if cpu else []
    return [*env, qemu, *cpu_args, "-L", str(qemu_root(rootfs, cpu)), str(rootfs / python), "-s",
            *python_args]


def runtime_modules() -> list[tuple[str, str, str]]:
    """(runtime name, module the device imports, pip distribution) of every runtime built in
    (not those installed on first use: `edgebench.hosts.qemu_addons`)."""
    from edgebench.runtimes import RUNTIMES

    return [(name, rt.module, rt.distribution) for name, rt in RUNTIMES.items() if rt.on_demand is None]


def probe(rootfs: Path, timeout_s: float = 180.0, cpu: str | None = DEFAULT_CPU) -> dict:
    """Import numpy and every runtime under emulation; return their versions (keyed by runtime
    name) and the guest's arch."""
    if not qemu_binary():
        raise TargetError("qemu-aarch64-static not found: apt-get install qemu-user-static")
    argv = guest_command(rootfs, ["-c", PROBE, json.dumps(runtime_modules())], cpu=cpu)
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise TargetError(f"probe under qemu timed out after {timeout_s:g} s") from None
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit {proc.returncode}"
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:]) or "no output"
        raise TargetError(f"probe under qemu failed ({how}): {tail}")
    return json.loads(lines[-1])


# ---- building ---------------------------------------------------------------------------------


def prepare(log: Log = print, force: bool = False, dest: Path | None = None) -> Path:
    """Build (once) and verify the aarch64 rootfs; return its path.

    `dest` is where the tree goes (default: `edgebench.paths.cache_dir("qemu-aarch64-rootfs")
    / "rootfs"`). An existing verified tree is reused unless `force`. Raises TargetError with
    what to do when a tool is missing or a stage fails.
    """
    dest = Path(dest).expanduser().resolve() if dest else default_rootfs()
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _lock(dest.parent / ".lock"):
        if not force and read_stamp(dest):
            log(f"qemu-aarch64 rootfs: ready at {dest} (use --force to rebuild)")
            return dest
        if dest.is_dir() and any(dest.iterdir()) and not (dest / STAMP).exists():
            # Not ours (no stamp ever written there): a rebuild would delete someone's folder.
            raise TargetError(f"{dest} exists and is not an edgebench rootfs: remove it or "
                              "choose another path")
        _check_host_tools()
        for stale in dest.parent.glob(f".{dest.name}.build-*"):
            shutil.rmtree(stale, ignore_errors=True)  # left by an interrupted build
        started = time.monotonic()
        # Built next to dest, so the final rename is atomic (same filesystem).
        work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.build-", dir=dest.parent))
        try:
            stamp = _build(work, log)
            stamp["build_seconds"] = round(time.monotonic() - started, 1)
            stamp["size_bytes"] = _tree_size(work / "rootfs")
            (work / "rootfs" / STAMP).write_text(json.dumps(stamp, indent=2) + "\n")
            if dest.exists() or dest.is_symlink():
                old = work / "old"
                dest.rename(old)
            (work / "rootfs").rename(dest)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        log(f"qemu-aarch64 rootfs: ready at {dest} ({stamp['size_bytes'] / 1e6:.0f} MB, "
            f"built in {stamp['build_seconds']:.0f} s)")
        return dest


def _build(work: Path, log: Log) -> dict:
    rootfs = work / "rootfs"
    rootfs.mkdir()
    mirror, security = debian_mirrors()
    t = time.monotonic()

    def step(n: int, text: str) -> None:
        log(f"qemu-aarch64 rootfs [{n}/5] {text} (+{time.monotonic() - t:.0f} s)")

    step(1, f"apt: closure of {' '.join(DEBIAN_PACKAGES)} for {SUITE}, download, unpack with dpkg -x")
    debs = install_packages(work, rootfs, log, mirror, security)

    requirements = wheel_requirements()
    step(2, f"pip: aarch64 wheels of {', '.join(requirements)} from PyPI")
    wheels = _install_wheels(work / "wheels", rootfs / SITE_PACKAGES, requirements, log)

    step(3, "compileall: precompile the stdlib with the host's Python 3.11")
    _compile_stdlib(rootfs, log)

    step(4, f"fake ARM /proc/cpuinfo and /sys/devices/system/cpu (MIDR_EL1), views for {', '.join(CPUS)}")
    make_views(rootfs)

    step(5, f"verify: import numpy and the runtimes under qemu-aarch64 on {', '.join(CPUS)}")
    facts = {cpu: probe(rootfs, cpu=cpu) for cpu in CPUS}
    for cpu, seen in facts.items():
        if seen.get("arch") != "aarch64":
            raise TargetError(f"verification failed: the guest ({cpu}) reports arch {seen.get('arch')!r}")
        log(f"  guest ({cpu}): {json.dumps(seen)}")
    return {
        "layout_version": LAYOUT_VERSION,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "suite": SUITE,
        "mirror": mirror,
        "security_mirror": security,
        "debs": debs,
        "wheels": wheels,
        "verified": facts[DEFAULT_CPU],
        "cpus": sorted(CPUS),
        "qemu": qemu_version(),
    }


def _check_host_tools() -> None:
    check_tools()
    if not qemu_binary():
        raise TargetError("qemu-aarch64-static not found: apt-get install qemu-user-static")


def wheel_requirements() -> dict[str, str]:
    """pip requirement -> its fallback, for numpy and each runtime's `device_requirement`.

    An unpinned one asks for the host's version, so native and emulated runs use the same
    runtime, and falls back to the newest when that version has no aarch64 wheel. A declared
    pin (openvino's) is the device's own and has no fallback.
    """
    from edgebench.runtimes import RUNTIMES

    wanted = {}
    built_in = [rt.device_requirement for _, rt in RUNTIMES.items() if rt.on_demand is None]
    for req in (*BASE_WHEELS, *built_in):
        try:
            pinned = req if re.search(r"[=<>!~]", req) else f"{req}=={version(req)}"
        except PackageNotFoundError:
            pinned = req
        wanted[pinned] = req
    return wanted


def _install_wheels(wheel_dir: Path, site: Path, requirements: dict[str, str], log: Log, python: str = "3.11",
                    tags: tuple[str, ...] = PLATFORM_TAGS) -> dict[str, str]:
    # Another Python's wheels (the trixie tree's 3.13) may be stable-ABI ones (cp312-abi3).
    abis = ["--abi", "cp" + python.replace(".", ""), *(["--abi", "abi3"] if python != "3.11" else [])]
    platform_args = ["--only-binary=:all:", "--python-version", python, "--implementation", "cp",
                     *abis, *(a for tag in tags for a in ("--platform", tag))]
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]

    def download(wanted) -> None:
        run([*pip, "download", "-q", "--no-deps", *platform_args, "-d", str(wheel_dir), *wanted],
            "pip download")

    try:
        download(requirements)
    except TargetError as exc:
        if list(requirements) == list(requirements.values()):
            raise
        # An aarch64 wheel of the host's exact version may not exist: take the newest instead.
        log(f"  no aarch64 wheels for the host's versions ({exc}); taking the newest")
        shutil.rmtree(wheel_dir, ignore_errors=True)
        download(requirements.values())
    files = sorted(wheel_dir.glob("*.whl"))
    # pip compiles with the host's Python: bytecode of another version would be dead weight.
    # pip also checks Requires-Python against itself at install: another Python's wheels need
    # --ignore-requires-python (the download above checked them against `python`).
    other = [] if f"{sys.version_info[0]}.{sys.version_info[1]}" == python else ["--no-compile", "--ignore-requires-python"]
    run([*pip, "install", "-q", "--no-deps", "--no-index", "--no-warn-script-location",
         *other, *platform_args, "--target", str(site), *map(str, files)],
        "pip install --target")
    installed = {f.name.split("-")[0].replace("_", "-"): f.name.split("-")[1] for f in files}
    log("  " + ", ".join(f"{n} {v}" for n, v in installed.items()))
    return installed


def _compile_stdlib(rootfs: Path, log: Log) -> None:
    # Bytecode is only reusable when the magic number matches: the host Python must be 3.11.
    python = sys.executable if sys.version_info[:2] == (3, 11) else shutil.which("python3.11")
    if not python:
        log("  skipped: no Python 3.11 on the host (each emulated start compiles what it imports)")
        return
    proc = subprocess.run([python, "-m", "compileall", "-q", "-j", "0", "-x", r"lib2to3/tests",
                           str(rootfs / "usr/lib/python3.11")], capture_output=True, text=True)
    if proc.returncode != 0:  # a file that does not compile only loses its speed-up
        log(f"  compileall reported errors (ignored): {proc.stdout.strip()[-200:]}")


def qemu_version() -> str | None:
    qemu = qemu_binary()
    if not qemu:
        return None
    try:
        out = subprocess.run([qemu, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"version (\S+)", out)
    return match.group(1) if match else None


def _tree_size(path: Path) -> int:
    total = 0
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


@contextmanager
def _lock(path: Path) -> Iterator[None]:
    """One build at a time per cache folder (parallel test workers, two shells)."""
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgebench.hosts.qemu_rootfs",
                                     description="Build the aarch64 rootfs the qemu target uses.")
    parser.add_argument("--force", action="store_true", help="rebuild even if one is ready")
    parser.add_argument("--dest", type=Path, help="where to put it (default: the edgebench cache)")
    args = parser.parse_args(argv)
    try:
        path = prepare(force=args.force, dest=args.dest)
    except TargetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

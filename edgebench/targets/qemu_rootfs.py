"""The aarch64 root filesystem that the qemu target runs the runner in, built once and cached.

It holds Debian bookworm's Python 3.11 (bookworm is the Debian release whose Python is 3.11)
plus the aarch64 wheels of numpy, onnxruntime and ai-edge-litert from PyPI, and nothing the
runner does not need. It is built without binfmt_misc, chroot, mounts, package scripts or
privileges, so it works in CI containers and on laptops alike:

1. a separate arm64-only apt state in a temp folder lists the closure of three packages and
   downloads it; each .deb is unpacked with `dpkg -x`;
2. host pip downloads the aarch64 wheels (by platform tag) and installs them, without deps,
   into `usr/local/lib/python3.11/dist-packages`, which Debian's Python searches itself;
3. the stdlib is precompiled with the host's Python 3.11 (same bytecode magic), so each
   emulated start does not compile it again;
4. a fake ARM `/proc/cpuinfo` and `/sys/devices/system/cpu/{possible,present}` go into the
   tree (qemu's `-L` looks every absolute path up there first): onnxruntime crashes on import
   when it reads the host's x86 cpuinfo;
5. a probe under qemu imports numpy, onnxruntime and ai_edge_litert and must report aarch64.

Only a tree that passed step 5 gets its stamp file and is renamed into place, so a broken or
half-built tree never counts as prepared.

    >>> rootfs = prepare()          # ~15-60 s the first time, instant afterwards
    >>> rootfs_path() == rootfs
    True

Also runnable: `python -m edgebench.targets.qemu_rootfs [--force]`.
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
from edgebench.paths import cache_dir

LAYOUT_VERSION = 1  # bump when what goes into the tree changes, so old caches are rebuilt
SUITE = "bookworm"  # the Debian release whose python3 is 3.11, whatever the host runs
DEBIAN_PACKAGES = ("python3.11-minimal", "libpython3.11-stdlib", "libstdc++6")
WHEELS = ("numpy", "onnxruntime", "ai-edge-litert")
PYTHON = "usr/bin/python3.11"
SITE_PACKAGES = "usr/local/lib/python3.11/dist-packages"
STAMP = "edgebench-rootfs.json"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SECURITY_MIRROR = "http://deb.debian.org/debian-security"
DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
# bookworm's glibc is 2.36: every manylinux tag up to it is installable. Without the 2_28 tag
# pip silently falls back to onnxruntime 1.16 (measured).
PLATFORM_TAGS = (*(f"manylinux_2_{minor}_aarch64" for minor in range(36, 16, -1)), "manylinux2014_aarch64")
# A Raspberry Pi 4 has four Cortex-A72 cores; the Hardware line keeps the runner's machine.cpu
# honest about where the numbers come from.
FAKE_CPUS = 4
FAKE_CPUINFO_CORE = """processor\t: {n}
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x0
CPU part\t: 0xd08
CPU revision\t: 3
"""
FAKE_CPUINFO_TAIL = "Hardware\t: QEMU user-mode emulation (Cortex-A72 cpuinfo, edgebench rootfs)\n"
PROBE = """
import json, platform
from importlib.metadata import version
import numpy, onnxruntime
from ai_edge_litert import interpreter
print(json.dumps({"arch": platform.machine(), "python": platform.python_version(),
    "numpy": numpy.__version__, "onnxruntime": onnxruntime.__version__,
    "tflite": version("ai-edge-litert")}))
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


DEFAULT_CPU = "cortex-a72"


def guest_command(rootfs: Path, python_args: list[str], qemu: str | None = None, cpu: str | None = DEFAULT_CPU) -> list[str]:
    """argv that runs the rootfs's Python 3.11 under qemu user-mode emulation.

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
    cpu_args = ["-cpu", cpu] if cpu else []
    return [*env, qemu, *cpu_args, "-L", str(rootfs), str(rootfs / PYTHON), "-s", *python_args]


def probe(rootfs: Path, timeout_s: float = 180.0) -> dict:
    """Import the runtimes under emulation; return their versions and the guest's arch."""
    if not qemu_binary():
        raise TargetError("qemu-aarch64-static not found: apt-get install qemu-user-static")
    try:
        proc = subprocess.run(guest_command(rootfs, ["-c", PROBE]), capture_output=True,
                              text=True, timeout=timeout_s)
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
        log(f"qemu-aarch64 rootfs [{n}/6] {text} (+{time.monotonic() - t:.0f} s)")

    step(1, f"apt: arm64 package lists for {SUITE} from {mirror}")
    apt_env = _apt_config(work / "apt", mirror, security)
    _run(["apt-get", "update", "-q"], "apt-get update (arm64 lists)", env=apt_env)

    step(2, f"apt: closure of {' '.join(DEBIAN_PACKAGES)}, download and unpack with dpkg -x")
    debs = _closure(apt_env)
    deb_dir = work / "debs"
    deb_dir.mkdir()
    _run(["apt-get", "download", "-q", *(f"{name}={ver}" for name, ver in debs.items())],
         "apt-get download", env=apt_env, cwd=deb_dir)
    files = sorted(deb_dir.glob("*.deb"))
    if len(files) != len(debs):
        raise TargetError(f"apt-get download gave {len(files)} of {len(debs)} packages")
    for deb in files:
        _run(["dpkg-deb", "-x", str(deb), str(rootfs)], f"dpkg-deb -x {deb.name}")
    _relativize_symlinks(rootfs)
    log(f"  {len(files)} packages, {sum(f.stat().st_size for f in files) / 1e6:.0f} MB of .deb")

    step(3, f"pip: aarch64 wheels of {', '.join(WHEELS)} from PyPI")
    wheels = _install_wheels(work / "wheels", rootfs / SITE_PACKAGES, log)

    step(4, "compileall: precompile the stdlib with the host's Python 3.11")
    _compile_stdlib(rootfs, log)

    step(5, "fake ARM /proc/cpuinfo and /sys/devices/system/cpu/{possible,present}")
    _fake_cpu_files(rootfs)

    step(6, "verify: import numpy, onnxruntime, ai_edge_litert under qemu-aarch64")
    facts = probe(rootfs)
    if facts.get("arch") != "aarch64":
        raise TargetError(f"verification failed: the guest reports arch {facts.get('arch')!r}")
    log(f"  guest: {json.dumps(facts)}")
    return {
        "layout_version": LAYOUT_VERSION,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "suite": SUITE,
        "mirror": mirror,
        "security_mirror": security,
        "debs": debs,
        "wheels": wheels,
        "verified": facts,
        "qemu": qemu_version(),
    }


def _check_host_tools() -> None:
    needs = {
        "apt-get": "a Debian or Ubuntu host (apt) is needed to fetch the arm64 packages",
        "dpkg-deb": "apt-get install dpkg",
        "qemu-aarch64-static": "apt-get install qemu-user-static",
    }
    for tool, hint in needs.items():
        if tool == "qemu-aarch64-static" and qemu_binary():
            continue
        if not shutil.which(tool):
            raise TargetError(f"{tool} not found: {hint}")
    if not DEBIAN_KEYRING.exists():  # e.g. an Ubuntu host: apt could not check Debian's lists
        raise TargetError(f"{DEBIAN_KEYRING} not found: apt-get install debian-archive-keyring")


def debian_mirrors(sources_dir: Path = Path("/etc/apt")) -> tuple[str, str]:
    """The Debian archive and security mirrors this host's apt sources use (else deb.debian.org).

    Only the URIs are taken: the suite is always bookworm, the one with Python 3.11.
    """
    mirror = security = None
    for uri, suites in _apt_source_entries(sources_dir):
        is_security = "debian-security" in uri or any(s.endswith("-security") for s in suites)
        if is_security and security is None:
            security = uri
        elif not is_security and mirror is None and re.search(r"/debian(/|$)", uri):
            mirror = uri
    return (mirror or DEFAULT_MIRROR).rstrip("/"), (security or DEFAULT_SECURITY_MIRROR).rstrip("/")


def _apt_source_entries(sources_dir: Path) -> Iterator[tuple[str, list[str]]]:
    """(uri, suites) of each enabled `deb` source, from sources.list and sources.list.d."""
    one_line = [sources_dir / "sources.list", *sorted((sources_dir / "sources.list.d").glob("*.list"))]
    for path in one_line:
        try:
            lines = path.read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            words = re.sub(r"\[[^]]*\]", "", line.split("#")[0]).split()
            if len(words) >= 3 and words[0] == "deb":
                yield words[1], [words[2]]
    for path in sorted((sources_dir / "sources.list.d").glob("*.sources")):
        try:
            text = path.read_text()
        except OSError:
            continue
        for block in re.split(r"\n\s*\n", text):
            fields: dict[str, str] = {}
            for line in block.splitlines():
                if ":" in line and not line.startswith(("#", " ", "\t")):
                    key, value = line.split(":", 1)
                    fields[key.strip().lower()] = value.strip()
            if "deb" in fields.get("types", "").split() and fields.get("enabled", "yes") != "no":
                for uri in fields.get("uris", "").split():
                    yield uri, fields.get("suites", "").split()


def _apt_config(apt_dir: Path, mirror: str, security: str) -> dict:
    """An environment whose APT_CONFIG points apt at its own arm64-only state under apt_dir.

    The host's apt state, sources and config parts are left alone (no root needed for them).
    """
    for sub in ("state/lists/partial", "cache/archives/partial", "etc/apt.conf.d",
                "etc/preferences.d", "etc/sources.list.d", "log"):
        (apt_dir / sub).mkdir(parents=True, exist_ok=True)
    (apt_dir / "state" / "status").write_text("")  # nothing installed: the full closure
    signed = f" [signed-by={DEBIAN_KEYRING}]"
    (apt_dir / "etc" / "sources.list").write_text(
        f"deb{signed} {mirror} {SUITE} main\n"
        f"deb{signed} {mirror} {SUITE}-updates main\n"
        f"deb{signed} {security} {SUITE}-security main\n"
    )
    conf = apt_dir / "apt.conf"
    conf.write_text(
        'APT::Architecture "arm64";\n'
        'APT::Architectures { "arm64"; };\n'
        'APT::Install-Recommends "false";\n'
        'APT::Sandbox::User "root";\n'  # the _apt user cannot write into our temp folder
        f'Dir::State "{apt_dir}/state";\n'
        f'Dir::State::status "{apt_dir}/state/status";\n'
        f'Dir::Cache "{apt_dir}/cache";\n'
        f'Dir::Log "{apt_dir}/log";\n'
        f'Dir::Etc::SourceList "{apt_dir}/etc/sources.list";\n'
        f'Dir::Etc::SourceParts "{apt_dir}/etc/sources.list.d";\n'
        f'Dir::Etc::Parts "{apt_dir}/etc/apt.conf.d";\n'
        f'Dir::Etc::Preferences "{apt_dir}/etc/preferences";\n'
        f'Dir::Etc::PreferencesParts "{apt_dir}/etc/preferences.d";\n'
        'Debug::NoLocking "true";\n'
    )
    return {**os.environ, "APT_CONFIG": str(conf), "DEBIAN_FRONTEND": "noninteractive"}


def _closure(apt_env: dict) -> dict[str, str]:
    """name -> version of every package `apt-get install` would unpack into an empty system."""
    out = _run(["apt-get", "install", "-s", "-q", *DEBIAN_PACKAGES], "apt-get install -s", env=apt_env)
    debs = dict(re.findall(r"^Inst (\S+) \((\S+)", out, flags=re.M))
    missing = [p for p in DEBIAN_PACKAGES if p not in debs]
    if missing:
        raise TargetError(f"apt found no arm64 {' '.join(missing)} in {SUITE}: {out[-300:]}")
    return debs


def _relativize_symlinks(rootfs: Path) -> None:
    """Point absolute symlinks inside the tree at their target inside the tree.

    The host kernel, not qemu, follows symlinks: `/lib/x -> /lib/y` would leave the rootfs.
    """
    for dirpath, dirnames, filenames in os.walk(rootfs):
        for name in dirnames + filenames:
            link = Path(dirpath) / name
            if link.is_symlink() and os.readlink(link).startswith("/"):
                target = rootfs / os.readlink(link).lstrip("/")
                link.unlink()
                link.symlink_to(os.path.relpath(target, link.parent))


def _host_pins() -> dict[str, str]:
    """The host's versions of the wheels, so native and emulated runs use the same runtime."""
    pins = {}
    for name in WHEELS:
        try:
            pins[name] = version(name)
        except PackageNotFoundError:
            pass
    return pins


def _install_wheels(wheel_dir: Path, site: Path, log: Log) -> dict[str, str]:
    platform_args = ["--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp",
                     "--abi", "cp311", *(a for tag in PLATFORM_TAGS for a in ("--platform", tag))]
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    pins = _host_pins()
    wanted = [f"{name}=={pins[name]}" if name in pins else name for name in WHEELS]
    try:
        _run([*pip, "download", "-q", "--no-deps", *platform_args, "-d", str(wheel_dir), *wanted],
             "pip download")
    except TargetError as exc:
        if not pins:
            raise
        # An aarch64 wheel of the host's exact version may not exist: take the newest instead.
        log(f"  no aarch64 wheels for the host's versions ({exc}); taking the newest")
        shutil.rmtree(wheel_dir, ignore_errors=True)
        _run([*pip, "download", "-q", "--no-deps", *platform_args, "-d", str(wheel_dir), *WHEELS],
             "pip download")
    files = sorted(wheel_dir.glob("*.whl"))
    # pip compiles with the host's Python: bytecode of another version would be dead weight.
    compile_flag = [] if sys.version_info[:2] == (3, 11) else ["--no-compile"]
    _run([*pip, "install", "-q", "--no-deps", "--no-index", "--no-warn-script-location",
          *compile_flag, *platform_args, "--target", str(site), *map(str, files)],
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


def _fake_cpu_files(rootfs: Path) -> None:
    proc = rootfs / "proc"
    proc.mkdir(exist_ok=True)
    cores = "\n".join(FAKE_CPUINFO_CORE.format(n=n) for n in range(FAKE_CPUS))
    (proc / "cpuinfo").write_text(cores + "\n" + FAKE_CPUINFO_TAIL)
    cpu = rootfs / "sys/devices/system/cpu"
    cpu.mkdir(parents=True, exist_ok=True)
    for name in ("possible", "present"):
        (cpu / name).write_text(f"0-{FAKE_CPUS - 1}\n")


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


def _run(argv: list[str], what: str, env: dict | None = None, cwd: Path | None = None) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd)
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-4:])
        raise TargetError(f"{what} failed (exit {proc.returncode}): {tail}")
    return proc.stdout


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
    parser = argparse.ArgumentParser(prog="python -m edgebench.targets.qemu_rootfs",
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

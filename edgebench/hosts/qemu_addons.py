"""Runtimes the qemu rootfs installs on first use: those a profile lists that its base build lacks.

The base rootfs (`edgebench.hosts.qemu_rootfs`) holds Python 3.11, numpy and the runtimes built
into it. A runtime declared `on_demand` (`edgebench.runtimes.OnDemand`: ExecuTorch, ncnn) is
installed only when a profile that lists it is prepared — `edgebench targets --prepare NAME`,
or the first `edgebench run` on that profile — with progress and its size: its aarch64 wheels,
without dependencies, go into

- the base tree's site-packages (python "3.11": ncnn, a 5 MB wheel), or
- a Debian trixie tree at `ROOTFS/.trixie` (python "3.13"): executorch-numpy-runtime, the only
  ExecuTorch runtime that runs here (PyPI's aarch64 torch 2.13 is a CUDA build whose pins do not
  resolve), needs Python >= 3.12, which bookworm lacks. The tree is the same kind of build as the
  base one (apt closure unpacked with dpkg -x, numpy by platform tag, per-core views); base-files
  is not in the closure, so the usr-merge links (bin, lib, sbin -> usr/...) are made here.

An install counts once its runtime imports under qemu on every emulated core; only then is it
recorded in `ROOTFS/edgebench-addons.json` (a half-done one runs again next time).

    >>> missing(rootfs, ["onnxruntime", "ncnn"])   # ['ncnn'] until installed
    >>> install(rootfs, ["ncnn", "executorch"], print)
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from edgebench.errors import TargetError
from edgebench.hosts import qemu_rootfs
from edgebench.hosts.qemu_cpus import CPUS, DEFAULT_CPU, make_views
from edgebench.hosts.qemu_debian import debian_mirrors, install_packages

ADDONS_FILE = "edgebench-addons.json"
TRIXIE = ".trixie"
TRIXIE_SUITE = "trixie"  # the Debian release whose python3 is 3.13
TRIXIE_PACKAGES = ("python3.13-minimal", "libpython3.13-stdlib", "libstdc++6")
TRIXIE_TAGS = (*(f"manylinux_2_{minor}_aarch64" for minor in range(41, 16, -1)), "manylinux2014_aarch64")  # glibc 2.41
PYTHONS = {"3.11": qemu_rootfs.PYTHON, "3.13": "usr/bin/python3.13"}
SITES = {"3.11": qemu_rootfs.SITE_PACKAGES, "3.13": "usr/local/lib/python3.13/dist-packages"}
TAGS = {"3.11": qemu_rootfs.PLATFORM_TAGS, "3.13": TRIXIE_TAGS}
PROBE_TIMEOUT_S = 300.0

Log = Callable[[str], None]


def on_demand(names: Sequence[str]) -> dict:
    """name -> OnDemand of the runtimes among `names` that are not built into the rootfs."""
    from edgebench.runtimes import RUNTIMES

    return {n: RUNTIMES.get(n).on_demand for n in names if n in RUNTIMES and RUNTIMES.get(n).on_demand}


def python_of(runtime: str) -> str:
    """The guest Python ("3.11" or "3.13") whose tree holds `runtime`."""
    spec = on_demand([runtime]).get(runtime)
    return spec.python if spec else "3.11"


def tree(rootfs: Path, python: str) -> Path:
    return Path(rootfs) if python == "3.11" else Path(rootfs) / TRIXIE


def installed(rootfs: Path) -> dict:
    try:
        return json.loads((Path(rootfs) / ADDONS_FILE).read_text())
    except (OSError, ValueError):
        return {}


def missing(rootfs: Path, runtimes: Sequence[str]) -> list[str]:
    """The on-demand runtimes among `runtimes` not installed (and verified) in `rootfs` yet."""
    done = installed(rootfs)
    return [name for name in on_demand(runtimes) if name not in done]


def install(rootfs: Path, runtimes: Sequence[str], log: Log = print) -> list[str]:
    """Install and verify each on-demand runtime of `runtimes` that `rootfs` lacks; their names."""
    todo = missing(rootfs, runtimes)
    if not todo:
        return []
    with qemu_rootfs._lock(Path(rootfs).parent / ".lock"):  # noqa: SLF001 - the rootfs's own build lock
        for name in missing(rootfs, todo):  # again: another process may have done it meanwhile
            _install_one(Path(rootfs), name, on_demand([name])[name], log)
    return todo


def _pinned(requirement: str) -> str:
    """The host's version when it has the package (native and emulated runs then match), else as given."""
    if re.search(r"[=<>!~]", requirement):
        return requirement
    try:
        return f"{requirement}=={version(requirement)}"
    except PackageNotFoundError:
        return requirement


def _install_one(rootfs: Path, name: str, spec, log: Log) -> None:
    started = time.monotonic()
    python = spec.python
    where = tree(rootfs, python)
    log(f"qemu-aarch64 rootfs: installing {name} (first use by a profile that lists it): "
        f"{', '.join(spec.requirements)} for aarch64 Python {python}")
    tree_bytes = 0
    if python != "3.11" and not (where / PYTHONS[python]).exists():
        tree_bytes = _build_trixie(rootfs, log)
    site = where / SITES[python]
    counted = site if python == "3.11" else where  # what this install adds to the disk
    before = _size(counted) if python == "3.11" else 0
    with tempfile.TemporaryDirectory(prefix=".addon-", dir=rootfs.parent) as work:
        wheels = Path(work) / "wheels"
        got = qemu_rootfs._install_wheels(wheels, site, {_pinned(r): r for r in spec.requirements}, log,  # noqa: SLF001
                                          python=python, tags=TAGS[python])
        downloaded = tree_bytes + sum(f.stat().st_size for f in wheels.glob("*.whl"))
    module, dist = spec.module or _runtime(name).module, spec.distribution or _runtime(name).distribution
    for cpu in CPUS:
        seen = probe(rootfs, python, {name: (module, dist)}, cpu)
        if seen["versions"].get(name) is None:
            raise TargetError(f"{name} does not import under qemu ({cpu}) after installing it: "
                              f"{seen['errors'].get(name, 'no answer')}")
    record = {"python": python, "requirements": list(spec.requirements), "wheels": got,
              "version": seen["versions"][name], "download_bytes": downloaded,
              "installed_bytes": _size(counted) - before,
              "seconds": round(time.monotonic() - started, 1),
              "installed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    done = installed(rootfs)
    done[name] = record
    tmp = rootfs / f"{ADDONS_FILE}.tmp"
    tmp.write_text(json.dumps(done, indent=2) + "\n")
    tmp.replace(rootfs / ADDONS_FILE)
    log(f"qemu-aarch64 rootfs: {name} ready ({dist} {record['version']}; {downloaded / 1e6:.0f} MB downloaded, "
        f"{record['installed_bytes'] / 1e6:.0f} MB on disk{' with its Python 3.13 tree' if python != '3.11' else ''}, "
        f"{record['seconds']:.0f} s)")


def _build_trixie(rootfs: Path, log: Log) -> int:
    """ROOTFS/.trixie: Debian trixie's Python 3.13 and numpy for aarch64, with per-core views;
    the bytes downloaded (.deb files and wheels)."""
    started = time.monotonic()
    log(f"  Python 3.13 tree: apt closure of {' '.join(TRIXIE_PACKAGES)} for {TRIXIE_SUITE}, unpacked with dpkg -x")
    work = Path(tempfile.mkdtemp(prefix=".trixie.build-", dir=rootfs.parent))
    try:
        new = work / "tree"
        new.mkdir()
        mirror, security = debian_mirrors()
        install_packages(work, new, log, mirror, security, suite=TRIXIE_SUITE, packages=TRIXIE_PACKAGES)
        for name in ("bin", "lib", "sbin"):  # usr-merge: base-files (which makes them) is not in the closure
            if not (new / name).exists():
                (new / name).symlink_to(f"usr/{name}")
        qemu_rootfs._install_wheels(work / "wheels", new / SITES["3.13"], {_pinned("numpy"): "numpy"}, log,  # noqa: SLF001
                                    python="3.13", tags=TRIXIE_TAGS)
        make_views(new)
        downloaded = sum(f.stat().st_size for f in (*work.glob("debs/*.deb"), *work.glob("wheels/*.whl")))
        dest = rootfs / TRIXIE
        shutil.rmtree(dest, ignore_errors=True)
        new.rename(dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log(f"  Python 3.13 tree ready ({_size(rootfs / TRIXIE) / 1e6:.0f} MB, {time.monotonic() - started:.0f} s)")
    return downloaded


def probe(rootfs: Path, python: str, wanted: dict[str, tuple[str, str]], cpu: str = DEFAULT_CPU) -> dict:
    """Import numpy and `wanted` (name -> (module, distribution)) with the guest Python `python`;
    {"arch", "versions", "errors"}. A tree that is not there answers every name as missing."""
    where = tree(rootfs, python)
    if not (where / PYTHONS[python]).exists():
        why = f"not installed under qemu yet (no Python {python} tree): prepare the target to install it"
        return {"arch": None, "versions": dict.fromkeys(wanted), "errors": dict.fromkeys(wanted, why)}
    script = ("import importlib, json, platform, sys\nfrom importlib.metadata import version\n"
              "out = {'arch': platform.machine(), 'versions': {}, 'errors': {}}\n"
              "for name, (module, dist) in json.loads(sys.argv[1]).items():\n"
              "    try:\n        importlib.import_module(module); out['versions'][name] = version(dist)\n"
              "    except Exception as exc:\n        out['versions'][name] = None; out['errors'][name] = f'{type(exc).__name__}: {exc}'\n"
              "print(json.dumps(out))\n")
    argv = qemu_rootfs.guest_command(where, ["-c", script, json.dumps(wanted)], cpu=cpu, python=PYTHONS[python])
    import subprocess

    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise TargetError(f"probe under qemu (Python {python}) timed out after {PROBE_TIMEOUT_S:g} s") from None
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:]) or "no output"
        raise TargetError(f"probe under qemu (Python {python}, {cpu}) failed: {tail}")
    return json.loads(lines[-1])


def _runtime(name: str):
    from edgebench.runtimes import runtime

    return runtime(name)


def _size(path: Path) -> int:
    return qemu_rootfs._tree_size(path) if Path(path).exists() else 0  # noqa: SLF001

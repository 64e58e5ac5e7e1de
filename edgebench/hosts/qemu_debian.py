"""Debian's half of the qemu rootfs: bookworm's arm64 packages, fetched and unpacked without root.

A separate arm64-only apt state in a temp folder (its own APT_CONFIG; the host's apt is left
alone) lists the closure of a few packages in an empty system, downloads it, and each .deb is
unpacked with `dpkg-deb -x` (no package scripts, no chroot). Absolute symlinks are then made
relative, since the host kernel, not qemu, follows them.

    >>> debs = install_packages(work, work / "rootfs", print)   # name -> version
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

from edgebench.errors import TargetError

SUITE = "bookworm"  # the Debian release whose python3 is 3.11, whatever the host runs
DEBIAN_PACKAGES = ("python3.11-minimal", "libpython3.11-stdlib", "libstdc++6")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SECURITY_MIRROR = "http://deb.debian.org/debian-security"
DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")

Log = Callable[[str], None]


def install_packages(work: Path, rootfs: Path, log: Log, mirror: str, security: str, suite: str = SUITE,
                     packages: tuple[str, ...] = DEBIAN_PACKAGES) -> dict[str, str]:
    """Unpack the arm64 closure of `packages` (of `suite`) into `rootfs`; return name -> version.

    `work` holds apt's state and the downloaded .debs (the caller removes it).
    """
    log(f"  apt: arm64 package lists for {suite} from {mirror}")
    apt_env = apt_config(work / "apt", mirror, security, suite)
    run(["apt-get", "update", "-q"], "apt-get update (arm64 lists)", env=apt_env)
    debs = closure(apt_env, packages, suite)
    deb_dir = work / "debs"
    deb_dir.mkdir()
    run(["apt-get", "download", "-q", *(f"{name}={ver}" for name, ver in debs.items())],
        "apt-get download", env=apt_env, cwd=deb_dir)
    files = sorted(deb_dir.glob("*.deb"))
    if len(files) != len(debs):
        raise TargetError(f"apt-get download gave {len(files)} of {len(debs)} packages")
    for deb in files:
        run(["dpkg-deb", "-x", str(deb), str(rootfs)], f"dpkg-deb -x {deb.name}")
    relativize_symlinks(rootfs)
    log(f"  {len(files)} packages, {sum(f.stat().st_size for f in files) / 1e6:.0f} MB of .deb")
    return debs


def check_tools() -> None:
    """apt-get, dpkg-deb and Debian's keyring are on this host (else a TargetError saying how)."""
    needs = {
        "apt-get": "a Debian or Ubuntu host (apt) is needed to fetch the arm64 packages",
        "dpkg-deb": "apt-get install dpkg",
    }
    for tool, hint in needs.items():
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


def apt_config(apt_dir: Path, mirror: str, security: str, suite: str = SUITE) -> dict:
    """An environment whose APT_CONFIG points apt at its own arm64-only state under apt_dir.

    The host's apt state, sources and config parts are left alone (no root needed for them).
    """
    for sub in ("state/lists/partial", "cache/archives/partial", "etc/apt.conf.d",
                "etc/preferences.d", "etc/sources.list.d", "log"):
        (apt_dir / sub).mkdir(parents=True, exist_ok=True)
    (apt_dir / "state" / "status").write_text("")  # nothing installed: the full closure
    signed = f" [signed-by={DEBIAN_KEYRING}]"
    (apt_dir / "etc" / "sources.list").write_text(
        f"deb{signed} {mirror} {suite} main\n"
        f"deb{signed} {mirror} {suite}-updates main\n"
        f"deb{signed} {security} {suite}-security main\n"
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


def closure(apt_env: dict, packages: tuple[str, ...] = DEBIAN_PACKAGES, suite: str = SUITE) -> dict[str, str]:
    """name -> version of every package `apt-get install` would unpack into an empty system."""
    out = run(["apt-get", "install", "-s", "-q", *packages], "apt-get install -s", env=apt_env)
    debs = dict(re.findall(r"^Inst (\S+) \((\S+)", out, flags=re.M))
    missing = [p for p in packages if p not in debs]
    if missing:
        raise TargetError(f"apt found no arm64 {' '.join(missing)} in {suite}: {out[-300:]}")
    return debs


def relativize_symlinks(rootfs: Path) -> None:
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


def run(argv: list[str], what: str, env: dict | None = None, cwd: Path | None = None) -> str:
    """Run a build tool; its stdout, or a TargetError with the end of what it said."""
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd)
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-4:])
        raise TargetError(f"{what} failed (exit {proc.returncode}): {tail}")
    return proc.stdout

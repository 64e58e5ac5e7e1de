"""What went wrong reaching an SSH device, in one message: what is wrong and what to do.

ssh exits 255 for every failure of its own; its stderr says which. These turn that, and a
missing remote Python, into messages that name the device as ssh really resolved it (after
~/.ssh/config) and the profile key to change.
"""

from __future__ import annotations

import subprocess

VENV_HINT = "Raspberry Pi OS refuses system-wide pip: use a venv, see targets/rpi/README.md"

REASONS = [
    ("connection refused", "connection refused (is sshd running there, on this port?)"),
    ("no route to host", "no route to host"),
    ("network is unreachable", "network is unreachable"),
    ("could not resolve hostname", "the host name does not resolve (for *.local names "
     "the device must announce itself over mDNS/avahi; else use its IP address)"),
    ("connection closed", "the connection was closed by the remote side"),
    ("connection reset", "the connection was reset by the remote side"),
]  # fmt: skip


def resolved(base_argv: list[str], settings) -> dict[str, str]:
    """Host, port, user and key as ssh will really use them (`ssh -G`, after ~/.ssh/config)."""
    out = {"hostname": settings.host, "port": str(settings.port or 22), "user": settings.user or "",
           "identityfile": ""}  # fmt: skip
    try:
        text = subprocess.run([*base_argv, "-G", "--", settings.host],
                              capture_output=True, text=True, timeout=10).stdout  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return out
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key in out and value and not (key == "identityfile" and out[key]):
            out[key] = value
    return out


def explain(stderr: str, where: dict[str, str], settings, profile_ref: str) -> str:
    """ssh's exit 255 and its stderr as one clear message."""
    dest = f"{where['hostname']}:{where['port']}"
    login = f"{where['user']}@{settings.host}" if where["user"] else settings.host
    text = stderr.lower()
    last = next((line for line in reversed(stderr.strip().splitlines()) if line.strip()), "no output").strip()
    if "host key verification failed" in text or "host identification has changed" in text:
        return (f"host key verification failed for {dest}: the device's host key is unknown or "
                f"has changed; check it by connecting once by hand (`ssh {login}`), or set "
                f"ssh_options = [\"StrictHostKeyChecking=accept-new\"] in [host] of {profile_ref} "
                "to trust a new device on first use")  # fmt: skip
    if "permission denied" in text or "too many authentication failures" in text:
        key = settings.identity_file or where["identityfile"] or "your default keys/agent"
        return (f"authentication refused by {dest} for user {where['user'] or '?'} with key "
                f"{key}: copy the key to the device with `ssh-copy-id -i {key}.pub {login}`, "
                f"or set user/identity_file in [host] of {profile_ref} ({last})")  # fmt: skip
    reasons = [*REASONS, ("timed out", f"no answer within {settings.connect_timeout_s:g} s")]
    for needle, reason in reasons:
        if needle in text:
            return (f"host {dest} is unreachable: {reason}; check the device is on and on the "
                    f"network and `ssh {login}` works by hand, or fix host/port in [host] of "
                    f"{profile_ref}")  # fmt: skip
    return f"ssh to {dest} failed: {last}"


def python_missing(settings, profile_ref: str) -> str:
    python = settings.python
    # A bare name is looked up in the PATH of a non-interactive shell, often shorter than a login's.
    where = "is not an executable file" if "/" in python else "is not in the PATH of a non-interactive ssh shell"
    return (f"remote Python missing: `{python}` not found on {settings.host} ({where}): "
            "install Python there (`sudo apt install python3 python3-venv`, then a venv as in "
            f"targets/rpi/README.md), or set python in [host] of {profile_ref} to the full path "
            "of the venv's python")  # fmt: skip


def no_taskset(settings, profile_ref: str) -> str:
    return (f"taskset is not installed on {settings.host}: install util-linux there, or remove "
            f"taskset from [measure] of {profile_ref}")


def no_remote_dir(settings, profile_ref: str, why: str) -> str:
    return (f"cannot create {settings.remote_dir!r} on {settings.host}: {why}: set remote_dir in "
            f"[host] of {profile_ref} to a writable folder")

"""The probe a host's Python runs to say what it is and which runtimes import there.

It imports each module (an installed but broken runtime counts as missing) and prints one JSON
line: Python version, arch, system, CPU count, model and flags line, and per wanted name its
version or the import error. Standard library only: it runs on a bare device Python.
"""

from __future__ import annotations

import json

PROBE = """
import json, os, platform, sys
from importlib import import_module
from importlib.metadata import version
out = {"python": platform.python_version(), "executable": sys.executable,
       "arch": platform.machine(), "system": platform.system(), "cpu_count": os.cpu_count(),
       "versions": {}, "errors": {}}
for name, (module, dist) in %s.items():
    try:
        import_module(module)
        out["versions"][name] = version(dist)
    except Exception as exc:
        out["versions"][name] = None
        out["errors"][name] = f"{type(exc).__name__}: {exc}"
for key, path in (("model", "/sys/firmware/devicetree/base/model"), ("cpuinfo", "/proc/cpuinfo")):
    try:
        text = open(path, errors="replace").read()
    except OSError:
        continue
    if key == "model":
        out["model"] = text.strip("\\x00\\n ")
    else:
        for line in text.splitlines():
            key = line.split(":")[0].strip().lower()
            if key in ("model name", "hardware", "cpu model") and "cpu" not in out:
                out["cpu"] = line.split(":", 1)[1].strip()
            elif key in ("flags", "features") and "cpu_flags" not in out:
                out["cpu_flags"] = line
print(json.dumps(out))
"""
MACHINE_KEYS = ("arch", "system", "python", "cpu_count", "cpu", "cpu_features", "model")


def probe_script(wanted: dict[str, tuple[str, str]]) -> str:
    """Python source that probes for `wanted` (name -> (module to import, distribution))."""
    return PROBE % json.dumps({name: list(pair) for name, pair in wanted.items()})


def read_probe(stdout: str) -> dict | None:
    """The probe's facts from its output ({"machine", "versions", "errors"}), None if it printed none."""
    from edgebench.device.runner_facts import cpu_features_from

    raw = next((json.loads(line) for line in stdout.splitlines() if line.startswith("{")), None)
    if raw is None:
        return None
    if "cpu_flags" in raw:  # the probe sends the line; one parser, the runner's, picks the features
        raw["cpu_features"] = cpu_features_from(raw["cpu_flags"], raw.get("arch", ""))
    return {"machine": {k: raw[k] for k in MACHINE_KEYS if k in raw},
            "versions": raw.get("versions", {}), "errors": raw.get("errors", {})}

"""What the runner reads about the device it runs on: memory by phase, run conditions (clock,
temperature, throttling, load), RAPL energy and machine facts.

Staged beside `runner.py` on a device; imports only the standard library.
"""

from __future__ import annotations

import os
import platform
import time


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key = line.split(":")[0].strip().lower()
                if key in ("model name", "hardware", "cpu model"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ---- memory by phase ----------------------------------------------------------------------

def _status_mb(field: str) -> float | None:
    """A `VmRSS`/`VmHWM` line of /proc/self/status, in MB; None where there is no procfs."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return None


def rss_mb() -> float | None:
    """This process's resident memory now (VmRSS), in MB."""
    return _status_mb("VmRSS")


def peak_rss_mb() -> float | None:
    """This process's peak resident memory (VmHWM) since start or since `reset_peak_rss`, in MB."""
    peak = _status_mb("VmHWM")
    if peak is not None:
        return peak
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    except Exception:  # noqa: BLE001
        return None


def reset_peak_rss() -> bool:
    """Start a new VmHWM window at the current RSS, so a phase's peak is its own.

    Writing 5 to /proc/self/clear_refs resets the high-water mark (Linux >= 4.0; allowed for
    one's own process, no privileges). Measured here: VmHWM 416 MB after a freed 400 MB array,
    26 MB after the reset. False where it is not possible; then peaks include earlier phases.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# ---- run conditions -----------------------------------------------------------------------

def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _cpu_mhz() -> tuple[dict, str | None]:
    """Current (mean over CPUs) and maximum clock in MHz, from cpufreq, else /proc/cpuinfo."""
    import glob

    current = [_read(p) for p in glob.glob("/sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_cur_freq")]
    maximum = [_read(p) for p in glob.glob("/sys/devices/system/cpu/cpu[0-9]*/cpufreq/cpuinfo_max_freq")]
    cur = [int(v) / 1000 for v in current if v and v.isdigit()]
    top = [int(v) / 1000 for v in maximum if v and v.isdigit()]
    if cur:
        return {"cur": round(sum(cur) / len(cur), 1), "max": max(top) if top else None}, None
    text = _read("/proc/cpuinfo") or ""
    mhz = [float(line.split(":", 1)[1]) for line in text.splitlines()
           if line.lower().startswith("cpu mhz") and ":" in line]
    if mhz:  # x86 VMs: no cpufreq driver, but the kernel's estimate of the clock
        return {"cur": round(sum(mhz) / len(mhz), 1), "max": None}, "no cpufreq: /proc/cpuinfo clock, no maximum"
    return {"cur": None, "max": None}, "no cpufreq in /sys and no clock in /proc/cpuinfo"


THERMAL_GLOB = "/sys/class/thermal/thermal_zone[0-9]*/temp"


def _temp_c() -> tuple[float | None, str | None]:
    """The hottest thermal zone, in °C."""
    import glob

    temps = []
    for path in glob.glob(THERMAL_GLOB):
        value = _read(path)
        if value and value.lstrip("-").isdigit():
            temps.append(int(value) / 1000)
    if temps:
        return max(temps), None
    return None, "no readable /sys/class/thermal zone (VMs and containers often have none)"


def _throttled() -> tuple[str | None, str | None]:
    """A Raspberry Pi's firmware throttling flags (`vcgencmd get_throttled`), e.g. '0x0'."""
    import shutil
    import subprocess

    if not shutil.which("vcgencmd"):
        return None, "no vcgencmd (not a Raspberry Pi OS)"
    try:
        out = subprocess.run(["vcgencmd", "get_throttled"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"vcgencmd failed: {exc}"
    value = out.strip().partition("=")[2]
    return (value, None) if value else (None, f"vcgencmd said {out.strip()!r}")


def read_conditions() -> tuple[dict, dict]:
    """(readings, why-not for each reading that is None): clock, temperature, throttling, load."""
    mhz, mhz_why = _cpu_mhz()
    temp, temp_why = _temp_c()
    throttled, throttled_why = _throttled()
    try:
        load = round(os.getloadavg()[0], 2)
        load_why = None
    except OSError:
        load, load_why = None, "os.getloadavg() unavailable"
    readings = {"cpu_mhz": mhz, "temp_c": temp, "throttled": throttled, "load_avg_1m": load}
    why = {k: v for k, v in (("cpu_mhz", mhz_why), ("temp_c", temp_why), ("throttled", throttled_why),
                             ("load_avg_1m", load_why)) if v}
    return readings, why


def wait_until_cool(max_temp_c: float, timeout_s: float, poll_s: float = 1.0) -> dict:
    """Wait (bounded) until the hottest zone is at or below `max_temp_c`; say what happened."""
    started = time.monotonic()
    temp, why = _temp_c()
    if temp is None:
        return {"max_temp_c": max_temp_c, "waited_s": 0.0, "cooled": None, "why": f"cannot wait: {why}"}
    while temp is not None and temp > max_temp_c and time.monotonic() - started < timeout_s:
        time.sleep(poll_s)
        temp, _ = _temp_c()
    return {"max_temp_c": max_temp_c, "waited_s": round(time.monotonic() - started, 2),
            "cooled": temp is not None and temp <= max_temp_c, "temp_c": temp}


# ---- energy -------------------------------------------------------------------------------

RAPL_GLOB = "/sys/class/powercap/intel-rapl:*/energy_uj"


def _rapl_packages() -> list[str]:
    import glob

    # Only packages (intel-rapl:0, intel-rapl:1): their sub-domains (intel-rapl:0:0 core,
    # uncore, dram) are already inside the package count and would be counted twice.
    return sorted(p for p in glob.glob(RAPL_GLOB) if os.path.basename(os.path.dirname(p)).count(":") == 1)


def read_rapl_uj() -> int | None:
    """Sum of the package energy counters (Intel/AMD RAPL) in µJ; None where absent or unreadable
    (these VMs have none; since CVE-2020-8694 they are often root-only)."""
    paths = _rapl_packages()
    if not paths:
        return None
    total = 0
    for path in paths:
        value = _read(path)
        if value is None or not value.isdigit():
            return None
        total += int(value)
    return total


def rapl_delta_uj(before: int | None, after: int | None) -> int | None:
    """Energy between two readings in µJ, undoing one wrap of the counters; None if unknown."""
    if before is None or after is None:
        return None
    delta = after - before
    if delta < 0:
        ranges = [_read(os.path.join(os.path.dirname(p), "max_energy_range_uj")) for p in _rapl_packages()]
        if not ranges or not all(r and r.isdigit() for r in ranges):
            return None
        delta += sum(int(r) for r in ranges if r)
    return delta


# ---- per-node profiles ----------------------------------------------------------------------

def node_profile(runs: list[list[tuple]], warmup: int, source: str, wall_ms: list[float]) -> dict:
    """The `profile` document from the measured runs (warm-up already left out): `runs` holds
    one list per run (or one list of means) of (name, op, kernel, precision, ms); each node's ms
    is its mean per run, nodes in the order they first ran; `wall_ms` each measured run's wall time."""
    nodes: dict[str, dict] = {}
    for run in runs:
        for name, op, kernel, precision, ms in run:
            node = nodes.setdefault(name, {"name": name, "op": op, "kernel": kernel, "precision": precision, "ms": 0.0})
            node["ms"] += ms
    for node in nodes.values():
        node["ms"] = round(node["ms"] / max(len(runs), 1), 6)
    return {"nodes": list(nodes.values()), "runs": len(wall_ms), "dropped": warmup, "measured": True,
            "source": source, "profiled_run_ms": sum(wall_ms) / max(len(wall_ms), 1)}


# ---- CPU features that change what a runtime computes ----------------------------------------

# The /proc/cpuinfo flags that decide kernels and precisions (x86 "flags", aarch64 "Features"):
# OpenVINO runs an fp32 model in bf16 on AVX-512 BF16 / AMX and in f16 on ARMv8.2 (asimdhp);
# int8 paths differ with VNNI / the ARM dot product (asimddp) and i8mm.
RELEVANT_FEATURES = {
    "x86_64": ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16",
               "amx_bf16", "amx_int8", "amx_fp16"),
    "aarch64": ("asimd", "asimddp", "asimdhp", "fphp", "i8mm", "bf16", "sve", "sve2"),
}
ARCH_ALIASES = {"amd64": "x86_64", "AMD64": "x86_64", "arm64": "aarch64"}


def cpu_features_from(cpuinfo: str, arch: str) -> list[str] | None:
    """The relevant features named in a /proc/cpuinfo text, in a fixed order; None when the text
    has no flags/Features line (not Linux, or an unknown architecture).

    >>> cpu_features_from("flags : fpu avx2 avx512f avx512_bf16 sse", "x86_64")
    ['avx2', 'avx512f', 'avx512_bf16']
    """
    arch = ARCH_ALIASES.get(arch, arch)
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            have = set(value.split())
            return [f for f in RELEVANT_FEATURES.get(arch, ()) if f in have]
    return None


def cpu_features() -> list[str] | None:
    """This machine's relevant CPU features (see RELEVANT_FEATURES), None where unreadable."""
    return cpu_features_from(_read("/proc/cpuinfo") or "", platform.machine())


def machine_facts() -> dict:
    return {
        "arch": platform.machine(),
        "system": platform.system(),
        "cpu": _cpu_name(),
        "cpu_features": cpu_features(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }

"""Energy per inference, in mJ, and which model made the number.

No power meter is attached to these machines, so energy is an **estimate** unless a RAPL
counter was read. Three models, in order of preference for the primary `value`:

1. RAPL (`/sys/class/powercap/intel-rapl:*/energy_uj`), measured around the timed loop, where
   the machine has it (Intel/AMD x86 Linux with powercap; not these VMs, not a Raspberry Pi).
2. CPU time per inference × the target profile's active power (`Power.active_w`). CPU time
   counts every thread, so `active_w` is read as the power of one busy core's share.
3. Op counts × energy per operation and per DRAM access (Horowitz, "Computing's energy
   problem (and what we can do about it)", ISSCC 2014, 45 nm). It ignores caches, control and
   leakage, so it is a lower bound on compute energy and an upper bound on weight traffic.

    >>> from edgebench.targets import Power
    >>> record = {"macs": 1_000_000, "weight_bytes": 40_000, "precision": "fp32",
    ...           "cpu_time_s": 0.5, "latency_ms": {"n": 1000}}
    >>> e = estimate(record, Power(idle_w=2.7, active_w=6.4, source="datasheet"))
    >>> round(e["value"], 3), e["model"].split(" (")[0]
    (3.2, 'cpu_time x active_w')
"""

from __future__ import annotations

import glob
import os
from collections.abc import Mapping
from typing import Any

# Horowitz, ISSCC 2014, 45 nm, 0.9 V: energy per operation in pJ.
HOROWITZ_PJ: dict[str, dict[str, float]] = {
    "int8": {"add": 0.03, "mult": 0.2},
    "fp16": {"add": 0.4, "mult": 1.1},
    "fp32": {"add": 0.9, "mult": 3.7},
}
# Horowitz, ISSCC 2014: a 32-bit DRAM read costs ~640 pJ (vs ~5 pJ for an 8 KB SRAM read).
DRAM_PJ_PER_32BIT_WORD = 640.0
BYTES_PER_PARAM = {"int8": 1, "fp16": 2, "fp32": 4}
PJ_PER_MJ = 1e9
RAPL_GLOB = "/sys/class/powercap/intel-rapl:*/energy_uj"
NO_METER_NOTE = "energy: estimate, no power meter"


def op_count_mj(
    macs: float, weight_bytes: float, precision: str = "fp32", activation_bytes: float = 0.0
) -> float:
    """Energy of one inference from op counts (Horowitz, ISSCC 2014, 45 nm), in mJ.

    Each MAC costs one multiply and one add at `precision` (int8 0.2 + 0.03 pJ, fp16
    1.1 + 0.4 pJ, fp32 3.7 + 0.9 pJ); every weight and activation byte is read once from DRAM
    at ~640 pJ per 32-bit word — no reuse from caches is assumed.

    >>> round(op_count_mj(1e6, 4e4, "int8"), 5)
    0.00663
    """
    if precision not in HOROWITZ_PJ:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(HOROWITZ_PJ)}")
    per_mac = HOROWITZ_PJ[precision]["mult"] + HOROWITZ_PJ[precision]["add"]
    compute_pj = macs * per_mac
    memory_pj = (weight_bytes + activation_bytes) / 4 * DRAM_PJ_PER_32BIT_WORD
    return (compute_pj + memory_pj) / PJ_PER_MJ


def cpu_time_mj(cpu_time_s: float, n_inferences: int, active_w: float) -> float:
    """CPU time per inference × active power, in mJ (W·s = J; ×1000 for mJ)."""
    return cpu_time_s / n_inferences * active_w * 1000.0


def rapl_available() -> bool:
    """True when this machine exposes a readable RAPL package energy counter."""
    return read_rapl_uj() is not None


def _package_counters() -> list[str]:
    # Only top-level packages (intel-rapl:0, intel-rapl:1): their sub-domains (intel-rapl:0:0,
    # core/uncore/dram) are already inside the package count and would be counted twice.
    return sorted(p for p in glob.glob(RAPL_GLOB) if os.path.basename(os.path.dirname(p)).count(":") == 1)


def read_rapl_uj() -> int | None:
    """Sum of the package energy counters in µJ, or None where RAPL is absent or unreadable."""
    paths = _package_counters()
    if not paths:
        return None
    total = 0
    try:
        for path in paths:
            with open(path) as f:
                total += int(f.read().strip())
    except (OSError, ValueError):  # present but root-only (common since CVE-2020-8694)
        return None
    return total


def rapl_max_uj() -> int | None:
    """The counters' wrap-around range summed, to correct one wrap between two readings."""
    total = 0
    for path in _package_counters():
        try:
            with open(os.path.join(os.path.dirname(path), "max_energy_range_uj")) as f:
                total += int(f.read().strip())
        except (OSError, ValueError):
            return None
    return total or None


def rapl_mj_between(before_uj: int | None, after_uj: int | None, n_inferences: int) -> float | None:
    """Measured energy per inference between two `read_rapl_uj()` readings, in mJ, or None."""
    if before_uj is None or after_uj is None or n_inferences <= 0:
        return None
    delta = after_uj - before_uj
    if delta < 0:  # the counter wrapped once during the loop
        wrap = rapl_max_uj()
        if wrap is None:
            return None
        delta += wrap
    return delta / 1000.0 / n_inferences


def _weight_bytes(record: Mapping[str, Any], precision: str) -> tuple[float | None, str]:
    if record.get("weight_bytes"):
        return float(record["weight_bytes"]), "weight_bytes"
    params = record.get("nonzero_params") or record.get("params")
    if params:
        return float(params) * BYTES_PER_PARAM[precision], f"params x {BYTES_PER_PARAM[precision]} B"
    if record.get("size_bytes"):
        return float(record["size_bytes"]), "artifact size"
    return None, ""


def estimate(record: Mapping[str, Any], power: Any) -> dict:
    """Energy per inference for one ok record; `power` is a `targets.Power` (or None).

    Returns the `energy_mj` field of the record: `value` (mJ), `model` (which estimate it is,
    with its numbers and source), and every model's figure (`rapl_mj`, `cpu_time_mj`,
    `op_count_mj`; None where it cannot be made). The primary value is RAPL if measured, else
    CPU time × active power when the profile gives active_w > 0, else the op-count model.
    Emulated (QEMU) records use the op-count model: their CPU time is the emulator's.

    RAPL is taken from the record's `rapl_uj` (energy of the timed loop, µJ, measured by the
    runner around that loop), divided by `latency_ms.n`.
    """
    precision = record.get("precision") or "fp32"
    if precision not in HOROWITZ_PJ:
        precision = "fp32"
    latency = record.get("latency_ms") or {}
    n = int(latency.get("n") or len(record.get("latency_samples_ms") or []) or 0)
    emulated = bool(record.get("emulated"))
    active_w = float(getattr(power, "active_w", 0.0) or 0.0)
    idle_w = float(getattr(power, "idle_w", 0.0) or 0.0)
    source = getattr(power, "source", "unknown")

    rapl = None
    if record.get("rapl_uj") is not None and n > 0 and not emulated:
        rapl = float(record["rapl_uj"]) / 1000.0 / n

    cpu_mj = above_idle = None
    cpu_time = record.get("cpu_time_s")
    if cpu_time is not None and n > 0 and active_w > 0 and not emulated:
        cpu_mj = cpu_time_mj(float(cpu_time), n, active_w)
        # What the inference adds over an idle device: a fairer cost on an always-on board.
        above_idle = cpu_time_mj(float(cpu_time), n, max(active_w - idle_w, 0.0))

    op_mj, op_note = None, ""
    weights, weight_source = _weight_bytes(record, precision)
    activations = float(record.get("activation_bytes") or 0.0)
    if record.get("macs") is not None and weights is not None:
        op_mj = op_count_mj(float(record["macs"]), weights, precision, activations)
        what = "weights + activations" if activations else "weights only"
        op_note = (f"op-count {precision} (Horowitz ISSCC 2014, 45 nm; MACs + DRAM reads of "
                   f"{what}, {weight_source})")

    if rapl is not None:
        value, model = rapl, "rapl (measured, package energy of the timed loop)"
    elif cpu_mj is not None:
        value = cpu_mj
        model = f"cpu_time x active_w ({active_w:g} W, idle {idle_w:g} W, source: {source})"
    elif op_mj is not None:
        value = op_mj
        why = "emulated target: CPU time is the emulator's, so " if emulated else ""
        model = f"{why}{op_note}"
    else:
        value, model = None, "none (no CPU time, power profile or op counts)"
    return {
        "value": value,
        "model": model,
        "rapl_mj": rapl,
        "cpu_time_mj": cpu_mj,
        "cpu_time_above_idle_mj": above_idle,
        "op_count_mj": op_mj,
        "precision": precision,
        "active_w": active_w or None,
        "idle_w": idle_w or None,
        "power_source": source,
        "measured": rapl is not None,
    }

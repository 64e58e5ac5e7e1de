"""Energy per inference, in mJ, and which model made the number.

No power meter is attached to these machines, so energy is an **estimate** unless a RAPL
counter was read. Three models, in order of preference for the primary `value`:

1. RAPL, the package energy counters, read by the runner around its timed loop alone (one
   reader, `edgebench.device.runner_facts.read_rapl_uj`: package domains only, one wrap undone), where the
   machine has them (Intel/AMD x86 Linux with powercap; not these VMs, not a Raspberry Pi).
2. Time × the target profile's power (`[power]`), by its `scope`:
   - "core": `active_w` is one busy core's power: E = CPU time per inference × active_w (CPU
     time counts every thread, so more threads cost more);
   - "board": `idle_w`/`active_w` are the whole device idle and with every core busy (a USB
     meter on a Pi): E = wall time per inference × (idle_w + (active_w − idle_w) × busy / cores),
     busy = CPU time / wall time (the cores the inference kept busy), cores from the device.
3. Op counts × energy per operation and per DRAM access (Horowitz, "Computing's energy
   problem (and what we can do about it)", ISSCC 2014, 45 nm), at the precision that really
   computed (`compute_precision`). It ignores caches, control and leakage, so it is a lower
   bound on compute energy and an upper bound on weight traffic.

    >>> from edgebench.targets import Power
    >>> record = {"macs": 1_000_000, "weight_bytes": 40_000, "precision": "fp32",
    ...           "cpu_time_s": 0.5, "latency_ms": {"n": 1000, "mean": 0.5}}
    >>> e = estimate(record, Power(idle_w=0, active_w=6.4, scope="core", source="datasheet"))
    >>> round(e["value"], 3), e["watts"], e["scope"]
    (3.2, 6.4, 'core')
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgebench.device import runner_facts as runner

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


def board_mj(wall_s: float, cpu_s: float, cores: int, idle_w: float, active_w: float) -> tuple[float, float]:
    """(energy, energy above idle) of one inference on a board, in mJ, from the linear power
    model idle + (active − idle) × busy cores / cores, busy = CPU time / wall time.

    >>> board_mj(0.001, 0.001, 4, 2.7, 6.4)   # 1 ms on one of four cores of a Pi 4
    (3.625, 0.925)
    """
    share = min(max(cpu_s / wall_s, 0.0), cores) / cores if wall_s > 0 else 0.0
    above = wall_s * (active_w - idle_w) * share * 1000.0
    return wall_s * idle_w * 1000.0 + above, above


def read_rapl_uj() -> int | None:
    """The runner's RAPL reader (package domains only), so host and device read it one way."""
    return runner.read_rapl_uj()


def rapl_available() -> bool:
    """True when this machine exposes a readable RAPL package energy counter."""
    return read_rapl_uj() is not None


def rapl_mj_between(before_uj: int | None, after_uj: int | None, n_inferences: int) -> float | None:
    """Measured energy per inference between two `read_rapl_uj()` readings, in mJ, or None."""
    delta = runner.rapl_delta_uj(before_uj, after_uj)
    if delta is None or n_inferences <= 0:
        return None
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


def op_precision(record: Mapping[str, Any]) -> str:
    """The precision the op-count model prices: what computed (`compute_precision`), else what
    was asked. An fp16 artifact that computes in fp32 is priced as fp32; a "mixed" graph (some
    convolutions or matmuls stayed float) as fp32, an upper bound."""
    for value in (record.get("compute_precision"), record.get("precision")):
        text = str(value or "")
        if text == "mixed":
            return "fp32"
        for precision in ("int8", "fp16", "fp32"):
            if text.startswith(precision):
                return precision
    return "fp32"


def estimate(record: Mapping[str, Any], power: Any) -> dict:
    """Energy per inference for one ok record; `power` is a `targets.Power` (or None).

    Returns the `energy_mj` field of the record: `value` (mJ) and `model` (which estimate it
    is, in words), `watts`, `scope` and `source` of the power figure used (None when it was not
    a power model), and every model's figure (`rapl_mj`, `power_model_mj`, `above_idle_mj`,
    `op_count_mj`; None where it cannot be made). The primary value is RAPL if measured, else
    time × power when the profile gives active_w > 0, else the op-count model. Emulated (QEMU)
    records use the op-count model: their times are the emulator's.

    RAPL comes from the record's `rapl_uj` (the timed loop alone, µJ), divided by `latency_ms.n`.
    """
    precision = op_precision(record)
    latency = record.get("latency_ms") or {}
    n = int(latency.get("n") or len(record.get("latency_samples_ms") or []) or 0)
    emulated = bool(record.get("emulated"))
    active_w = float(getattr(power, "active_w", 0.0) or 0.0)
    idle_w = float(getattr(power, "idle_w", 0.0) or 0.0)
    scope = getattr(power, "scope", "core")
    source = getattr(power, "source", "unknown")

    rapl = None
    if record.get("rapl_uj") is not None and n > 0 and not emulated:
        rapl = float(record["rapl_uj"]) / 1000.0 / n

    power_mj = above_idle = None
    power_model = ""
    cpu_time, wall_ms = record.get("cpu_time_s"), latency.get("mean")
    if cpu_time is not None and n > 0 and active_w > 0 and not emulated:
        cpu_s = float(cpu_time) / n
        if scope == "board" and wall_ms:
            cores = int((record.get("machine") or {}).get("cpu_count") or 1)
            power_mj, above_idle = board_mj(float(wall_ms) / 1000.0, cpu_s, cores, idle_w, active_w)
            power_model = (f"wall time x board power ({idle_w:g} W idle + {active_w - idle_w:g} W x "
                           f"busy share of {cores} cores; scope board; source: {source})")
        elif scope != "board":
            power_mj = cpu_time_mj(float(cpu_time), n, active_w)
            above_idle = cpu_time_mj(float(cpu_time), n, max(active_w - idle_w, 0.0))
            power_model = f"CPU time x {active_w:g} W per busy core (scope core; source: {source})"

    op_mj, op_note = None, ""
    weights, weight_source = _weight_bytes(record, precision)
    activations = float(record.get("activation_bytes") or 0.0)
    if record.get("macs") is not None and weights is not None:
        op_mj = op_count_mj(float(record["macs"]), weights, precision, activations)
        what = "weights + activations" if activations else "weights only"
        op_note = (f"op-count {precision} (Horowitz ISSCC 2014, 45 nm; MACs + DRAM reads of "
                   f"{what}, {weight_source})")

    watts: float | None = None
    used_scope: str | None = None
    used_source: str | None = None
    if rapl is not None:
        value, model = rapl, "rapl (measured, package energy of the timed loop)"
        used_scope, used_source = "package", "RAPL counters"
    elif power_mj is not None:
        value, model = power_mj, power_model
        watts, used_scope, used_source = active_w, scope, source
    elif op_mj is not None:
        value = op_mj
        why = "emulated target: its times are the emulator's, so " if emulated else ""
        model = f"{why}{op_note}"
        used_source = "Horowitz, ISSCC 2014 (45 nm)"
    else:
        value, model = None, "none (no CPU time, power profile or op counts)"
    return {
        "value": value,
        "model": model,
        "watts": watts,
        "idle_w": idle_w if watts is not None else None,
        "scope": used_scope,
        "source": used_source,
        "measured": rapl is not None,
        "rapl_mj": rapl,
        "power_model_mj": power_mj,
        "above_idle_mj": above_idle,
        "op_count_mj": op_mj,
        "precision": precision,
    }


def label(energy: Mapping[str, Any] | None) -> str:
    """A short line saying what an energy figure is, for charts and tables.

    >>> label({"value": 3.6, "measured": False, "watts": 6.4, "idle_w": 2.7, "scope": "board", "source": "USB meter"})
    'estimate: time x 2.7-6.4 W board (USB meter)'
    """
    if not energy or energy.get("value") is None:
        return "no energy figure"
    if energy.get("measured"):
        return "measured: RAPL package energy"
    if energy.get("watts") is not None:
        watts = (f"{energy['idle_w']:g}-{energy['watts']:g} W board" if energy.get("scope") == "board"
                 else f"{energy['watts']:g} W per busy core")
        return f"estimate: time x {watts} ({energy.get('source') or 'unknown source'})"
    return f"estimate: op counts x Horowitz 45 nm energies ({energy.get('precision')})"

"""Per-unit numerics: each exposed tensor of a variant against the same tensor of a reference.

Here, not in `edgebench.measure`, because two stages use it: `edgebench explain` (the variant
on its target against the fp32 baseline on the same target and runtime) and `quantize
keep_float = "auto:K"` at export (the int8 artifact against its own float model on the
calibration split).

    >>> rows = unit_errors(spec["units"], got, ref, local)   # got/ref: {module: array (n, ...)}
    >>> [r["module"] for r in worst(rows, 2)]
    ['features.2.0.conv', 'features.0.0']

Per unit: SQNR (dB), cosine and max abs error of its boundary tensor against the reference's
(`tasks.scoring`'s output fidelity), and **added_db**: the SQNR of the error the unit adds on its
own — its output against its float self run on the inputs it really received
(`edgebench.export.float_reference`; `local` holds those noise ratios). A unit that only
inherits error adds nothing (no added_db); the culprit is the unit with the lowest added_db.
Inherited error cannot be subtracted instead: it grows through the layers after a bad one
(measured on a planted bad conv: 8.6, 5.6 and 3.3 dB SQNR at it and two units later, each later
unit "adding" as much as the culprit by subtraction, ~41 dB each run on its own inputs).
"""

from __future__ import annotations

import math

import numpy as np

from edgebench.tasks.scoring import output_fidelity

# A unit whose output is this close to its float self adds nothing we can tell apart.
NOTHING_ADDED = 1e-12


def align(got: np.ndarray, ref: np.ndarray) -> np.ndarray | None:
    """`ref` laid out like `got`: as it is, channels-last (a `.tflite` keeps NHWC inside a graph
    whose interface is NCHW), or reshaped over singleton axes; None when the shapes cannot be
    the same tensor."""
    if got.shape == ref.shape:
        return ref
    if ref.ndim in (3, 4) and got.ndim == ref.ndim:
        moved = np.moveaxis(ref, 1, -1)
        if moved.shape == got.shape:
            return moved
    if got.size == ref.size and [d for d in got.shape if d != 1] == [d for d in ref.shape if d != 1]:
        return ref.reshape(got.shape)
    return None


def noise_ratio(got: np.ndarray, ref: np.ndarray) -> float | None:
    """‖got − ref‖² / ‖ref‖² (None for a reference with no signal)."""
    g, r = got.astype(np.float64).ravel(), ref.astype(np.float64).ravel()
    signal = float((r**2).sum())
    return float(((g - r) ** 2).sum()) / signal if signal > 0 else None


def unit_errors(units: list[dict], got: dict[str, np.ndarray], ref: dict[str, np.ndarray],
                local: dict[str, float | None] | None = None, fallback: dict[str, np.ndarray] | None = None,
                fallback_name: str = "the variant's float model") -> list[dict]:
    """One row per unit of `units` (a spec's, in run order): its tensor in `got` against `ref`'s
    tensor of the same module (or `fallback`'s where `ref` has none: a unit the variant added),
    and its added_db from `local` (noise ratios of what each unit adds alone). Rows: module, also
    (modules fused into it), compute, exposed, sqnr_db, cosine, max_abs, added_db,
    float_sqnr_db (against `fallback`, wherever it has the tensor), and a note where a number is
    missing or came from the fallback."""
    rows = []
    for unit in units:
        module = unit["module"]
        row = {"module": module, "also": unit.get("also", []), "compute": bool(unit.get("compute")), "exposed": True,
               "sqnr_db": None, "cosine": None, "max_abs": None, "added_db": None}
        rows.append(row)
        if module not in got:
            row.update(exposed=False, note="the runtime did not return this tensor")
            continue
        theirs, note = ref.get(module), None
        if theirs is None and fallback and module in fallback:
            theirs, note = fallback[module], f"against {fallback_name} (the reference has no such tensor)"
        aligned = None if theirs is None else align(got[module], theirs)
        if aligned is not None:
            row.update(output_fidelity([got[module]], [aligned], [module])[module])
        else:
            note = ("no such tensor in the reference" if theirs is None else
                    f"shape {list(got[module].shape)} differs from the reference's {list(theirs.shape)} "
                    "(a step changed this layer)")
        own = (fallback or {}).get(module)
        own = None if own is None else align(got[module], own)
        if own is not None:  # the second reference: the variant's float model in fp32
            row["float_sqnr_db"] = output_fidelity([got[module]], [own], [module])[module]["sqnr_db"]
        ratio = (local or {}).get(module)
        if ratio is not None:
            row["added_db"] = round(-10 * math.log10(ratio), 3) if ratio > NOTHING_ADDED else None
            row["adds_nothing"] = ratio <= NOTHING_ADDED
        elif local is not None:
            note = "; ".join(filter(None, [note, "added error unknown: its inputs are not all exposed"]))
        if note:
            row["note"] = note
    return rows


def worst(rows: list[dict], k: int, compute_only: bool = False) -> list[dict]:
    """The `k` rows with the lowest added_db (the culprits first); `compute_only`: only units
    that quantization touches (Conv, Linear, MatMul), those `keep_float` can keep in float."""
    scored = [r for r in rows if r.get("added_db") is not None and (r.get("compute") or not compute_only)]
    return sorted(scored, key=lambda r: r["added_db"])[:k]

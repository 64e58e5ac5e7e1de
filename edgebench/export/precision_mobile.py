"""What precision the mobile runtimes compute in: ExecuTorch (XNNPACK + portable kernels) and ncnn.

The vocabulary of the fields is `edgebench.export.precision`'s.

- `inspect_pte`: the host's reading of a `.pte`, from what its exporter saw (`model.pte.json`
  beside it: each compute op's precision and whether XNNPACK or a portable kernel runs it, and
  how much of the graph XNNPACK took). XNNPACK computes a delegated op in its graph's precision.
- `read_executorch`: the device's reading (`Runtime.executed_reader`): the XNNPACK kernels and
  portable ops that one ETDump-profiled run executed, plus the export's delegation facts as the
  record's `delegation`. A device whose runtime writes no ETDump (executorch-numpy-runtime)
  keeps the export's reading, and says so.
- `inspect_ncnn`: a `.param`/`.bin` pair: its compute layers and how its weights are stored.
  Whether ncnn computes in fp16 is the device's call (its options and ARMv8.2 fp16): the runner's
  adapter reports that, so this host reading is only the fallback.

    >>> inspect_pte(Path("variants/int8/model.pte"), "int8_static")["precision_note"]  # doctest: +SKIP
    'int8: all 6 conv/matmul ops compute on int8; XNNPACK took 100% of 31 ops (1 subgraph)'
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgebench.export.precision import summarize, took


def pte_facts(path: Path) -> dict:
    """What the exporter wrote beside the `.pte` (`<path>.json`)."""
    return json.loads(Path(f"{path}.json").read_text())


def delegation_note(delegation: dict) -> str:
    share, fallback = delegation.get("share"), delegation.get("fallback_ops") or {}
    total = (delegation.get("delegated_nodes") or 0) + (delegation.get("portable_nodes") or 0)
    text = (f"XNNPACK took {share:.0%} of {total} ops ({delegation.get('subgraphs')} subgraph"
            f"{'s' if delegation.get('subgraphs') != 1 else ''})" if share is not None else "no ops")
    if fallback:
        text += "; portable kernels run " + ", ".join(f"{op} x{n}" if n > 1 else op for op, n in sorted(fallback.items()))
    return text


def inspect_pte(path: Path, asked: str | None = None) -> dict[str, Any]:
    facts = pte_facts(path)
    compute = [(f"{op} ({where})", prec) for op, prec, where in facts.get("compute", [])]
    others = [(op, prec) for op, prec in facts.get("others", [])]
    fields = summarize(compute, others, facts.get("weights", []), asked,
                       source=f"executorch {facts.get('executorch_version')} edge graph at export (XNNPACK partition)",
                       fp16_fallback="fp16 program")
    fields["precision_note"] += "; " + delegation_note(facts.get("delegation") or {})
    return fields


def read_executorch(executed: dict, artifact: Path | None, asked: str | None) -> dict[str, Any]:
    """Precision fields and `delegation` from the adapter's `executed()` on the device."""
    try:
        facts = pte_facts(artifact) if artifact is not None else {}
    except (OSError, ValueError):
        facts = {}
    delegation = dict(facts.get("delegation") or {})
    written_by, ran_by = facts.get("executorch_version"), executed.get("runtime_version")
    version_note = ""
    if written_by and ran_by and not str(ran_by).startswith(str(written_by)):
        version_note = (f"; written by ExecuTorch {written_by}, run by {ran_by}: a .pte is only guaranteed on the "
                        "version that wrote it (its outputs are compared with the baseline's here)")
    if executed.get("unread"):  # no ETDump on this device: the export's reading stands
        fields = inspect_pte(artifact, asked) if facts else {"compute_precision": None, "weight_precision": None,
                                                             "precision_ops": {}, "precision_note": "", "precision_source": None}
        fields["precision_note"] = f"{fields['precision_note']}; {executed['unread']}{version_note}".lstrip("; ")
        return {**fields, "delegation": {**delegation, "ran": None}}
    compute = dict(executed.get("xnnpack_compute") or {})
    portable = executed.get("portable_ops") or {}
    ran = {"delegate_calls": executed.get("delegate_calls"), "xnnpack_kernels": executed.get("xnnpack_kernels"),
           "portable_ops": portable}
    portable_compute = {op: n for op, n in portable.items() if op.split(".")[0] in ("convolution", "linear", "addmm", "mm", "bmm")}
    if portable_compute:  # reference kernels compute in the program's float type
        compute["fp32"] = compute.get("fp32", 0) + sum(portable_compute.values())
    precision = None if not compute else next(iter(compute)) if len(compute) == 1 else "mixed"
    n = sum(compute.values())
    if precision == "mixed":
        note = "mixed: " + ", ".join(f"{k} of {n} conv/matmul kernels {p}" for p, k in sorted(compute.items()))
    elif precision:
        note = f"{precision}: all {n} conv/matmul kernels compute in {precision}"
    else:
        note = "no conv/matmul kernel ran"
    note += "; " + (("portable (non-XNNPACK) kernels ran " + ", ".join(
        f"{op} x{k}" if k > 1 else op for op, k in sorted(portable.items()))) if portable else "every op ran in XNNPACK")
    if took(asked, precision) is False:
        note = f"{asked} {'partly took' if precision == 'mixed' else 'did not take'}: {note}"
    return {"compute_precision": precision, "precision_ops": {p: {"XNNPACK kernels": k} for p, k in compute.items()},
            "precision_note": note + version_note, "precision_source": executed.get("source"),
            "delegation": {**delegation, "ran": ran}}


def inspect_ncnn(path: Path, asked: str | None = None) -> dict[str, Any]:
    from edgebench.device import rt_ncnn

    layers = rt_ncnn.read_param(str(path))
    weights = rt_ncnn.weight_storage(str(Path(path).with_suffix(".bin")))
    compute = [(kind, "fp32") for kind, *_ in layers if kind in rt_ncnn.COMPUTE_LAYERS]
    return summarize(compute, [], [weights] * len(compute), asked,
                     source="ncnn .param layers and .bin weight tags (fp32 options: the reference; the device "
                            "reports what its options and CPU compute)",
                     fp16_fallback="ncnn computes fp16 only with fp16 options on an ARMv8.2 core")

"""The two sides of `edgebench check`: a run folder, or a baseline JSON saved from one.

    >>> reference = load_side("baselines/main.json", "baseline")   # or a run folder
    >>> candidate = load_side("results/20261203T101500Z-3fa9c1", "run")
    >>> context_notes(reference, candidate)        # versions, CPUs, threads that differ

A malformed or unreadable file is an EdgebenchError naming the file and the problem (exit 2):
the gate never passes on input it could not read. A baseline JSON (`--save-baseline`) keeps
what the gate compares — footprint, accuracy and its n_eval, per-round latency statistics,
machine facts, threads, the package versions — but no artifacts, so it is judged in stored mode.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from edgebench.analyze import KEY, read_records
from edgebench.errors import EdgebenchError

BASELINE_KIND = "edgebench-baseline"
# A round's labels beside its statistics: where and when it ran (a pool's board, the timed window).
ROUND_LABELS = ("measured_at", "board")
BASELINE_SCHEMA = 2  # 2: error records, latency_rounds, n_eval, threads, versions; 1 still loads
FOOTPRINT = ("size_bytes", "params", "macs")
NUMBERS = (*FOOTPRINT, "size_gzip_bytes", "accuracy", "n_eval", "agreement")
# Which package versions decide the bytes of each artifact format: the exporters and quantizers
# (onnxruntime.quantization writes the int8 ONNX models). A footprint compared across different
# ones is flagged, not judged at 0.5 %.
EXPORTERS = {"onnx": ("torch", "onnx", "onnxscript", "onnxruntime"), "tflite": ("torch", "litert-torch", "torchao")}
MACHINE_FACTS = ("cpu", "runtime_version", "threads")


@dataclass
class Side:
    """One side of a comparison: its records (or baseline entries) and what is known of it."""

    source: Path
    records: list[dict]
    manifest: dict = field(default_factory=dict)
    run_dir: Path | None = None  # a run folder (artifacts may be on disk); None for a baseline JSON

    @property
    def versions(self) -> dict:
        versions = self.manifest.get("versions")
        return versions if isinstance(versions, dict) else {}

    def by_key(self) -> dict[tuple[str, str, str], dict]:
        return {key_of(r): r for r in self.records}


def key_of(record: dict) -> tuple[str, str, str]:
    return tuple(str(record.get(k)) for k in KEY)  # type: ignore[return-value]


def number(value: object) -> float | None:
    """A finite number, or None for missing, NaN and infinities.

    >>> number(3), number(float("nan")), number(None)
    (3.0, None, None)
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


# --- reading -----------------------------------------------------------------------------------

def load_side(source: str | Path, what: str) -> Side:
    """A run folder, its records.jsonl, or a baseline JSON; `what` names it in errors ("run", "baseline").

    >>> load_side("results/RUN", "run").run_dir
    PosixPath('results/RUN')
    """
    path = Path(source).expanduser()
    if not path.exists():
        raise EdgebenchError(f"{what} not found: {path}")
    if path.is_file() and path.suffix == ".json":
        return _load_baseline_file(path, what)
    run_dir = path if path.is_dir() else path.parent
    if not (run_dir / "records.jsonl").is_file():
        raise EdgebenchError(f"{what} {path}: not a run folder (no records.jsonl) and not a baseline .json")
    records = read_records(run_dir)
    if not records:  # every variant would be "new" and the gate would pass on nothing
        raise EdgebenchError(f"{what} {run_dir / 'records.jsonl'}: no readable record (empty, or only a torn line)")
    for record in records:
        validate_entry(record, f"{run_dir / 'records.jsonl'}")
    return Side(path, records, _read_manifest(run_dir, what), run_dir)


def _read_manifest(run_dir: Path, what: str) -> dict:
    """manifest.json of a run, {} when absent (a bare records.jsonl); malformed is an error."""
    path = run_dir / "manifest.json"
    if not path.exists():
        return {}
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EdgebenchError(f"{what} {path}: cannot read the manifest ({_why(exc)})") from None
    if not isinstance(manifest, dict):
        raise EdgebenchError(f"{what} {path}: the manifest is not a JSON object")
    return manifest


def _why(exc: Exception) -> str:
    return exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)


def _load_baseline_file(path: Path, what: str) -> Side:
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EdgebenchError(f"{what} {path}: not valid JSON ({_why(exc)})") from None
    if not isinstance(doc, dict) or doc.get("kind") != BASELINE_KIND:
        raise EdgebenchError(f"{what} {path}: not an edgebench baseline (write one with --save-baseline)")
    entries = doc.get("entries")
    if not isinstance(entries, list):
        raise EdgebenchError(f"{what} {path}: 'entries' is not a list")
    if not entries:
        raise EdgebenchError(f"{what} {path}: no entries: nothing to compare against")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not all(isinstance(entry.get(k), str) for k in KEY):
            raise EdgebenchError(f"{what} {path}: entries[{i}] is not an entry (needs variant, target, runtime)")
        validate_entry(entry, str(path))
    if "versions" in doc and not isinstance(doc["versions"], dict):
        raise EdgebenchError(f"{what} {path}: 'versions' is not an object")
    manifest = {"run_id": doc.get("run_id"), "git": doc.get("git"), "versions": doc.get("versions") or {}}
    return Side(path, entries, manifest, None)


def validate_entry(entry: dict, where: str) -> None:
    """Raise EdgebenchError when a field the gate reads has the wrong type (NaN is allowed:
    it is a missing value, judged as such)."""
    name = "/".join(key_of(entry))

    def bad(key: str, value: object, expected: str) -> EdgebenchError:
        return EdgebenchError(f"{where}: {name}: {key} = {json.dumps(value)[:60]} is not {expected}")

    def numeric(value: object) -> bool:
        return value is None or (isinstance(value, int | float) and not isinstance(value, bool))

    if entry.get("status", "ok") not in ("ok", "error"):
        raise bad("status", entry.get("status"), '"ok" or "error"')
    for key in NUMBERS:
        if not numeric(entry.get(key)):
            raise bad(key, entry.get(key), "a number")
    for key in ("latency_ms", "machine", "metric"):
        if entry.get(key) is not None and not isinstance(entry[key], dict):
            raise bad(key, entry[key], "an object")
    for key, value in (entry.get("latency_ms") or {}).items():
        if not numeric(value):
            raise bad(f"latency_ms.{key}", value, "a number")
    rounds = entry.get("latency_rounds")
    if rounds is not None and not (isinstance(rounds, list) and all(
            isinstance(r, dict) and all(numeric(v) for k, v in r.items() if k not in ROUND_LABELS) for r in rounds)):
        raise bad("latency_rounds", rounds, "a list of per-round statistics")
    samples = entry.get("latency_samples_ms")
    if samples is not None and not (isinstance(samples, list) and all(numeric(s) for s in samples)):
        raise bad("latency_samples_ms", samples, "a list of numbers")


# --- writing -------------------------------------------------------------------------------------

def baseline_entry(record: dict) -> dict:
    """What a saved baseline keeps of one record (error records too: a known error stays known).

    >>> sorted(baseline_entry({"variant": "int8", "target": "local", "runtime": "onnxruntime"}))[:3]
    ['accuracy', 'agreement', 'emulated']
    """
    entry = {k: record.get(k) for k in (*KEY, "status", "format", "emulated", *NUMBERS)}
    entry["status"] = record.get("status", "ok")
    if entry["status"] != "ok":
        entry["error"] = record.get("error")
    latency = record.get("latency_ms") or {}
    entry["latency_ms"] = {k: latency.get(k) for k in ("p50", "p90", "min", "n")}
    entry["latency_rounds"] = record.get("latency_rounds")
    metric = record.get("metric") or {}
    if metric.get("value") is not None:  # the task's metric, for a baseline of another task than classify
        entry["metric"] = {k: metric.get(k) for k in ("name", "value", "higher_is_better", "n")}
    machine = record.get("machine") or {}
    entry["machine"] = {k: machine.get(k) for k in ("arch", "cpu", "runtime_version", "threads")}
    return entry


def save_baseline(side: Side, path: str | Path) -> int:
    """Write the baseline JSON of a run (every record); return how many entries it holds."""
    manifest = side.manifest
    doc = {"kind": BASELINE_KIND, "schema_version": BASELINE_SCHEMA, "run_id": manifest.get("run_id"),
           "git": manifest.get("git"), "saved": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "versions": side.versions, "host": manifest.get("host"),
           "entries": [baseline_entry(r) for r in side.records]}
    out = Path(path).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")
    return len(doc["entries"])


# --- what differs between the two sides ---------------------------------------------------------

def version_changes(reference: Side, candidate: Side) -> dict[str, tuple]:
    """{package: (reference version, candidate version)} for each package whose version differs."""
    a, b = reference.versions, candidate.versions
    return {name: (a.get(name), b.get(name)) for name in sorted(set(a) | set(b)) if a.get(name) != b.get(name)}


def exporter_changes(reference: Side, candidate: Side, fmt: str | None) -> list[str]:
    """'onnx 1.23.2 → 1.24.0' for each exporter of `fmt` (all formats when None) that differs."""
    changed = version_changes(reference, candidate)
    names = EXPORTERS.get(fmt or "", ()) if fmt else {n for names in EXPORTERS.values() for n in names}
    return [f"{n} {changed[n][0]} → {changed[n][1]}" for n in sorted(names) if n in changed]


def machine_changes(reference: Side, candidate: Side) -> dict[tuple[str, str], list[str]]:
    """{(target, runtime): ['threads 1 → 2', ...]} where the records' machine facts differ."""
    def facts(side: Side) -> dict[tuple[str, str], dict[str, set]]:
        out: dict[tuple[str, str], dict[str, set]] = {}
        for record in side.records:
            machine = record.get("machine") or {}
            if record.get("status", "ok") != "ok" or not machine:
                continue
            group = out.setdefault(key_of(record)[1:], {k: set() for k in MACHINE_FACTS})
            for k in MACHINE_FACTS:
                if machine.get(k) is not None:
                    group[k].add(str(machine[k]))
        return out

    a, b = facts(reference), facts(candidate)
    changes = {}
    for group in sorted(set(a) & set(b)):
        lines = [f"{k} {'/'.join(sorted(a[group][k]))} → {'/'.join(sorted(b[group][k]))}"
                 for k in MACHINE_FACTS if a[group][k] and b[group][k] and a[group][k] != b[group][k]]
        if lines:
            changes[group] = lines
    return changes


def context_notes(reference: Side, candidate: Side, remeasured: frozenset | set = frozenset()) -> list[str]:
    """The lines printed first: what differs between the two sides beyond the model itself.

    `remeasured` holds the (target, runtime) groups whose latency is measured again here for
    both sides (A/B): the runtime versions and CPUs of their stored records no longer decide it.
    """
    notes = []
    if not reference.versions or not candidate.versions:
        which = "baseline" if not reference.versions else "this run"
        notes.append(f"note: the {which} records no package versions: an exporter or runtime change cannot be seen")
    exporters = exporter_changes(reference, candidate, None)
    if exporters:
        notes.append(f"note: exporter versions differ ({', '.join(exporters)}): size and MAC checks are flagged "
                     "'unsure' beyond the tolerance, not failed")
    others = [f"{n} {a} → {b}" for n, (a, b) in version_changes(reference, candidate).items()
              if not any(n in names for names in EXPORTERS.values())]
    if others:
        notes.append(f"note: other package versions differ: {', '.join(others)}")
    for group, lines in machine_changes(reference, candidate).items():
        how = ("A/B re-measures both artifacts here, with this run's threads" if group in remeasured
               else "stored latencies are compared as they were measured")
        notes.append(f"note: {'/'.join(group)} measured differently: {'; '.join(lines)} ({how})")
    return notes

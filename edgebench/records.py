"""Records: one JSON line per (variant, target, runtime), appended and flushed as it is taken.

A crash loses nothing that was measured; `--resume` reads what is there and skips it.
Failures are records too (`status: "error"` with the message).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform
import subprocess
from pathlib import Path

import numpy as np

from edgebench import SCHEMA_VERSION, __version__

FIELDS = (
    "schema_version", "run_id", "variant", "parent", "steps", "target", "runtime", "format",
    "status", "error", "size_bytes", "size_gzip_bytes", "params", "nonzero_params", "macs",
    "latency_ms", "latency_samples_ms", "peak_rss_mb", "cpu_time_s", "energy_mj", "accuracy",
    "agreement", "logit_rel_err", "machine",
)  # fmt: skip
LATENCY_KEYS = ("p50", "p90", "p99", "mean", "std", "min", "max", "n")


def new_run_id(experiment: dict) -> str:
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    salt = json.dumps(experiment, sort_keys=True, default=str) + str(os.getpid()) + now
    return f"{now}-{hashlib.sha256(salt.encode()).hexdigest()[:6]}"


def latency_summary(samples_ms: list[float]) -> dict:
    a = np.asarray(samples_ms, dtype=float)
    if not len(a):
        return {k: None for k in LATENCY_KEYS}
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {
        "p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": float(a.mean()),
        "std": float(a.std()), "min": float(a.min()), "max": float(a.max()), "n": int(len(a)),
    }  # fmt: skip


def make_record(**values) -> dict:
    """A record with every DESIGN.md field present (None where unknown), in a stable order."""
    record = {name: None for name in FIELDS}
    record.update(schema_version=SCHEMA_VERSION, steps=[], status="ok")
    record.update(values)
    return record


def record_key(record: dict) -> tuple:
    return record["variant"], record["target"], record["runtime"]


class RecordLog:
    """Appends records to records.jsonl, flushing and syncing each line."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / "records.jsonl"
        self.records = read_records(self.path) if self.path.exists() else []
        self.done = {record_key(r) for r in self.records}

    def append(self, record: dict) -> None:
        line = json.dumps(record, default=_json_default)
        with open(self.path, "a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.records.append(record)
        self.done.add(record_key(record))


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def read_records(path: Path) -> list[dict]:
    """Every complete line of a records.jsonl; a torn last line (killed mid-write) is ignored."""
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def repair_tail(path: Path) -> None:
    """Cut a torn last line so appends start on a fresh line."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


def git_state(start: Path | None = None) -> dict:
    """The commit and dirty flag of the working directory's git checkout, when there is one."""
    cwd = str(start or Path.cwd())
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
        if commit.returncode != 0:
            return {"commit": None, "dirty": None}
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=cwd, capture_output=True, text=True, timeout=10)
        return {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def host_facts() -> dict:
    from edgebench.runner import machine_facts

    facts = machine_facts()
    facts["node"] = platform.node()
    try:
        import psutil

        facts["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:  # pragma: no cover
        pass
    return facts


def write_manifest(run_dir: Path, run_id: str, experiment: dict, **extra) -> dict:
    """Start manifest.json for a new run (a resumed run keeps the one it has)."""
    path = run_dir / "manifest.json"
    if path.exists():
        return update_manifest(run_dir, **extra)
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "edgebench_version": __version__,
        "run_id": run_id,
        "git": git_state(),  # of the working directory: the user's project
        "edgebench_git": git_state(Path(__file__).resolve().parent),
        "host": host_facts(),
        "experiment": experiment,
        "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        **extra,
    }
    _write_json(path, manifest)
    return manifest


def update_manifest(run_dir: Path, **extra) -> dict:
    """Add or replace keys of an existing manifest.json."""
    path = run_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.update(extra)
    _write_json(path, manifest)
    return manifest


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_json_default))
    tmp.replace(path)  # atomic: a killed run never leaves half a manifest

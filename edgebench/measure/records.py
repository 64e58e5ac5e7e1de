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
    "status", "error", "emulated", "size_bytes", "size_gzip_bytes", "params", "nonzero_params", "macs",
    "latency_ms", "latency_samples_ms", "latency_rounds", "rounds", "latency_p50_ci95", "latency_ratio", "load_s", "first_inference_ms",
    "rss_after_load_mb", "peak_rss_inference_mb", "peak_rss_eval_mb", "peak_rss_mb", "cpu_time_s",
    "energy_mj", "precision", "compute_precision", "accuracy", "n_eval", "accuracy_ci95",
    "accuracy_delta_p", "agreement", "logit_rel_err", "metric", "fidelity", "conditions", "machine",
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


ROUND_STATS = ("p10", "p25", "p50", "min")


def round_summary(samples_ms: list[float]) -> dict:
    """The statistics of one runner process's samples: a gate's unit of replication is the
    process, not the sample (samples of one process share its luck with the neighbours)."""
    a = np.asarray(samples_ms, dtype=float)
    if not len(a):
        return {"n": 0, **{k: None for k in ROUND_STATS}}
    p10, p25, p50 = np.percentile(a, [10, 25, 50])
    return {"n": int(len(a)), "p10": float(p10), "p25": float(p25), "p50": float(p50), "min": float(a.min())}


def make_record(**values) -> dict:
    """A record with every DESIGN.md field present (None where unknown), in a stable order."""
    record = {name: None for name in FIELDS}
    record.update(schema_version=SCHEMA_VERSION, steps=[], status="ok")
    record.update(values)
    return record


def record_key(record: dict) -> tuple:
    return record["variant"], record["target"], record["runtime"]


class RecordLog:
    """Appends records to records.jsonl, flushing and syncing each line.

    `done` holds the keys whose latest record is ok: on `--resume` an error record is tried
    again, and its line stays in the file as history (readers keep the latest per key).
    """

    def __init__(self, run_dir: Path):
        self.path = run_dir / "records.jsonl"
        self.records = latest(read_records(self.path)) if self.path.exists() else []
        self.done = {record_key(r) for r in self.records if r.get("status") == "ok"}

    def append(self, record: dict) -> None:
        line = json.dumps(record, default=_json_default)
        with open(self.path, "a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.records = [r for r in self.records if record_key(r) != record_key(record)] + [record]
        if record.get("status") == "ok":
            self.done.add(record_key(record))


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def read_records(path: str | Path, history: bool = False) -> list[dict]:
    """The records of a records.jsonl (or of a run folder holding one).

    The one reader of the format: a torn last line (a run killed mid-write) is ignored; any
    other line that is not a JSON object is an error naming the file and line (exit 2).
    Without `history`, a key measured again (a `--resume` retry) keeps only its latest record,
    in the position of its first.
    """
    from edgebench.errors import EdgebenchError

    path = Path(path).expanduser()
    if path.is_dir():
        path = path / "records.jsonl"
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise EdgebenchError(f"cannot read records {path}: {exc}") from None
    out = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines):
                continue
            raise EdgebenchError(f"{path}:{number}: not a JSON record ({exc.msg}); "
                                 "fix or delete that line") from None
        if not isinstance(record, dict) or not all(isinstance(record.get(k), str) for k in KEY_FIELDS):
            raise EdgebenchError(f"{path}:{number}: not an edgebench record (needs variant, target, runtime)")
        out.append(record)
    return out if history else latest(out)


KEY_FIELDS = ("variant", "target", "runtime")


def latest(records: list[dict]) -> list[dict]:
    """One record per (variant, target, runtime): the last one written, where the first stood."""
    last = {record_key(r): r for r in records}
    seen: set = set()
    out = []
    for r in records:
        key = record_key(r)
        if key not in seen:
            seen.add(key)
            out.append(last[key])
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


# The packages whose versions decide what an artifact looks like (exporters, quantizers) and
# how fast it runs here (runtimes): a gate comparing runs made with different ones says so.
VERSIONED_PACKAGES = ("torch", "onnx", "onnxscript", "onnxruntime", "openvino", "litert-torch", "ai-edge-litert",
                      "torchao", "numpy")


def package_versions() -> dict[str, str | None]:
    """Installed versions of the exporters and runtimes (None where not installed); no imports."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {"python": platform.python_version(), "edgebench": __version__}
    for name in VERSIONED_PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def host_facts() -> dict:
    from edgebench.device.runner_facts import machine_facts

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
        "versions": package_versions(),
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

"""The jobs a pool runs: plain functions of paths, bytes and JSON-like values.

`measure_round` runs on a device's worker (`edgebench worker`): it writes the artifact and the
eval set it was sent into the worker's own cache (by content hash, once), measures one round on
the worker's open target and answers the runner's result with the board and worker that took
it. `build` runs on a `cpu` worker that sees the run folder (the local `--jobs` cluster, or a
machine that mounts it). Nothing here imports Dask at module level.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

_TARGETS: dict = {}  # board name -> its open Target, one per worker process


def blob(path: Path) -> tuple[str, str, bytes]:
    """(sha256, suffix, bytes) of a file: what a measurement job carries to a device's worker."""
    data = Path(path).read_bytes()
    return hashlib.sha256(data).hexdigest(), Path(path).suffix, data


def _staged(item: tuple[str, str, bytes]) -> Path:
    sha, suffix, data = item
    folder = Path(os.environ.get("EDGEBENCH_POOL_CACHE") or Path(tempfile.gettempdir()) / f"edgebench-pool-{os.getuid()}")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{sha[:32]}{suffix}"
    if not path.is_file():
        tmp = path.with_suffix(path.suffix + f".{os.getpid()}.part")
        tmp.write_bytes(data)
        tmp.replace(path)
    return path


def measure_round(artifact: tuple, eval_set: tuple, runtime: str, options, extra_args: list[str] | None = None,
                  beside: tuple | None = None) -> dict:
    """One runner round on this worker's device (timed beside `beside`, the baseline's artifact
    blob, with `extra_args` ["--paired"]). Never raises for a device problem: an
    unreachable device answers {"status": "error", "unreachable": ...} so the client can take
    the board out of the pool; any other failure is an error result (a record, the sweep goes on)."""
    from distributed import get_worker

    from edgebench.errors import TargetError

    worker = get_worker()
    board = getattr(worker, "edgebench_board", None)
    if board is None:
        return {"status": "error", "error": f"worker {worker.address} serves no device (start it with edgebench worker --target)"}
    import time

    started = time.perf_counter()
    try:
        target = _TARGETS.get(board["name"])
        if target is None:
            from edgebench.targets import open_target

            target = _TARGETS[board["name"]] = open_target(board["profile"])
        data = _staged(eval_set)
        result = target.measure(_staged(artifact), data, runtime, options, extra_args=list(extra_args or ()),
                                compare=(_staged(beside), data) if beside else None)
    except TargetError as exc:
        result = {"status": "error", "error": f"{board['name']}: {exc}", "unreachable": str(exc)}
    except Exception as exc:  # noqa: BLE001 - a failure is a record; the sweep goes on
        result = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
    if result.get("host_error"):  # the device did not answer (ssh down, host gone): not the variant's fault
        result["unreachable"] = result["error"]
    result["measure_s"] = time.perf_counter() - started
    result["board"], result["worker"] = board["name"], worker.address
    return result


def build(exp, variant, baseline_state: dict, data, run_dir: Path, formats: set[str], keep=None):
    """Build one variant in a worker process (one torch thread: the workers share the cores).
    The baseline travels as its state dict (tensors) and is rebuilt here from the experiment's
    model factory: a pickled module can lose what compression needs (torch-pruning's weak
    references). `keep` is build_variant's (the search's torch-accuracy floor). Returns
    (BuiltVariant, its log lines)."""
    import torch

    from edgebench.export.variants import build_variant
    from edgebench.model.baseline import build_model

    torch.set_num_threads(1)
    baseline = build_model(exp, data)
    baseline.load_state_dict(baseline_state)
    baseline.eval()
    lines: list[str] = []
    built = build_variant(exp, variant, baseline, data, Path(run_dir), formats, lines.append, keep=keep)
    return built, lines

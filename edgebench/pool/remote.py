"""A target of the pool seen from the client: the search's trials and the profiles measured as jobs.

    >>> remote = RemoteTarget.of(pool, pool.resolve(["rpi4"])[0], run_dir, log)
    >>> for variant, result in pool_rounds(remote, [built], "onnxruntime", options, run_dir): ...
    >>> profile_on(remote.on_board("pi-a"), options, run_dir, record, runs)   # a blocking `measure`

`RemoteTarget.measure` has an open Target's signature, so code written for one target (the
profiles) runs on the pool unchanged; each call is one `measure_round` job taking the target's
token (`board:<name>` or `class:<class>`), so a board never times two things at once. Waiting
is fault-aware as the run's loop is (edgebench.pool.measure): a board whose device stops
answering is retired and its job retried once on another board of the class; a token that no
live worker holds for LOST_GRACE_S makes the job an error result ("lost: ..."), never a hang.
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

from edgebench.pool.jobs import blob, measure_round
from edgebench.pool.measure import CHECK_EVERY_S, LOST_GRACE_S


class RemoteTarget:
    def __init__(self, pool, profile, resource: str, boards: list[str], run_dir: Path | None = None,
                 log=lambda _m: None, blobs: dict | None = None):
        self.pool, self.profile, self.resource, self.boards = pool, profile, resource, list(boards)
        self.run_dir, self.log = run_dir, log
        self._blobs = {} if blobs is None else blobs  # file -> its bytes, scattered to the pool once
        self._lock = threading.Lock()

    @classmethod
    def of(cls, pool, target, run_dir: Path | None = None, log=lambda _m: None) -> RemoteTarget:
        """From an edgebench.pool.PoolTarget (a board or a class)."""
        return cls(pool, target.profile, target.resource, target.boards, run_dir, log)

    def on_board(self, board: str) -> RemoteTarget:
        """The same target pinned to one of its boards (the search's confirmation round)."""
        return RemoteTarget(self.pool, self.profile, f"board:{board}", [board], self.run_dir, self.log, self._blobs)

    def live_boards(self) -> list[str]:
        return [b for b in self.boards if b not in self.pool.removed and b in self.pool.boards()]

    def close(self) -> None:  # nothing is open on the client's side
        pass

    def submit(self, artifact: Path, eval_set: Path, runtime: str, options, extra_args=None, priority: int = 0):
        """One runner call as a job on a board holding this target's token; (future, job)."""
        job = (self._blob(artifact), self._blob(eval_set), runtime, options, list(extra_args or ()))
        return self._send(job, priority), job

    def _send(self, job: tuple, priority: int = 0):
        return self.pool.client.submit(measure_round, *job, resources={self.resource: 1}, pure=False,
                                       priority=priority, key=f"measure-{self.resource}-{uuid.uuid4().hex[:12]}")

    def measure(self, artifact: Path, eval_set: Path, runtime: str, options, extra_args=None) -> dict:
        """What an open Target's `measure` answers, measured on a board of this target; an
        urgent job (priority 1: next on its board once the running one is done)."""
        return self.wait([self.submit(artifact, eval_set, runtime, options, extra_args, priority=1)])[0]

    def wait(self, sent: list[tuple]) -> list[dict]:
        """The results of (future, job) pairs, in order; never raises for a device or a lost worker."""
        from distributed import wait

        results: list[dict | None] = [None] * len(sent)
        pending = {fut.key: (i, fut, job) for i, (fut, job) in enumerate(sent)}
        retried: dict[int, str] = {}
        lost_since = None
        while pending:
            try:
                wait([f for _i, f, _j in pending.values()], timeout=CHECK_EVERY_S, return_when="FIRST_COMPLETED")
            except TimeoutError:
                pass
            for key, (i, fut, job) in list(pending.items()):
                if not fut.done():
                    continue
                del pending[key]
                try:
                    result = fut.result()
                except Exception as exc:  # noqa: BLE001 - KilledWorker and the like: this job's error
                    result = {"status": "error", "error": f"lost: {type(exc).__name__}: {exc}", "measure_s": 0.0}
                if result.get("unreachable"):
                    self._retire(result)
                    if len(self.boards) > 1 and i not in retried:  # another board of the class
                        retried[i] = result["board"]
                        again = self._send(job)
                        pending[again.key] = (i, again, job)
                        continue
                if i in retried:
                    result["retried_after"] = retried[i]
                results[i] = result
            if pending and self.resource not in self._alive_tokens():
                lost_since = lost_since or _now()
                if _now() - lost_since >= LOST_GRACE_S:
                    why = next((self.pool.removed[b] for b in self.boards if b in self.pool.removed),
                               "its worker died or left the pool")
                    for i, fut, _job in pending.values():
                        fut.cancel()
                        results[i] = {"status": "error", "measure_s": 0.0,
                                      "error": f"lost: no worker holding {self.resource} is left ({why})"}
                    pending.clear()
            else:
                lost_since = None
        return results  # type: ignore[return-value]

    def _alive_tokens(self) -> set[str]:
        return {r for w in self.pool.workers().values() for r, n in w["resources"].items() if n}

    def _retire(self, result: dict) -> None:
        if result.get("board") in self.pool.removed:
            return
        self.pool.retire(result, self.log)
        if self.run_dir is not None:
            from edgebench.measure.records import update_manifest

            update_manifest(self.run_dir, pool={"removed": dict(self.pool.removed)})

    def _blob(self, path: Path):
        key = str(Path(path).resolve())
        with self._lock:
            if key not in self._blobs:
                self._blobs[key] = self.pool.client.scatter(blob(path), hash=False)
            return self._blobs[key]


def pool_rounds(remote: RemoteTarget, variants: list, runtime: str, options, run_dir: Path) -> list[tuple]:
    """Every variant in `options.rounds` runner rounds as jobs, submitted interleaved (round 1
    of each, then round 2, ...) and all at once: the boards of a class take them in parallel,
    one at a time each. [(variant, merged result)] in the order given, as
    edgebench.measure.rounds.measure_rounds yields them in-process."""
    from edgebench.measure.rounds import merge_rounds
    from edgebench.runtimes import format_of

    fmt = format_of(runtime)
    sent, owner = [], []
    for index in range(options.rounds):
        for variant in variants:
            artifact, _why = variant.artifact(fmt)
            if artifact is not None:
                sent.append(remote.submit(artifact, Path(run_dir) / "eval.npz", runtime, options.round(index)))
                owner.append(variant.name)
    results = remote.wait(sent)
    out = []
    for variant in variants:
        artifact, why = variant.artifact(fmt)
        rounds = [r for name, r in zip(owner, results, strict=True) if name == variant.name]
        out.append((variant, merge_rounds(rounds) if artifact is not None else {"status": "error", "error": why}))
    return out


def _now() -> float:
    import time

    return time.monotonic()

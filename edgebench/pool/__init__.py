"""A device pool on Dask distributed: builds on many cores, measurements on many devices.

    $ edgebench pool certs certs/                                       # a CA, certs and keys
    $ dask scheduler --tls-ca-file certs/ca.pem --tls-cert certs/scheduler.pem --tls-key certs/scheduler.key
    $ edgebench worker --scheduler tls://HOST:8786 --tls certs/ --target pi-a.toml --board-class rpi4
    $ edgebench run experiment.toml --cluster tls://HOST:8786 --tls certs/ --targets rpi4

`Pool.open` connects to a scheduler (`--cluster`; TLS and the plain-TCP rule in
edgebench.pool.security), and with `--jobs N` starts a local cluster of N one-thread worker
processes holding a `cpu` token for building variants (used when the scheduler has no `cpu` workers). Each device's worker
(edgebench.pool.worker) holds its `board:<name>` and `class:<class>` tokens; an experiment's
target names a board or a class. Jobs are in edgebench.pool.jobs; the measuring loop, its
faults and its progress in edgebench.pool.measure. The executor seam is this class: another
engine (Ray: custom resources play the tokens' role) would implement the same few methods.
"""

from __future__ import annotations

import argparse
import dataclasses
import threading
from dataclasses import dataclass

from edgebench.errors import ConfigError


@dataclass
class PoolTarget:
    """An experiment's target as the pool serves it: one board, or a class of boards."""

    name: str
    profile: object  # TargetProfile of the (first) board, named `name`
    resource: str  # the token a measurement on it takes
    boards: list[str]


def add_pool_arguments(p: argparse.ArgumentParser) -> None:
    """--cluster/--tls/--insecure/--jobs, shared by run and search (edgebench.pool)."""
    p.add_argument("--cluster", metavar="tls://HOST:PORT", help="measure (and build) on a Dask pool of device workers")
    p.add_argument("--tls", metavar="DIR", help="the pool's certificates (edgebench pool certs DIR): ca.pem, client.pem/.key")
    p.add_argument("--insecure", action="store_true", default=None,
                   help="allow a plain tcp:// scheduler that is not on loopback (anyone reaching it runs code)")
    p.add_argument("--jobs", type=int, metavar="N", help="build variants in N local worker processes (Dask)")


def with_pool_arguments(exp, args):
    """The experiment with the command line's --cluster/--tls/--insecure/--jobs over its [run]."""
    import dataclasses

    given = {"cluster": args.cluster, "tls": args.tls, "insecure": args.insecure, "jobs": args.jobs}
    given = {k: v for k, v in given.items() if v is not None}
    return dataclasses.replace(exp, run=dataclasses.replace(exp.run, **given)) if given else exp  # checked as [run] is


def require_dask(what: str) -> None:
    import importlib.util

    if importlib.util.find_spec("distributed") is None:
        raise ConfigError(f"{what} needs Dask distributed: pip install 'edgebench[pool]'")


class Pool:
    def __init__(self, client, cluster=None, log=print, local=None):
        self.client, self.cluster, self.log = client, cluster, log
        self.local = local  # (client, cluster) of the `--jobs` build processes beside a remote scheduler
        self.removed: dict[str, str] = {}  # board -> why it left the pool during the run

    @classmethod
    def open(cls, address: str | None, jobs: int = 0, log=print, dashboard: bool = False, tls: str | None = None,
             insecure: bool = False) -> Pool:
        """Connect to the scheduler at `address` (checked first: edgebench.pool.security) and/or
        start `jobs` local build processes; both: builds go to the local ones unless the
        scheduler has `cpu` workers."""
        require_dask("--cluster/--jobs")
        from edgebench.pool.security import check_address, check_peers, security

        if address:
            check_address(address, tls, insecure)
            sec = security(tls, "client")  # a missing file: exit 2 before any connection
        local = _local_cluster(jobs) if jobs else None
        if not address:
            return cls(local[0], local[1], log)._announce(dashboard)
        from distributed import Client

        try:
            client = Client(address, timeout="10s", security=sec)
        except (OSError, TypeError) as exc:
            if local:
                local[0].close()
                local[1].close()
            tls_hint = "; check that --tls holds the certificates of this pool's CA" if sec else ""
            raise ConfigError(f"--cluster {address}: no Dask scheduler answers there ({exc}){tls_hint}; "
                              "start one with `dask scheduler` (README 'Scale out')") from None
        pool = cls(client, None, log, local)
        try:  # a scheduler reached through 127.0.0.1 may still listen on every interface in the clear
            check_peers([client.scheduler_info()["address"]], insecure, "the scheduler")
            check_peers(list(pool.workers()), insecure, "worker")
        except ConfigError:
            pool.close()
            raise
        return pool._announce(True)

    def _announce(self, dashboard: bool) -> Pool:
        if dashboard:
            link = self.client.dashboard_link
            self.log(f"pool: scheduler {self.client.scheduler.address}" + (f", dashboard {link}" if link else ""))
        return self

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()
        if self.local is not None:
            for part in self.local:
                part.close()

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def builder(self):
        """The client whose `cpu` workers build variants: the scheduler's, or the local `--jobs`
        processes'; None when neither has any (then builds run in this process)."""
        if any(w["resources"].get("cpu") for w in self.workers().values()):
            return self.client
        return self.local[0] if self.local else None

    def workers(self) -> dict[str, dict]:
        """address -> {name, resources} of the workers alive now."""
        info = self.client.scheduler_info(n_workers=-1)["workers"]
        return {a: {"name": w.get("name"), "resources": w.get("resources") or {}} for a, w in info.items()}

    def cpu_workers(self) -> int:
        client = self.builder()
        if client is None:
            return 0
        info = client.scheduler_info(n_workers=-1)["workers"].values()
        return sum(1 for w in info if (w.get("resources") or {}).get("cpu"))

    def boards(self) -> dict[str, dict]:
        """name -> {name, class, profile, address} of every device worker in the pool."""
        def board(dask_worker):
            return getattr(dask_worker, "edgebench_board", None)

        found = self.client.run(board)
        return {b["name"]: {**b, "address": a} for a, b in found.items() if b}

    def retire(self, result: dict, log) -> None:
        """Take the board that answered `result` ("unreachable") out of the pool for this run."""
        board = result["board"]
        self.removed[board] = result["unreachable"]
        log(f"pool: board {board} is unreachable ({result['unreachable'][:160]}): out of the pool for this run")
        try:
            self.client.retire_workers(workers=[result["worker"]], close_workers=True)
        except Exception:  # noqa: BLE001 - already gone
            pass

    def resolve(self, names: list[str] | tuple[str, ...]) -> list[PoolTarget]:
        """The experiment's targets as boards or classes of this pool; one that no worker serves
        is a config error (exit 2) before any work."""
        boards = self.boards()
        out = []
        for name in names:
            members = sorted(b for b, v in boards.items() if v["class"] == name)
            if name in boards:
                out.append(PoolTarget(name, boards[name]["profile"], f"board:{name}", [name]))
            elif members:
                profile = dataclasses.replace(boards[members[0]]["profile"], name=name)
                out.append(PoolTarget(name, profile, f"class:{name}", members))
            else:
                served = ", ".join(sorted({*boards, *(v["class"] for v in boards.values())})) or "none"
                raise ConfigError(f"target {name!r}: no worker in the pool serves it (boards and classes: {served}); "
                                  f"start one with `edgebench worker --scheduler ... --target {name}.toml`")
        return out


def _local_cluster(jobs: int) -> tuple:
    """`jobs` one-thread build processes on this machine, and their client. Their scheduler
    listens on loopback; with `cryptography` installed it also speaks TLS with a throw-away
    certificate (Security.temporary), so another user of this machine cannot submit to it."""
    import importlib.util

    from distributed import Client, LocalCluster

    security = None
    if importlib.util.find_spec("cryptography") is not None:
        from distributed.security import Security

        security = Security.temporary()
    # ":0": a free port (None still binds :8787 in distributed 2026.8 and warns when it is taken).
    cluster = LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True, resources={"cpu": 1},
                           dashboard_address=":0", silence_logs=40, host="127.0.0.1", security=security)
    client = Client(cluster, security=security)
    # Each worker imports torch and the exporters once, in parallel, while this process goes on
    # (data, baseline) instead of waiting: a build job arriving meanwhile waits on the import lock.
    threading.Thread(target=_quietly, args=(client.run, _warm_up), daemon=True).start()
    return client, cluster


def _quietly(fn, *args) -> None:
    try:
        fn(*args)
    except Exception:  # noqa: BLE001 - a warm-up only saves time; the pool closing under it is fine
        pass


def _warm_up() -> None:
    """Import what a build needs (torch, onnx, onnxruntime's quantizer, the steps) ahead of the
    first job, on every worker at once."""
    import onnx  # noqa: F401
    import onnxruntime.quantization  # noqa: F401
    import torch  # noqa: F401

    import edgebench.compress  # noqa: F401
    import edgebench.export.variants  # noqa: F401

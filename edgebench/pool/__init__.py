"""A device pool on Dask distributed: builds on many cores, measurements on many devices.

    $ dask scheduler --port 8786 --dashboard-address :0
    $ edgebench worker --scheduler tcp://HOST:8786 --target pi-a.toml --board-class rpi4   # one per device
    $ edgebench run experiment.toml --cluster tcp://HOST:8786 --targets rpi4

`Pool.open` connects to a scheduler (`--cluster`), or starts a local cluster of `--jobs N`
one-thread worker processes holding a `cpu` token for building variants. Each device's worker
(edgebench.pool.worker) holds its `board:<name>` and `class:<class>` tokens; an experiment's
target names a board or a class. Jobs are in edgebench.pool.jobs; the measuring loop, its
faults and its progress in edgebench.pool.measure. The executor seam is this class: another
engine (Ray: custom resources play the tokens' role) would implement the same few methods.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from edgebench.errors import ConfigError


@dataclass
class PoolTarget:
    """An experiment's target as the pool serves it: one board, or a class of boards."""

    name: str
    profile: object  # TargetProfile of the (first) board, named `name`
    resource: str  # the token a measurement on it takes
    boards: list[str]


def require_dask(what: str) -> None:
    import importlib.util

    if importlib.util.find_spec("distributed") is None:
        raise ConfigError(f"{what} needs Dask distributed: pip install 'edgebench[pool]'")


class Pool:
    def __init__(self, client, cluster=None, log=print):
        self.client, self.cluster, self.log = client, cluster, log
        self.removed: dict[str, str] = {}  # board -> why it left the pool during the run

    @classmethod
    def open(cls, address: str | None, jobs: int = 0, log=print, dashboard: bool = False) -> Pool:
        require_dask("--cluster/--jobs")
        from distributed import Client, LocalCluster

        if address:
            try:
                client = Client(address, timeout="10s")
            except OSError as exc:
                raise ConfigError(f"--cluster {address}: no Dask scheduler answers there ({exc}); "
                                  "start one with `dask scheduler`") from None
            pool = cls(client, None, log)
        else:
            # ":0": a free port (None still binds :8787 in distributed 2026.8 and warns when it is taken).
            cluster = LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True, resources={"cpu": 1},
                                   dashboard_address=":0", silence_logs=40)
            pool = cls(Client(cluster), cluster, log)
            pool.client.run(_warm_up)  # each worker imports torch and the exporters once, in parallel
        if dashboard or address:
            link = pool.client.dashboard_link
            log(f"pool: scheduler {pool.client.scheduler.address}" + (f", dashboard {link}" if link else ""))
        return pool

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def workers(self) -> dict[str, dict]:
        """address -> {name, resources} of the workers alive now."""
        info = self.client.scheduler_info(n_workers=-1)["workers"]
        return {a: {"name": w.get("name"), "resources": w.get("resources") or {}} for a, w in info.items()}

    def cpu_workers(self) -> int:
        return sum(1 for w in self.workers().values() if w["resources"].get("cpu"))

    def boards(self) -> dict[str, dict]:
        """name -> {name, class, profile, address} of every device worker in the pool."""
        def board(dask_worker):
            return getattr(dask_worker, "edgebench_board", None)

        found = self.client.run(board)
        return {b["name"]: {**b, "address": a} for a, b in found.items() if b}

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


def _warm_up() -> None:
    """Import what a build needs (torch, onnx, onnxruntime's quantizer, the steps) ahead of the
    first job, on every worker at once."""
    import onnx  # noqa: F401
    import onnxruntime.quantization  # noqa: F401
    import torch  # noqa: F401

    import edgebench.compress  # noqa: F401
    import edgebench.export.variants  # noqa: F401

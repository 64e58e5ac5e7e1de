"""The device pool the tests in tests/pool share, as README 'Scale out' tells users to start it:
certificates from `edgebench pool certs`, a real `dask scheduler` speaking TLS on loopback, and
one `edgebench worker --tls` per loopback sshd "device" (pi-a and pi-b, class "loop", each
runner pinned to its own core). Started once for the folder: it is most of the tests' time."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "edgebench"]


def start(argv: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(argv, stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)  # noqa: SIM115


def stop(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def client_security(tls: Path):
    from edgebench.pool.security import security

    return security(tls, "client")


def wait_for_workers(address: str, tls: Path, n: int, timeout: float = 90.0) -> None:
    from distributed import Client

    with Client(address, timeout="20s", security=client_security(tls)) as client:
        client.wait_for_workers(n, timeout=timeout)


def worker_names(address: str, tls: Path) -> list[str]:
    from distributed import Client

    with Client(address, timeout="20s", security=client_security(tls)) as client:
        return sorted(w["name"] for w in client.scheduler_info(n_workers=-1)["workers"].values())


@pytest.fixture(scope="package")
def pool(tmp_path_factory):
    """{address, tls, cluster (the CLI flags), workers, start_worker, folder}."""
    pytest.importorskip("distributed", reason="dask distributed is not installed (pip install 'edgebench[pool]')")
    from sshd import free_port, loopback_sshd

    folder = tmp_path_factory.mktemp("pool")
    tls = folder / "certs"
    subprocess.run([*CLI, "pool", "certs", str(tls)], check=True, capture_output=True, timeout=60)
    with contextlib.ExitStack() as stack:
        port = free_port()
        address = f"tls://127.0.0.1:{port}"
        scheduler = start([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "tls://127.0.0.1",
                           "--port", str(port), "--no-dashboard", "--tls-ca-file", str(tls / "ca.pem"),
                           "--tls-cert", str(tls / "scheduler.pem"), "--tls-key", str(tls / "scheduler.key")],
                          folder / "scheduler.log")
        stack.callback(stop, scheduler)
        boards = {}
        for core, name in enumerate(("pi-a", "pi-b")):
            server = stack.enter_context(loopback_sshd(folder / f"sshd-{name}"))
            boards[name] = server.write_profile(folder / f"{name}.toml", taskset=str(core % (os.cpu_count() or 1)))
        workers = {}

        def start_worker(name: str, profile: Path | None = None, board_class: str = "loop") -> subprocess.Popen:
            proc = start([*CLI, "worker", "--scheduler", address, "--tls", str(tls), "--target",
                          str(profile or boards[name]), "--name", name, "--board-class", board_class],
                         folder / f"worker-{name}-{time.time_ns()}.log")
            stack.callback(stop, proc)
            workers[name] = proc
            return proc

        for name in boards:
            start_worker(name)
        wait_for_workers(address, tls, 2)
        yield {"address": address, "tls": tls, "cluster": ["--cluster", address, "--tls", str(tls)],
               "workers": workers, "start_worker": start_worker, "folder": folder, "boards": boards}


@pytest.fixture
def both_boards(pool):
    """The pool with pi-a and pi-b serving (a test before may have killed pi-a)."""
    if pool["workers"]["pi-a"].poll() is not None:
        pool["start_worker"]("pi-a")
    wait_for_workers(pool["address"], pool["tls"], 2)
    return pool

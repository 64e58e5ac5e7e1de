"""Who gets into the pool: the TLS scheduler of tests/pool/conftest.py refuses a client and a
worker without a certificate from its CA; a plain tcp:// address off loopback is refused before
any work unless --insecure says the user means it; `edgebench pool certs` writes what TLS needs."""

from __future__ import annotations

import socket
import ssl
import subprocess

import pytest

pytest.importorskip("distributed", reason="dask distributed is not installed (pip install 'edgebench[pool]')")

from conftest import write_experiment  # noqa: E402
from sshd import free_port  # noqa: E402

from .conftest import CLI, worker_names  # noqa: E402

PLAIN_OFF_LOOPBACK = "plain tcp:// off loopback lets anyone who reaches it run code on every board; use TLS"


def test_pool_certs_writes_a_ca_and_a_key_per_role_that_only_its_owner_reads(tmp_path):
    out = subprocess.run([*CLI, "pool", "certs", str(tmp_path / "c")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "dask scheduler --tls-ca-file" in out.stdout and "--cluster tls://SCHED:8786 --tls" in out.stdout
    folder = tmp_path / "c"
    assert sorted(p.name for p in folder.iterdir()) == ["ca.pem", "client.key", "client.pem", "scheduler.key",
                                                        "scheduler.pem", "worker.key", "worker.pem"]  # no CA key
    for role in ("scheduler", "worker", "client"):
        assert (folder / f"{role}.key").stat().st_mode & 0o777 == 0o600
        context = ssl.create_default_context(cafile=folder / "ca.pem")  # the chain loads and matches its key
        context.load_cert_chain(folder / f"{role}.pem", folder / f"{role}.key")
    again = subprocess.run([*CLI, "pool", "certs", str(folder)], capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "ca.pem exists; --force makes a new CA" in again.stderr


def test_a_client_without_the_pools_certificate_is_refused(pool, tmp_path):
    host, port = pool["address"].removeprefix("tls://").split(":")
    # Trusting the CA but showing no certificate: the scheduler ends the handshake.
    assert _without_certificate(host, int(port), pool["tls"] / "ca.pem") in ("refused", "closed")
    # A certificate of another CA (someone's own `pool certs`): edgebench says so, exit 2, no run folder.
    subprocess.run([*CLI, "pool", "certs", str(tmp_path / "other")], check=True, capture_output=True, timeout=60)
    exp = write_experiment(tmp_path, **{'targets = ["local"]': 'targets = ["loop"]'})
    run = subprocess.run([*CLI, "run", str(exp), "--cluster", pool["address"], "--tls", str(tmp_path / "other"),
                          "--out", str(tmp_path / "r")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "no Dask scheduler answers there" in run.stderr, run.stderr[-2000:]
    assert "this pool's CA" in run.stderr and not (tmp_path / "r").exists()
    # No --tls at all for a tls:// scheduler: one line before anything connects.
    bare = subprocess.run([*CLI, "run", str(exp), "--cluster", pool["address"], "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=120)
    assert bare.returncode == 2 and "a TLS scheduler needs --tls DIR" in bare.stderr


def test_a_worker_without_the_pools_certificate_cannot_join(pool, tmp_path):
    subprocess.run([*CLI, "pool", "certs", str(tmp_path / "other")], check=True, capture_output=True, timeout=60)
    before = worker_names(pool["address"], pool["tls"])
    worker = subprocess.run([*CLI, "worker", "--scheduler", pool["address"], "--tls", str(tmp_path / "other"),
                             "--target", str(pool["boards"]["pi-b"]), "--name", "intruder"],
                            capture_output=True, text=True, timeout=120)
    assert worker.returncode == 2, worker.stderr[-2000:]
    assert worker.stderr.startswith(f"edgebench: error: --scheduler {pool['address']}: cannot join")
    assert "intruder" not in worker_names(pool["address"], pool["tls"]) and "intruder" not in before


def test_a_plain_address_off_loopback_is_refused_unless_insecure(tmp_path, sshd):
    exp = write_experiment(tmp_path)
    # 0.0.0.0 is not loopback; nothing listens there.
    address = f"tcp://0.0.0.0:{free_port()}"
    run = subprocess.run([*CLI, "run", str(exp), "--cluster", address, "--out", str(tmp_path / "r")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and PLAIN_OFF_LOOPBACK in run.stderr and "--insecure" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and not (tmp_path / "r").exists()
    profile = sshd.write_profile(tmp_path / "pi.toml")
    gone = sshd.write_profile(tmp_path / "gone.toml", port=free_port())  # nothing listens there
    meant = subprocess.run([*CLI, "worker", "--scheduler", address, "--insecure", "--target", str(gone)],
                           capture_output=True, text=True, timeout=120)  # past the address check, to the device's
    assert meant.returncode == 2 and meant.stderr.startswith("edgebench: error: target 'gone' is not usable")
    for argv in (["worker", "--scheduler", address, "--target", str(profile)],
                 ["search", str(exp), "--cluster", address, "--target", "pi", "--out", str(tmp_path / "r")]):
        refused = subprocess.run([*CLI, *argv], capture_output=True, text=True, timeout=120)
        assert refused.returncode == 2 and PLAIN_OFF_LOOPBACK in refused.stderr, refused.stderr[-2000:]


def test_loopback_and_tls_addresses_pass_the_check_and_plain_ones_elsewhere_do_not():
    from edgebench.errors import ConfigError
    from edgebench.pool.security import check_address, check_peers

    for ok in ("tcp://127.0.0.1:8786", "tcp://localhost:8786", "tcp://[::1]:8786", "127.0.0.2:8786", "inproc://x"):
        check_address(ok, None, False)
    check_address("tls://10.0.0.5:8786", "certs", False)
    check_address("tcp://10.0.0.5:8786", None, True)
    for bad, tls in (("tcp://10.0.0.5:8786", None), ("10.0.0.5:8786", None), ("ws://pi.lan:8786", None),
                     ("tls://10.0.0.5:8786", None), ("tcp://127.0.0.1:8786", "certs")):
        with pytest.raises(ConfigError):
            check_address(bad, tls, False)
    with pytest.raises(ConfigError, match="listens in the clear off loopback"):
        check_peers(["tls://10.0.0.5:8786", "tcp://10.0.0.6:40000"], False, "worker")
    check_peers(["tcp://127.0.0.1:40000", "tls://10.0.0.6:40000"], False, "worker")


def _without_certificate(host: str, port: int, ca) -> str:
    """A TLS client that trusts the pool's CA but has no certificate sends a few bytes: "refused"
    (an alert), "closed" (the connection ended unanswered) or "answered"."""
    context = ssl.create_default_context(cafile=ca)
    context.check_hostname = False
    try:
        with socket.create_connection((host, port), timeout=10) as raw, context.wrap_socket(raw) as tls:
            tls.sendall(b"\0" * 8)  # TLS 1.3: the refusal comes with the first read
            return "answered" if tls.recv(1) else "closed"
    except (ssl.SSLError, ConnectionError):
        return "refused"

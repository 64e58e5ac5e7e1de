"""Who may use the pool: Dask's own TLS with mutual authentication, and the rule for plain TCP.

    $ edgebench pool certs ~/edgebench-pool      # a CA and a cert/key for scheduler, worker, client

A Dask scheduler over plain TCP accepts any client, and its workers run whatever function a
client submits: anyone who reaches the port runs code on every board's host. So a scheduler
address is checked before any work (`check_address`): `tls://` needs `--tls DIR`; plain `tcp://`
is accepted on loopback only, unless `--insecure` says the user means it. With `--tls DIR` each
process loads DIR/ca.pem and its role's DIR/<role>.pem and .key into a
`distributed.security.Security` with `require_encryption`: Dask then verifies the peer's
certificate against the CA on both sides of every connection (scheduler, workers, client).

What this does not do: Dask gives every holder of a certificate from the CA the same rights (no
roles, no revocation), so a board's key submits jobs as a client's does; and TLS cannot tell
whether a board's numbers are true. README "Scale out" has the whole note.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from pathlib import Path

from edgebench.errors import ConfigError

ROLES = ("scheduler", "worker", "client")
ENCRYPTED = ("tls", "wss")  # Dask's schemes that carry TLS
LOOPBACK_NAMES = ("localhost", "ip6-localhost")


def cert_paths(folder: Path, role: str) -> tuple[Path, Path, Path]:
    """(ca.pem, <role>.pem, <role>.key) in `folder`."""
    folder = Path(folder).expanduser()
    return folder / "ca.pem", folder / f"{role}.pem", folder / f"{role}.key"


def write_certs(folder: Path, days: int = 365) -> list[Path]:
    """A new CA and one certificate and key per role in `folder` (keys 0600). The CA's own key
    is not kept: nothing on disk can sign more certificates, and re-running this (a new CA,
    every old certificate refused) is how a lost board's key is revoked."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)  # a little clock skew between machines
    until = now + dt.timedelta(days=days)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edgebench pool"),
                          x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = name("edgebench pool CA")
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(until)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    written = [folder / "ca.pem"]
    _write(written[0], ca.public_bytes(serialization.Encoding.PEM), 0o644)
    for role in ROLES:
        key = ec.generate_private_key(ec.SECP256R1())
        # Every role both listens and connects (the scheduler dials workers, workers dial each other).
        cert = (x509.CertificateBuilder().subject_name(name(f"edgebench {role}")).issuer_name(ca_name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now).not_valid_after(until)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                               critical=False)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
                .sign(ca_key, hashes.SHA256()))
        _, cert_path, key_path = cert_paths(folder, role)
        _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        _write(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()), 0o600)
        written += [cert_path, key_path]
    return written


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(path.name + ".part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, mode)  # an existing .part keeps its old mode through O_CREAT
    tmp.replace(path)


def security(tls: str | Path | None, role: str):
    """The `distributed.security.Security` of `role` from the folder `tls` (None: no TLS).
    A missing file is a config error naming it and how to make it."""
    if not tls:
        return None
    from distributed.security import Security

    ca, cert, key = cert_paths(Path(tls), role)
    for path in (ca, cert, key):
        if not path.is_file():
            raise ConfigError(f"--tls {tls}: no {path.name} there (make the files with `edgebench pool certs {tls}`; "
                              f"a {role} needs ca.pem, {role}.pem and {role}.key)")
    kwargs = {"tls_ca_file": str(ca), f"tls_{role}_cert": str(cert), f"tls_{role}_key": str(key)}
    return Security(require_encryption=True, **kwargs)


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def split_address(address: str) -> tuple[str, str]:
    """(scheme, host) of a Dask address: tcp://10.0.0.5:8786 -> ("tcp", "10.0.0.5")."""
    from urllib.parse import urlsplit

    parts = urlsplit(address if "://" in address else f"tcp://{address}")  # tcp: Dask's default scheme
    return parts.scheme.lower(), parts.hostname or ""


def check_address(address: str, tls: str | Path | None, insecure: bool, flag: str = "--cluster") -> None:
    """Refuse, before any work, an address the pool must not be used over: a `tls://` one
    without certificates, a plain one with them, and a plain one that leaves this machine
    unless `insecure`. Loopback over plain TCP is fine: only this machine can reach it."""
    scheme, host = split_address(address)
    if scheme in ENCRYPTED:
        if not tls:
            raise ConfigError(f"{flag} {address}: a TLS scheduler needs --tls DIR (or [run] tls) with ca.pem and "
                              "this side's certificate and key (`edgebench pool certs DIR` makes them)")
        return
    if scheme == "inproc":
        return
    if tls:
        raise ConfigError(f"{flag} {address}: --tls is given but the address is plain {scheme}://; "
                          f"use tls://{address.partition('://')[2] or address}")
    if is_loopback(host) or insecure:
        return
    rest = address.partition("://")[2] or address
    raise ConfigError(f"{flag} {address}: plain {scheme}:// off loopback lets anyone who reaches it run code on every "
                      f"board; use TLS (`edgebench pool certs DIR`, start the scheduler with its certs, then "
                      f"{flag} tls://{rest} --tls DIR) or pass --insecure if you mean it")


def check_peers(addresses: list[str], insecure: bool, what: str) -> None:
    """Refuse a pool whose scheduler or workers listen in the clear off loopback (a scheduler
    reached through 127.0.0.1 can still listen on every interface)."""
    if insecure:
        return
    for address in addresses:
        scheme, host = split_address(address)
        if scheme not in ENCRYPTED and scheme != "inproc" and not is_loopback(host):
            raise ConfigError(f"{what} {address} listens in the clear off loopback: anyone who reaches it can run "
                              "code there; start the pool with TLS (README 'Scale out') or pass --insecure if you mean it")

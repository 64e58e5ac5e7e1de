"""`edgebench pool certs DIR`: the certificates a TLS pool runs on, and the commands that use them.

    $ edgebench pool certs ~/edgebench-pool
    wrote a CA and certificates for scheduler, worker, client in ~/edgebench-pool ...
"""

from __future__ import annotations

import argparse
from pathlib import Path

from edgebench.errors import ConfigError

HELP = "the device pool's certificates (edgebench pool certs DIR)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="pool_command", metavar="ACTION", required=True)
    certs = sub.add_parser("certs", help="write a CA and a certificate and key for the scheduler, workers and client")
    certs.add_argument("dir", type=Path, help="folder to write ca.pem and <role>.pem/.key into")
    certs.add_argument("--days", type=int, default=365, help="validity (default: %(default)s)")
    certs.add_argument("--force", action="store_true", help="replace certificates already there (a new CA: "
                                                            "every machine needs the new files)")


def main(args: argparse.Namespace) -> int:
    import json

    from edgebench.pool.security import ROLES, cert_paths, write_certs

    folder = args.dir.expanduser()
    if args.days < 1:
        raise ConfigError("--days must be >= 1")
    there = [p for role in ROLES for p in cert_paths(folder, role) if p.exists()]
    if there and not args.force:
        raise ConfigError(f"{folder}: {there[0].name} exists; --force makes a new CA (every machine then needs "
                          "the new files)")
    try:
        import cryptography  # noqa: F401
    except ImportError:
        raise ConfigError("edgebench pool certs needs `cryptography`: pip install 'edgebench[pool]'") from None
    written = write_certs(folder, args.days)
    if args.json:
        print(json.dumps({"dir": str(folder), "files": [str(p) for p in written]}))
        return 0
    d = str(folder)
    print(f"""wrote a CA and a certificate and key for the scheduler, workers and client in {d}/
(the CA's key is not kept: run this again, with --force, to replace them all)

copy to the scheduler's machine: ca.pem scheduler.pem scheduler.key
  dask scheduler --tls-ca-file {d}/ca.pem --tls-cert {d}/scheduler.pem --tls-key {d}/scheduler.key \\
      --port 8786 --dashboard-address 127.0.0.1:8787
copy to each board's host:       ca.pem worker.pem worker.key
  edgebench worker --scheduler tls://SCHED:8786 --tls {d} --target pi-a.toml --board-class rpi4
keep where you run edgebench:    ca.pem client.pem client.key
  edgebench run experiment.toml --cluster tls://SCHED:8786 --tls {d} --targets rpi4
every key opens the pool: keep them 0600 and off shared folders""")
    return 0

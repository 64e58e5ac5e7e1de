"""`edgebench profile RUN_DIR --cluster ADDR`: profiles taken on the pool's boards.

The command is edgebench.analyze.profile's; with `--cluster`, each record is profiled as one job
on the board that measured it (its `board`), or on any board of its target's class when that
board has left the pool or several boards measured it, never while the board times another
job (the board's token, one thread per worker). Without `--cluster` it runs as it always did.
"""

from __future__ import annotations

import argparse

from edgebench.analyze import profile as command
from edgebench.errors import ConfigError

HELP = command.HELP


def add_arguments(parser: argparse.ArgumentParser) -> None:
    command.add_arguments(parser)
    parser.add_argument("--cluster", metavar="tls://HOST:PORT", help="profile on the Dask pool's boards (README 'Scale out')")
    parser.add_argument("--tls", metavar="DIR", help="the pool's certificates (edgebench pool certs DIR)")
    parser.add_argument("--insecure", action="store_true", help="allow a plain tcp:// scheduler that is not on loopback")


def main(args: argparse.Namespace) -> int:
    if not args.cluster:
        if args.tls or args.insecure:
            raise ConfigError("--tls/--insecure go with --cluster")
        return command.main(args)
    from edgebench.pool import Pool

    with Pool.open(args.cluster, 0, lambda _m: None, tls=args.tls, insecure=args.insecure) as pool:
        return command.main(args, opener=lambda profile, record: board_of(pool, profile, record))


def board_of(pool, profile, record: dict):
    """A RemoteTarget on the board that measured `record`, else on a board of its target's
    class; a record no live worker can take is a config error naming what the pool has."""
    from edgebench.pool.remote import RemoteTarget

    boards = pool.boards()
    measured = [b.strip() for b in str(record.get("board") or "").split(",") if b.strip()]
    if len(measured) == 1 and measured[0] in boards:
        board = measured[0]
        return RemoteTarget(pool, profile, f"board:{board}", [board])
    members = sorted(b for b, v in boards.items() if v["class"] == record["target"])
    if record["target"] in boards:
        members = [record["target"]]
    if not members:
        served = ", ".join(sorted({*boards, *(v["class"] for v in boards.values())})) or "none"
        raise ConfigError(f"{record['variant']} on {record['target']} (measured on {record.get('board') or '?'}): "
                          f"no worker in the pool serves that board or its class (boards and classes: {served})")
    if len(members) == 1:
        return RemoteTarget(pool, profile, f"board:{members[0]}", members)
    return RemoteTarget(pool, profile, f"class:{record['target']}", members)

"""`edgebench worker`: one Dask worker per physical device, started next to its access.

    $ edgebench worker --scheduler tls://10.0.0.5:8786 --tls certs/ --target targets/pi-a.toml --board-class rpi4

The worker has one thread and advertises resource tokens: `board:<name>` (the profile's name,
or --name) and `class:<class>` (--board-class, default: the board's own name), and `cpu` only
with --cpu (then it also builds variants; it must see the run folder). A measurement takes its
board's or its class's token, so two measurements never overlap on one device and a device
never measures while compressing. The target is checked before the worker joins the pool: an
unreachable device exits 2 here, not in the middle of a run; so does a scheduler that refuses
this worker's certificate (`--tls DIR`: DIR/ca.pem, worker.pem, worker.key), and a plain `tcp://`
scheduler off loopback without `--insecure` (edgebench.pool.security).
"""

from __future__ import annotations

import argparse

from edgebench.errors import ConfigError, TargetError

HELP = "serve one device to a Dask scheduler (edgebench run --cluster)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scheduler", required=True, metavar="tls://HOST:PORT", help="the Dask scheduler's address")
    parser.add_argument("--tls", metavar="DIR", help="certificates from `edgebench pool certs` (ca.pem, worker.pem, worker.key)")
    parser.add_argument("--insecure", action="store_true", help="allow a plain tcp:// scheduler that is not on loopback")
    parser.add_argument("--target", required=True, help="the device's target profile (name or .toml path)")
    parser.add_argument("--name", help="this board's name (default: the profile's name)")
    parser.add_argument("--board-class", metavar="CLASS",
                        help="device class this board belongs to; an experiment's target may name the class")
    parser.add_argument("--cpu", action="store_true", help="also build variants here (needs the run folder)")


def resources(name: str, board_class: str, cpu: bool) -> dict[str, float]:
    out = {f"board:{name}": 1.0, f"class:{board_class}": 1.0}
    return out | ({"cpu": 1.0} if cpu else {})


def main(args: argparse.Namespace) -> int:
    from edgebench.pool import require_dask
    from edgebench.pool.security import check_address, security
    from edgebench.targets import load_profile, open_target

    require_dask("edgebench worker")
    check_address(args.scheduler, args.tls, args.insecure, "--scheduler")
    sec = security(args.tls, "worker")

    profile = load_profile(args.target)
    name = args.name or profile.name
    board_class = args.board_class or name
    if ":" in name or ":" in board_class:
        raise ConfigError(f"--name/--board-class {name!r}/{board_class!r}: no ':' in a board or class name")
    target = open_target(profile)
    try:
        status = target.check()
    finally:
        target.close()
    if not status.reachable:
        raise TargetError(f"target {profile.name!r} is not usable: {'; '.join(status.problems)}")
    board = {"name": name, "class": board_class, "profile": profile}
    print(f"worker for board {name} (class {board_class}, runtimes {', '.join(profile.runtimes)}) "
          f"joining {args.scheduler}", flush=True)
    import asyncio

    asyncio.run(_serve(args.scheduler, board, resources(name, board_class, args.cpu), sec))
    return 0


async def _serve(address: str, board: dict, tokens: dict[str, float], sec=None) -> None:
    import asyncio
    import signal

    from distributed import Worker
    from distributed.comm import connect

    # One connection first: a scheduler that refuses this worker's certificate (or is not
    # there) is one line and exit 2 now; a Worker would retry it until its death timeout.
    args = sec.get_connection_args("worker") if sec else {}
    try:
        comm = await connect(address, timeout=10, **args)
    except (OSError, TypeError) as exc:
        raise ConfigError(f"--scheduler {address}: cannot join ({exc})"
                          + ("; are --tls's certificates from this pool's CA?" if sec else "")) from None
    await comm.close()
    async with Worker(address, nthreads=1, resources=tokens, name=board["name"], security=sec,
                      dashboard=False, death_timeout=60) as worker:
        worker.edgebench_board = board  # what the client reads (pool.boards) and jobs use
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: asyncio.ensure_future(worker.close()))
        await worker.finished()

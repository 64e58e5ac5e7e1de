"""`edgebench targets`: every profile, checked now — reachable, runtimes, and why not."""

from __future__ import annotations

import json

from edgebench.errors import EdgebenchError


def add_arguments(p) -> None:
    p.add_argument("names", nargs="*", help="profile names or .toml paths (default: every profile)")
    p.add_argument("--prepare", metavar="NAME", help="prepare a target (e.g. build the qemu-aarch64 rootfs)")
    p.add_argument("--strict", action="store_true", help="exit 1 when any listed target is unusable")


def main(args) -> int:
    from edgebench.progress import Log
    from edgebench.targets import list_profiles, load_profile, load_targets, open_target

    if args.prepare:
        target = open_target(load_profile(args.prepare))
        prepare = getattr(target, "prepare", None)
        if prepare is None:
            print(f"{args.prepare}: nothing to prepare")
            return 0
        prepare(log=Log(quiet=args.quiet))
        return 0
    profiles = load_targets(args.names) if args.names else [load_profile(p) for p in list_profiles().values()]
    if not profiles:
        raise EdgebenchError("no target profiles found (looked in ./targets and edgebench's targets/)")
    statuses = []
    for profile in profiles:
        target = open_target(profile)
        try:
            statuses.append((profile, target.check()))
        finally:
            target.close()
    bad = [s for _, s in statuses if not s.reachable or s.problems]
    if args.json:
        print(json.dumps([{**s.__dict__, "path": p.path} for p, s in statuses]))
    else:
        for profile, s in statuses:
            state = "ok" if s.reachable and not s.problems else ("reachable, with problems" if s.reachable else "UNREACHABLE")
            print(f"{s.name:16} {s.transport:6} {state}")
            for runtime, version in s.runtimes.items():
                print(f"    {runtime:12} {version or 'missing'}")
            for problem in s.problems:
                print(f"    ! {problem}")
            print(f"    profile: {profile.path}")
    return 1 if args.strict and bad else 0

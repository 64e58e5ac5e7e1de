"""`edgebench targets`: every profile, checked now — reachable, runtimes, and why not."""

from __future__ import annotations

import json
from pathlib import Path

from edgebench.errors import EdgebenchError
from edgebench.targets import TargetStatus


def add_arguments(p) -> None:
    p.add_argument("names", nargs="*", help="profile names or .toml paths (default: every profile)")
    p.add_argument("--prepare", metavar="NAME", help="prepare a target (e.g. build the qemu-aarch64 rootfs)")
    p.add_argument("--strict", action="store_true", help="exit 1 when any listed target is unusable")
    p.add_argument("--copy", nargs=2, metavar=("NAME", "PATH"),
                   help="write profile NAME (e.g. the rpi4 template) to PATH to edit, e.g. targets/mypi.toml")


def main(args) -> int:
    from edgebench.progress import Log
    from edgebench.targets import (
        copy_template,
        list_profiles,
        load_profile,
        load_targets,
        open_target,
    )

    if args.copy:
        dest = copy_template(*args.copy)
        print(json.dumps({"path": str(dest)}) if args.json else
              f"wrote {dest}: set host and user there, then `edgebench targets {dest}`")
        return 0
    if args.prepare:
        target = open_target(load_profile(args.prepare))
        try:
            if target.prepare(log=Log(quiet=args.quiet)) is None:  # hosts with nothing to build
                print(f"{args.prepare}: nothing to prepare")
        finally:
            target.close()
        return 0
    if args.names:
        profiles = [load_profile(p) for p in args.names if not Path(p).is_dir()]
        profiles += load_targets([p for p in args.names if Path(p).is_dir()])
    else:
        profiles = [load_profile(p) for p in list_profiles().values()]
    if not profiles:
        raise EdgebenchError("no target profiles found (looked in ./targets and edgebench's profiles/)")
    statuses = []
    for profile in profiles:
        if profile.template:  # an example to copy, not a device: nothing to reach
            statuses.append((profile, TargetStatus(profile.name, profile.transport, reachable=False,
                                                   problems=[f"template: copy it with `edgebench targets --copy "
                                                             f"{profile.name} targets/mypi.toml` and set host/user"])))
            continue
        target = open_target(profile)
        try:
            statuses.append((profile, target.check()))
        finally:
            target.close()
    bad = [s for p, s in statuses if (not s.reachable or s.problems) and not p.template]
    if args.json:
        print(json.dumps([{**s.__dict__, "path": p.path} for p, s in statuses]))
    else:
        for profile, s in statuses:
            state = ("template" if profile.template else "ok" if s.reachable and not s.problems
                     else "reachable, with problems" if s.reachable else "UNREACHABLE")
            print(f"{s.name:16} {s.transport:6} {state}")
            if s.machine:
                features = s.machine.get("cpu_features")
                print(f"    cpu          {s.machine.get('arch', '?')}, {s.machine.get('cpu', '?')}, "
                      f"{s.machine.get('cpu_count', '?')} cores; features: "
                      f"{' '.join(features) if features else 'none of note' if features == [] else 'unreadable'}")
            for runtime, version in s.runtimes.items():
                print(f"    {runtime:12} {version or 'missing'}")
            for note in s.notes:
                print(f"    note: {note}")
            for problem in s.problems:
                print(f"    ! {problem}")
            print(f"    profile: {profile.path}")
    return 1 if args.strict and bad else 0

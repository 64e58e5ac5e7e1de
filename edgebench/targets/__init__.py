"""Targets: where a variant runs. One file per way of reaching a device; this registry names them.

A target profile (a `.toml` file) says how to reach a device and what it has. The built-in
ones ship inside the package (`edgebench/profiles/`); a user's own live in `./targets/` or are
given by path. Every
target runs the same runner (`edgebench/device/runner.py`) and returns its JSON document as a dict;
targets differ only in how files travel and how the runner is started.

    >>> target = open_target(load_profile("local"))
    >>> result = target.measure(Path("model.onnx"), Path("inputs.npz"), "onnxruntime", RunOptions())
    >>> result["status"], result["latency_samples_ms"][:3]
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from edgebench.config import build, choice, read_toml, require
from edgebench.errors import ConfigError, did_you_mean

RUNNER_PATH = Path(__file__).resolve().parent.parent / "device" / "runner.py"
# Profiles shipped with edgebench are package data, found the same way from a checkout, an
# editable install and a wheel; a user's own profiles may sit in ./targets/ of the working
# directory, or be given as file paths.
BUILTIN_PROFILE_DIR = Path(__file__).resolve().parent.parent / "profiles"
POWER_SCOPES = ("core", "board")


@dataclass(frozen=True)
class Power:
    """What the energy estimate multiplies time by, and what the watts cover.

    scope "board": `active_w` is the whole device with every core busy and `idle_w` the device
    idle (a USB power meter's readings of a Pi); "core": `active_w` is the power of one busy
    core (what a desktop or server package costs per loaded core).
    """

    idle_w: float = 0.0
    active_w: float = 0.0
    scope: str = "core"
    source: str = "unknown"

    def __post_init__(self):
        choice(self.scope, POWER_SCOPES, "power.scope")
        require(self.idle_w >= 0 and self.active_w >= 0, "power: watts must be >= 0")


@dataclass(frozen=True)
class TargetProfile:
    name: str
    transport: str = "local"  # "local" | "qemu" | "ssh"
    description: str = ""
    host: str | None = None
    user: str | None = None
    port: int | None = None
    identity_file: str | None = None
    ssh_options: tuple[str, ...] = ()
    python: str = "python3"
    runtimes: tuple[str, ...] = ("onnxruntime", "tflite")
    threads: int | None = None  # None: the experiment's [run] threads
    taskset: str | None = None  # CPU list for core pinning, e.g. "2" or "0-3"
    cooldown_s: float = 0.0
    connect_timeout_s: float = 10.0
    run_timeout_s: float | None = None  # None: the experiment's [run] timeout_s
    remote_dir: str = "~/.cache/edgebench"
    rootfs: str | None = None  # qemu: prepared aarch64 root filesystem (default: the cache)
    cpu: str | None = None  # qemu: the emulated core (-cpu), default cortex-a72 (a Pi 4's)
    emulated: bool = False
    eval_limit: int = 0  # evaluate at most this many test inputs (0: all); for slow targets
    warmup: int | None = None  # override the experiment's measurement counts on slow targets
    min_runs: int | None = None
    min_seconds: float | None = None
    max_seconds: float | None = None
    rounds: int | None = None  # override the experiment's [run] rounds (e.g. 1 where starts are slow)
    # Before timing, the runner waits (at most cool_timeout_s) until the device is at or below
    # this temperature: a hot Pi throttles and its latency is not its normal one.
    max_temp_c: float | None = None
    cool_timeout_s: float = 120.0
    power: Power = field(default_factory=Power)
    # A built-in example of a device class (rpi4, rpi5): copied and edited, never run as it is.
    template: bool = False
    path: str | None = None  # the file it came from

    def __post_init__(self):
        choice(self.transport, tuple(TRANSPORTS), "transport")
        require(self.transport != "ssh" or bool(self.host), f"target {self.name!r}: ssh needs host")
        require(self.threads is None or self.threads >= 1, "threads must be >= 1")
        require(self.max_temp_c is None or self.max_temp_c > 0, "max_temp_c must be positive")


@dataclass(frozen=True)
class RunOptions:
    """How the runner measures; the profile's overrides are applied by `for_target`."""

    threads: int = 1
    warmup: int = 20
    min_runs: int = 200
    min_seconds: float = 1.0
    max_seconds: float = 30.0
    limit: int = 0
    timeout_s: float = 300.0
    rounds: int = 1  # measure in this many runner processes, interleaved with the other variants
    evaluate: bool = True  # predict every input (accuracy, logits); off for later rounds
    max_temp_c: float | None = None  # wait until the device is this cool before timing
    cool_timeout_s: float = 120.0

    def for_target(self, profile: TargetProfile) -> RunOptions:
        overrides = {
            "threads": profile.threads,
            "warmup": profile.warmup,
            "min_runs": profile.min_runs,
            "min_seconds": profile.min_seconds,
            "max_seconds": profile.max_seconds,
            "limit": profile.eval_limit or None,
            "timeout_s": profile.run_timeout_s,
            "rounds": profile.rounds,
            "max_temp_c": profile.max_temp_c,
            "cool_timeout_s": profile.cool_timeout_s if profile.max_temp_c else None,
        }
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def round(self, index: int) -> RunOptions:
        """The options of one of `rounds` runner processes: a share of the runs and time each,
        full warm-up each (a new process is cold), accuracy only in the first."""
        if self.rounds <= 1:
            return self
        return dataclasses.replace(
            self, min_runs=-(-self.min_runs // self.rounds), min_seconds=self.min_seconds / self.rounds,
            max_seconds=self.max_seconds / self.rounds, evaluate=index == 0, rounds=1,
        )  # fmt: skip

    def runner_args(self) -> list[str]:
        return [
            "--threads", str(self.threads), "--warmup", str(self.warmup),
            "--min-runs", str(self.min_runs), "--min-seconds", str(self.min_seconds),
            "--max-seconds", str(self.max_seconds), "--limit", str(self.limit),
        ] + ([] if self.evaluate else ["--no-eval"]) + (
            ["--max-temp-c", str(self.max_temp_c), "--cool-timeout-s", str(self.cool_timeout_s)]
            if self.max_temp_c else [])  # fmt: skip


@dataclass
class TargetStatus:
    """What `edgebench targets` shows: reachable now, runtimes and versions, why not."""

    name: str
    transport: str
    reachable: bool
    runtimes: dict = field(default_factory=dict)  # runtime -> version, or None if missing
    problems: list = field(default_factory=list)  # "what is wrong: what to do"
    machine: dict = field(default_factory=dict)


class Target(Protocol):
    profile: TargetProfile

    def measure(self, artifact: Path, data: Path, runtime: str, options: RunOptions,
                compare: tuple[Path, Path] | None = None) -> dict:
        """Run the runner on `artifact`; return its JSON document (status ok or error).
        `compare` = (artifact, data) is timed interleaved with it in the same process (A/B)."""

    def check(self) -> TargetStatus:
        """Is the target usable now, and with which runtimes?"""

    def close(self) -> None: ...


def _transports() -> dict:
    # Imported on use: each transport pulls in what it needs only when a profile names it.
    from edgebench.targets.local import LocalTarget
    from edgebench.targets.qemu import QemuTarget
    from edgebench.targets.ssh import SshTarget

    return {"local": LocalTarget, "qemu": QemuTarget, "ssh": SshTarget}


TRANSPORTS = ("local", "qemu", "ssh")


def open_target(profile: TargetProfile) -> Target:
    return _transports()[profile.transport](profile)


def profile_dirs() -> list[Path]:
    dirs = [Path.cwd() / "targets", BUILTIN_PROFILE_DIR]
    out = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in [o.resolve() for o in out]:
            out.append(d)
    return out


def list_profiles() -> dict[str, Path]:
    """Every profile name that can be used, and its file."""
    found: dict[str, Path] = {}
    for d in reversed(profile_dirs()):  # the working directory's own win
        for p in sorted(d.glob("*.toml")):
            found[p.stem] = p
    return found


def load_profile(name_or_path: str | Path) -> TargetProfile:
    """A profile by name (from targets/), or from a .toml file path."""
    text = str(name_or_path)
    path = Path(text).expanduser()
    if not (text.endswith(".toml") or path.is_file()):
        known = list_profiles()
        if text not in known:
            raise ConfigError(f"unknown target {text!r}{did_you_mean(text, known)}; "
                              "give a profile name from `edgebench targets` or a .toml path")
        path = known[text]
    raw = read_toml(path, "target profile")
    raw.setdefault("name", path.stem)
    return build(TargetProfile, {**raw, "path": str(path)}, f"target profile {path}")


def load_targets(names: list[str] | tuple[str, ...]) -> list[TargetProfile]:
    """Profiles to run on, for names, files, or folders of .toml files; templates are refused."""
    out = []
    for name in names:
        p = Path(name).expanduser()
        if p.is_dir():
            files = sorted(p.glob("*.toml"))
            if not files:
                raise ConfigError(f"target folder {p} holds no .toml profiles")
            out.extend(load_profile(f) for f in files)
        else:
            out.append(load_profile(name))
    for profile in out:
        if profile.template:
            raise ConfigError(f"target {profile.name!r} is a template: copy it with `edgebench targets "
                              f"--copy {profile.name} targets/mypi.toml`, set host and user there, "
                              "then use --targets targets/mypi.toml")
    return out


def copy_template(name: str, dest: str | Path) -> Path:
    """Write the profile `name` to `dest` as a profile of the user's own (not a template)."""
    import re

    source = Path(load_profile(name).path or "")
    dest = Path(dest).expanduser()
    if dest.suffix != ".toml":
        dest = dest / f"{name}.toml" if dest.is_dir() else dest.with_suffix(".toml")
    if dest.exists():
        raise ConfigError(f"{dest} exists: choose another path or remove it")
    text = re.sub(r"(?m)^template\s*=.*\n", "", source.read_text())
    text = re.sub(r'(?m)^name\s*=\s*".*"', f'name = "{dest.stem}"', text, count=1)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(text)
    return dest


def parse_runner_output(stdout: str, returncode: int, stderr: str = "") -> dict:
    """The runner's JSON document, or an error dict that says what went wrong."""
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                break
    tail = " | ".join(stderr.strip().splitlines()[-3:])
    how = f"killed by signal {-returncode}" if returncode < 0 else f"exit status {returncode}"
    return {"status": "error", "error": f"runner failed ({how}) with no result: {tail or 'no output'}"}

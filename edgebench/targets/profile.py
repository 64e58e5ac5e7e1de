"""Target profiles: a host, the runtimes it has, measurement settings and power, each its own table.

Built-in profiles ship inside the package (`edgebench/profiles/`); a user's own live in
`./targets/` or are given by path. The format (every table and key optional but `name`;
`[host]` keys depend on its transport, see `edgebench.hosts.<transport>`):

    name = "rpi4"
    description = "Raspberry Pi 4 Model B, 64-bit Raspberry Pi OS"
    runtimes = ["onnxruntime", "tflite"]  # what the device has
    emulated = false                      # true: timings are emulated, and say so
    template = false                      # true: an example to copy (`edgebench targets --copy`)

    [host]                                # how the device is reached
    transport = "ssh"                     # "local" (default) | "qemu" | "ssh"
    host = "raspberrypi.local"            # ssh: host, user, port, identity_file, ssh_options,
    user = "pi"                           #   python, remote_dir, connect_timeout_s
    python = "~/edgebench-venv/bin/python"  # local: python; qemu: cpu, rootfs

    [measure]                             # overrides of the experiment's [run] for this target:
    threads = 4                           # threads, warmup, min_runs, min_seconds, max_seconds,
    cooldown_s = 5.0                      # timeout_s, rounds, eval_limit, max_temp_c,
    max_temp_c = 60.0                     # cool_timeout_s, cooldown_s, taskset
                                          # (declared once: edgebench.config.measure_settings.Measure)
    [power]                               # for the energy estimate (see Power)
    scope = "board"
    idle_w = 2.7
    active_w = 6.4
    source = "where these numbers come from"

    [runtime.openvino]                    # options for one runtime's adapter, passed to the
    inference_precision = "f32"           # runner as --runtime-option KEY=VALUE

A profile in the older flat form (`transport`, `host`, `threads`, `run_timeout_s`... at the
top level) still loads: its keys are moved into these tables.

    >>> profile = load_profile("qemu-aarch64")
    >>> profile.transport, profile.measure["rounds"]
    ('qemu', 1)
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path

from edgebench.config import build, choice, read_toml, require
from edgebench.config.measure_settings import Measure, measure_keys
from edgebench.errors import ConfigError, did_you_mean
from edgebench.hosts import HOSTS, HostSettings

# Profiles shipped with edgebench are package data, found the same way from a checkout, an
# editable install and a wheel; a user's own profiles may sit in ./targets/ of the working
# directory, or be given as file paths.
BUILTIN_PROFILE_DIR = Path(__file__).resolve().parent.parent / "profiles"
POWER_SCOPES = ("core", "board")
# The flat form's keys and their tables (and new names) in this one.
FLAT_HOST_KEYS = ("transport", "host", "user", "port", "identity_file", "ssh_options", "python", "remote_dir",
                  "connect_timeout_s", "rootfs", "cpu")  # fmt: skip
FLAT_MEASURE_KEYS = {**{k: k for k in measure_keys() if k != "timeout_s"}, "run_timeout_s": "timeout_s"}


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


def _local_settings() -> HostSettings:
    return HOSTS.get("local").Settings()


@dataclass(frozen=True)
class TargetProfile:
    """A target: how to reach it (`host`), what it runs, how it measures, what it draws."""

    name: str
    description: str = ""
    runtimes: tuple[str, ...] = ("onnxruntime", "tflite")
    emulated: bool = False
    host: HostSettings = field(default_factory=_local_settings)  # [host], its transport's settings
    measure: dict = field(default_factory=dict)  # [measure]: overrides of edgebench.config.measure_settings.Measure
    runtime: dict = field(default_factory=dict)  # [runtime.<name>]: that runtime's adapter options
    power: Power = field(default_factory=Power)
    # A built-in example of a device class (rpi4, rpi5): copied and edited, never run as it is.
    template: bool = False
    path: str | None = None  # the file it came from

    @property
    def transport(self) -> str:
        return self.host.transport

    def runtime_options(self, runtime: str) -> list[str]:
        """The runner's `--runtime-option KEY=VALUE` arguments for `runtime`."""
        out = []
        for key, value in (self.runtime.get(runtime) or {}).items():
            text = ("true" if value else "false") if isinstance(value, bool) else str(value)
            out += ["--runtime-option", f"{key}={text}"]
        return out


def profile_from_table(raw: dict, where: str, ignored: list[str] | None = None) -> TargetProfile:
    """A TargetProfile from a TOML table (a profile file, or a run manifest's copy of one).

    An unknown key is an error naming the nearest one, unless `ignored` is given: then it is
    left out and its dotted name added there (a manifest written by a newer edgebench).
    """
    raw = from_flat(raw) if _is_flat(raw) else dict(raw)
    for key in raw:
        table = None if key == "host" else "host" if key in FLAT_HOST_KEYS else "measure" if key in FLAT_MEASURE_KEYS else None
        if table and ignored is None:
            raise ConfigError(f"{where}: {key!r} belongs in the [{table}] table "
                              f"(as {FLAT_MEASURE_KEYS.get(key, key)!r})")  # fmt: skip
    host_table, measure, runtime = (_table(raw.pop(key, None), key, where) for key in ("host", "measure", "runtime"))
    transport = host_table.pop("transport", "local")
    try:
        settings_type = HOSTS.get(transport).Settings
    except ConfigError as exc:
        raise ConfigError(f"{where}: [host] transport: {exc}") from None
    if ignored is not None:
        raw = _known(TargetProfile, raw, ignored, "")
        host_table = _known(settings_type, host_table, ignored, "host.")
        ignored.extend(f"measure.{k}" for k in measure if k not in measure_keys())
        measure = {k: v for k, v in measure.items() if k in measure_keys()}
    settings = build(settings_type, host_table, f"{where} [host]")
    unknown = [k for k in measure if k not in measure_keys()]
    if unknown:
        raise ConfigError(f"{where} [measure]: unknown key {unknown[0]!r}{did_you_mean(unknown[0], measure_keys())}")
    given = build(Measure, measure, f"{where} [measure]")  # types and ranges checked, ints made floats
    profile = build(TargetProfile, raw, where)
    return dataclasses.replace(profile, host=settings, measure={k: getattr(given, k) for k in measure},
                               runtime=_runtime_tables(runtime, where))  # fmt: skip


def _is_flat(raw: dict) -> bool:
    if isinstance(raw.get("host"), dict) or "measure" in raw:
        return False
    return "transport" in raw or isinstance(raw.get("host"), str) or any(k in raw for k in FLAT_MEASURE_KEYS)


def from_flat(flat: dict) -> dict:
    """The flat form's keys moved into [host] and [measure] (None values and, as that form
    allowed, host keys another transport uses are left out)."""
    out = {k: v for k, v in flat.items() if k not in FLAT_HOST_KEYS and k not in FLAT_MEASURE_KEYS}
    transport = flat.get("transport") or "local"
    applies = {f.name for f in dataclasses.fields(HOSTS.get(transport).Settings)} if transport in HOSTS else set()
    out["host"] = {k: flat[k] for k in FLAT_HOST_KEYS if flat.get(k) is not None and (k in applies or not applies)}
    out["measure"] = {new: flat[old] for old, new in FLAT_MEASURE_KEYS.items() if flat.get(old) is not None}
    if not flat.get("max_temp_c"):  # cool_timeout_s only ever meant something with max_temp_c
        out["measure"].pop("cool_timeout_s", None)
    return out


def _table(value: object, key: str, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: {key} must be a table ([{key}]), got {value!r}")
    return dict(value)


def _known(cls: type, table: dict, ignored: list[str], prefix: str) -> dict:
    """`table` without the keys `cls` (or a dataclass field of it, one level down) lacks."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    ignored.extend(f"{prefix}{k}" for k in table if k not in fields)
    out = {k: v for k, v in table.items() if k in fields}
    for key, value in out.items():
        if dataclasses.is_dataclass(hints[key]) and isinstance(value, dict) and key != "host":
            out[key] = _known(hints[key], value, ignored, f"{prefix}{key}.")
    return out


def _runtime_tables(tables: dict, where: str) -> dict:
    from edgebench.runtimes import RUNTIMES

    for name, options in tables.items():
        if name not in RUNTIMES:
            raise ConfigError(f"{where} [runtime.{name}]: unknown runtime{did_you_mean(name, RUNTIMES.names())}")
        if not isinstance(options, dict) or any(isinstance(v, (dict, list)) for v in options.values()):
            raise ConfigError(f"{where} [runtime.{name}]: expected KEY = value pairs (strings, numbers, booleans)")
    return {name: dict(options) for name, options in tables.items()}


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
                              "give a profile name from `edgebench targets` or a .toml path")  # fmt: skip
        path = known[text]
    raw = read_toml(path, "target profile")
    raw.setdefault("name", path.stem)
    return profile_from_table({**raw, "path": str(path)}, f"target profile {path}")


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
                              "then use --targets targets/mypi.toml")  # fmt: skip
    return out


def copy_template(name: str, dest: str | Path) -> Path:
    """Write the profile `name` to `dest` as a profile of the user's own (not a template)."""
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

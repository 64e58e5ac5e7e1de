"""Experiment files: TOML read into frozen dataclasses, validated with clear errors.

What the user writes, read before any stage runs: this package (the experiment file) and
`measure_settings` (every measurement setting and its default, which a target profile's
`[measure]` overrides). Method and runtime names are checked against the tables in
`edgebench.registry`, so reading an experiment imports no stage.

    >>> exp = load_experiment("experiment.toml")      # or demo_experiment()
    >>> exp.variants[0].name
    'int8'

An unknown key is an error that names it and the nearest valid key; a wrong type or an
impossible value names the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgebench.config.measure_settings import Measure
from edgebench.config.schema import build, choice, read_toml, require  # noqa: F401 - the package's names
from edgebench.config.task import TaskConfig
from edgebench.errors import ConfigError, did_you_mean

DEMO_PATH = Path(__file__).resolve().parent.parent / "demo.toml"
# `edgebench init --task NAME`: the built-in demo experiment of each task that has one.
DEMOS = {"classify": DEMO_PATH, "detect": DEMO_PATH.with_name("demo_detect.toml")}


@dataclass(frozen=True)
class ModelConfig:
    factory: str = "demo_cnn"
    weights: str | None = None
    kwargs: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.weights is not None:
            require(Path(self.weights).expanduser().is_file(), f"weights = {self.weights!r}: file not found")


# The model names edgebench.model.factories registers (tests/test_structure.py checks they agree): here,
# so that an experiment naming one is validated without importing torch.
BUILTIN_MODELS = ("demo_cnn", "mobilenet", "shufflenet", "resnet", "tiny_detector")
BUILTIN_SOURCES = ("digits", "cluttered-digits", "digit-scenes")
NORMALIZE_KINDS = ("none", "standardize")


@dataclass(frozen=True)
class DataConfig:
    """`[data]`: where the data comes from and the preprocessing the model expects.

        >>> DataConfig(source="cluttered-digits", normalize="standardize").normalize
        'standardize'
        >>> DataConfig(image_range=(-1.0, 1.0), normalize={"mean": [0.0], "std": [0.5]}).image_range
        (-1.0, 1.0)

    Nothing is applied to the inputs unless declared here (DESIGN: the user's preprocessing
    is never changed unasked): `normalize = "none"` by default.
    """

    source: str = "digits"
    image_size: int | None = None
    grayscale: bool | None = None  # image folders: None = as the images are (RGB unless every one is gray)
    test_fraction: float = 0.2
    calibration_size: int = 128
    # "none" | "standardize" (the training split's per-channel mean/std) | {mean = [..], std = [..]}
    normalize: str | dict = "none"
    # Pixels 0..255 (0..16 for "digits") are mapped linearly onto [low, high]; default [0, 1].
    # Image folders and built-in sets only: a .npz's arrays are used as they are.
    image_range: tuple[float, ...] | None = None
    # An image folder's COCO-format annotation file (detection; edgebench.model.coco).
    annotations: str | None = None
    # The user's own loader, "package.module:function"(seed) -> a dict of arrays named as in a .npz
    # (x_train, y_train, x_test, y_test, or x_train:<name>...); `source` is then only a label.
    loader: str | None = None

    def __post_init__(self):
        require(0 < self.test_fraction < 1, f"test_fraction = {self.test_fraction}: must be between 0 and 1")
        require(self.calibration_size > 0, "calibration_size must be positive")
        require(self.image_size is None or self.image_size >= 4, "image_size must be at least 4")
        require(self.loader is None or (":" in self.loader and all(self.loader.split(":", 1))),
                f'loader = {self.loader!r}: expected "package.module:function"')
        if self.annotations is not None:
            require(Path(self.annotations).expanduser().is_file(), f"annotations = {self.annotations!r}: file not found")
            require(Path(self.source).expanduser().is_dir(), f"annotations need source = an image folder, got {self.source!r}")
        if self.source not in BUILTIN_SOURCES and self.loader is None:
            require(Path(self.source).expanduser().exists(),
                    f"source = {self.source!r}: no such file or folder "
                    f"(use {' or '.join(repr(s) for s in BUILTIN_SOURCES)}, a .npz file or an image folder)")
        _check_normalize(self.normalize)
        if self.image_range is not None:
            require(len(self.image_range) == 2 and self.image_range[0] < self.image_range[1],
                    f"image_range = {list(self.image_range)}: needs [low, high] with low < high, e.g. [0.0, 1.0]")
            require(not str(self.source).endswith(".npz"),
                    "image_range applies to image folders and built-in sets; a .npz's arrays are used as they are "
                    "(scale them before saving, or use normalize)")


def _check_normalize(value: str | dict) -> None:
    if isinstance(value, str):
        choice(value, NORMALIZE_KINDS, "normalize")
        return
    for key in value:
        require(key in ("mean", "std"), f"normalize: unknown key {key!r}{did_you_mean(key, ['mean', 'std'])}")
    for key in ("mean", "std"):
        values = value.get(key)
        require(values is not None, 'normalize: a table needs both mean and std, e.g. { mean = [0.5], std = [0.25] }')
        require(isinstance(values, (list, tuple)) and len(values) > 0
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values),
                f"normalize.{key} = {values!r}: expected a list of numbers, one per channel")
    require(len(value["mean"]) == len(value["std"]),
            f"normalize: mean has {len(value['mean'])} values, std has {len(value['std'])}")
    require(all(v > 0 for v in value["std"]), f"normalize.std = {list(value['std'])}: every value must be > 0")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    lr: float = 0.01
    batch_size: int = 64
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    threads: int = 2

    def __post_init__(self):
        require(self.epochs >= 0, "epochs must be >= 0")
        require(self.lr > 0, "lr must be positive")
        require(self.batch_size > 0, "batch_size must be positive")
        choice(self.optimizer, ("sgd", "adam"), "optimizer")


@dataclass(frozen=True)
class RunConfig:
    """`[run]`: where and with what to measure; the measurement settings' defaults are
    declared once, in `edgebench.config.measure_settings.Measure` (a profile's `[measure]` overrides them)."""

    targets: tuple[str, ...] = ("local",)
    runtimes: tuple[str, ...] = ("onnxruntime", "tflite")
    threads: int = Measure.threads
    warmup: int = Measure.warmup
    min_runs: int = Measure.min_runs
    min_seconds: float = Measure.min_seconds
    max_seconds: float = Measure.max_seconds
    timeout_s: float = Measure.timeout_s
    rounds: int = Measure.rounds
    # Latency: each variant timed beside its baseline in the same runner process (false: alone),
    # rounds added until the ratio's 95 % interval is within ±precision, at most max_rounds.
    paired: bool = Measure.paired
    precision: float = Measure.precision
    max_rounds: int = Measure.max_rounds
    # Per-layer profiles during the run (`edgebench profile` after it does the same): false, true
    # (edgebench.measure.profiling.DEFAULT_RUNS profiled runs) or a number of profiled runs.
    profile: bool | int = False
    # A Dask scheduler (tcp://HOST:8786) whose device workers measure and whose `cpu` workers
    # build (edgebench.pool); `jobs`: a local cluster of that many build processes instead.
    cluster: str = ""
    jobs: int = 0
    tls: str = ""  # a folder from `edgebench pool certs` (ca.pem, client.pem, client.key): a tls:// cluster
    insecure: bool = False  # allow a plain tcp:// cluster off loopback (edgebench.pool.security)

    def __post_init__(self):
        require(self.rounds >= 1, "rounds must be >= 1")
        require(0 <= self.precision < 1, "precision must be in [0, 1) (0.03: the ratio to the baseline within ±3 %)")
        require(self.profile is True or self.profile >= 0, "profile must be true, false or a number of runs >= 1")
        require(self.jobs >= 0, "jobs must be >= 0")
        require(not self.cluster or "://" in self.cluster, "cluster (--cluster or [run] cluster) must be a scheduler address like tls://HOST:8786")
        from edgebench.registry import RUNTIMES  # light: declarations only

        for r in self.runtimes:
            choice(r, tuple(RUNTIMES.names()), "runtimes")
        require(self.threads >= 1, "threads must be >= 1")
        require(self.min_runs >= 1, "min_runs must be >= 1")
        require(self.timeout_s > 0, "timeout_s must be positive")


@dataclass(frozen=True)
class Variant:
    name: str
    steps: tuple = ()  # of step objects from edgebench.compress
    companion_of: str | None = None  # made because a step of that variant asked for it

    @property
    def parent(self) -> str | None:
        return None if not self.steps else "baseline"


@dataclass(frozen=True)
class Experiment:
    name: str = "experiment"
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    run: RunConfig = field(default_factory=RunConfig)
    variants: tuple[Variant, ...] = ()
    search: dict = field(default_factory=dict)  # [search]: read and checked by `edgebench search`
    source: str | None = None  # the file it came from

    def to_dict(self) -> dict:
        """The resolved experiment as plain data (for manifest.json)."""
        out = dataclasses.asdict(self)
        out["variants"] = [
            {"name": v.name, "steps": [step_to_dict(s) for s in v.steps],
             **({"companion_of": v.companion_of} if v.companion_of else {})}
            for v in self.variants
        ]  # fmt: skip
        return out


def step_to_dict(step: Any) -> dict:
    return {"method": step.method, **dataclasses.asdict(step)}


def parse_step(table: dict, where: str) -> Any:
    # Light: method modules import torch only inside `apply`, so reading an experiment does not.
    from edgebench.registry import METHODS

    if not isinstance(table, dict) or "method" not in table:
        raise ConfigError(f"{where}: a step needs a method (one of {', '.join(METHODS.names())})")
    params = dict(table)
    method = params.pop("method")
    if method not in METHODS:
        raise ConfigError(f"{where}: unknown method {method!r}{did_you_mean(method, METHODS.names())}")
    return build(METHODS.get(method), params, f"{where} ({method})")


def parse_experiment(raw: dict, source: str | None = None) -> Experiment:
    where = source or "experiment"
    raw = dict(raw)
    variants_raw = raw.pop("variant", [])
    allowed = {f.name for f in dataclasses.fields(Experiment)} - {"variants", "source"} | {"variant"}
    for key in raw:
        if key not in allowed:
            raise ConfigError(f"{where}: unknown key {key!r}{did_you_mean(key, allowed)}")
    exp = build(Experiment, raw, where)
    if not isinstance(variants_raw, list):
        raise ConfigError(f"{where}: [[variant]] must be an array of tables")
    variants, seen = [], {"baseline"}
    for i, v in enumerate(variants_raw):
        vw = f"{where}: variant[{i}]"
        if not isinstance(v, dict):
            raise ConfigError(f"{vw}: expected a table")
        unknown = set(v) - {"name", "steps"}
        if unknown:
            key = sorted(unknown)[0]
            raise ConfigError(f"{vw}: unknown key {key!r}{did_you_mean(key, ['name', 'steps'])}")
        name = v.get("name")
        if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
            raise ConfigError(f"{vw}: needs a name usable as a folder name, got {name!r}")
        if name in seen:
            raise ConfigError(f"{vw}: variant name {name!r} is used twice (baseline is reserved)")
        seen.add(name)
        steps = v.get("steps", [])
        if not isinstance(steps, list) or not steps:
            raise ConfigError(f"{vw} ({name}): steps must be a non-empty list of {{method = ...}} tables")
        variant = Variant(name, tuple(parse_step(s, f"{vw} ({name}).steps[{j}]") for j, s in enumerate(steps)))
        variants.append(variant)
        # A step may ask for companion variants, e.g. distillation's same student trained
        # without the teacher, so the gain shows on the chart.
        for step in variant.steps:
            for extra_name, extra_steps in getattr(step, "companions", lambda _: [])(variant):
                # The same companion asked for twice (e.g. one student without KD for three
                # KD kinds) is made once.
                signature = [step_to_dict(s) for s in extra_steps]
                if any([step_to_dict(s) for s in v.steps] == signature for v in variants):
                    continue
                if extra_name not in seen:
                    seen.add(extra_name)
                    variants.append(Variant(extra_name, tuple(extra_steps), companion_of=name))
    return dataclasses.replace(exp, variants=tuple(variants), source=source)


def experiment_from_dict(resolved: dict) -> Experiment:
    """The experiment a run's manifest.json recorded (the inverse of Experiment.to_dict)."""
    raw = {k: v for k, v in resolved.items() if k not in ("variants", "source")}
    # Companions are made again by the steps that ask for them.
    raw["variant"] = [
        {"name": v["name"], "steps": v["steps"]} for v in resolved.get("variants", []) if not v.get("companion_of")
    ]
    return parse_experiment(raw, resolved.get("source") or "manifest.json")


def load_experiment(path: str | Path | None = None) -> Experiment:
    """Read an experiment file; None reads the built-in demo."""
    path = Path(path) if path else DEMO_PATH
    raw = read_toml(path, "experiment file")
    # Relative paths in a file are relative to that file, not to the working directory.
    for section, key, keep in (("model", "weights", ()), ("data", "source", BUILTIN_SOURCES)):
        table = raw.get(section)
        if isinstance(table, dict) and isinstance(table.get(key), str) and table[key] not in keep:
            p = Path(table[key]).expanduser()
            table[key] = str(p if p.is_absolute() else path.parent / p)
    return parse_experiment(raw, str(path))


def demo_experiment() -> Experiment:
    return load_experiment(DEMO_PATH)


def resumed_experiment(run_dir: Path) -> Experiment:
    """The experiment an interrupted run was started with, from its manifest."""
    import json

    from edgebench.errors import EdgebenchError

    manifest = Path(run_dir) / "manifest.json"
    if not manifest.is_file():
        raise EdgebenchError(f"--resume {run_dir}: not a run folder (no manifest.json)")
    return experiment_from_dict(json.loads(manifest.read_text())["experiment"])


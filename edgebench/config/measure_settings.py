"""How the runner measures: the one declaration of every measurement setting and its default.

The experiment's `[run]` table takes its defaults from here; a target profile's `[measure]`
table overrides any of them for that target (a slow emulated target measures less); the
result becomes the runner's arguments. The runner's own argparse defaults equal these (a test
checks), so a runner started by hand measures the same way.

    >>> from edgebench.config.measure_settings import Measure
    >>> options = Measure(threads=4).overridden({"min_runs": 5, "eval_limit": 100})
    >>> options.runner_args()[:4]
    ['--threads', '4', '--warmup', '20']
    >>> [o.min_runs for o in (options.round(0), options.round(1))]   # with rounds = 3
    [2, 2]
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from edgebench.errors import ConfigError


@dataclass(frozen=True)
class Measure:
    """One target's measurement settings (all optional in TOML; these are the defaults)."""

    threads: int = 1
    warmup: int = 20
    min_runs: int = 200
    min_seconds: float = 1.0
    max_seconds: float = 30.0
    timeout_s: float = 300.0  # one runner process, start to end
    # Each variant is measured in this many runner processes, interleaved with the other
    # variants (asv's approach): a burst of load from neighbours then hits a slice of every
    # variant instead of all of one, so in-run latency ratios stay fair.
    rounds: int = 3
    # Each variant's rounds time it beside its target/runtime's baseline, in the same runner
    # process, in alternating ~5 ms blocks: a slow spell of the machine hits both, so their ratio
    # holds where absolute p50s do not (identical models under load: 0.029-0.046 ms per process
    # one by one; sd of the per-round p50 ratio 0.4 % interleaved). False: each model alone.
    paired: bool = True
    # Rounds are added until the 95 % interval of the ratio to the baseline is within
    # ±precision (0.03: ±3 %), at most `max_rounds` rounds (never fewer than `rounds`) and
    # `max_seconds` of a variant's runner time; 0 keeps `rounds` fixed.
    precision: float = 0.03
    max_rounds: int = 10
    eval_limit: int = 0  # evaluate at most this many test inputs (0: all); for slow targets
    # Before timing, the runner waits (at most cool_timeout_s) until the device is at or below
    # this temperature: a hot Pi throttles and its latency is not its normal one.
    max_temp_c: float | None = None
    cool_timeout_s: float = 120.0
    cooldown_s: float = 0.0  # pause between the end of one runner process and the next start
    taskset: str | None = None  # pin the runner to these CPUs (Linux `taskset -c`), e.g. "3" or "0-3"
    evaluate: bool = True  # predict every input (accuracy, logits); off for rounds after the first

    def __post_init__(self):
        checks = [
            (self.threads >= 1, "threads must be >= 1"),
            (self.min_runs >= 1, "min_runs must be >= 1"),
            (self.rounds >= 1, "rounds must be >= 1"),
            (0 <= self.precision < 1, "precision must be in [0, 1) (0.03: the ratio to the baseline within ±3 %)"),
            (self.timeout_s > 0, "timeout_s must be positive"),
            (self.eval_limit >= 0, "eval_limit must be >= 0"),
            (self.max_temp_c is None or self.max_temp_c > 0, "max_temp_c must be positive"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    def overridden(self, overrides: dict) -> Measure:
        """These settings with a profile's `[measure]` keys in their place."""
        return dataclasses.replace(self, **overrides)

    def for_target(self, profile) -> Measure:
        """These settings as `profile` (a TargetProfile) measures: its `[measure]` overrides."""
        return self.overridden(profile.measure)

    def round(self, index: int) -> Measure:
        """The options of one of `rounds` runner processes: a share of the runs and time each,
        full warm-up each (a new process is cold), accuracy only in the first."""
        if self.rounds <= 1:  # rounds added for precision predict nothing either
            return self if index == 0 else dataclasses.replace(self, evaluate=False)
        return dataclasses.replace(
            self, min_runs=-(-self.min_runs // self.rounds), min_seconds=self.min_seconds / self.rounds,
            max_seconds=self.max_seconds / self.rounds, evaluate=index == 0, rounds=1,
        )  # fmt: skip

    def runner_args(self) -> list[str]:
        """The runner's command-line arguments for these settings."""
        args = ["--threads", str(self.threads), "--warmup", str(self.warmup),
                "--min-runs", str(self.min_runs), "--min-seconds", str(self.min_seconds),
                "--max-seconds", str(self.max_seconds), "--limit", str(self.eval_limit)]  # fmt: skip
        if not self.evaluate:
            args.append("--no-eval")
        if self.max_temp_c:
            args += ["--max-temp-c", str(self.max_temp_c), "--cool-timeout-s", str(self.cool_timeout_s)]
        return args


def measure_keys() -> tuple[str, ...]:
    """The keys a profile's `[measure]` table may set (every setting but the per-round flag)."""
    return tuple(f.name for f in dataclasses.fields(Measure) if f.name != "evaluate")

"""Targets: where a variant runs. A target is a profile: a Host, the runtimes it has,
measurement settings and power (`edgebench.targets.profile`, which documents the format).

Measuring and checking are written once (`edgebench.targets.target.Target`) on top of the
profile's host (`edgebench.hosts`: local, qemu, ssh). Every target runs the same runner
(`edgebench/device/`) and returns its JSON document as a dict.

    >>> target = open_target(load_profile("local"))
    >>> result = target.measure(Path("model.onnx"), Path("inputs.npz"), "onnxruntime", Measure())
    >>> result["status"], result["latency_samples_ms"][:3]
    >>> target.close()
"""

from __future__ import annotations

from edgebench.config.measure_settings import Measure
from edgebench.targets.profile import (
    BUILTIN_PROFILE_DIR,
    Power,
    TargetProfile,
    copy_template,
    list_profiles,
    load_profile,
    load_targets,
    profile_dirs,
    profile_from_table,
)
from edgebench.targets.target import Target, TargetStatus, parse_runner_output

RunOptions = Measure  # the name callers used before the settings were declared once

__all__ = [
    "BUILTIN_PROFILE_DIR", "Measure", "Power", "RunOptions", "Target", "TargetProfile", "TargetStatus",
    "copy_template", "list_profiles", "load_profile", "load_targets", "open_target", "parse_runner_output",
    "profile_dirs", "profile_from_table",
]  # fmt: skip


def open_target(profile: TargetProfile) -> Target:
    """The target of `profile`, on its host (`close()` it when done)."""
    return Target(profile)

"""The measure stage: a built variant on a target's runtime becomes a record.

Takes each variant's artifacts and the targets; gives one record per (variant, target,
runtime), appended to records.jsonl as it is taken. `rounds` runs the runner in several
processes and merges them into a record; `records` is the records file and its fields;
`profiling` takes per-layer profiles; `energy` estimates (or reads) energy per inference;
`accuracy` holds the statistics (intervals, paired tests). The measurement settings themselves
are configuration: `edgebench.config.measure_settings.Measure`.
"""

from edgebench import moved_warning


def __getattr__(name: str):
    if name == "Measure":  # `edgebench.measure` was the settings module before this package
        moved_warning("edgebench.measure.Measure", "edgebench.config.measure_settings.Measure")
        from edgebench.config.measure_settings import Measure

        return Measure
    raise AttributeError(f"module 'edgebench.measure' has no attribute {name!r}")

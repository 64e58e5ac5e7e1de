"""The errors edgebench reports to users as one clear line instead of a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class EdgebenchError(Exception):
    """A problem the user can fix; the CLI prints it as one line and exits with `exit_code`."""

    exit_code = 2


class ConfigError(EdgebenchError):
    """An experiment, profile or budget file that is wrong (bad key, type or value)."""


class StepError(EdgebenchError):
    """A compression step that cannot apply to this model; the variant becomes an error record."""


class ExportError(EdgebenchError):
    """A variant that cannot be exported, or whose export does not match the PyTorch model."""


class TargetError(EdgebenchError):
    """A target that cannot be reached or cannot run a runtime; becomes an error record."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean "x"?)' for the nearest choice, or a list of valid ones."""
    choices = sorted(choices)
    near = difflib.get_close_matches(word, choices, n=1, cutoff=0.5)
    if near:
        return f' (did you mean "{near[0]}"?)'
    return f" (valid: {', '.join(choices)})" if choices else ""

"""Progress lines for long steps, on stderr so stdout stays clean for --json."""

from __future__ import annotations

import sys
import time


class Log:
    """Callable that prints `[  12.3s] message` to stderr unless quiet."""

    def __init__(self, quiet: bool = False, stream=None):
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.start = time.monotonic()

    def __call__(self, message: str) -> None:
        if not self.quiet:
            print(f"[{time.monotonic() - self.start:7.1f}s] {message}", file=self.stream, flush=True)

    def always(self, message: str) -> None:
        """Print even when quiet (warnings the user must see)."""
        print(message, file=self.stream, flush=True)

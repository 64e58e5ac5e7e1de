"""Where edgebench keeps things it builds once: trained baselines, the aarch64 rootfs."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """`$EDGEBENCH_CACHE`, else `$XDG_CACHE_HOME/edgebench`, else `~/.cache/edgebench`."""
    root = os.environ.get("EDGEBENCH_CACHE")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = str(Path(xdg) / "edgebench")
    path = Path(root).expanduser().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path

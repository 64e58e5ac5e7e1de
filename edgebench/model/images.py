"""Images the way users have them: a folder of files read with Pillow, as their pixels are.

    >>> x, y, classes = image_folder(Path("photos/"), size=32, grayscale=None)  # one sub-folder per class

An image folder (and a COCO folder, edgebench.model.coco) is read as its images are: one
channel when every image has one, else RGB, unless `[data] grayscale` says which.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgebench.errors import ConfigError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}

# Pillow modes with one channel (and an alpha): an image folder of these only is read as grayscale.
GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})


def read_as_gray(files: list[Path], grayscale: bool | None) -> bool:
    """`[data] grayscale`, or by default the images as they are: one channel when every image
    has one, else RGB (Pillow reads a mode from the file's header, without decoding it)."""
    from PIL import Image

    if grayscale is not None:
        return grayscale
    for f in files:
        with Image.open(f) as img:
            if img.mode not in GRAY_MODES:
                return False
    return True


def image_folder(path: Path, size: int, grayscale: bool | None) -> tuple[np.ndarray, np.ndarray, list]:
    """Images as float32 0..255 pixels (NCHW), labels by sorted sub-folder name."""
    from PIL import Image

    classes = sorted(p.name for p in path.iterdir() if p.is_dir())
    if len(classes) < 2:
        raise ConfigError(f"data {path}: an image folder needs one sub-folder per class (found {len(classes)})")
    files = [(label, f) for label, name in enumerate(classes) for f in sorted((path / name).iterdir())
             if f.suffix.lower() in IMAGE_SUFFIXES]  # fmt: skip
    if not files:
        raise ConfigError(f"data {path}: no images found (suffixes {sorted(IMAGE_SUFFIXES)})")
    gray = read_as_gray([f for _, f in files], grayscale)
    xs, ys = [], []
    for label, f in files:
        img = Image.open(f).convert("L" if gray else "RGB").resize((size, size))
        a = np.asarray(img, dtype=np.float32)
        xs.append(a[None] if gray else a.transpose(2, 0, 1))
        ys.append(label)
    return np.stack(xs), np.array(ys, dtype=np.int64), classes

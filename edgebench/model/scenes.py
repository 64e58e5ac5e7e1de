"""The built-in detection set "digit-scenes": sklearn's digits 0-4 placed on cluttered canvases.

    [data]
    source = "digit-scenes"     # with [task] kind = "detect" (edgebench init --task detect)

Each image (48x48, one channel, uint8 like a camera's) holds 1-4 objects. An object is one of
scikit-learn's 8x8 digits 0-4 (the 5 classes), resized to 11-22 px high with its own aspect
(+-20%) and brightness, placed so no two ink boxes touch (a detector at stride 4 then never
sees two centres in one cell). The clutter is what makes it a detection problem and not a blob
finder: a brightness gradient, Gaussian noise, 2-4 fragments (3-5 px windows) of digits 5-9
drawn at object scale, and 0-2 thin line segments.

Boxes are the digit's ink (source pixels >= 4/16) mapped through the resize, so they are tight
and sub-pixel: mAP@0.5:0.95 means something. Targets are padded, no pickling needed: `boxes`
(N, M, 4) float32 [x1, y1, x2, y2] in pixels, `classes` (N, M) int64 with -1 where there is no
object (M = MAX_OBJECTS). The train and test splits come from disjoint digit sources
(sklearn's 1,797 images split 75/25, stratified), so no test object is a training digit.
Seeded, pure numpy + sklearn; ~1.6 s for the default sizes (2,000 train, 500 test).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

CLASS_DIGITS = (0, 1, 2, 3, 4)  # class id k is digit CLASS_DIGITS[k]
CLUTTER_DIGITS = (5, 6, 7, 8, 9)  # fragments only: never a whole object
MAX_OBJECTS = 4
SIZE = 48
INK = 4 / 16  # a source pixel at least this bright is ink (sets the box)


@dataclass
class DetectionSet:
    """One split. `images` uint8 (N, 1, S, S); `x` is what models eat: float32 in [0, 1]."""

    images: np.ndarray
    boxes: np.ndarray  # (N, M, 4) float32, x1 y1 x2 y2 pixels; padding rows are 0
    classes: np.ndarray  # (N, M) int64, -1 = padding

    @property
    def x(self) -> np.ndarray:
        return self.images.astype(np.float32) / np.float32(255)

    def __len__(self) -> int:
        return len(self.images)

    def count(self) -> np.ndarray:
        return (self.classes >= 0).sum(axis=1)

    def fingerprint(self) -> str:
        """sha256 of the arrays (first 16 hex): the same seed must give the same set anywhere."""
        import hashlib

        h = hashlib.sha256()
        for a in (self.images, self.boxes, self.classes):
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images / 16.0).astype(np.float32), d.target.astype(np.int64)


def _resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear resize (pixel-centre aligned, edge-clamped) of a 2-D array to (h, w)."""
    def coords(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, (pos - lo).astype(np.float32)

    r0, r1, fr = coords(h, img.shape[0])
    c0, c1, fc = coords(w, img.shape[1])
    rows = img[r0] * (1 - fr)[:, None] + img[r1] * fr[:, None]
    return rows[:, c0] * (1 - fc) + rows[:, c1] * fc


@functools.lru_cache(maxsize=1)
def _ink_extents() -> np.ndarray:
    """Per source digit, its ink's extent as fractions of the 8x8 square: (N, 4) x1 y1 x2 y2."""
    images, _ = _digits()
    ink = images >= INK
    cols, rows = ink.any(axis=1), ink.any(axis=2)  # (N, 8) each
    first = lambda m: m.argmax(axis=1)  # noqa: E731
    last = lambda m: m.shape[1] - m[:, ::-1].argmax(axis=1)  # noqa: E731
    return (np.stack([first(cols), first(rows), last(cols), last(rows)], axis=1) / 8).astype(np.float32)


def _ink_box(src: int, x0: int, y0: int, h: int, w: int) -> np.ndarray:
    """The ink's box in canvas pixels when digit `src` is drawn on [x0, x0+w) x [y0, y0+h)."""
    return _ink_extents()[src] * np.array([w, h, w, h], np.float32) + np.array([x0, y0, x0, y0], np.float32)


def _line(canvas: np.ndarray, rng: np.random.Generator) -> None:
    """A thin soft segment (~1.5 px wide) between two random points: pixel-to-segment distance."""
    size = canvas.shape[0]
    a, b = rng.uniform(0, size, (2, 2))
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    p = np.stack([xx - a[0], yy - a[1]], axis=-1)
    d = b - a
    t = np.clip(p @ d / max(float(d @ d), 1e-6), 0, 1)
    dist = np.hypot(p[..., 0] - t * d[0], p[..., 1] - t * d[1])
    np.maximum(canvas, rng.uniform(0.3, 0.6) * np.clip(1.5 - dist, 0, 1), out=canvas)


def _render(
    rng: np.random.Generator, objects: np.ndarray, clutter: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image: (uint8 (S, S), boxes (M, 4), classes (M,)). `objects`/`clutter` are
    (index into the digit images) pools of this split."""
    images, labels = _digits()
    canvas = np.zeros((size, size), np.float32)
    boxes = np.zeros((MAX_OBJECTS, 4), np.float32)
    classes = np.full(MAX_OBJECTS, -1, np.int64)
    placed: list[np.ndarray] = []
    for _ in range(rng.integers(1, MAX_OBJECTS + 1)):
        src = objects[rng.integers(len(objects))]
        h = int(rng.integers(11, 23))
        w = int(np.clip(round(h * rng.uniform(0.8, 1.2)), 8, 24))
        for _attempt in range(30):  # rejection sampling; the object is dropped if no room
            x0, y0 = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
            box = _ink_box(src, x0, y0, h, w)
            # 1 px margin: boxes never touch, so two centres never share a stride-4 cell
            if all(box[0] > b[2] + 1 or b[0] > box[2] + 1 or box[1] > b[3] + 1 or b[1] > box[3] + 1
                   for b in placed):  # fmt: skip
                break
        else:
            continue
        patch = _resize(images[src], h, w) * rng.uniform(0.6, 1.0)
        np.maximum(canvas[y0 : y0 + h, x0 : x0 + w], patch, out=canvas[y0 : y0 + h, x0 : x0 + w])
        boxes[len(placed)], classes[len(placed)] = box, CLASS_DIGITS.index(labels[src])
        placed.append(box)
    for _ in range(rng.integers(2, 5)):  # fragments of non-class digits, at object scale
        src = images[clutter[rng.integers(len(clutter))]]
        fh, fw = rng.integers(3, 6, 2)
        r0, c0 = rng.integers(0, 9 - fh), rng.integers(0, 9 - fw)
        scale = rng.uniform(1.4, 2.8)
        ph, pw = max(2, int(fh * scale)), max(2, int(fw * scale))
        piece = _resize(src[r0 : r0 + fh, c0 : c0 + fw], ph, pw) * rng.uniform(0.3, 0.8)
        y, x = rng.integers(0, size - ph + 1), rng.integers(0, size - pw + 1)
        np.maximum(canvas[y : y + ph, x : x + pw], piece, out=canvas[y : y + ph, x : x + pw])
    for _ in range(rng.integers(0, 3)):
        _line(canvas, rng)
    yy, xx = np.mgrid[0:size, 0:size] / size
    gx, gy = rng.uniform(-0.15, 0.15, 2)
    background = rng.uniform(0.0, 0.2) + gx * xx + gy * yy
    image = background + rng.uniform(0.7, 1.0) * canvas
    image += rng.uniform(0.02, 0.08) * rng.standard_normal(canvas.shape)
    return np.clip(np.rint(image * 255), 0, 255).astype(np.uint8), boxes, classes


def _render_split(n: int, rng: np.random.Generator, sources: np.ndarray, size: int) -> DetectionSet:
    _, labels = _digits()
    objects = sources[np.isin(labels[sources], CLASS_DIGITS)]
    clutter = sources[np.isin(labels[sources], CLUTTER_DIGITS)]
    rendered = [_render(rng, objects, clutter, size) for _ in range(n)]
    images, boxes, classes = (np.stack(a) for a in zip(*rendered, strict=True))
    return DetectionSet(images[:, None], boxes, classes)


def make_detection_data(
    seed: int = 0, size: int = SIZE, n_train: int = 2000, n_calib: int = 0, n_test: int = 500
) -> dict[str, DetectionSet]:
    """{"train", "calib", "test"}: deterministic in `seed` (same arrays on every machine
    with the same numpy/sklearn, since only integer-seeded numpy draws are involved)."""
    from sklearn.model_selection import train_test_split

    _, labels = _digits()
    train_src, test_src = train_test_split(
        np.arange(len(labels)), test_size=0.25, random_state=seed, stratify=labels
    )
    rng = np.random.default_rng([seed, size, 48_0417])
    return {
        "train": _render_split(n_train, rng, np.sort(train_src), size),
        **({"calib": _render_split(n_calib, rng, np.sort(train_src), size)} if n_calib else {}),
        "test": _render_split(n_test, rng, np.sort(test_src), size),
    }


@functools.lru_cache(maxsize=2)
def digit_scenes(size: int, seed: int) -> tuple:
    """(x_train, y_train, x_test, y_test, full-scale pixel value, notes) for edgebench.model.data:
    images as float32 0..255 pixels, targets as `Arrays` of boxes and classes."""
    from edgebench.tasks.arrays import Arrays

    data = make_detection_data(seed=seed, size=size)
    split = {k: (v.images.astype(np.float32), Arrays({"boxes": v.boxes, "classes": v.classes})) for k, v in data.items()}
    notes = {"generated": f"digit-scenes at {size}x{size}: digits 0-4 on clutter, 1-{MAX_OBJECTS} per image, "
                          "train and test from disjoint digit sources", "num_classes": len(CLASS_DIGITS)}
    return (*split["train"], *split["test"], 255.0, notes)

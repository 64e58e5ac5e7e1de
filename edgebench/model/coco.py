"""Detection data the way users have it: an image folder and a COCO-format annotation file.

    [data]
    source = "images/"                 # the image folder
    annotations = "instances.json"     # COCO: images [{id, file_name, width, height}],
                                       # annotations [{image_id, category_id, bbox: [x, y, w, h]}],
                                       # categories [{id, name}]
    image_size = 64                    # images resized to this square; boxes scaled with them
    # grayscale = true                 # default: as the images are (RGB unless every one is gray)

Images are read with Pillow and resized to `image_size` (default 64), boxes scaled to match and
kept as [x1, y1, x2, y2] pixels; categories become classes 0..K-1 in the order of their ids
(their names are the run's class names). Crowd annotations are left out. Each image's boxes are
padded to the most any image has, class -1 for padding: the same targets as a .npz's
`y_train:boxes` / `y_train:classes` and the built-in "digit-scenes".
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgebench.errors import ConfigError
from edgebench.model.images import read_as_gray


def load_coco(folder: Path, annotations: Path, size: int, grayscale: bool | None) -> tuple[np.ndarray, dict, list[str]]:
    """(images float32 0..255 NCHW, {"boxes", "classes"} padded, class names)."""
    from PIL import Image

    try:
        doc = json.loads(Path(annotations).read_text())
        images, anns, cats = doc["images"], doc.get("annotations", []), doc["categories"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"annotations {annotations}: not a COCO annotation file ({type(exc).__name__}: {exc}); "
                          "it needs images, annotations and categories") from None
    category = {c["id"]: k for k, c in enumerate(sorted(cats, key=lambda c: c["id"]))}
    names = [c.get("name", str(c["id"])) for c in sorted(cats, key=lambda c: c["id"])]
    per_image: dict = {img["id"]: [] for img in images}
    for a in anns:
        if a.get("iscrowd") or a.get("image_id") not in per_image or a.get("category_id") not in category:
            continue
        per_image[a["image_id"]].append(a)
    most = max((len(v) for v in per_image.values()), default=0)
    if not images or most == 0:
        raise ConfigError(f"annotations {annotations}: no image with a box to learn from")
    xs, boxes = [], np.zeros((len(images), most, 4), np.float32)
    classes = np.full((len(images), most), -1, np.int64)
    try:
        gray = read_as_gray([Path(folder) / img["file_name"] for img in images], grayscale)
    except OSError as exc:
        raise ConfigError(f"annotations {annotations}: an image cannot be read ({exc})") from None
    for i, img in enumerate(images):
        path = Path(folder) / img["file_name"]
        try:
            picture = Image.open(path).convert("L" if gray else "RGB")
        except OSError as exc:
            raise ConfigError(f"annotations {annotations}: image {path} cannot be read ({exc})") from None
        width, height = picture.size
        a = np.asarray(picture.resize((size, size)), dtype=np.float32)
        xs.append(a[None] if gray else a.transpose(2, 0, 1))
        scale = np.array([size / width, size / height, size / width, size / height], np.float32)
        for j, ann in enumerate(per_image[img["id"]]):
            x, y, w, h = ann["bbox"]
            boxes[i, j] = np.array([x, y, x + w, y + h], np.float32) * scale
            classes[i, j] = category[ann["category_id"]]
    return np.stack(xs), {"boxes": boxes, "classes": classes}, names

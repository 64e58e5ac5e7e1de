"""Detection data as users have it: an image folder with a COCO annotation file, or their own loader."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from edgebench.config import DataConfig, TaskConfig
from edgebench.errors import ConfigError
from edgebench.model.data import load_data
from edgebench.model.scenes import make_detection_data
from edgebench.tasks import make_task
from edgebench.tasks.arrays import Arrays


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    """20 generated scenes written as PNGs at 96x96 (twice their size) and a COCO json."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("coco")
    scenes = make_detection_data(seed=1, n_train=20, n_test=1)["train"]
    images, annotations = [], []
    for i, (img, boxes, classes) in enumerate(zip(scenes.images, scenes.boxes, scenes.classes, strict=True)):
        Image.fromarray(img[0]).resize((96, 96)).save(folder / f"{i:03d}.png")
        images.append({"id": 100 + i, "file_name": f"{i:03d}.png", "width": 96, "height": 96})
        for b, c in zip(boxes[classes >= 0], classes[classes >= 0], strict=True):
            x1, y1, x2, y2 = (b * 2).tolist()
            annotations.append({"id": len(annotations) + 1, "image_id": 100 + i, "category_id": 10 + int(c),
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    cats = [{"id": 10 + k, "name": f"digit{k}"} for k in range(5)]
    (folder / "instances.json").write_text(json.dumps({"images": images, "annotations": annotations, "categories": cats}))
    return folder, scenes


def test_a_coco_folder_gives_padded_boxes_in_the_resized_pixels(coco):
    folder, scenes = coco
    data = load_data(DataConfig(source=str(folder), annotations=str(folder / "instances.json"), image_size=48,
                                test_fraction=0.25, calibration_size=2), seed=0, task=make_task(TaskConfig(kind="detect")))
    assert data.x_train.shape[1:] == (1, 48, 48) and len(data.x_test) == 5
    assert isinstance(data.y_test, Arrays) and data.classes == [f"digit{k}" for k in range(5)]
    everything = np.concatenate([data.y_train["boxes"], data.y_calib["boxes"], data.y_test["boxes"]])
    # Back at the scenes' own 48x48 scale: every box is one of the originals (to float rounding).
    originals = {tuple(np.round(b, 2)) for b, c in zip(scenes.boxes.reshape(-1, 4), scenes.classes.ravel()) if c >= 0}
    kept = {tuple(np.round(b, 2)) for b in everything.reshape(-1, 4) if b.any()}
    assert kept == originals


def test_a_bad_annotation_file_is_one_line(tmp_path):
    (tmp_path / "a.json").write_text('{"images": []}')
    with pytest.raises(ConfigError, match="not a COCO annotation file"):
        load_data(DataConfig(source=str(tmp_path), annotations=str(tmp_path / "a.json")),
                  task=make_task(TaskConfig(kind="detect")))


def test_the_users_loader_gives_the_arrays(tmp_path, monkeypatch):
    (tmp_path / "myloader.py").write_text(
        "import numpy as np\n"
        "def load(seed):\n"
        "    rng = np.random.default_rng(seed)\n"
        "    return {'x': rng.random((50, 6)).astype('float32'), 'y': rng.random(50).astype('float32')}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    data = load_data(DataConfig(source="anything", loader="myloader:load", calibration_size=5), seed=2,
                     task=make_task(TaskConfig(kind="regress")))
    assert data.x_train.shape[1:] == (6,) and data.y_test.dtype == np.float32 and len(data.x_test) == 10
    sys.modules.pop("myloader", None)

"""Data sources: digits, a .npz of arrays, an image folder; fixed splits; one normalization."""

from __future__ import annotations

import numpy as np
import pytest

from edgebench.config import DataConfig
from edgebench.data import load_data
from edgebench.errors import ConfigError


def test_digits_split_is_fixed_disjoint_and_normalized():
    a = load_data(DataConfig(image_size=16), seed=0)
    b = load_data(DataConfig(image_size=16), seed=0)
    assert a.x_train.shape[1:] == (1, 16, 16) and a.num_classes == 10
    assert len(a.x_train) + len(a.x_calib) + len(a.x_test) == 1797
    assert len(a.x_calib) == 128
    np.testing.assert_array_equal(a.x_test, b.x_test)
    assert abs(float(a.x_train.mean())) < 1e-3 and abs(float(a.x_train.std()) - 1) < 1e-2
    # No test image is also a training or calibration image.
    train = {r.tobytes() for r in a.x_train} | {r.tobytes() for r in a.x_calib}
    assert not any(r.tobytes() in train for r in a.x_test)


def test_npz_source(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=rng.random((100, 3, 8, 8)), y_train=rng.integers(0, 3, 100),
             x_test=rng.random((30, 3, 8, 8)), y_test=rng.integers(0, 3, 30))  # fmt: skip
    data = load_data(DataConfig(source=str(path), calibration_size=10))
    assert data.x_test.shape == (30, 3, 8, 8) and data.x_train.shape == (90, 3, 8, 8)
    assert data.x_test.dtype == np.float32
    np.savez(tmp_path / "bad.npz", x_train=np.zeros((2, 8, 8)))
    with pytest.raises(ConfigError, match="missing arrays"):
        load_data(DataConfig(source=str(tmp_path / "bad.npz")))


def test_image_folder_source(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, value in (("cats", 30), ("dogs", 220)):
        (tmp_path / label).mkdir()
        for i in range(10):
            pixels = np.clip(value + rng.normal(0, 10, (12, 12, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / label / f"{i}.png")
    data = load_data(DataConfig(source=str(tmp_path), image_size=8, grayscale=False, test_fraction=0.3))
    assert data.classes == ["cats", "dogs"] and data.x_train.shape[1:] == (3, 8, 8)
    assert len(data.x_test) == 6


def test_image_folder_needs_class_folders(tmp_path):
    (tmp_path / "only").mkdir()
    with pytest.raises(ConfigError, match="one sub-folder per class"):
        load_data(DataConfig(source=str(tmp_path)))

"""Data sources: the built-in sets, a .npz of arrays, an image folder; fixed splits; the user's preprocessing."""

from __future__ import annotations

import time

import numpy as np
import pytest

from edgebench.config import DataConfig, load_experiment
from edgebench.errors import ConfigError
from edgebench.model.data import load_data
from edgebench.model.generated import CLUTTERED_TEST_COPIES


def test_digits_split_is_fixed_disjoint_and_left_as_pixels_in_0_1():
    a = load_data(DataConfig(image_size=16), seed=0)
    b = load_data(DataConfig(image_size=16), seed=0)
    assert a.x_train.shape[1:] == (1, 16, 16) and a.num_classes == 10
    assert len(a.x_train) + len(a.x_calib) + len(a.x_test) == 1797
    assert len(a.x_calib) == 128
    np.testing.assert_array_equal(a.x_test, b.x_test)
    # Nothing is applied unasked: the pixels stay in [0, 1].
    assert a.normalize == "none" and a.x_train.min() >= 0 and a.x_train.max() <= 1 and a.x_train.max() > 0.99
    # No test image is also a training or calibration image.
    train = {r.tobytes() for r in a.x_train} | {r.tobytes() for r in a.x_calib}
    assert not any(r.tobytes() in train for r in a.x_test)


def test_standardize_uses_the_training_split_and_is_reported():
    data = load_data(DataConfig(image_size=16, normalize="standardize"), seed=0)
    assert abs(float(data.x_train.mean())) < 1e-3 and abs(float(data.x_train.std()) - 1) < 1e-2
    plain = load_data(DataConfig(image_size=16), seed=0)
    np.testing.assert_allclose(data.x_test, (plain.x_test - data.mean[0]) / data.std[0], atol=1e-5)
    info = data.describe()
    assert info["normalize"] == "standardize" and info["image_range"] == [0.0, 1.0]
    assert info["mean"] == [pytest.approx(float(plain.x_train.mean()), abs=1e-5)]
    assert info["n_test"] == 360 and info["input_shape"] == [1, 16, 16]
    assert plain.describe()["mean"] is None and plain.describe()["normalize"] == "none"


def test_given_mean_and_std_per_channel(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "rgb.npz"
    x = rng.random((40, 3, 4, 4)).astype(np.float32)
    np.savez(path, x_train=x, y_train=rng.integers(0, 2, 40), x_test=x[:10], y_test=rng.integers(0, 2, 10))
    given = {"mean": [0.1, 0.2, 0.3], "std": [0.5, 0.25, 2.0]}
    data = load_data(DataConfig(source=str(path), calibration_size=4, normalize=given))
    want = (x[:10] - np.array([0.1, 0.2, 0.3])[:, None, None]) / np.array([0.5, 0.25, 2.0])[:, None, None]
    np.testing.assert_allclose(data.x_test, want, rtol=1e-5, atol=1e-6)
    assert data.describe()["normalize"] == "given" and data.describe()["std"] == [0.5, 0.25, 2.0]
    # One value for all channels is allowed; a count that matches neither is exit 2, naming the key.
    load_data(DataConfig(source=str(path), calibration_size=4, normalize={"mean": [0.5], "std": [0.5]}))
    with pytest.raises(ConfigError, match=r"normalize\.mean has 2 values but the inputs have 3 channels"):
        load_data(DataConfig(source=str(path), normalize={"mean": [0.5, 0.5], "std": [0.5, 0.5]}))


@pytest.mark.parametrize(
    ("normalize", "message"),
    [
        ("standardise", 'did you mean "standardize"'),
        ({"mean": [0.5]}, "needs both mean and std"),
        ({"mean": [0.5], "std": [0.5, 0.5]}, "mean has 1 values, std has 2"),
        ({"mean": [0.5], "std": [0.0]}, r"normalize\.std = \[0\.0\]: every value must be > 0"),
        ({"mean": [0.5], "std": [1], "scale": 2}, "unknown key 'scale'"),
        ({"mean": "0.5", "std": [1]}, "expected a list of numbers"),
    ],
)
def test_bad_normalize_is_a_config_error(normalize, message):
    with pytest.raises(ConfigError, match=message):
        DataConfig(normalize=normalize)


def test_normalize_and_image_range_in_an_experiment_file(tmp_path):
    path = tmp_path / "e.toml"
    path.write_text('[data]\nsource = "cluttered-digits"\nimage_range = [-1, 1]\nnormalize = { mean = [0], std = [2] }\n')
    exp = load_experiment(path)
    assert exp.data.source == "cluttered-digits"  # a built-in name, not a path next to the file
    assert exp.data.image_range == (-1.0, 1.0) and exp.data.normalize == {"mean": [0], "std": [2]}
    path.write_text('[data]\nnormalize = "zscore"\n')
    with pytest.raises(ConfigError, match=r"data: normalize = 'zscore' is not one of none, standardize"):
        load_experiment(path)


def test_image_range_maps_pixels_linearly():
    unit = load_data(DataConfig(), seed=0)
    sym = load_data(DataConfig(image_range=(-1.0, 1.0)), seed=0)
    np.testing.assert_allclose(sym.x_test, 2 * unit.x_test - 1, atol=1e-6)
    assert sym.describe()["image_range"] == [-1.0, 1.0]
    with pytest.raises(ConfigError, match="image_range"):
        DataConfig(image_range=(1.0, 0.0))


def test_cluttered_digits_is_larger_split_by_source_and_seeded():
    started = time.perf_counter()
    a = load_data(DataConfig(source="cluttered-digits", image_size=24), seed=0)
    generated_s = time.perf_counter() - started
    b = load_data(DataConfig(source="cluttered-digits", image_size=24), seed=0)
    np.testing.assert_array_equal(a.x_test, b.x_test)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert a.input_shape == (1, 24, 24) and a.num_classes == 10
    assert len(a.x_test) >= 1500 and len(a.x_test) == CLUTTERED_TEST_COPIES * 360
    assert len({r.tobytes() for r in a.x_test}) == len(a.x_test)  # distinct images
    assert np.bincount(a.y_test).min() >= 0.08 * len(a.y_test)  # every class, stratified
    assert a.x_test.min() == 0.0 and a.x_test.max() == 1.0 and a.normalize == "none"
    assert generated_s < 10  # vectorized: ~0.3 s here, plus sklearn's digits
    other = load_data(DataConfig(source="cluttered-digits", image_size=24), seed=1)
    assert not np.array_equal(other.x_test[:10], a.x_test[:10])


def test_cluttered_digits_are_split_by_source(monkeypatch):
    import edgebench.model.generated as data_module

    rendered = []
    real = data_module.cluttered_digits

    def spy(sources, labels, copies, size, rng, **kwargs):
        rendered.append((sources.copy(), copies))
        return real(sources, labels, copies, size, rng, **kwargs)

    monkeypatch.setattr(data_module, "cluttered_digits", spy)
    data_module._cluttered_split.cache_clear()
    try:
        data = load_data(DataConfig(source="cluttered-digits", image_size=12), seed=3)
    finally:
        data_module._cluttered_split.cache_clear()
    images, labels = data_module._digit_sources()
    train, test = data_module._split_sources(labels, 0.2, seed=3)
    assert not set(train) & set(test) and len(test) == 360  # 20% of the 1,797 sources
    # Training images are drawn (digit and clutter) from training sources only, test images
    # from test sources only: no test image holds any part of a training digit.
    (train_sources, train_copies), (test_sources, test_copies) = rendered
    np.testing.assert_array_equal(train_sources, images[train])
    np.testing.assert_array_equal(test_sources, images[test])
    assert len(data.x_test) == test_copies * len(test) and test_copies == CLUTTERED_TEST_COPIES


def test_npz_source(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=rng.random((100, 3, 8, 8)), y_train=rng.integers(0, 3, 100),
             x_test=rng.random((30, 3, 8, 8)), y_test=rng.integers(0, 3, 30))  # fmt: skip
    data = load_data(DataConfig(source=str(path), calibration_size=10))
    assert data.x_test.shape == (30, 3, 8, 8) and data.x_train.shape == (90, 3, 8, 8)
    assert data.x_test.dtype == np.float32
    # The user's arrays are used as they are.
    np.testing.assert_allclose(data.x_test, np.load(path)["x_test"], rtol=1e-6)
    assert data.describe()["image_range"] is None
    with pytest.raises(ConfigError, match="a .npz's arrays are used as they are"):
        DataConfig(source=str(path), image_range=(0.0, 1.0))
    np.savez(tmp_path / "bad.npz", x_train=np.zeros((2, 8, 8)))
    with pytest.raises(ConfigError, match="missing arrays"):
        load_data(DataConfig(source=str(tmp_path / "bad.npz")))


def test_a_npz_of_one_set_is_split_like_an_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.random((200, 3, 8, 8)).astype(np.float32), np.repeat(np.arange(4), 50)
    np.savez(tmp_path / "one.npz", x=x, y=y)
    data = load_data(DataConfig(source=str(tmp_path / "one.npz"), test_fraction=0.25, calibration_size=10), seed=3)
    assert len(data.x_test) == 50 and len(data.x_train) + len(data.x_calib) == 150
    assert sorted(np.bincount(data.y_test)) == [12, 12, 13, 13]  # stratified
    again = load_data(DataConfig(source=str(tmp_path / "one.npz"), test_fraction=0.25, calibration_size=10), seed=3)
    np.testing.assert_array_equal(data.x_test, again.x_test)  # seeded
    np.savez(tmp_path / "short.npz", x=x, y=y[:10])
    with pytest.raises(ConfigError, match="x has 200 rows but y has 10"):
        load_data(DataConfig(source=str(tmp_path / "short.npz")))


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
    assert 0 <= data.x_train.min() and data.x_train.max() <= 1  # 0..255 onto the default [0, 1]
    folder = {"source": str(tmp_path), "image_size": 8, "grayscale": False, "test_fraction": 0.3}
    wide = load_data(DataConfig(**folder, image_range=(-1.0, 1.0)))
    np.testing.assert_allclose(wide.x_test, 2 * data.x_test - 1, atol=1e-5)
    with pytest.raises(ConfigError, match=r"normalize\.mean has 2 values but the inputs have 3 channels"):
        load_data(DataConfig(**folder, normalize={"mean": [0.5, 0.5], "std": [0.2, 0.2]}))


def test_an_image_folder_is_read_as_its_images_are_unless_told(tmp_path):
    # RGB photos come as 3 channels (before, every folder was read as grayscale unless
    # `grayscale = false`), a folder of gray images as 1, and `grayscale` still decides.
    from PIL import Image

    rng = np.random.default_rng(0)
    for kind, mode in (("rgb", "RGB"), ("gray", "L")):
        for label in ("a", "b"):
            (tmp_path / kind / label).mkdir(parents=True)
            for i in range(6):
                shape = (10, 10, 3) if mode == "RGB" else (10, 10)
                Image.fromarray(rng.integers(0, 255, shape).astype(np.uint8), mode).save(tmp_path / kind / label / f"{i}.png")
    read = {(kind, gray): load_data(DataConfig(source=str(tmp_path / kind), image_size=8, grayscale=gray,
                                               calibration_size=2)).x_train.shape[1]
            for kind in ("rgb", "gray") for gray in (None, True, False)}  # fmt: skip
    assert read == {("rgb", None): 3, ("rgb", True): 1, ("rgb", False): 3,
                    ("gray", None): 1, ("gray", True): 1, ("gray", False): 3}  # fmt: skip


def test_image_folder_needs_class_folders(tmp_path):
    (tmp_path / "only").mkdir()
    with pytest.raises(ConfigError, match="one sub-folder per class"):
        load_data(DataConfig(source=str(tmp_path)))

"""The detect task: the generated scenes, decoding and NMS, pycocotools' mAP and the per-image
matches the intervals resample — and the built-in detection demo, run as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edgebench.model.scenes import MAX_OBJECTS, make_detection_data
from edgebench.tasks.detect import detection_loss, make_targets
from edgebench.tasks.detect_post import (
    batched_nms,
    coco_map,
    coco_map_and_matches,
    decode,
    map_from_matches,
)


@pytest.fixture(scope="module")
def small():
    return make_detection_data(seed=0, n_train=64, n_test=100)


def perfect_outputs(split, eps: float = 1e-6) -> np.ndarray:
    """Raw outputs a perfect model would give: logit(target heatmap) and the box targets."""
    heat, reg, _ = make_targets(torch.from_numpy(split.boxes), torch.from_numpy(split.classes), 5, (12, 12))
    return torch.cat([torch.logit(heat.clamp(eps, 1 - eps)), reg], dim=1).numpy()


def test_the_scenes_are_seeded_and_padded(small):
    again = make_detection_data(seed=0, n_train=64, n_test=100)
    assert small["test"].fingerprint() == again["test"].fingerprint()
    test = small["test"]
    assert test.images.dtype == np.uint8 and test.images.shape == (100, 1, 48, 48)
    assert test.boxes.shape == (100, MAX_OBJECTS, 4) and test.classes.shape == (100, MAX_OBJECTS)
    assert (test.count() >= 1).all() and (test.boxes[test.classes < 0] == 0).all()
    b = test.boxes[test.classes >= 0]
    assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all() and b.min() >= 0 and b.max() <= 48


def test_perfect_outputs_decode_to_a_perfect_map(small):
    test = small["test"]
    assert coco_map(decode(perfect_outputs(test), 5), test.boxes, test.classes) == {"map50": 1.0, "map": 1.0}


def test_the_resampled_map_is_what_pycocotools_gives_on_the_resample(small):
    """Exact without tied scores (with ties, as int8 outputs have, COCOeval's own AP depends on
    the order of the tied detections, so a resample's does too)."""
    test = small["test"]
    for seed in range(20):  # noise whose float32 scores happen to have no ties
        noise = np.random.default_rng(seed).normal(0, 0.5, (100, 9, 12, 12)).astype(np.float32)
        dets = decode(perfect_outputs(test, eps=0.01) + noise, 5)
        scores = np.concatenate([d.scores for d in dets])
        if len(np.unique(scores)) == len(scores):
            break
    assert len(np.unique(scores)) == len(scores) > 200
    result, matches = coco_map_and_matches(dets, test.boxes, test.classes)
    assert result == pytest.approx(coco_map(dets, test.boxes, test.classes, stock=True), abs=1e-12)
    draw = np.random.default_rng(1).integers(0, 100, 100)
    want = coco_map([dets[i] for i in draw], test.boxes[draw], test.classes[draw], stock=True)
    assert map_from_matches(matches, np.bincount(draw, minlength=100)) == pytest.approx(want, abs=1e-12)


def test_nms_is_greedy_and_class_wise():
    boxes = np.array([[[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [20, 20, 30, 30]]], np.float32)
    keep = batched_nms(boxes, np.array([[0, 0, 1, 0]]), np.ones((1, 4), bool), 0.5)
    assert keep.tolist() == [[True, False, True, True]]


def test_the_detector_and_its_loss(small):
    from edgebench.model.factories import create_model

    model = create_model("tiny_detector", 5, 1)
    split = small["train"]
    out = model(torch.from_numpy(split.x[:4]))
    assert out.shape == (4, 9, 12, 12)
    loss = detection_loss(out, make_targets(torch.from_numpy(split.boxes[:4]), torch.from_numpy(split.classes[:4]),
                                            5, (12, 12)))
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0


@pytest.mark.slow
@pytest.mark.tflite
def test_the_detection_demo_runs_as_a_user_runs_it(tmp_path):
    cli = [sys.executable, "-m", "edgebench"]
    assert subprocess.run([*cli, "init", "--task", "detect", str(tmp_path / "experiment.toml")],
                          capture_output=True, text=True).returncode == 0
    proc = subprocess.run([*cli, "run", str(tmp_path / "experiment.toml"), "--out", str(tmp_path / "runs"), "--json"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = Path(json.loads(proc.stdout)["run_dir"])
    records = {(r["variant"], r["runtime"]): r for r in map(json.loads, (run / "records.jsonl").read_text().splitlines())}
    assert {v for v, _ in records} == {"baseline", "int8", "fp16", "slim50", "kd", "kd-nokd"}
    for (variant, runtime), r in records.items():
        assert r["status"] == "ok", (variant, runtime, r["error"])
        m = r["metric"]
        assert m["name"] == "map50" and m["n"] == 500 and m["ci95"][0] <= m["value"] <= m["ci95"][1]
        assert 0 <= m["map50_95"] <= m["value"] and "excludes decoding" in m["note"]
        assert r["fidelity"] and all(f["cosine"] is not None for f in r["fidelity"].values())
    for runtime in ("onnxruntime", "tflite"):
        base, int8 = records[("baseline", runtime)]["metric"], records[("int8", runtime)]["metric"]
        assert base["value"] >= 0.7, base  # measured 0.915 (seeds 0-3: 0.910-0.926)
        assert abs(int8["delta"]) <= 0.02, int8  # measured -0.13 and +0.10 pt
        assert int8["delta_ci95"][0] <= int8["delta"] <= int8["delta_ci95"][1]
    report = (run / "report.md").read_text()
    assert "map50" in report and (run / "plots" / "accuracy_vs_size.png").is_file()


def test_the_vectorized_bootstrap_gives_each_resamples_map(small):
    """Detect.values (every resample at once, for scipy's vectorized bootstrap) equals value()
    resample by resample."""
    from edgebench.config.task import TaskConfig
    from edgebench.tasks import make_task
    from edgebench.tasks.arrays import Arrays

    test = small["test"]
    task = make_task(TaskConfig(kind="detect"))
    noise = np.random.default_rng(2).normal(0, 0.7, (100, 9, 12, 12)).astype(np.float32)
    prepared = task.prepare([perfect_outputs(test, eps=0.01) + noise],
                            Arrays({"boxes": test.boxes, "classes": test.classes}), test.x)
    draws = np.random.default_rng(3).integers(0, 100, (20, 100))
    assert task.values(prepared, draws) == pytest.approx([task.value(prepared, d) for d in draws], abs=1e-12)

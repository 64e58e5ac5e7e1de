"""Tasks on known numbers: what each scores, the intervals and paired differences, fidelity per
output, and the several-inputs helpers — no training, no runtime."""

from __future__ import annotations

import numpy as np
import pytest

from edgebench.config.task import TaskConfig
from edgebench.errors import ConfigError
from edgebench.registry import TASKS
from edgebench.tasks import make_task
from edgebench.tasks.anomaly import auc
from edgebench.tasks.arrays import Arrays, as_list, concat, names_of
from edgebench.tasks.scoring import metric_fields, output_fidelity

RNG = np.random.default_rng(0)


def test_every_task_declares_its_metric_and_direction():
    for name in TASKS.names():
        cfg = TaskConfig(kind=name, evaluate="numpy:mean") if name == "custom" else TaskConfig(kind=name)
        task = make_task(cfg)
        assert task.name == name and task.metric and isinstance(task.higher_is_better, bool)
        assert task.resamples >= 100 and task.describe()["kind"] == name


def test_classify_scores_top1_of_the_chosen_output():
    task = make_task()
    logits, embedding = np.eye(4)[[0, 1, 2, 3, 0]], RNG.random((5, 8))
    prepared = task.prepare([logits, embedding], np.array([0, 1, 2, 0, 0]), None)
    assert task.value(prepared) == pytest.approx(0.8) and task.value(prepared, np.array([3, 3])) == 0.0
    named = make_task(TaskConfig(output="logits"))
    assert named.pick([logits, embedding], ["logits", "embedding"]) is logits
    with pytest.raises(ValueError, match="the model's outputs are"):
        named.pick([logits], ["out0"])


def test_regress_is_the_mean_absolute_error_lower_better():
    task = make_task(TaskConfig(kind="regress"))
    prepared = task.prepare([np.array([[1.0], [2.0], [4.0]])], np.array([1.5, 2.0, 3.0]), None)
    assert task.value(prepared) == pytest.approx(0.5) and task.higher_is_better is False


def test_anomaly_scores_reconstructions_by_their_error_and_auc_equals_sklearns():
    from sklearn.metrics import roc_auc_score

    labels = RNG.integers(0, 2, 300)
    scores = np.round(RNG.standard_normal(300) + labels, 1)  # ties on purpose
    assert auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    task = make_task(TaskConfig(kind="anomaly"))
    x = RNG.standard_normal((300, 8)).astype(np.float32)
    reconstruction = x + (0.1 + labels[:, None]) * RNG.standard_normal(x.shape).astype(np.float32)
    assert task.value(task.prepare([reconstruction], labels, x)) > 0.9


def test_the_interval_holds_the_value_and_the_paired_difference_is_tested():
    task = make_task()
    y = RNG.integers(0, 10, 1000)
    good = np.eye(10)[y] + 0.1 * RNG.standard_normal((1000, 10))
    worse = good.copy()
    worse[:150] = np.eye(10)[(y[:150] + 1) % 10]  # 15 points worse on the same inputs
    base, variant = task.prepare([good], y, None), task.prepare([worse], y, None)
    fields = metric_fields(task, variant, base, n=1000, resamples=400)
    assert fields["ci95"][0] <= fields["value"] <= fields["ci95"][1]
    assert fields["delta"] == pytest.approx(-0.15) and fields["delta_ci95"][1] < 0 and fields["delta_p"] < 0.01
    same = metric_fields(task, base, base, n=1000, resamples=400)
    assert same["delta"] == 0 and same["delta_ci95"] == [0.0, 0.0] and same["delta_p"] == 1.0


def test_a_metric_that_is_not_a_mean_is_resampled_and_recomputed():
    task = make_task(TaskConfig(kind="anomaly", resamples=200))
    labels = np.r_[np.zeros(100), np.ones(100)].astype(int)
    x = np.zeros((200, 4), np.float32)
    sharp = [np.where(labels[:, None] == 1, 2.0, 0.1).astype(np.float32) * np.ones((1, 4), np.float32)]
    blurred = [sharp[0] * 0.5 + RNG.standard_normal((200, 4)).astype(np.float32)]
    fields = metric_fields(task, task.prepare(blurred, labels, x), task.prepare(sharp, labels, x), n=200)
    assert fields["resamples"] == 200 and fields["name"] == "auc"
    assert fields["delta"] < 0 and fields["delta_ci95"][0] <= fields["delta"] <= fields["delta_ci95"][1]


def test_fidelity_per_output():
    base = [np.ones((10, 3), np.float32), RNG.standard_normal((10, 2)).astype(np.float32)]
    got = [base[0] * 1.01, base[1]]
    fid = output_fidelity(got, base, ["a", "b"])
    assert fid["a"]["sqnr_db"] == pytest.approx(40.0, abs=0.01) and fid["a"]["cosine"] == pytest.approx(1.0)
    assert fid["b"]["identical"] is True and fid["b"]["sqnr_db"] is None and fid["b"]["max_abs"] == 0.0
    assert "differs" in output_fidelity([np.ones((10, 4))], [np.ones((10, 3))], ["a"])["a"]["note"]


def test_several_inputs_slice_together():
    x = Arrays({"ids": np.arange(12).reshape(6, 2), "mask": np.ones((6, 2), np.float32)})
    assert len(x[1:3]) == 2 and names_of(x) == ["ids", "mask"] and [a.shape for a in as_list(x[[0, 0, 5]])] == [(3, 2)] * 2
    assert len(concat([x[:2], x[2:]])) == 6
    with pytest.raises(ValueError, match="share their first axis"):
        Arrays({"a": np.zeros(3), "b": np.zeros(4)})


def test_a_bad_task_table_is_a_config_error():
    with pytest.raises(ConfigError, match="needs evaluate"):
        TaskConfig(kind="custom")
    with pytest.raises(ConfigError, match="resamples must be >= 100"):
        TaskConfig(resamples=10)

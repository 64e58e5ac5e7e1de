"""Experiment files: valid ones load; wrong keys, types and values are one clear error."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edgebench.config import demo_experiment, load_experiment, parse_experiment
from edgebench.errors import ConfigError


def test_demo_loads_with_variants():
    exp = demo_experiment()
    assert exp.name == "demo"
    assert [v.name for v in exp.variants][:2] == ["int8", "fp16"]
    assert exp.variants[0].steps[0].export_scheme == "int8_static"
    assert exp.to_dict()["variants"][0]["steps"][0]["method"] == "quantize"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"modle": {}}, "unknown key 'modle' (did you mean \"model\"?)"),
        ({"train": {"epoch": 3}}, "unknown key 'epoch' (did you mean \"epochs\"?)"),
        ({"train": {"epochs": "ten"}}, "experiment.train.epochs: expected int, got 'ten'"),
        ({"train": {"lr": -1}}, "lr must be positive"),
        ({"run": {"runtimes": ["onnx"]}}, "runtimes = 'onnx' is not one of "),
        ({"task": {"kind": "detekt"}}, "[task] kind = 'detekt' is not one of"),
        ({"task": {"evaluate": "no_colon"}}, '[task] evaluate = \'no_colon\': expected "package.module:function"'),
        ({"data": {"loader": "nocolon"}}, 'loader = \'nocolon\': expected "package.module:function"'),
        ({"data": {"source": "/no/such/file.npz"}}, "no such file or folder"),
        ({"model": {"weights": "/no/such/model.pt"}}, "weights = '/no/such/model.pt': file not found"),
        ({"variant": [{"name": "x", "steps": [{"method": "quantise"}]}]}, "unknown method 'quantise' (did you mean \"quantize\"?)"),
        ({"variant": [{"name": "x", "steps": [{"method": "quantize", "schme": "fp16"}]}]}, "unknown key 'schme' (did you mean \"scheme\"?)"),
        ({"variant": [{"name": "x", "steps": [{"method": "quantize", "scheme": "int4"}]}]}, "scheme = 'int4' is not one of"),
        ({"variant": [{"name": "x", "steps": []}]}, "steps must be a non-empty list"),
        ({"variant": [{"name": "baseline", "steps": [{"method": "quantize"}]}]}, "used twice"),
        ({"run": {"profile": -1}}, "profile must be true, false or a number of runs"),
        ({"run": {"profile": "yes"}}, "experiment.run.profile: 'yes' is not a valid"),
    ],
)
def test_bad_experiment_is_one_clear_error(raw, message):
    with pytest.raises(ConfigError) as info:
        parse_experiment(raw)
    assert message in str(info.value)


def test_relative_paths_are_relative_to_the_file(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "data.npz").write_bytes(b"")
    exp_file = tmp_path / "sub" / "exp.toml"
    exp_file.write_text('[data]\nsource = "data.npz"\n')
    assert load_experiment(exp_file).data.source == str(tmp_path / "sub" / "data.npz")


def test_missing_experiment_file():
    with pytest.raises(ConfigError, match="experiment file not found"):
        load_experiment("/no/such/experiment.toml")


def test_cli_wrong_key_exits_2_naming_the_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[train]\nepochs = 1\nlearning_rate = 0.1\n')
    proc = subprocess.run([sys.executable, "-m", "edgebench", "run", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "unknown key 'learning_rate'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1  # one line


def test_init_writes_the_demo_and_refuses_to_overwrite(tmp_path):
    path = tmp_path / "exp.toml"
    run = [sys.executable, "-m", "edgebench", "init", str(path)]
    assert subprocess.run(run, capture_output=True).returncode == 0
    assert load_experiment(path).name == "demo"
    again = subprocess.run(run, capture_output=True, text=True)
    assert again.returncode == 2 and "--force" in again.stderr


def test_run_profile_is_a_switch_or_a_number_of_runs():
    assert parse_experiment({"run": {"profile": True}}).run.profile is True
    assert parse_experiment({"run": {"profile": 30}}).run.profile == 30
    assert parse_experiment({}).run.profile is False

"""Per-layer sensitivity: one row per Conv/Linear layer, worst first, model untouched; the
command writes sensitivity.json and a chart for a real (tiny) experiment."""

from __future__ import annotations

import json

import pytest
from tiny_nets import state_equal, tiny_data, trained_tiny

from edgebench.cli import main as cli_main
from edgebench.compress.layers import prunable_layers
from edgebench.compress.sensitivity import layer_sensitivity
from edgebench.errors import ConfigError

DATA = tiny_data()


@pytest.mark.parametrize("method", ["prune", "quantize"])
def test_one_row_per_layer_sorted_by_drop(method):
    model = trained_tiny(DATA)
    before = trained_tiny(DATA)
    rows = layer_sensitivity(model, DATA, method, ratio=0.9, bits=4)
    assert sorted(r["layer"] for r in rows) == sorted(n for n, _ in prunable_layers(model))
    drops = [r["drop"] for r in rows]
    assert drops == sorted(drops, reverse=True)
    assert {"layer", "type", "params", "score", "drop"} <= set(rows[0])
    assert state_equal(model, before)
    if method == "prune":
        assert drops[0] > 0.05  # 90% of some layer of a trained net matters


def test_calibration_split_measures_changed_predictions():
    rows = layer_sensitivity(trained_tiny(DATA), DATA, "prune", ratio=0.0, split="calib")
    assert all(r["drop"] == 0 and r["score"] == 1 for r in rows)  # nothing pruned, nothing changes
    with pytest.raises(ConfigError, match="split"):
        layer_sensitivity(trained_tiny(DATA), DATA, "prune", split="train")


def test_command_writes_json_and_chart(tmp_path, capsys):
    from conftest import write_experiment

    exp = write_experiment(tmp_path, variants="")
    out = tmp_path / "sens"
    assert cli_main(["sensitivity", str(exp), "--ratio", "0.7", "--out", str(out), "--quiet"]) == 0
    result = json.loads((out / "sensitivity.json").read_text())
    assert result["method"] == "prune" and result["measured_on"].startswith("test")
    assert len(result["layers"]) == 6  # demo_cnn: five convs and the classifier
    assert (out / "sensitivity.png").stat().st_size > 1000
    assert (
        cli_main(["sensitivity", str(exp), "--method", "quantize", "--out", str(out), "--json"])
        == 0
    )
    assert json.loads(capsys.readouterr().out)["layers"]
    assert cli_main(["sensitivity", str(exp), "--ratio", "1.5", "--out", str(out), "--quiet"]) == 2

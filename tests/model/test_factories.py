"""Every registered model builds at every width, exports to ONNX and matches torch (timm-style)."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch

from edgebench.errors import ConfigError, ExportError
from edgebench.export.onnx import export_onnx, onnx_costs, verify_onnx
from edgebench.model.factories import MODELS, count_params, create_model, load_weights


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("in_channels", [1, 3])
def test_model_exports_and_matches(name, in_channels, tmp_path):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, in_channels=in_channels, width=0.5)
    x = np.random.default_rng(0).standard_normal((4, in_channels, 16, 16)).astype(np.float32)
    path = export_onnx(model, x, tmp_path / "m.onnx")
    assert verify_onnx(path, model, x) < 1e-4
    costs = onnx_costs(path)
    assert costs["macs"] > 0 and costs["activation_elements"] > 0


@pytest.mark.parametrize("name", sorted(MODELS))
def test_width_scales_parameters(name):
    small = count_params(create_model(name, 10, 1, width=0.5))[0]
    big = count_params(create_model(name, 10, 1, width=1.0))[0]
    assert small < 0.6 * big


def test_macs_of_a_known_network(tmp_path):
    # conv 1->4 3x3 'same' on 8x8: 8*8*4*9 = 2304; linear 256->10: 2560.
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(256, 10))
    path = export_onnx(model, np.zeros((1, 1, 8, 8), np.float32), tmp_path / "m.onnx")
    assert onnx_costs(path)["macs"] == 2304 + 2560


def test_user_factory_and_errors(tmp_path, monkeypatch):
    (tmp_path / "mynets.py").write_text(
        "import torch\ndef build(num_classes, width=1):\n    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, num_classes))\n"
        "def not_a_model(num_classes):\n    return 3\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert isinstance(create_model("mynets:build", 10, 1), torch.nn.Module)
    with pytest.raises(ConfigError, match="returned int, not a torch nn.Module"):
        create_model("mynets:not_a_model", 10, 1)
    with pytest.raises(ConfigError, match="has no callable 'nope'"):
        create_model("mynets:nope", 10, 1)
    with pytest.raises(ConfigError, match='did you mean "mobilenet"'):
        create_model("mobilnet", 10, 1)


def test_weights_that_do_not_fit_are_a_clear_error(tmp_path):
    path = tmp_path / "w.pt"
    torch.save(create_model("demo_cnn", 10, 1, width=0.5).state_dict(), path)
    load_weights(create_model("demo_cnn", 10, 1, width=0.5), str(path))
    with pytest.raises(ConfigError, match="do not fit the model"):
        load_weights(create_model("demo_cnn", 10, 1, width=1.0), str(path))
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(ConfigError, match="cannot be read by torch.load"):
        load_weights(create_model("demo_cnn", 10, 1), str(tmp_path / "junk.pt"))


@pytest.mark.parametrize("shape", ["state dict", "state_dict", "model_state_dict", "DataParallel"])
def test_the_usual_checkpoint_shapes_load(shape, tmp_path):
    torch.manual_seed(3)
    trained = create_model("demo_cnn", 10, 1, width=0.5)
    state = trained.state_dict()
    saved = {
        "state dict": state,
        "state_dict": {"state_dict": state, "epoch": 7},
        "model_state_dict": {"model_state_dict": state, "optimizer_state_dict": {"state": {}, "param_groups": []}},
        "DataParallel": {f"module.{k}": v for k, v in state.items()},
    }[shape]
    torch.save(saved, tmp_path / "w.pt")
    model = load_weights(create_model("demo_cnn", 10, 1, width=0.5), str(tmp_path / "w.pt"))
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_weights_are_read_as_tensors_only(tmp_path):
    marker = tmp_path / "ran"
    torch.save(_RunsCode(marker), tmp_path / "code.pt")
    with pytest.raises(ConfigError, match=r"refused: loading it would import posix\.system.*torch\.save\(model\.state_dict\(\)"):
        load_weights(create_model("demo_cnn", 10, 1), str(tmp_path / "code.pt"))
    assert not marker.exists()
    # A whole pickled module is refused the same way: it names the class it would import.
    torch.save(create_model("demo_cnn", 10, 1), tmp_path / "module.pt")
    with pytest.raises(ConfigError, match="refused: loading it would import edgebench.model.factories.DemoCNN"):
        load_weights(create_model("demo_cnn", 10, 1), str(tmp_path / "module.pt"))
    torch.save({"epoch": 3}, tmp_path / "no-weights.pt")
    with pytest.raises(ConfigError, match="not a state dict of tensors"):
        load_weights(create_model("demo_cnn", 10, 1), str(tmp_path / "no-weights.pt"))


def test_a_factory_module_in_the_working_directory_is_found(tmp_path, monkeypatch):
    # The `edgebench` console script does not put the working directory on sys.path.
    (tmp_path / "cwdnet.py").write_text(
        "import torch\ndef build(num_classes):\n    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, num_classes))\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    assert isinstance(create_model("cwdnet:build", 10, 1), torch.nn.Module)
    with pytest.raises(ConfigError, match="cannot import 'nonet'.*PYTHONPATH"):
        create_model("nonet:build", 10, 1)


def test_an_export_that_does_not_match_torch_is_an_error(tmp_path):
    x = np.random.default_rng(0).standard_normal((8, 1, 8, 8)).astype(np.float32)
    a = create_model("demo_cnn", 10, 1, width=0.5).eval()
    path = export_onnx(a, x, tmp_path / "a.onnx")
    torch.manual_seed(1)
    b = create_model("demo_cnn", 10, 1, width=0.5).eval()  # other weights, same shapes
    with pytest.raises(ExportError, match="does not match torch: relative error"):
        verify_onnx(path, b, x)

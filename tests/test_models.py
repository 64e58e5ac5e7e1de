"""Every registered model builds at every width, exports to ONNX and matches torch (timm-style)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgebench.errors import ConfigError, ExportError
from edgebench.export import export_onnx, onnx_costs, verify_onnx
from edgebench.models import MODELS, count_params, create_model, load_weights


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


def test_an_export_that_does_not_match_torch_is_an_error(tmp_path):
    x = np.random.default_rng(0).standard_normal((8, 1, 8, 8)).astype(np.float32)
    a = create_model("demo_cnn", 10, 1, width=0.5).eval()
    path = export_onnx(a, x, tmp_path / "a.onnx")
    torch.manual_seed(1)
    b = create_model("demo_cnn", 10, 1, width=0.5).eval()  # other weights, same shapes
    with pytest.raises(ExportError, match="does not match torch: relative error"):
        verify_onnx(path, b, x)

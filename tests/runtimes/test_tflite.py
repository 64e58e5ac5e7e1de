"""TFLite export (litert-torch) and the runner's TfliteModel, on a tiny trained CNN.

One module-scoped fixture trains the model once and converts it once per scheme (each
conversion takes seconds); the tests then check the files on ai-edge-litert and the runner.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("litert_torch")
pytest.importorskip("ai_edge_litert")
torch = pytest.importorskip("torch")
nn = torch.nn

from edgebench.device import rt_tflite, runner  # noqa: E402
from edgebench.errors import ExportError  # noqa: E402
from edgebench.export.tflite import SCHEMES, export_tflite, verify_tflite  # noqa: E402

pytestmark = pytest.mark.tflite

N_CLASSES = 4
WIDTH = 32  # wide enough that weights, not flatbuffer overhead, dominate the file size


class TinyNet(nn.Module):
    """Conv-BN-ReLU stem, a depthwise-separable residual block, global pool, Linear."""

    def __init__(self, channels: int = 3, width: int = WIDTH, classes: int = N_CLASSES):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.conv = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.block = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, groups=width, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, width, 1),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, classes)

    def forward(self, x):
        x = self.conv(self.stem(x))
        x = x + self.block(x)
        return self.fc(torch.flatten(self.pool(x), 1))


class DataDependent(nn.Module):
    """Branches on a value of its input: torch.export cannot capture it as one graph."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        x = x.flatten(1)[:, :4]
        if x.sum() > 0:
            return self.fc(x)
        return -self.fc(x)


def quadrant_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noise images (3x8x8) where class k brightens quadrant k: separable, not trivial."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, N_CLASSES, n)
    x = rng.normal(0.0, 0.5, (n, 3, 8, 8)).astype(np.float32)
    for k in range(N_CLASSES):
        r, c = divmod(k, 2)
        x[y == k, :, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4] += 1.0
    return x, y


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.manual_seed(0)
    x_train, y_train = quadrant_data(512, seed=1)
    x_test, y_test = quadrant_data(200, seed=2)
    model = TinyNet()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    model.train()
    for _ in range(8):
        for i in range(0, len(xt), 64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[i : i + 64]), yt[i : i + 64]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(x_test)).numpy()
    before = {k: v.clone() for k, v in model.state_dict().items()}

    folder = tmp_path_factory.mktemp("tflite")
    files = {}
    for scheme in SCHEMES:
        files[scheme] = export_tflite(
            model,
            x_test[:1],
            folder / f"{scheme}.tflite",
            scheme,
            calibration=x_train[:128] if scheme == "int8_static" else None,
        )
    data = folder / "test.npz"
    np.savez(data, x=x_test, y=y_test)
    return {
        "model": model,
        "before": before,
        "x": x_test,
        "y": y_test,
        "torch_accuracy": float((logits.argmax(1) == y_test).mean()),
        "files": files,
        "data": data,
        "folder": folder,
    }


def tensor_dtypes(path: Path) -> dict[str, int]:
    from collections import Counter

    from ai_edge_litert.interpreter import Interpreter

    details = Interpreter(model_path=str(path)).get_tensor_details()
    return dict(Counter(np.dtype(d["dtype"]).name for d in details))


def test_model_is_trained_and_not_modified(trained):
    assert trained["torch_accuracy"] >= 0.95
    model = trained["model"]
    assert not model.training
    for name, value in model.state_dict().items():
        assert torch.equal(value, trained["before"][name]), name


def test_fp32_matches_torch(trained):
    check = verify_tflite(trained["files"]["fp32"], trained["model"], trained["x"])
    assert check["input_dtype"] == "float32" and check["output_dtype"] == "float32"
    assert check["logit_rel_err"] < 1e-4
    assert check["agreement"] == 1.0


def test_fp16_weights_are_half_and_close(trained):
    files = trained["files"]
    assert "float16" in tensor_dtypes(files["fp16"])
    assert files["fp16"].stat().st_size < 0.7 * files["fp32"].stat().st_size
    check = verify_tflite(files["fp16"], trained["model"], trained["x"])
    assert check["input_dtype"] == "float32"
    assert check["logit_rel_err"] < 1e-2
    assert check["agreement"] >= 0.98


def test_int8_dynamic_is_smaller_with_float_io(trained):
    files = trained["files"]
    ratio = files["int8_dynamic"].stat().st_size / files["fp32"].stat().st_size
    assert ratio < 0.45, ratio  # ~0.3x: int8 weights plus fixed flatbuffer overhead
    check = verify_tflite(files["int8_dynamic"], trained["model"], trained["x"])
    assert check["input_dtype"] == "float32" and check["output_dtype"] == "float32"
    assert check["agreement"] >= 0.95
    assert check["logit_rel_err"] < 0.1


def test_int8_static_has_int8_io_and_agrees(trained):
    path = trained["files"]["int8_static"]
    model = rt_tflite.Model(str(path), threads=1)
    assert model.inputs[0]["dtype"] == np.int8 and model.outputs[0]["dtype"] == np.int8
    # Every op runs on int8 (strict export lets PT2E annotate the residual add and pool).
    assert "float32" not in tensor_dtypes(path)
    check = verify_tflite(path, trained["model"], trained["x"])
    assert check["agreement"] >= 0.9
    assert check["logit_rel_err"] < 0.1


@pytest.mark.parametrize("scheme", SCHEMES)
def test_runner_runs_each_scheme(trained, scheme):
    out = trained["folder"] / f"{scheme}.json"
    code = runner.main(
        [
            "--model", str(trained["files"][scheme]),
            "--data", str(trained["data"]),
            "--runtime", "tflite",
            "--warmup", "2", "--min-runs", "10", "--min-seconds", "0",
            "--output", str(out),
        ]
    )  # fmt: skip
    result = json.loads(out.read_text())
    assert code == 0, result.get("error")
    assert result["status"] == "ok"
    assert [o["shape"] for o in result["outputs"]] == [[len(trained["x"]), N_CLASSES]]
    assert len(result["latency_samples_ms"]) >= 10
    assert abs(result["accuracy"] - trained["torch_accuracy"]) <= 0.05


def test_unconvertible_model_raises_one_line(tmp_path):
    sample = np.ones((1, 1, 2, 2), np.float32)
    with pytest.raises(ExportError) as caught:
        export_tflite(DataDependent(), sample, tmp_path / "m.tflite")
    message = str(caught.value)
    assert message.startswith("TFLite fp32 export failed in litert-torch conversion:")
    assert "data-dependent" in message  # the reason, not only a type name
    assert "\n" not in message and len(message) < 400
    assert not (tmp_path / "m.tflite").exists()


def test_bad_arguments_raise_before_converting(tmp_path):
    model, sample = TinyNet(), np.zeros((1, 3, 8, 8), np.float32)
    with pytest.raises(ExportError, match='did you mean "int8_static"'):
        export_tflite(model, sample, tmp_path / "m.tflite", "int8_statik")
    with pytest.raises(ExportError, match="needs calibration"):
        export_tflite(model, sample, tmp_path / "m.tflite", "int8_static")
    with pytest.raises(ExportError, match=r"needs a batch-1 sample"):
        export_tflite(model, np.zeros((2, 3, 8, 8), np.float32), tmp_path / "m.tflite")


def test_missing_litert_torch_is_unavailable(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "litert_torch", None)  # makes `import litert_torch` fail
    with pytest.raises(ExportError, match="^unavailable: install edgebench\\[tflite\\]"):
        export_tflite(TinyNet(), np.zeros((1, 3, 8, 8), np.float32), tmp_path / "m.tflite")

"""The `.pte` and ncnn formats on models that are not the demo CNN: several inputs and outputs,
ops XNNPACK does not take (they run on portable kernels, and the records name them) and ops
pnnx cannot map to ncnn (an "unavailable" artifact naming the layers), through the real runner."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("executorch.exir")
pytest.importorskip("ncnn")
pytest.importorskip("pnnx")

from edgebench.export.artifacts import ExportRequest  # noqa: E402
from edgebench.export.artifacts_mobile import ncnn_artifact, pte_artifact  # noqa: E402
from edgebench.runtimes import runtime  # noqa: E402
from edgebench.targets import RunOptions, load_profile, open_target  # noqa: E402
from edgebench.tasks.arrays import Arrays  # noqa: E402

OPTIONS = RunOptions(threads=1, warmup=2, min_runs=5, min_seconds=0.0, max_seconds=5.0, timeout_s=120)


class TwoInTwoOut(torch.nn.Module):
    """Features and a mask in; scores and the hidden state out."""

    def __init__(self):
        super().__init__()
        self.features, self.mask = torch.nn.Linear(6, 8), torch.nn.Linear(3, 8)
        self.head = torch.nn.Linear(8, 4)

    def forward(self, x, m):
        hidden = torch.relu(self.features(x) + self.mask(m))
        return self.head(hidden), hidden


class Thresholded(torch.nn.Module):
    """A comparison, a select and a running sum: none of them is an XNNPACK op or an ncnn layer pnnx makes."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(6, 4)

    def forward(self, x):
        z = self.proj(x)
        return torch.where(z > 0.3, z, z * 0.1).cumsum(1)


@pytest.fixture(scope="module")
def local():
    target = open_target(load_profile("local"))
    yield target
    target.close()


def _request(model, x, folder):
    from edgebench.export.onnx import export_onnx

    export_onnx(model, x[:1], folder / "float.onnx")
    return ExportRequest(x, x[:16], float_onnx=folder / "float.onnx")


def test_several_inputs_and_outputs_run_on_both(tmp_path, local):
    from edgebench.device.runner import decode_outputs
    from edgebench.model.train import predict_outputs

    torch.manual_seed(0)
    model = TwoInTwoOut().eval()
    rng = np.random.default_rng(0)
    x = Arrays({"x": rng.standard_normal((24, 6)).astype(np.float32), "m": rng.standard_normal((24, 3)).astype(np.float32)})
    np.savez(tmp_path / "eval.npz", **{"x:x": x["x"], "x:m": x["m"]}, input_names=np.array(["x", "m"]))
    want = predict_outputs(model, x)
    request = _request(model, x, tmp_path)
    for exporter, path, name in ((pte_artifact, tmp_path / "m.pte", "executorch"), (ncnn_artifact, tmp_path / "m.param", "ncnn")):
        entry = exporter(model, request, path, print, "two")
        assert not entry.get("error"), entry
        result = local.measure(path, tmp_path / "eval.npz", name, OPTIONS)
        assert result["status"] == "ok", result.get("error")
        got = decode_outputs(result)
        assert [g.shape for g in got] == [w.shape for w in want], name
        assert all(np.allclose(g, w, atol=1e-5) for g, w in zip(got, want)), name


def test_ops_left_to_portable_kernels_and_layers_ncnn_lacks_are_named(tmp_path, local):
    torch.manual_seed(0)
    model = Thresholded().eval()
    x = np.random.default_rng(1).standard_normal((16, 6)).astype(np.float32)
    np.savez(tmp_path / "eval.npz", x=x)
    request = _request(model, x, tmp_path)

    ncnn = ncnn_artifact(model, request, tmp_path / "m.param", print, "t")
    assert ncnn["error"].startswith("unavailable") and "torch.where" in ncnn["error"] and "torch.gt" in ncnn["error"]

    entry = pte_artifact(model, request, tmp_path / "m.pte", print, "t")
    delegation = entry["delegation"]
    assert 0 < delegation["share"] < 1 and {"cumsum", "where", "gt"} <= set(delegation["fallback_ops"])
    result = local.measure(tmp_path / "m.pte", tmp_path / "eval.npz", "executorch", OPTIONS)
    assert result["status"] == "ok", result.get("error")
    fields = runtime("executorch").device_precision(result["executed"], tmp_path / "m.pte", "fp32")
    ran = fields["delegation"]["ran"]["portable_ops"]
    assert any(op.startswith("cumsum") for op in ran), ran
    assert "portable (non-XNNPACK) kernels ran" in fields["precision_note"] and "cumsum" in fields["precision_note"]


def test_ncnn_options_from_the_profile_override_the_weights(tmp_path, local):
    from edgebench.device import rt_ncnn

    torch.manual_seed(0)
    model = TwoInTwoOut().eval()
    x = Arrays({"x": np.ones((4, 6), np.float32), "m": np.ones((4, 3), np.float32)})
    request = _request(model, x, tmp_path)
    assert not ncnn_artifact(model, request, tmp_path / "m.param", print, "o").get("error")
    keys = ("use_fp16_storage", "use_fp16_packed", "use_fp16_arithmetic")
    for options, expected in (({}, False), ({"fp16": "on"}, True), ({"fp16": "off", "use_fp16_storage": "1"}, None)):
        settings = rt_ncnn.Model(str(tmp_path / "m.param"), 1, options).settings
        assert settings["weights"] == "fp32" and settings["num_threads"] == 1
        if expected is None:  # one key alone, after the group
            assert [settings[k] for k in keys] == [True, False, False]
        else:
            assert [settings[k] for k in keys] == [expected] * 3


def test_a_program_run_by_another_executorch_version_says_so(tmp_path):
    from edgebench.export.precision_mobile import read_executorch

    (tmp_path / "m.pte").write_bytes(b"")
    (tmp_path / "m.pte.json").write_text(json.dumps({
        "executorch_version": "1.5.1", "delegation": {"share": 1.0, "delegated_nodes": 3, "portable_nodes": 0,
                                                      "subgraphs": 1, "fallback_ops": {}},
        "compute": [["convolution", "int8", "xnnpack"]], "others": [], "weights": ["int8"]}))
    unread = {"flavor": "executorch-numpy-runtime", "runtime_version": "1.3.1 (executorch-numpy-runtime 1.4.0)",
              "unread": "executorch-numpy-runtime writes no ETDump: kernels not read on the device"}
    fields = read_executorch(unread, tmp_path / "m.pte", "int8_static")
    assert fields["compute_precision"] == "int8" and fields["delegation"]["share"] == 1.0
    assert "written by ExecuTorch 1.5.1, run by 1.3.1" in fields["precision_note"]
    assert "no ETDump" in fields["precision_note"]

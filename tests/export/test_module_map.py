"""Runtime nodes map back to the user's modules: the export's module map (modules.json) and
`attribute` on onnxruntime's profiled kernels (fp32, QDQ int8) and OpenVINO's runtime model."""

from __future__ import annotations

import glob
import json
import os

import numpy as np
import pytest
import torch
from torch import nn

from edgebench.export.module_map import (
    COMPUTE_OPS,
    LAYOUT,
    QUANT,
    UNATTRIBUTED,
    attribute,
    load_module_map,
)
from edgebench.export.onnx import export_onnx, onnx_costs, quantize_onnx

SPECIAL = {LAYOUT, QUANT, UNATTRIBUTED}


class Block(nn.Module):
    """Depthwise conv, grouped 1×1 conv, an SE gate, Mish and a residual add."""

    def __init__(self, c: int):
        super().__init__()
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.pw = nn.Conv2d(c, c, 1, groups=2)
        self.gate = nn.Module()
        self.gate.squeeze = nn.AdaptiveAvgPool2d(1)
        self.gate.excite = nn.Sequential(nn.Conv2d(c, 4, 1), nn.ReLU(), nn.Conv2d(4, c, 1), nn.Hardsigmoid())
        self.act = nn.Mish()

    def forward(self, x):
        y = self.pw(self.dw(x))
        y = y * self.gate.excite(self.gate.squeeze(y))
        return x + self.act(y)


class UserNet(nn.Module):
    """No naming conventions: the head is registered first and runs last; a functional
    pool + flatten in forward belongs to no submodule."""

    def __init__(self, c: int = 16, num_classes: int = 4):
        super().__init__()
        self.classifier = nn.Linear(c, num_classes)
        self.entry = nn.Sequential(nn.Conv2d(1, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU())
        self.stage = nn.Sequential(Block(c), Block(c))

    def forward(self, x):
        x = self.stage(self.entry(x))
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


CONVS = {"entry.0", "classifier"} | {
    f"stage.{i}.{m}" for i in (0, 1) for m in ("dw", "pw", "gate.excite.0", "gate.excite.2")
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = UserNet().eval()
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        model.entry[1].running_mean.uniform_(-0.5, 0.5)
        model.entry[1].running_var.uniform_(0.5, 2.0)
    folder = tmp_path_factory.mktemp("module_map")
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (16, 1, 8, 8)).astype(np.float32)
    float_onnx = export_onnx(model, x[:1], folder / "float.onnx", modules_out=folder / "modules.json")
    int8 = quantize_onnx(float_onnx, folder / "int8.onnx", "int8_static", x)
    return {"float": float_onnx, "int8": int8, "map": load_module_map(folder / "modules.json"), "x": x[:1]}


def test_module_paths_are_attribute_paths_and_macs_add_up(exported):
    mapping = exported["map"]
    modules = mapping["modules"]
    assert CONVS <= set(modules), sorted(modules)
    assert set(mapping["nodes"].values()) == set(modules)
    for path in CONVS:
        assert modules[path]["macs"] > 0 and {"Conv", "Gemm"} & set(modules[path]["ops"]), path
    assert "Mish" in modules["stage.0.act"]["ops"] and "HardSigmoid" in modules["stage.1.gate.excite.3"]["ops"]
    assert "Add" in modules["stage.0"]["ops"] and "Mul" in modules["stage.1"]["ops"]  # residual, gate
    assert "Reshape" in modules[""]["ops"]  # torch.flatten in forward
    # The BatchNorm folded into the Conv does not take the Conv's MACs.
    assert modules.get("entry.1", {}).get("macs", 0) == 0
    assert sum(m["macs"] for m in modules.values()) == onnx_costs(exported["float"])["macs"]
    # The exported file itself is stripped of the metadata the map was read from.
    import onnx

    assert not any(n.metadata_props for n in onnx.load(str(exported["float"])).graph.node)


def test_cached_export_writes_the_map_again(exported, tmp_path):
    again = tmp_path / "modules.json"
    model = UserNet().eval()
    export_onnx(model, exported["x"], tmp_path / "a.onnx", modules_out=again)
    export_onnx(model, exported["x"], tmp_path / "b.onnx", modules_out=tmp_path / "b.json")
    assert json.loads(again.read_text()) == json.loads((tmp_path / "b.json").read_text())


def _ort_nodes(path, x, tmp_path) -> list[tuple[str, str]]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.enable_profiling = True
    so.profile_file_prefix = os.path.join(tmp_path, f"profile_{path.stem}")
    session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    session.run(None, {session.get_inputs()[0].name: x})
    session.end_profiling()
    events = []
    for file in glob.glob(os.path.join(tmp_path, f"profile_{path.stem}*.json")):
        with open(file) as f:
            events += json.load(f)
    suffix = "_kernel_time"
    return [(e["name"][: -len(suffix)], e["args"]["op_name"]) for e in events
            if e.get("cat") == "Node" and e["name"].endswith(suffix)]  # fmt: skip


def _check(nodes: list[tuple[str, str]], mapping: dict, label: str) -> None:
    got = [(name, op, attribute(name, op, mapping)) for name, op in nodes]
    compute = [g for g in got if g[1] in COMPUTE_OPS]
    on_module = [g for g in compute if g[2] not in SPECIAL]
    rate = len(on_module) / max(len(compute), 1)
    modules = sum(g[2] not in SPECIAL for g in got)
    lost = [g[0] for g in got if g[2] == UNATTRIBUTED]
    print(f"{label}: {len(on_module)}/{len(compute)} compute nodes on a module; of all {len(got)} nodes "
          f"{modules} on a module, {len(got) - modules - len(lost)} layout/quantize, unattributed: {lost}")  # fmt: skip
    assert compute and rate >= 0.9, [g for g in compute if g not in on_module]
    assert {g[2] for g in compute} <= set(mapping["modules"]) | SPECIAL
    # Every conv/linear module shows up among the compute nodes.
    assert CONVS <= {g[2] for g in compute}, sorted({g[2] for g in compute})
    for name, op, where in got:
        if op in ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "FakeQuantize"):
            assert where == QUANT or where in mapping["modules"], (name, where)


@pytest.mark.parametrize("kind", ["float", "int8"])
def test_onnxruntime_nodes_attribute_to_modules(exported, kind, tmp_path):
    nodes = _ort_nodes(exported[kind], exported["x"], tmp_path)
    _check(nodes, exported["map"], f"onnxruntime {kind}")
    if kind == "int8":
        ops = {op for _, op in nodes}
        assert "QLinearConv" in ops and {"QuantizeLinear", "DequantizeLinear"} & ops


def test_known_runtime_renames():
    mapping = {
        "nodes": {"node_conv": "stage.0.dw", "node_relu": "entry.2", "node_Conv_20": "entry.0", "node_t": ""},
        "tensors": {"conv": "node_conv", "relu": "node_relu", "logits": "node_conv"},
        "params": {"stage.0.dw.weight": "stage.0.dw"},
        "anchors": {"node_relu": "node_Conv_20"},
        "modules": {},
    }
    assert attribute("conv_nchwc", "Conv", mapping) == "stage.0.dw"
    assert attribute("InsertedPrecisionFreeCast_conv_nchwc", "Conv", mapping) == "stage.0.dw"
    assert attribute("relu_nchwc", "Conv", mapping) == "entry.0"  # Conv+Relu named after the Relu
    assert attribute("node_relu", "Relu", mapping) == "entry.2"
    assert attribute("node_conv_token_7", "QLinearConv", mapping) == "stage.0.dw"
    assert attribute("node_conv_quant", "ConvInteger", mapping) == "stage.0.dw"
    assert attribute("node_conv/WithoutBiases", "Convolution", mapping) == "stage.0.dw"
    assert attribute("logits/sink_port_0", "Output", mapping) == "stage.0.dw"
    assert attribute("relu_QuantizeLinear", "QuantizeLinear", mapping) == QUANT
    assert attribute("stage.0.dw.weight_DequantizeLinear", "DequantizeLinear", mapping) == "stage.0.dw"
    assert attribute("input_QuantizeLinear_abcd_acdb_node_conv/WithoutBiases", "Reorder", mapping) == QUANT
    assert attribute("node_relu_acdb_abcd_node_conv", "Reorder", mapping) == LAYOUT
    assert attribute("ReorderOutput_token_3", "ReorderOutput", mapping) == LAYOUT
    assert attribute("Transpose_token_4", "Transpose", mapping) == LAYOUT
    assert attribute("graph_output_cast0", "Cast", mapping) == LAYOUT
    assert attribute("Softplus_25", "Softplus", mapping) == UNATTRIBUTED


def _ov_nodes(path) -> list[tuple[str, str]]:
    ov = pytest.importorskip("openvino", reason="OpenVINO is not installed")
    compiled = ov.Core().compile_model(str(path), "CPU")
    nodes = []
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        layer = info["layerType"].astype(str) if "layerType" in info else op.get_type_name()
        if layer not in ("Input", "Output", "Const", "Parameter", "Result"):
            nodes.append((op.get_friendly_name(), layer))
    return nodes


@pytest.mark.parametrize("kind", ["float", "int8"])
def test_openvino_nodes_attribute_to_modules(exported, kind):
    _check(_ov_nodes(exported[kind]), exported["map"], f"openvino {kind}")

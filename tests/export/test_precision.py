"""The precision an artifact really computes in, read from real exports on the real runtimes.

Three small nets: the tiny net of the compression tests (depthwise conv, SiLU, Hardswish,
residual add, Linear head); a net with a ConvTranspose, which neither onnxruntime's QDQ
fusion nor PT2E quantizes (so int8 only partly takes); and a conv+linear net whose weights
lie exactly on the int8 and fp16 grids, so the runtime's outputs show what it computed in:
float32 compute reproduces torch to ~1e-7, fp16 compute cannot (rounding the input alone to
fp16 costs ~2e-4), and quantizing activations costs ~1e-2.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_nets import tiny_data, trained_tiny
from torch import nn

from edgebench.config import load_experiment
from edgebench.export.onnx import export_onnx, onnx_logits, quantize_onnx
from edgebench.export.precision import COMPUTE_PRECISIONS, inspect_artifact, precision_label, took
from edgebench.export.variants import PRECISION_FIELDS, BuiltVariant, build_variant, load_variant

FLOAT_EXACT = 1e-5  # relative error of float32 compute on grid weights is ~4e-7


class UpNet(nn.Module):
    """Conv, ConvTranspose (never quantized by either runtime), Linear."""

    def __init__(self):
        super().__init__()
        self.down = nn.Conv2d(1, 8, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(8, 8, 2, stride=2)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = torch.relu(self.up(torch.relu(self.down(x))))
        return self.fc(x.mean(dim=(2, 3)))


class GridNet(nn.Module):
    """Conv and Linear without bias, weights q/128 with integer |q| <= 127 and 127 in every row:
    exact in fp16 and under symmetric int8 quantization, per tensor or per channel."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.fc = nn.Linear(8 * 8 * 8, 4, bias=False)
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in self.parameters():
                q = torch.randint(-127, 128, p.shape, generator=generator).float()
                q.view(q.shape[0], -1)[:, 0] = 127
                p.copy_(q / 128)

    def forward(self, x):
        return self.fc(self.conv(x).flatten(1))


def rel_err(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def torch_logits(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.eval()(torch.from_numpy(x)).numpy()


def inspect(path: Path, fmt: str, asked: str) -> dict:
    return inspect_artifact(path, fmt, asked)


@pytest.fixture(scope="module")
def data():
    return tiny_data()


@pytest.fixture(scope="module")
def onnx_files(data, tmp_path_factory) -> dict[tuple[str, str], Path]:
    """(net, scheme) -> .onnx for the three nets and the four schemes."""
    folder = tmp_path_factory.mktemp("onnx")
    nets = {"tiny": trained_tiny(data), "up": UpNet().eval(), "grid": GridNet().eval()}
    files = {}
    for name, model in nets.items():
        float_onnx = export_onnx(model, data.x_test[:1], folder / f"{name}.float.onnx")
        for scheme in ("fp32", "fp16", "int8_dynamic", "int8_static"):
            files[name, scheme] = quantize_onnx(float_onnx, folder / f"{name}.{scheme}.onnx", scheme, data.x_calib)
    inspect_artifact(files["tiny", "fp32"], "onnx")  # imports onnx/onnxruntime outside the timed calls
    return files


def test_took_and_label_say_whether_the_asked_precision_computes():
    assert took("int8", "int8") and took("int8", "int8-dynamic") and took("int8_static", "int8")
    assert took("fp32", "fp32") and took("fp16", "fp16") and took("qat", "int8")
    assert took("fp16", "fp32") is False and took("int8", "mixed") is False and took("int8", "fp32") is False
    assert took("int8", None) is None and took(None, "fp32") is None
    assert precision_label("int8", "int8-dynamic") == "int8-dynamic"
    assert precision_label("fp16", "fp32") == "fp16 (ran fp32)"
    assert precision_label("int8", "mixed") == "int8 (ran mixed)"
    assert precision_label("int8", None) == "int8"


def test_onnx_fp32_computes_fp32(onnx_files):
    found = inspect(onnx_files["tiny", "fp32"], "onnx", "fp32")
    assert (found["compute_precision"], found["weight_precision"]) == ("fp32", "fp32")
    assert set(found["precision_ops"]) == {"fp32"}
    assert found["precision_note"].startswith("fp32: all 6 conv/matmul ops")
    assert found["precision_source"].startswith("onnxruntime 1.")


def test_onnx_fp16_is_labelled_with_what_onnxruntime_computes_on_this_cpu(onnx_files, data):
    """PLATFORM.md: onnxruntime's CPU build computes an fp16 model in float32 via inserted casts."""
    import onnx
    import onnxruntime as ort

    path = onnx_files["grid", "fp16"]
    x = data.x_test[:16]
    float_compute = rel_err(onnx_logits(path, x), torch_logits(GridNet(), x)) < FLOAT_EXACT
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(path.with_suffix(".opt.onnx"))
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    optimized = onnx.load(options.optimized_model_filepath).graph
    fp16_tensors = [i.name for i in optimized.initializer if i.data_type == onnx.TensorProto.FLOAT16]
    assert float_compute == (not fp16_tensors)  # the numbers and the optimized graph agree

    found = inspect(path, "onnx", "fp16")
    assert found["weight_precision"] == "fp16"
    if float_compute:  # what this x86 host does (onnxruntime 1.32)
        assert found["compute_precision"] == "fp32"
        assert found["precision_note"].startswith("fp16 did not take: fp16 storage, fp32 compute")
        assert took("fp16", found["compute_precision"]) is False
    else:
        assert found["compute_precision"] in ("fp16", "mixed")
    tiny = inspect(onnx_files["tiny", "fp16"], "onnx", "fp16")
    assert tiny["compute_precision"] == found["compute_precision"]


def test_onnx_int8_static_computes_int8_and_names_the_ops_left_in_float(onnx_files):
    found = inspect(onnx_files["tiny", "int8_static"], "onnx", "int8_static")
    assert (found["compute_precision"], found["weight_precision"]) == ("int8", "int8")
    int8_ops = found["precision_ops"]["int8"]
    assert int8_ops["QLinearConv"] == 4 and int8_ops["QGemm"] == 2  # QDQ fused into integer kernels
    assert found["precision_note"].startswith("int8: all 6 conv/matmul ops compute on int8")
    # Hardswish's HardSigmoid and the global mean stay float between DequantizeLinear/QuantizeLinear.
    floats = found["precision_note"].split("; float: ")[1].split(", ")
    assert set(floats) == set(found["precision_ops"]["fp32"]) >= {"HardSigmoid", "ReduceMean"}
    assert took("int8_static", found["compute_precision"])


def test_onnx_int8_dynamic_quantizes_activations_at_run_time(onnx_files, data):
    found = inspect(onnx_files["tiny", "int8_dynamic"], "onnx", "int8_dynamic")
    assert found["compute_precision"] == "int8-dynamic"
    assert found["precision_ops"]["int8-dynamic"] == {"ConvInteger": 4, "DynamicQuantizeMatMul": 2}
    assert took("int8", found["compute_precision"]) and took("int8_dynamic", found["compute_precision"])
    # Weights exact on the int8 grid, yet the outputs move: the activations were quantized.
    grid = inspect(onnx_files["grid", "int8_dynamic"], "onnx", "int8_dynamic")
    x = data.x_test[:16]
    assert grid["compute_precision"] == "int8-dynamic"
    assert rel_err(onnx_logits(onnx_files["grid", "int8_dynamic"], x), torch_logits(GridNet(), x)) > 1e-3


def test_onnx_int8_on_a_net_with_an_unquantizable_op_is_mixed_and_names_it(onnx_files):
    for scheme, int8_kind in (("int8_static", "int8"), ("int8_dynamic", "int8-dynamic")):
        found = inspect(onnx_files["up", scheme], "onnx", scheme)
        assert found["compute_precision"] == "mixed", scheme
        assert found["precision_ops"]["fp32"]["ConvTranspose"] == 1
        assert int8_kind in found["precision_ops"]
        assert found["precision_note"].startswith(f"{scheme} partly took: mixed: ")
        assert "1 of 3 conv/matmul ops fp32 (ConvTranspose)" in found["precision_note"]
        assert took(scheme, "mixed") is False


def test_a_failed_inspection_is_recorded_not_raised(tmp_path):
    junk = tmp_path / "model.onnx"
    junk.write_bytes(b"not a model")
    found = inspect_artifact(junk, "onnx", "int8_static")
    assert found["compute_precision"] is None
    assert found["precision_note"].startswith("precision not read: ")
    assert inspect_artifact(junk, "openvino")["precision_note"].startswith("precision not read: ValueError")


def test_build_variant_records_carry_asked_and_computed_precision(data, tiny_experiment, tmp_path):
    exp = load_experiment(tiny_experiment)  # variants "int8" (int8_static) and "fp16"
    fp16 = next(v for v in exp.variants if v.name == "fp16")
    logged: list[str] = []
    built = build_variant(exp, fp16, trained_tiny(data), data, tmp_path, {"onnx"}, log=logged.append)
    record = built.static_fields("onnx")
    assert set(PRECISION_FIELDS) <= set(record)
    assert (record["precision"], record["compute_precision"], record["weight_precision"]) == ("fp16", "fp32", "fp16")
    assert record["precision_source"].startswith("onnxruntime")
    assert built.info["timings_s"]["precision_onnx"] >= 0  # kept in variant.json (speed: not a unit test's verdict)
    saved = json.loads((built.dir / "variant.json").read_text())["artifacts"]["onnx"]
    assert saved["compute_precision"] == "fp32"
    assert any("fp16 did not take" in line for line in logged)  # said once, while building


def test_resume_rebuilds_a_failed_variant_and_inspects_old_artifacts(onnx_files, tmp_path):
    failed = tmp_path / "variants" / "broken"
    failed.mkdir(parents=True)
    (failed / "variant.json").write_text(json.dumps({"name": "broken", "error": "step failed: boom"}))
    assert load_variant(tmp_path, "broken") is None

    # A variant built before precision inspection existed: its artifact is read on resume.
    old = tmp_path / "variants" / "old"
    old.mkdir()
    (old / "model.onnx").write_bytes(onnx_files["tiny", "int8_static"].read_bytes())
    info = {"name": "old", "export_scheme": "int8_static", "precision": "int8",
            "artifacts": {"onnx": {"file": "model.onnx", "size_bytes": 1}}}  # fmt: skip
    (old / "variant.json").write_text(json.dumps(info))
    variant = load_variant(tmp_path, "old")
    assert isinstance(variant, BuiltVariant)
    assert variant.static_fields("onnx")["compute_precision"] == "int8"
    assert json.loads((old / "variant.json").read_text())["artifacts"]["onnx"]["compute_precision"] == "int8"


@pytest.fixture(scope="module")
def tflite_files(data, tmp_path_factory) -> dict[tuple[str, str], Path]:
    pytest.importorskip("litert_torch")
    pytest.importorskip("ai_edge_litert")
    from edgebench.export.tflite import export_tflite

    folder = tmp_path_factory.mktemp("tflite")
    wanted = {"tiny": ("int8_static",), "up": ("int8_static",), "grid": ("fp32", "fp16", "int8_dynamic")}
    nets = {"tiny": trained_tiny(data), "up": UpNet().eval(), "grid": GridNet().eval()}
    files = {}
    for name, schemes in wanted.items():
        for scheme in schemes:
            path = folder / f"{name}.{scheme}.tflite"
            files[name, scheme] = export_tflite(nets[name], data.x_test[:1], path, scheme, calibration=data.x_calib)
    return files


def tflite_logits(path: Path, x: np.ndarray) -> np.ndarray:
    from edgebench.device.rt_tflite import Model as TfliteModel
    from edgebench.device.runner import predict_all

    return predict_all(TfliteModel(str(path), threads=1), [x])[0]


@pytest.mark.tflite
def test_tflite_fp32_computes_fp32(tflite_files, data):
    x = data.x_test[:16]
    assert rel_err(tflite_logits(tflite_files["grid", "fp32"], x), torch_logits(GridNet(), x)) < FLOAT_EXACT
    found = inspect(tflite_files["grid", "fp32"], "tflite", "fp32")
    assert (found["compute_precision"], found["weight_precision"]) == ("fp32", "fp32")
    assert found["precision_source"].startswith("ai-edge-litert ")


@pytest.mark.tflite
def test_tflite_fp16_stores_fp16_and_computes_fp32(tflite_files, data):
    path = tflite_files["grid", "fp16"]
    x = data.x_test[:16]
    # Same outputs as float32 compute with the same weights: no fp16 arithmetic happened.
    assert rel_err(tflite_logits(path, x), torch_logits(GridNet(), x)) < FLOAT_EXACT
    found = inspect(path, "tflite", "fp16")
    assert (found["compute_precision"], found["weight_precision"]) == ("fp32", "fp16")
    assert found["precision_note"].startswith("fp16 did not take: fp16 storage, fp32 compute")
    assert "DEQUANTIZE" in found["precision_note"]


@pytest.mark.tflite
def test_tflite_int8_dynamic_runs_hybrid_int8_kernels(tflite_files, data):
    path = tflite_files["grid", "int8_dynamic"]
    x = data.x_test[:16]
    # Weights exact on the int8 grid, yet outputs move by ~1%: the activations were quantized.
    assert rel_err(tflite_logits(path, x), torch_logits(GridNet(), x)) > 1e-3
    found = inspect(path, "tflite", "int8_dynamic")
    assert (found["compute_precision"], found["weight_precision"]) == ("int8-dynamic", "int8")
    # litert-torch writes a conv with one input channel as DEPTHWISE_CONV_2D.
    assert sum(found["precision_ops"]["int8-dynamic"].values()) == 2


@pytest.mark.tflite
def test_tflite_int8_static_computes_int8(tflite_files):
    found = inspect(tflite_files["tiny", "int8_static"], "tflite", "int8_static")
    assert (found["compute_precision"], found["weight_precision"]) == ("int8", "int8")
    assert found["precision_note"].startswith("int8: all 6 conv/matmul ops compute on int8")
    floats = set(found["precision_ops"].get("fp32", {}))
    if floats:  # e.g. the stem's SiLU (LOGISTIC, MUL) between DEQUANTIZE and QUANTIZE
        assert found["precision_note"].endswith("; float: " + ", ".join(sorted(floats)))


@pytest.mark.tflite
def test_tflite_int8_static_with_an_unquantizable_op_is_mixed(tflite_files):
    found = inspect(tflite_files["up", "int8_static"], "tflite", "int8_static")
    assert found["compute_precision"] == "mixed"
    assert found["precision_ops"]["fp32"]["TRANSPOSE_CONV"] == 1
    assert "fp32 (TRANSPOSE_CONV)" in found["precision_note"]
    assert found["precision_note"].startswith("int8_static partly took: ")


def test_vocabulary_is_documented():
    import edgebench.export.precision as precision

    for word in COMPUTE_PRECISIONS:
        assert f'``"{word}"``' in precision.__doc__

"""Quantization-aware training: a plain float model comes back (no fake-quant op, hook or
parametrization left), its weights sit on the int8 grid, it exports, and onnxruntime's int8
static quantization of it agrees with torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_nets import TRAIN, NoBatchNormNet, state_equal, tiny_data, trained_tiny

from edgebench.compress import METHODS, StepContext
from edgebench.compress.layers import prunable_layers
from edgebench.compress.qat import quantization_aware_training
from edgebench.export.onnx import export_onnx, onnx_logits, quantize_onnx, rel_err, verify_onnx
from edgebench.model.train import evaluate, predict_logits

DATA = tiny_data()


def ctx() -> StepContext:
    return StepContext(data=DATA, train=TRAIN, seed=0, log=lambda _: None)


@pytest.mark.parametrize("per_channel", [False, True])
def test_qat_returns_a_plain_model_on_the_int8_grid_that_exports(per_channel, tmp_path):
    model = trained_tiny(DATA)
    before = trained_tiny(DATA)
    c = ctx()
    out = METHODS.get("quantize")(scheme="qat", finetune_epochs=1, per_channel=per_channel).apply(
        model, c
    )
    assert state_equal(model, before)
    assert c.notes["qat_bn_folded"] is True
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in out.modules())
    for name, m in prunable_layers(out):
        assert not hasattr(m, "parametrizations") and not m._forward_pre_hooks, name
        w = m.weight.detach()
        absmax = (
            w.abs().amax(dim=tuple(range(1, w.dim())), keepdim=True)
            if per_channel
            else w.abs().max()
        )
        steps = w / (absmax / 127)
        assert torch.allclose(steps, steps.round(), atol=1e-3), name  # on the int8 grid
    float_onnx = export_onnx(out, DATA.x_test[:1], tmp_path / "f.onnx")
    verify_onnx(float_onnx, out, DATA.x_test[:32])
    int8 = quantize_onnx(
        float_onnx, tmp_path / "q.onnx", "int8_static", DATA.x_calib, per_channel=per_channel
    )
    got, want = onnx_logits(int8, DATA.x_test), predict_logits(out, DATA.x_test)
    # The logits' relative error, not top-1 agreement alone: the tiny net trains to 62-95 %
    # depending on the CPU (seeded CPU training is not bit-identical across machines), and on
    # a weakly trained net near-tie logits flip top-1 at one-image resolution (0.9375 vs 0.95
    # on 96 inputs here). Measured here: rel err 0.065 per-tensor, 0.10 per-channel.
    assert rel_err(got, want) <= 0.15
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.85
    assert (
        evaluate(out, DATA.x_test, DATA.y_test) >= evaluate(model, DATA.x_test, DATA.y_test) - 0.05
    )


def test_qat_without_batchnorm_and_the_default_lr():
    model = NoBatchNormNet().eval()
    out = quantization_aware_training(model, ctx(), finetune_epochs=1, lr=None, per_channel=False)
    assert np.isfinite(predict_logits(out, DATA.x_test)).all()
    assert not any(m._forward_pre_hooks for m in out.modules())


def test_quantize_qat_exports_as_int8_static():
    step = METHODS.get("quantize")(scheme="qat")
    assert step.export_scheme == "int8_static"

"""Quantization-aware training: fine-tune with int8 fake quantization, then return a float model.

Jacob et al., "Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-
Only Inference", CVPR 2018. The model learns to live with int8 rounding, and the exporters'
int8 static quantization (onnxruntime QDQ with min-max calibration, LiteRT PT2E) then loses
little. What is simulated matches what onnxruntime does:

- BatchNorm is first folded into the preceding conv (torch.fx), as onnxruntime folds it before
  quantizing, so the weights trained on the int8 grid are the weights that get quantized;
  a model torch.fx cannot trace keeps its BatchNorm.
- weights: symmetric int8 in [-127, 127], scale max|w|/127, per tensor or per output channel;
- inputs of every Conv/Linear: asymmetric uint8 over the running min/max (range includes 0).

Gradients pass straight through the rounding (`torch.fake_quantize_*`). Afterwards the weights
are left on the int8 grid and every fake-quant op and hook is removed, so the result is a plain
float nn.Module that exports like any other.

    [[variant]]
    name = "qat-int8"
    steps = [{ method = "quantize", scheme = "qat", finetune_epochs = 2, per_channel = false }]
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils import parametrize

from edgebench.compress import StepContext
from edgebench.compress.layers import prunable_layers
from edgebench.errors import StepError


class FakeQuantWeight(nn.Module):
    """Parametrization: the weight as symmetric int8 would store it (straight-through grads)."""

    def __init__(self, per_channel: bool):
        super().__init__()
        self.per_channel = per_channel

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self.per_channel and w.dim() > 1:
            absmax = w.detach().abs().amax(dim=tuple(range(1, w.dim())))
            scale = (absmax / 127).clamp(min=1e-12).float()
            zero = torch.zeros(len(scale), dtype=torch.int32)
            return torch.fake_quantize_per_channel_affine(w, scale, zero, 0, -127, 127)
        scale = max(float(w.detach().abs().max()) / 127, 1e-12)
        return torch.fake_quantize_per_tensor_affine(w, scale, 0, -127, 127)


class ActivationObserver:
    """Forward pre-hook: track the input's min/max in training, fake-quantize it to uint8."""

    def __init__(self):
        self.low = 0.0  # the range always includes 0, as onnxruntime's calibration makes it
        self.high = 0.0
        self.calibrating = False  # observe in eval mode too (before training)

    def __call__(self, module: nn.Module, args: tuple) -> tuple:
        x = args[0]
        if module.training or self.calibrating:
            self.low = min(self.low, float(x.detach().min()))
            self.high = max(self.high, float(x.detach().max()))
        if self.high - self.low <= 0:
            return args
        scale = (self.high - self.low) / 255
        zero = int(round(-self.low / scale))
        return (torch.fake_quantize_per_tensor_affine(x, scale, zero, 0, 255), *args[1:])


def fold_batchnorm(model: nn.Module, log=print) -> nn.Module:
    """Conv+BatchNorm pairs folded into one conv (a new torch.fx GraphModule); else unchanged."""
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return model
    try:
        from torch.fx.experimental.optimization import fuse

        return fuse(model.eval(), inplace=False)
    except Exception as exc:  # noqa: BLE001 - an untraceable model still trains, with BN kept
        log(f"qat: BatchNorm kept (torch.fx cannot trace the model: {type(exc).__name__})")
        return model


def quantization_aware_training(
    model: nn.Module,
    ctx: StepContext,
    finetune_epochs: int = 2,
    lr: float | None = None,
    per_channel: bool = False,
) -> nn.Module:
    """Fine-tune a copy of `model` with int8 fake quantization; return a plain float model.

    >>> qat = quantization_aware_training(baseline, ctx, finetune_epochs=2, lr=None, per_channel=False)
    >>> export_onnx(qat, data.x_test[:1], Path("qat.onnx"))   # then int8_static at export
    """
    from edgebench.model.train import fit

    model = fold_batchnorm(copy.deepcopy(model).eval(), ctx.log)  # never edit the caller's model
    layers = [m for _, m in prunable_layers(model)]
    if not layers:
        raise StepError("quantize (qat): the model has no Conv or Linear layer to quantize")
    hooks, observers = [], [ActivationObserver() for _ in layers]
    try:
        for m, observer in zip(layers, observers):
            parametrize.register_parametrization(m, "weight", FakeQuantWeight(per_channel))
            hooks.append(m.register_forward_pre_hook(observer))
        # Calibrate the activation ranges on the calibration split before training (in eval
        # mode: BatchNorm statistics stay), so the first steps already see quantized inputs.
        for observer in observers:
            observer.calibrating = True
        from edgebench.tasks.arrays import call, to_torch

        with torch.no_grad():
            call(model.eval(), to_torch(ctx.data.x_calib))
        for observer in observers:
            observer.calibrating = False
        lr = lr if lr is not None else ctx.train.lr / 10
        fit(model, ctx.data, ctx.train, epochs=finetune_epochs, lr=lr, seed=ctx.seed, log=ctx.log,
            label="qat fine-tune")  # fmt: skip
    finally:
        for h in hooks:
            h.remove()
        for m in layers:
            if parametrize.is_parametrized(m, "weight"):
                # Keep the rounded weights as a plain Parameter; no fake-quant op is left.
                parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
    ctx.notes["qat_bn_folded"] = not any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()
    )
    return model.eval()

"""Linear quantization: fp16, int8 dynamic, int8 static post-training, or quantization-aware.

fp16 and the int8 post-training schemes belong to the runtime: the step leaves the model as it
is and the exporter quantizes it (onnxruntime's quantizer for ONNX, PT2E for TFLite) from the
calibration split. `qat` fine-tunes with fake quantization first (Jacob et al., CVPR 2018),
then exports as int8 static.

    [[variant]]
    name = "int8"
    steps = [{ method = "quantize", scheme = "int8_static", per_channel = true, calibration = "percentile" }]
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from edgebench.compress import StepContext, method
from edgebench.config import choice, require

SCHEMES = ("fp16", "int8_dynamic", "int8_static", "qat")
CALIBRATIONS = ("minmax", "percentile", "entropy")


@method("quantize")
@dataclass(frozen=True)
class Quantize:
    scheme: str = "int8_static"
    per_channel: bool = False
    calibration: str = "minmax"
    finetune_epochs: int = 1  # qat only
    lr: float | None = None  # qat only; default: a tenth of [train] lr

    def __post_init__(self):
        choice(self.scheme, SCHEMES, "scheme")
        choice(self.calibration, CALIBRATIONS, "calibration")
        require(self.finetune_epochs >= 0, "finetune_epochs must be >= 0")

    @property
    def export_scheme(self) -> str:
        """The quantization the exporters apply for this step."""
        return "int8_static" if self.scheme == "qat" else self.scheme

    def apply(self, model, ctx: StepContext):
        if self.scheme != "qat":
            return copy.deepcopy(model)
        from edgebench.compress.qat import quantization_aware_training

        return quantization_aware_training(model, ctx, self.finetune_epochs, self.lr, self.per_channel)

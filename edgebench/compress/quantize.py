"""Linear quantization: fp16, int8 dynamic, int8 static post-training, or quantization-aware.

fp16 and the int8 post-training schemes belong to the runtime: the step leaves the model as it
is and the exporter quantizes it (onnxruntime's quantizer for ONNX, PT2E for TFLite) from the
calibration split. `qat` fine-tunes with fake quantization first (Jacob et al., CVPR 2018),
then exports as int8 static.

    [[variant]]
    name = "int8"
    steps = [{ method = "quantize", scheme = "int8_static", per_channel = true, calibration = "percentile" }]

`keep_float` (int8 static and qat) keeps modules in float — mixed precision: a list of globs on
module names (`["features.3*"]`), or `"auto:K"`, the K modules that add the most error by
`edgebench explain`'s analysis on the calibration split (edgebench.export.keep_float).
"""

from __future__ import annotations

import copy
import re
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
    keep_float: tuple[str, ...] | str = ()  # int8 static/qat: module globs kept in float, or "auto:K"

    def __post_init__(self):
        choice(self.scheme, SCHEMES, "scheme")
        choice(self.calibration, CALIBRATIONS, "calibration")
        require(self.finetune_epochs >= 0, "finetune_epochs must be >= 0")
        if self.keep_float:
            require(self.export_scheme == "int8_static",
                    f"keep_float applies to int8_static and qat, not {self.scheme}")
            if isinstance(self.keep_float, str):
                require(re.fullmatch(r"auto:[1-9][0-9]*", self.keep_float) is not None,
                        f'keep_float = {self.keep_float!r}: a list of module globs, or "auto:K" with K >= 1')

    @property
    def export_scheme(self) -> str:
        """The quantization the exporters apply for this step."""
        return "int8_static" if self.scheme == "qat" else self.scheme

    def apply(self, model, ctx: StepContext):
        if self.scheme != "qat":
            return copy.deepcopy(model)
        from edgebench.compress.qat import quantization_aware_training

        return quantization_aware_training(model, ctx, self.finetune_epochs, self.lr, self.per_channel)

"""A stress test, not a compression: one quantization-hostile layer that computes what it did.

int8 fails on real models when a layer's weights span a range its scale cannot hold (BN
folding in MobileNets, Nagel et al., ICCV 2019; stems fed a channel-repeated image). To see
whether a deployment flow finds and fixes such a layer (`edgebench explain`, `quantize
keep_float`), this step plants one on purpose, without changing the float model's outputs:

    [[variant]]
    name = "int8-hostile"
    steps = [{ method = "stress", layer = "features.2.0" }, { method = "quantize", scheme = "int8_static" }]

The Conv/Linear `layer` (default: the first) is given a copy of its first input channel as one
more input — the way a grayscale image repeated into an RGB stem arrives — and the two copies get
weights +M and -M (M = `magnitude` x the layer's largest weight) on top of the real ones. They
cancel exactly in float (the copies are equal), so fp32 accuracy is the parent's; but int8's
weight scale (per tensor, and per output channel too: every channel gets the pair) is set by M,
and the layer's real weights round to a few levels. The layer becomes `<layer>.conv` (its
module-map name); the step checks that the model's outputs did not change.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from edgebench.compress import StepContext, method
from edgebench.config import require
from edgebench.errors import ConfigError, StepError

FLOAT_TOLERANCE = 1e-4  # relative L2 change of the outputs the planted pair may cause in fp32


@method("stress")
@dataclass(frozen=True)
class Stress:
    layer: str = ""  # module name of a Conv1d/Conv2d/Linear (groups = 1); "" = the first one
    magnitude: float = 50.0  # the planted weights, in multiples of the layer's largest weight

    def __post_init__(self):
        require(self.magnitude > 0, "magnitude must be > 0")

    def apply(self, model, ctx: StepContext):
        import torch

        from edgebench.compress.stress_layer import DuplicatedInput
        from edgebench.model.train import predict_outputs

        model = copy.deepcopy(model).eval()
        name, layer = self._pick(model)
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        probe = ctx.data.x_calib[:64]
        before = predict_outputs(model, probe)
        setattr(parent, attr, DuplicatedInput(layer, self.magnitude))
        after = predict_outputs(model, probe)
        change = max(float(torch.linalg.vector_norm(torch.from_numpy(a - b)) /
                           max(float(torch.linalg.vector_norm(torch.from_numpy(b))), 1e-12))
                     for a, b in zip(after, before))
        if not change <= FLOAT_TOLERANCE:
            raise StepError(f"stress: the planted weights changed the float outputs by {change:.1e}")
        ctx.notes["stressed_layer"] = f"{name}.conv"
        ctx.log(f"stress: {name} now takes a repeated input channel with weights +/-{self.magnitude:g} x its largest "
                f"(float outputs changed by {change:.1e})")
        return model

    def _pick(self, model):
        from torch import nn

        kinds = (nn.Conv1d, nn.Conv2d, nn.Linear)
        layers = [(n, m) for n, m in model.named_modules() if isinstance(m, kinds) and getattr(m, "groups", 1) == 1]
        if self.layer:
            layers = [(n, m) for n, m in layers if n == self.layer]
            if not layers:
                raise ConfigError(f"stress: no Conv/Linear layer (groups = 1) named {self.layer!r}")
        if not layers:
            raise StepError("stress: the model has no Conv/Linear layer with groups = 1")
        return layers[0]

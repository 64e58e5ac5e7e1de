"""Weight clustering (weight sharing): each layer's weights take one of 2^bits shared values.

Per Conv/Linear layer, 1-D k-means (k-means++ init, seeded) finds 2^bits centroids and every
weight is replaced by its centroid; fine-tuning then trains the centroids, not the weights:
after every optimizer step each centroid becomes the mean of its cluster's updated weights
(the per-cluster averaged gradient of Deep Compression) and the weights snap back to it.
Han, Mao, Dally, "Deep Compression", ICLR 2016.

The exported model still holds float32 weights; what clustering buys is what a codebook
format would store (indices of `bits` each plus a float32 codebook per layer, recorded as
`codebook_size_bytes`) and, measurably, a much smaller gzip of the artifact. Zeros left by an
earlier `prune` step stay exactly zero: zero is pinned as one of the 2^bits codes.
BatchNorm and biases are not clustered; layers with fewer than 4 × 2^bits weights are kept.

    [[variant]]
    name = "deep-compression"
    steps = [
      { method = "prune", kind = "unstructured", ratio = 0.8 },
      { method = "cluster", bits = 4, finetune_epochs = 1 },
      { method = "quantize", scheme = "int8_static" },
    ]
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from edgebench.compress import StepContext, method
from edgebench.config import require
from edgebench.errors import StepError


@method("cluster")
@dataclass(frozen=True)
class Cluster:
    bits: int = 4  # 2^bits shared values per layer
    finetune_epochs: int = 1
    lr: float | None = None  # default: [train] lr (see `edgebench.model.train.finetune`)

    def __post_init__(self):
        require(2 <= self.bits <= 8, f"bits = {self.bits}: must be between 2 and 8")
        require(self.finetune_epochs >= 0, "finetune_epochs must be >= 0")
        require(self.lr is None or self.lr > 0, "lr must be positive")

    def apply(self, model, ctx: StepContext):
        from edgebench.compress.codebook import cluster_layer, codebook_stats
        from edgebench.compress.layers import prunable_layers

        model = copy.deepcopy(model).eval()  # never edit the caller's model
        k = 2**self.bits
        layers = [m for _, m in prunable_layers(model) if m.weight.numel() >= 4 * k]
        if not layers:
            raise StepError(
                f"cluster: no Conv/Linear layer has at least {4 * k} weights to share {k} values"
            )
        clustered = [cluster_layer(m, self.bits, seed=ctx.seed + i) for i, m in enumerate(layers)]
        if self.finetune_epochs > 0:
            from edgebench.model.train import finetune

            def snap() -> None:
                for layer in clustered:
                    layer.snap(train_centroids=True)

            # The [train] optimizer and lr with the fine-tune schedule, as `prune` does: a tenth
            # of the lr with a fresh cosine to 0 (the earlier default) recovered less from 3-bit
            # clustering on benchmarks/prune_vs_reference.py's Adam-trained models (0.9-2.3
            # points, 1 epoch).
            finetune(model, ctx.data, ctx.train, self.finetune_epochs, lr=self.lr, seed=ctx.seed,
                     after_step=snap, log=ctx.log, label="cluster fine-tune", notes=ctx.notes)  # fmt: skip
        for layer in clustered:
            layer.snap(train_centroids=False)
        ctx.notes.update(codebook_stats(model, clustered, self.bits))
        return model.eval()

"""Codebooks for weight clustering: 1-D k-means per layer, and what a codebook format stores.

The torch side of the `cluster` method (edgebench/compress/cluster.py): `cluster_layer` replaces
a layer's weights by their k-means centroids, `_Clustered.snap` keeps them there during
fine-tuning, `codebook_stats` is the size a codebook format would store.

    >>> centroids, index = kmeans_1d(torch.tensor([0.0, 0.1, 1.0, 1.1]), k=2)
    >>> centroids
    tensor([0.0500, 1.0500])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

KMEANS_ITERS = 50


def kmeans_1d(
    values: torch.Tensor, k: int, seed: int = 0, iters: int = KMEANS_ITERS
) -> tuple[torch.Tensor, torch.Tensor]:
    """(centroids[k], assignment[n]) of 1-D k-means with k-means++ init; deterministic for a seed."""
    x = values.detach().flatten().double()
    gen = torch.Generator().manual_seed(seed)
    centroids = [x[torch.randint(len(x), (1,), generator=gen)].item()]
    dist = (x - centroids[0]) ** 2
    for _ in range(1, k):
        # k-means++: the next centroid is drawn with probability ∝ squared distance.
        if float(dist.sum()) <= 0:
            break  # fewer distinct values than k
        i = torch.multinomial(dist / dist.sum(), 1, generator=gen).item()
        centroids.append(x[i].item())
        dist = torch.minimum(dist, (x - x[i]) ** 2)
    c = torch.tensor(sorted(set(centroids)), dtype=torch.float64)
    for _ in range(iters):
        assign = _nearest(x, c)
        sums = torch.zeros_like(c).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=len(c)).double()
        new = torch.where(counts > 0, sums / counts.clamp(min=1), c).sort().values
        if torch.equal(new, c):
            break
        c = new
    return c.float(), _nearest(x, c)


def _nearest(x: torch.Tensor, sorted_centroids: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centroid; bucketize on midpoints is O(n log k), not an n×k matrix."""
    mids = (sorted_centroids[1:] + sorted_centroids[:-1]) / 2
    return torch.bucketize(x, mids)


@dataclass
class _Clustered:
    """One layer's codebook: `index` into `centroids`; `zero` the code pinned at 0, or -1."""

    module: nn.Module
    index: torch.Tensor
    centroids: torch.Tensor
    zero: int

    def snap(self, train_centroids: bool) -> None:
        w = self.module.weight
        with torch.no_grad():
            if train_centroids:
                # Centroid ← mean of its cluster's updated weights = old centroid minus the
                # cluster's averaged update.
                sums = torch.zeros_like(self.centroids).index_add_(
                    0, self.index, w.detach().flatten()
                )
                counts = torch.bincount(self.index, minlength=len(self.centroids)).to(sums.dtype)
                self.centroids = torch.where(counts > 0, sums / counts.clamp(min=1), self.centroids)
            if self.zero >= 0:
                self.centroids[self.zero] = 0.0
            w.copy_(self.centroids[self.index].view_as(w))


def cluster_layer(module: nn.Module, bits: int, seed: int) -> _Clustered:
    """Replace `module.weight` by its k-means centroids (zeros kept as one pinned code)."""
    w = module.weight.detach().flatten()
    k = 2**bits
    nonzero = w != 0
    has_zeros = bool((~nonzero).any())
    if not nonzero.any():  # an all-zero layer (pruned away): one code, 0
        return _Clustered(module, torch.zeros(len(w), dtype=torch.long), torch.zeros(1), 0)
    # With zeros present (a pruned layer), one code is reserved for exact 0.
    c, assign = kmeans_1d(w[nonzero], k - 1 if has_zeros else k, seed=seed)
    index = torch.empty(len(w), dtype=torch.long)
    zero = -1
    if has_zeros:
        zero = len(c)
        c = torch.cat([c, torch.zeros(1)])
        index[~nonzero] = zero
    index[nonzero] = assign
    layer = _Clustered(module, index, c, zero)
    layer.snap(train_centroids=False)
    return layer


def codebook_stats(model: nn.Module, clustered: list[_Clustered], bits: int) -> dict:
    """The honest size of a codebook format: indices × bits + float32 centroids, rest float32."""
    clustered_ids = {id(layer.module.weight) for layer in clustered}
    index_bits = sum(layer.index.numel() * bits for layer in clustered)
    centroid_bytes = sum(layer.centroids.numel() * 4 for layer in clustered)
    other = sum(p.numel() for p in model.parameters() if id(p) not in clustered_ids)
    unique = [int(torch.unique(layer.module.weight.detach()).numel()) for layer in clustered]
    return {
        "codebook_size_bytes": (index_bits + 7) // 8 + centroid_bytes + other * 4,
        "cluster_unique_values_max": max(unique),
        "cluster_layers": len(clustered),
    }

"""k-means weight clustering (Deep Compression) on a tiny net: at most 2^bits values per layer,
through fine-tuning and after pruning, an honest codebook size, and an export that matches."""

from __future__ import annotations

import pytest
import torch
from tiny_nets import TRAIN, NoBatchNormNet, state_equal, tiny_data, trained_tiny

from edgebench.compress import METHODS, StepContext
from edgebench.compress.codebook import kmeans_1d
from edgebench.compress.layers import prunable_layers
from edgebench.config import ConfigError
from edgebench.errors import StepError
from edgebench.export.onnx import artifact_sizes, export_onnx, verify_onnx
from edgebench.model.train import evaluate

DATA = tiny_data()


def cluster(model, **params):
    c = StepContext(data=DATA, train=TRAIN, seed=0, log=lambda _: None)
    return METHODS.get("cluster")(**params).apply(model, c), c.notes


def unique_per_layer(model) -> dict[str, int]:
    return {n: int(torch.unique(m.weight).numel()) for n, m in prunable_layers(model)}


def test_kmeans_is_deterministic_and_finds_the_clusters():
    x = torch.cat(
        [torch.full((50,), -1.0), torch.full((30,), 0.5), torch.full((20,), 2.0)]
    ) + 0.01 * torch.randn(100)
    c1, a1 = kmeans_1d(x, 3, seed=1)
    c2, a2 = kmeans_1d(x, 3, seed=1)
    assert torch.equal(c1, c2) and torch.equal(a1, a2)
    assert torch.allclose(c1, torch.tensor([-1.0, 0.5, 2.0]), atol=0.01)
    assert torch.bincount(a1).tolist() == [50, 30, 20]


@pytest.mark.parametrize("bits,epochs", [(2, 0), (4, 2)])
def test_at_most_2_to_the_bits_values_per_layer_and_export(bits, epochs, tmp_path):
    model = trained_tiny(DATA)
    before = trained_tiny(DATA)
    out, notes = cluster(model, bits=bits, finetune_epochs=epochs)
    k = 2**bits
    for name, m in prunable_layers(out):
        if m.weight.numel() >= 4 * k:
            assert torch.unique(m.weight).numel() <= k, name
        else:  # too small to cluster: kept as it was
            assert torch.equal(m.weight, dict(prunable_layers(model))[name].weight)
    assert notes["cluster_unique_values_max"] <= k
    # Biases and BatchNorm are not clustered (they may still fine-tune).
    assert torch.unique(out.down[0].bias).numel() > k
    assert state_equal(model, before)
    path = export_onnx(out, DATA.x_test[:1], tmp_path / "m.onnx")
    verify_onnx(path, out, DATA.x_test[:32])
    if bits == 4:
        assert (
            evaluate(out, DATA.x_test, DATA.y_test)
            >= evaluate(model, DATA.x_test, DATA.y_test) - 0.05
        )


def test_codebook_size_counts_indices_centroids_and_the_rest():
    model = trained_tiny(DATA)
    out, notes = cluster(model, bits=4, finetune_epochs=0)
    clustered = [m for _, m in prunable_layers(out) if m.weight.numel() >= 64]
    n_idx = sum(m.weight.numel() for m in clustered)
    ids = {id(m.weight) for m in clustered}
    rest = sum(p.numel() for p in out.parameters() if id(p) not in ids)
    expected = (n_idx * 4 + 7) // 8 + 16 * 4 * len(clustered) + rest * 4
    assert notes["codebook_size_bytes"] == pytest.approx(expected, abs=4 * 4 * len(clustered))
    assert notes["codebook_size_bytes"] < 0.3 * sum(p.numel() for p in model.parameters()) * 4


def test_prune_then_cluster_keeps_zeros_as_one_of_the_codes(tmp_path):
    model = trained_tiny(DATA)
    c = StepContext(data=DATA, train=TRAIN, seed=0, log=lambda _: None)
    pruned = METHODS.get("prune")(ratio=0.7, finetune_epochs=0).apply(model, c)
    out = METHODS.get("cluster")(bits=3, finetune_epochs=1).apply(pruned, c)
    for (name, p), (_, q) in zip(prunable_layers(pruned), prunable_layers(out)):
        if q.weight.numel() >= 32:
            assert torch.all(q.weight[p.weight == 0] == 0), name
            assert torch.unique(q.weight).numel() <= 8, name
    _, gz_dense = artifact_sizes(export_onnx(model, DATA.x_test[:1], tmp_path / "a.onnx"))
    _, gz_deep = artifact_sizes(export_onnx(out, DATA.x_test[:1], tmp_path / "b.onnx"))
    assert gz_deep < gz_dense


def test_bad_bits_and_unclusterable_models_say_why():
    with pytest.raises(ConfigError, match="bits = 9"):
        METHODS.get("cluster")(bits=9)
    with pytest.raises(StepError, match="no Conv/Linear layer has at least 1024 weights"):
        cluster(NoBatchNormNet(), bits=8)  # its largest layer has 576 weights

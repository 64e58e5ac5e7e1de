"""Pruning on a tiny net with BN, SiLU, Hardswish, depthwise and grouped convs, a residual add and
Linear layers, and on every built-in model: what each kind promises, checked on real outputs."""

from __future__ import annotations

import pytest
import torch
from tiny_nets import TRAIN, NoBatchNormNet, TinyNet, state_equal, tiny_data, trained_tiny

from edgebench.compress import METHODS, StepContext
from edgebench.compress.layers import prunable_layers
from edgebench.config import ConfigError, parse_experiment
from edgebench.errors import StepError
from edgebench.export.onnx import export_onnx, onnx_macs, verify_onnx
from edgebench.model.factories import MODELS, count_params, create_model

DATA = tiny_data()


def ctx() -> StepContext:
    return StepContext(data=DATA, train=TRAIN, seed=0, log=lambda _: None)


def prune(model, **params):
    c = ctx()
    return METHODS.get("prune")(**params).apply(model, c), c.notes


def weight_zeros(model) -> tuple[int, int]:
    ws = [m.weight for _, m in prunable_layers(model)]
    return sum(int((w == 0).sum()) for w in ws), sum(w.numel() for w in ws)


def export_matches(model, tmp_path) -> int:
    path = export_onnx(model, DATA.x_test[:1], tmp_path / "m.onnx")
    verify_onnx(path, model, DATA.x_test[:32])
    return onnx_macs(path)


def test_unstructured_reaches_the_sparsity_keeps_the_mask_and_exports(tmp_path):
    model = trained_tiny(DATA)
    before = trained_tiny(DATA)
    at_prune, _ = prune(model, ratio=0.8, finetune_epochs=0)
    tuned, notes = prune(model, ratio=0.8, finetune_epochs=2)
    zeros, total = weight_zeros(tuned)
    assert zeros >= 0.8 * total and notes["weight_sparsity"] >= 0.8
    # Fine-tuning kept the mask: every weight zeroed at pruning time is still exactly zero.
    for (_, a), (_, b) in zip(prunable_layers(at_prune), prunable_layers(tuned)):
        assert torch.all(b.weight[a.weight == 0] == 0)
    assert not torch.equal(at_prune.stem[0].weight, tuned.stem[0].weight)  # it did train
    # Real zeros, no torch.nn.utils.prune reparametrization left behind.
    assert tuned.state_dict().keys() == model.state_dict().keys()
    assert not any(k.endswith(("_orig", "_mask")) for k in tuned.state_dict())
    assert count_params(tuned)[1] < 0.3 * count_params(tuned)[0]
    assert state_equal(model, before)  # the input model is unchanged
    export_matches(tuned, tmp_path)


def test_layer_scope_prunes_every_layer_and_rounds_reach_the_target():
    model = trained_tiny(DATA)
    pruned, _ = prune(model, ratio=0.6, scope="layer", rounds=3, finetune_epochs=1)
    for name, m in prunable_layers(pruned):
        assert (m.weight == 0).float().mean() >= 0.6, name


def test_per_layer_overrides_by_name_pattern():
    model = trained_tiny(DATA)
    pruned, _ = prune(model, ratio=0.5, per_layer={"stem.*": 0.0, "hid*": 0.9}, finetune_epochs=0)
    assert torch.equal(pruned.stem[0].weight, model.stem[0].weight)
    assert (pruned.hidden.weight == 0).float().mean() >= 0.9
    with pytest.raises(StepError, match="matches no Conv/Linear layer"):
        prune(model, ratio=0.5, per_layer={"nonexistent.*": 0.5})


def test_skip_sensitive_leaves_the_sensitive_layers_dense():
    model = trained_tiny(DATA)
    pruned, notes = prune(model, ratio=0.9, scope="layer", skip_sensitive=0.05, finetune_epochs=0)
    skipped = [s for s in notes["prune_skipped_layers"].split(",") if s]
    assert skipped, "90% of some layer of a trained net should change more than 5% of predictions"
    layers = dict(prunable_layers(pruned))
    originals = dict(prunable_layers(model))
    for name in layers:
        same = torch.equal(layers[name].weight, originals[name].weight)
        assert same == (name in skipped), name


def test_structured_shrinks_channels_drops_macs_and_exports(tmp_path):
    model = trained_tiny(DATA)
    before = trained_tiny(DATA)
    macs_before = export_matches(model, tmp_path)
    pruned, notes = prune(model, kind="structured", ratio=0.5, finetune_epochs=1)
    assert pruned.stem[0].out_channels == 8 and pruned.down[0].out_channels == 16
    assert pruned.mix[0].groups == pruned.mix[0].out_channels == 8  # depthwise stays depthwise
    assert pruned.out.out_features == model.out.out_features  # the classifier keeps its outputs
    assert count_params(pruned)[0] < 0.4 * count_params(model)[0]
    macs_after = export_matches(pruned, tmp_path)
    assert macs_after <= 0.35 * macs_before and notes["macs_ratio"] <= 0.35
    assert state_equal(model, before)


@pytest.mark.parametrize("importance", ["l2", "bn_scale"])
def test_structured_importances(importance, tmp_path):
    pruned, _ = prune(
        trained_tiny(DATA),
        kind="structured",
        ratio=0.25,
        importance=importance,
        rounds=2,
        finetune_epochs=0,
    )
    assert pruned.stem[0].out_channels == 12
    export_matches(pruned, tmp_path)


def test_steps_that_do_not_apply_say_why():
    with pytest.raises(StepError, match="needs BatchNorm layers and this model has none"):
        prune(NoBatchNormNet(), kind="structured", importance="bn_scale")
    with pytest.raises(StepError, match="no Conv or Linear layer"):
        prune(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.ReLU()))


def test_configuration_is_checked_when_the_experiment_is_read():
    # Impossible ratios fail when the file is read, before any baseline is trained.
    for ratio in (1.0, 1.5, -0.1):
        with pytest.raises(ConfigError, match=r"must be in \[0, 1\)"):
            METHODS.get("prune")(kind="structured", ratio=ratio)
    with pytest.raises(ConfigError, match="per_layer"):
        METHODS.get("prune")(per_layer={"features.*": 1.0})
    with pytest.raises(ConfigError, match="kind"):
        METHODS.get("prune")(kind="sideways")
    with pytest.raises(ConfigError, match="importance"):
        METHODS.get("prune")(importance="l3")
    assert METHODS.get("prune")(kind="structured").finetune_epochs == 3  # resolved, so records show it
    assert METHODS.get("prune")().finetune_epochs == 1
    raw = {"variant": [{"name": "p", "steps": [{"method": "prune", "kind": "structured", "ratio": 0.5,
                                                 "finetune_epochs": 1, "per_layer": {"a*": 0.2}}]}]}  # fmt: skip
    step = parse_experiment(raw).variants[0].steps[0]
    assert step.per_layer == {"a*": 0.2} and step.kind == "structured"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_structured_prune_every_builtin_model(name, tmp_path):
    data = tiny_data(size=16)
    torch.manual_seed(0)
    model = create_model(name, num_classes=4, in_channels=1, width=0.5).eval()
    c = StepContext(data=data, train=TRAIN, seed=0, log=lambda _: None)
    pruned = METHODS.get("prune")(kind="structured", ratio=0.5, finetune_epochs=0).apply(model, c)
    assert count_params(pruned)[0] < 0.5 * count_params(model)[0]
    assert c.notes["macs_ratio"] < 0.5  # counted by torch-pruning; ONNX MACs: test above
    path = export_onnx(pruned, data.x_test[:1], tmp_path / "m.onnx")
    verify_onnx(path, pruned, data.x_test[:32])


def test_prune_is_a_registered_method_that_chains():
    model = trained_tiny(DATA)
    c = ctx()
    steps = [METHODS.get("prune")(kind="structured", ratio=0.5, finetune_epochs=0),
             METHODS.get("prune")(kind="unstructured", ratio=0.5, finetune_epochs=1)]  # fmt: skip
    for step in steps:
        model = step.apply(model, c)
    zeros, total = weight_zeros(model)
    assert model.stem[0].out_channels == 8 and zeros >= 0.5 * total


def test_tiny_net_has_every_layer_kind():
    kinds = {type(m).__name__ for m in TinyNet().modules()}
    assert {"Conv2d", "BatchNorm2d", "SiLU", "Hardswish", "ReLU", "Linear"} <= kinds
    assert any(
        m.groups == m.out_channels for m in TinyNet().modules() if isinstance(m, torch.nn.Conv2d)
    )

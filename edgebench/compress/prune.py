"""Pruning: unstructured magnitude pruning (sparse weights) or structured channel pruning.

`kind = "unstructured"` zeroes the smallest-magnitude weights of every Conv/Linear layer
(Han et al., "Learning both Weights and Connections", NeurIPS 2015), then fine-tunes with the
mask re-applied after every optimizer step. The returned model stores real zeros, so the
exported file shows the gain in `nonzero_params` and `size_gzip_bytes` (not in latency: dense
kernels still multiply the zeros).

`kind = "structured"` removes whole channels with torch-pruning's dependency graph, which keeps
residual adds, depthwise and grouped convs consistent (Li et al., "Pruning Filters for Efficient
ConvNets", ICLR 2017, L1/L2 importance; Liu et al., "Network Slimming", ICCV 2017, BN-scale
importance). Layers really shrink: MACs drop about ratio² on plain convs, and latency with them.

    [[variant]]
    name = "sparse80"
    steps = [{ method = "prune", kind = "unstructured", ratio = 0.8, finetune_epochs = 1 }]

    [[variant]]
    name = "slim50"
    steps = [{ method = "prune", kind = "structured", ratio = 0.5, importance = "l1", rounds = 2 }]

`per_layer = { "features.0*" = 0.2 }` overrides the ratio for modules whose name matches a glob;
`skip_sensitive = 0.02` leaves dense every layer whose own pruning changes more than 2% of the
predictions on the held-out calibration split (see `edgebench sensitivity`).
"""

from __future__ import annotations

import copy
import fnmatch
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from edgebench.compress import StepContext, method
from edgebench.config import choice, require
from edgebench.errors import StepError

if TYPE_CHECKING:
    from torch import nn

KINDS = ("unstructured", "structured")
SCOPES = ("global", "layer")
IMPORTANCES = ("l1", "l2", "bn_scale")
DEFAULT_EPOCHS = {"unstructured": 1, "structured": 3}


@method("prune")
@dataclass(frozen=True)
class Prune:
    kind: str = "unstructured"
    ratio: float = 0.5  # share of weights (unstructured) or channels (structured) removed
    # Default: 1 epoch unstructured (the mask keeps most of the function), 3 structured
    # (removed channels take capacity away); resolved at construction so records show it.
    finetune_epochs: int | None = None
    lr: float | None = None  # default: [train] lr (see `edgebench.model.train.finetune`)
    rounds: int = 1  # iterative pruning: reach `ratio` in this many prune+fine-tune rounds
    scope: str = "global"  # unstructured: one magnitude threshold for all layers, or per layer
    importance: str = "l1"  # structured: channel importance
    per_layer: dict = field(default_factory=dict, hash=False)  # {"glob on module name": ratio}
    skip_sensitive: float | None = None  # max prediction change (0..1) a layer may cause alone

    def __post_init__(self):
        choice(self.kind, KINDS, "kind")
        choice(self.scope, SCOPES, "scope")
        choice(self.importance, IMPORTANCES, "importance")
        # 1 would remove every weight or channel: no model is left to measure.
        require(0 <= self.ratio < 1, f"ratio = {self.ratio}: must be in [0, 1) (the share removed)")
        if self.finetune_epochs is None:
            object.__setattr__(self, "finetune_epochs", DEFAULT_EPOCHS[self.kind])
        require(self.finetune_epochs >= 0, "finetune_epochs must be >= 0")
        require(self.lr is None or self.lr > 0, "lr must be positive")
        require(self.rounds >= 1, "rounds must be >= 1")
        require(self.skip_sensitive is None or 0 <= self.skip_sensitive <= 1,
                "skip_sensitive is a share of predictions, between 0 and 1")  # fmt: skip
        for pattern, r in self.per_layer.items():
            require(isinstance(r, (int, float)) and not isinstance(r, bool) and 0 <= r < 1,
                    f"per_layer[{pattern!r}] = {r!r}: must be a ratio in [0, 1)")  # fmt: skip

    def apply(self, model: nn.Module, ctx: StepContext) -> nn.Module:
        from edgebench.compress.layers import prunable_layers

        model = copy.deepcopy(model).eval()  # never edit the caller's model
        layers = prunable_layers(model)
        if not layers:
            raise StepError("prune: the model has no Conv or Linear layer to prune")
        ratios = self._layer_ratios(layers)
        if self.skip_sensitive is not None:
            ratios = self._skip_sensitive(model, ctx, layers, ratios)
        full = [n for n, r in ratios.items() if r is not None and r >= 1]
        if full:
            raise StepError(f"prune: ratio >= 1 would remove every {'weight' if self.kind == 'unstructured' else 'channel'}"
                            f" of {', '.join(full[:3])}; use a ratio below 1")  # fmt: skip
        prune = self._unstructured if self.kind == "unstructured" else self._structured
        model = prune(model, ctx, layers, ratios)
        ctx.notes["prune_kind"] = self.kind
        return model.eval()

    # -- which layers get which ratio ----------------------------------------------------------

    def _layer_ratios(self, layers: list[tuple[str, nn.Module]]) -> dict[str, float | None]:
        """name → its own ratio (per_layer override), or None: follows `ratio` (global pool)."""
        out: dict[str, float | None] = {name: None for name, _ in layers}
        for pattern, r in self.per_layer.items():
            hits = [name for name in out if fnmatch.fnmatchcase(name, pattern)]
            if not hits:
                raise StepError(f"prune: per_layer pattern {pattern!r} matches no Conv/Linear layer "
                                f"(layers: {', '.join(out)})")  # fmt: skip
            for name in hits:
                out[name] = float(r)
        if self.ratio >= 1 and any(r is None for r in out.values()):
            raise StepError(f"prune: ratio = {self.ratio} would remove every "
                            f"{'weight' if self.kind == 'unstructured' else 'channel'}; use a ratio below 1")  # fmt: skip
        return out

    def _skip_sensitive(self, model, ctx, layers, ratios) -> dict[str, float | None]:
        from edgebench.compress.sensitivity import layer_sensitivity

        # Held-out calibration split (never the test set): it has no labels, so the drop is the
        # share of predictions that change when only that layer is pruned. Magnitude pruning of
        # one layer ranks layers for the structured kind too, at a fraction of the cost.
        rows = layer_sensitivity(
            model, ctx.data, "prune", self.ratio if self.ratio < 1 else 0.99, split="calib"
        )
        skipped = [r["layer"] for r in rows if r["drop"] > self.skip_sensitive]
        ctx.notes["prune_skipped_layers"] = ",".join(skipped)  # a string: records stay flat
        if skipped:
            ctx.log(f"prune: left dense (too sensitive): {', '.join(skipped)}")
        return {name: (0.0 if name in skipped else r) for name, r in ratios.items()}

    def _finetune(
        self, model: nn.Module, ctx: StepContext, epochs: int, after_step=None, label="prune"
    ) -> None:
        if epochs <= 0:
            return
        # The [train] optimizer at the [train] lr, held (Adam) or held then annealed (SGD):
        # `edgebench.model.train.finetune`. A fifth of the lr with a fresh cosine to 0 (the earlier
        # default) recovered far less than a plain fine-tune with the same epochs.
        from edgebench.model.train import finetune

        finetune(model, ctx.data, ctx.train, epochs, lr=self.lr, seed=ctx.seed,
                 after_step=after_step, log=ctx.log, label=f"{label} fine-tune", notes=ctx.notes)  # fmt: skip

    def _round_epochs(self, r: int) -> int:
        """Spread finetune_epochs over the rounds (later rounds get the remainder)."""
        return (
            self.finetune_epochs * (r + 1) // self.rounds - self.finetune_epochs * r // self.rounds
        )

    # -- unstructured ----------------------------------------------------------------------------

    def _unstructured(self, model, ctx, layers, ratios) -> nn.Module:
        import torch

        from edgebench.compress.layers import magnitude_mask

        modules = dict(layers)
        masks: dict = {}
        for r in range(self.rounds):
            frac = (r + 1) / self.rounds  # linear schedule to the target over the rounds
            pooled = [n for n, own in ratios.items() if own is None]
            if self.scope == "global" and pooled:
                groups = [(pooled, self.ratio * frac)]
            else:
                groups = [([n], self.ratio * frac) for n in pooled]
            groups += [
                ([n], own * frac) for n, own in ratios.items() if own is not None and own > 0
            ]
            for names, ratio in groups:
                for name, mask in zip(
                    names, magnitude_mask([modules[n].weight for n in names], ratio)
                ):
                    # Monotone: a weight pruned in an earlier round stays pruned.
                    masks[name] = mask & masks[name] if name in masks else mask

            @torch.no_grad()
            def reapply() -> None:
                for name, mask in masks.items():
                    modules[name].weight.mul_(mask)

            reapply()
            # The mask is applied after every step: momentum and weight decay would otherwise
            # regrow pruned weights.
            self._finetune(
                model, ctx, self._round_epochs(r), after_step=reapply, label=f"prune round {r + 1}"
            )
            reapply()
        total = sum(modules[n].weight.numel() for n in masks)
        zeros = sum(int((~m).sum()) for m in masks.values())
        ctx.notes["weight_sparsity"] = round(zeros / max(1, total), 4)
        return model

    # -- structured ------------------------------------------------------------------------------

    def _importance(self, model: nn.Module):
        import torch_pruning as tp
        from torch import nn

        if self.importance == "bn_scale":
            if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
                raise StepError("prune: importance = \"bn_scale\" needs BatchNorm layers and this model has none; "
                                "use importance = \"l1\" or \"l2\"")  # fmt: skip
            return tp.importance.BNScaleImportance()
        return tp.importance.GroupMagnitudeImportance(p=1 if self.importance == "l1" else 2)

    def _structured(self, model, ctx, layers, ratios) -> nn.Module:
        modules = dict(layers)
        ignored = [modules[n] for n, r in ratios.items() if r == 0]
        overrides = {modules[n]: r for n, r in ratios.items() if r is not None and r > 0}

        def after_round(r: int) -> None:
            self._finetune(model, ctx, self._round_epochs(r), label=f"prune round {r + 1}")

        from torch import nn

        widths = {n: m.embed_dim for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)}
        model, macs = structured_prune(model, ctx.data.x_train[:1], self.ratio, self._importance(model), ignored,
                                       overrides, self.rounds, after_round)
        ctx.notes["macs_ratio"] = round(macs, 4)
        same = [n for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention) and widths[n] == m.embed_dim]
        if same:  # measured: torch-pruning 1.6 prunes the MLPs of nn.MultiheadAttention blocks, not their width
            ctx.notes["attention_unpruned"] = same
        return model


def structured_prune(model: nn.Module, sample, ratio: float, importance=None, ignored: list | None = None,
                     overrides: dict | None = None, rounds: int = 1, after_round=None) -> tuple[nn.Module, float]:
    """Remove `ratio` of the channels (in place) with torch-pruning's dependency graph; return
    the model and its MACs after / before.

    Works on the model as it is: several inputs (`sample` an Arrays row), several outputs, 1-D
    and 2-D convs, transformer blocks (their MLP widths; torch-pruning 1.6 leaves an
    nn.MultiheadAttention's own width as it is: the record's notes name those left), LayerNorm,
    and parameters used directly (a class token, position embeddings). The layers that produce the model's outputs keep their
    channels (`output_layers`), so every output keeps its shape — a classifier's logits, a
    detector's heads, a returned embedding; if one still changes, that is a StepError.
    """
    import torch
    import torch_pruning as tp
    from torch import nn

    from edgebench.compress.layers import out_channels, output_layers, prunable_layers
    from edgebench.tasks.arrays import call, outputs, to_torch

    example = to_torch(sample)
    keep = output_layers(model, example)
    ignored = list(ignored or []) + [m for m in keep if not any(m is i for i in ignored or [])]
    overrides = {m: r for m, r in (overrides or {}).items() if not any(m is k for k in keep)}
    heads = {m: m.num_heads for m in model.modules() if isinstance(m, nn.MultiheadAttention)}
    with torch.no_grad():
        shapes_before = [tuple(o.shape) for o in outputs(call(model.eval(), example))]
    macs_before, _ = tp.utils.count_ops_and_params(model, example)
    try:
        pruner = tp.pruner.MetaPruner(
            model, example, importance=importance or tp.importance.GroupMagnitudeImportance(p=2),
            pruning_ratio=ratio, pruning_ratio_dict=overrides, ignored_layers=ignored, iterative_steps=rounds,
            num_heads=heads,
        )  # fmt: skip
    except StepError:
        raise
    except Exception as exc:  # noqa: BLE001 - tracing failures are this model's limitation
        raise StepError(f"prune: torch-pruning cannot trace this model: {type(exc).__name__}: {exc}") from None
    for r in range(rounds):
        model.eval()
        pruner.step()
        for mha in heads:  # torch-pruning shrinks embed_dim; keep the module's own fields consistent
            mha.head_dim = mha.embed_dim // mha.num_heads
        empty = [n for n, m in prunable_layers(model) if out_channels(m) == 0]
        if empty:
            raise StepError(f"prune: ratio {ratio} leaves no channel in {', '.join(empty[:3])}")
        if after_round is not None:
            after_round(r)
    model.eval()
    with torch.no_grad():
        shapes_after = [tuple(o.shape) for o in outputs(call(model, example))]
    if shapes_after != shapes_before:
        raise StepError(f"prune: structured pruning changed the model's output shapes {shapes_before} -> "
                        f"{shapes_after}; keep the layers feeding them with per_layer = {{ \"name\" = 0 }}")
    macs_after, _ = tp.utils.count_ops_and_params(model, example)
    return model, macs_after / max(1, macs_before)

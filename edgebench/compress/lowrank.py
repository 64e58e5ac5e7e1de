"""Low-rank factorization: replace big Conv2d/Conv1d/Linear layers by thin chains, then fine-tune.

- Linear (Denil et al. 2013): W = U S Vᵀ truncated to rank r → Linear(in, r) then Linear(r, out).
- k×k conv, `mode = "svd"` (Zhang et al. 2015, channel decomposition): the weight reshaped
  to Cout × (Cin·k·k), truncated SVD → a k×k conv with r filters, then a 1×1 conv r → Cout.
- k×k conv, `mode = "tucker2"` (Kim et al. ICLR 2016): HOSVD on the output and input channel
  modes → 1×1 conv Cin → r_in, k×k core r_in → r_out, 1×1 conv r_out → Cout.
- 1×1 convs are matrices: the SVD split into two 1×1 convs, in either mode.
- Conv1d (signal nets, keyword spotters on 1-D features): the channel decomposition, as `svd`
  for k×k convs — a width-k conv with r filters, then a 1-wide conv r → Cout.

The kept rank is `ratio` × the full rank, or the smallest rank keeping `energy` of the
singular values' squared sum (default: ratio = 0.5; trained layers of small nets have flat
spectra, so on the demo energy = 0.9 kept 80-90% of the parameters). Depthwise and grouped convs (groups > 1)
stay as they are; so does a layer with fewer than `min_params` weights or whose factorization
would not have fewer parameters. The split singular values go √S to each factor, so both
start on the same scale for fine-tuning.

    [[variant]]
    name = "lowrank-tucker2"
    steps = [{ method = "lowrank", mode = "tucker2", ratio = 0.5, finetune_epochs = 4 }]
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from edgebench.compress import StepContext, method
from edgebench.config import choice, require
from edgebench.errors import StepError

MODES = ("svd", "tucker2")
DEFAULT_RATIO = 0.5


@method("lowrank")
@dataclass(frozen=True)
class LowRank:
    ratio: float | None = None  # kept rank / full rank; 0.5 when neither is set
    energy: float | None = None  # kept share of Σσ² (per layer and mode)
    mode: str = "tucker2"  # for k×k convs
    min_params: int = 1024  # smaller layers are not worth the extra layer
    finetune_epochs: int = 4
    lr: float | None = None  # default: [train] lr (see `edgebench.model.train.finetune`)

    def __post_init__(self):
        choice(self.mode, MODES, "mode")
        require(self.ratio is None or self.energy is None, "set ratio or energy, not both")
        require(self.ratio is None or 0 < self.ratio <= 1, "ratio must be in (0, 1]")
        require(self.energy is None or 0 < self.energy <= 1, "energy must be in (0, 1]")
        require(self.min_params >= 0, "min_params must be >= 0")
        require(self.finetune_epochs >= 0, "finetune_epochs must be >= 0")
        require(self.lr is None or self.lr > 0, "lr must be positive")

    def apply(self, model, ctx: StepContext):
        model, ranks = factorize(model, self.ratio, self.energy, self.mode, self.min_params)
        ctx.notes["lowrank_ranks"] = ranks
        if self.finetune_epochs:
            # The [train] optimizer and lr with the fine-tune schedule, as `prune` does: a fifth
            # of the lr with a fresh cosine to 0 (the earlier default) recovered less on
            # benchmarks/prune_vs_reference.py's models in 5 of 6 cases (ratio 0.5, 4 epochs).
            from edgebench.model.train import finetune

            finetune(model, ctx.data, ctx.train, self.finetune_epochs, lr=self.lr, seed=ctx.seed,
                     log=ctx.log, label="lowrank finetune", notes=ctx.notes)  # fmt: skip
        return model


def factorize(model, ratio: float | None = None, energy: float | None = None, mode: str = "tucker2",
              min_params: int = 1024):  # fmt: skip
    """A factorized copy of `model` (the input is untouched) and {layer: rank(s)}.

    Raises StepError when no layer can be factorized with a saving.
    """
    from torch import nn

    if ratio is None and energy is None:
        ratio = DEFAULT_RATIO
    model = copy.deepcopy(model)
    ranks: dict = {}
    skipped: list[str] = []
    for name, layer in list(model.named_modules()):
        if isinstance(layer, nn.Linear):
            new, why = _split_linear(layer, ratio, energy, min_params)
        elif isinstance(layer, nn.Conv2d):
            new, why = _split_conv(layer, ratio, energy, mode, min_params)
        elif isinstance(layer, nn.Conv1d):
            new, why = _split_conv1d(layer, ratio, energy, min_params)
        else:
            continue
        if new is None:
            skipped.append(f"{name or type(layer).__name__}: {why}")
            continue
        _replace(model, name, new)
        ranks[name] = why
    if not ranks:
        raise StepError(
            "no factorizable layer: "
            + ("; ".join(skipped) or "the model has no Conv2d, Conv1d or Linear layer")
        )
    return model, ranks


def _keep(s, full: int, ratio: float | None, energy: float | None) -> int:
    """Rank to keep from singular values `s` (descending)."""
    import torch

    if ratio is not None:
        return max(1, min(full, round(ratio * full)))
    cum = torch.cumsum(s.double() ** 2, 0)
    return max(1, min(full, int(torch.searchsorted(cum, energy * cum[-1] * (1 - 1e-9)).item()) + 1))


def _svd(w, ratio, energy):
    """Truncated SVD of a matrix: (A, B) with w ≈ A @ B, A: m×r, B: r×n."""
    import torch

    u, s, vh = torch.linalg.svd(w.double(), full_matrices=False)
    r = _keep(s, len(s), ratio, energy)
    root = s[:r].sqrt()
    return (u[:, :r] * root).float(), (root[:, None] * vh[:r]).float()


def _split_linear(layer, ratio, energy, min_params):
    from torch import nn

    w = layer.weight.detach()
    out_f, in_f = w.shape
    if w.numel() < min_params:
        return None, f"{w.numel()} weights < min_params"
    a, b = _svd(w, ratio, energy)
    r = a.shape[1]
    if r * (in_f + out_f) >= out_f * in_f:
        return None, f"rank {r} would not save parameters"
    first = nn.Linear(in_f, r, bias=False)
    second = nn.Linear(r, out_f, bias=layer.bias is not None)
    first.weight.data.copy_(b)
    second.weight.data.copy_(a)
    if layer.bias is not None:
        second.bias.data.copy_(layer.bias.detach())
    return nn.Sequential(first, second), r


def _split_conv1d(layer, ratio, energy, min_params):
    """Conv1d Cout x Cin x k: SVD of the Cout x (Cin k) matrix → Conv1d(Cin, r, k) then Conv1d(r, Cout, 1)."""
    from torch import nn

    w = layer.weight.detach()
    cout, cin, k = w.shape
    if layer.groups > 1:
        return None, f"groups = {layer.groups} (depthwise/grouped convs are skipped)"
    if w.numel() < min_params:
        return None, f"{w.numel()} weights < min_params"
    a, b = _svd(w.reshape(cout, cin * k), ratio, energy)
    r = a.shape[1]
    if r * (cin * k + cout) >= w.numel():
        return None, f"rank {r} would not save parameters"
    first = nn.Conv1d(cin, r, k, layer.stride, layer.padding, layer.dilation, bias=False,
                      padding_mode=layer.padding_mode)  # fmt: skip
    second = nn.Conv1d(r, cout, 1, bias=layer.bias is not None)
    first.weight.data.copy_(b.reshape(r, cin, k))
    second.weight.data.copy_(a.reshape(cout, r, 1))
    if layer.bias is not None:
        second.bias.data.copy_(layer.bias.detach())
    return nn.Sequential(first, second), r


def _conv(cin, cout, like, k=None, bias=False, spatial=False):
    """A Conv2d: `spatial` ones take `like`'s kernel, stride, padding and dilation; others are 1×1."""
    from torch import nn

    if not spatial:
        return nn.Conv2d(cin, cout, 1, bias=bias)
    return nn.Conv2d(cin, cout, like.kernel_size, like.stride, like.padding, like.dilation,
                     bias=bias, padding_mode=like.padding_mode)  # fmt: skip


def _split_conv(layer, ratio, energy, mode, min_params):
    from torch import nn

    w = layer.weight.detach()
    cout, cin, kh, kw = w.shape
    if layer.groups > 1:
        return None, f"groups = {layer.groups} (depthwise/grouped convs are skipped)"
    if w.numel() < min_params:
        return None, f"{w.numel()} weights < min_params"
    has_bias = layer.bias is not None
    # A 1×1 conv is a matrix: a plain SVD split (its stride stays on the first factor).
    if (kh, kw) == (1, 1) or mode == "svd":
        a, b = _svd(w.reshape(cout, cin * kh * kw), ratio, energy)
        r = a.shape[1]
        if r * (cin * kh * kw + cout) >= w.numel():
            return None, f"rank {r} would not save parameters"
        first = _conv(cin, r, layer, spatial=True)
        second = _conv(r, cout, layer, bias=has_bias)
        first.weight.data.copy_(b.reshape(r, cin, kh, kw))
        second.weight.data.copy_(a.reshape(cout, r, 1, 1))
        if has_bias:
            second.bias.data.copy_(layer.bias.detach())
        return nn.Sequential(first, second), r
    # Tucker-2 by HOSVD: factor matrices from the SVDs of the mode-0 (out) and mode-1 (in)
    # unfoldings, core = W ×₀ U_outᵀ ×₁ U_inᵀ.
    import torch

    w64 = w.double()
    u_out, s_out, _ = torch.linalg.svd(w64.reshape(cout, -1), full_matrices=False)
    u_in, s_in, _ = torch.linalg.svd(w64.transpose(0, 1).reshape(cin, -1), full_matrices=False)
    r_out = _keep(s_out, len(s_out), ratio, energy)
    r_in = _keep(s_in, len(s_in), ratio, energy)
    u_out, u_in = u_out[:, :r_out], u_in[:, :r_in]
    core = torch.einsum("oikl,or,is->rskl", w64, u_out, u_in)
    if cin * r_in + r_in * r_out * kh * kw + r_out * cout >= w.numel():
        return None, f"ranks ({r_in}, {r_out}) would not save parameters"
    first = _conv(cin, r_in, layer)
    middle = _conv(r_in, r_out, layer, spatial=True)
    last = _conv(r_out, cout, layer, bias=has_bias)
    first.weight.data.copy_(u_in.t().reshape(r_in, cin, 1, 1).float())
    middle.weight.data.copy_(core.float())
    last.weight.data.copy_(u_out.reshape(cout, r_out, 1, 1).float())
    if has_bias:
        last.bias.data.copy_(layer.bias.detach())
    return nn.Sequential(first, middle, last), [r_in, r_out]


def _replace(model, name: str, new) -> None:
    if not name:
        raise StepError("the model itself is a single layer; nothing to factorize inside it")
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)

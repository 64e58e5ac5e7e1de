"""The search space: which compression chains a trial may build, and their parameter ranges.

A trial's chain is [prune?] + [lowrank?] + [quantize?], each part chosen by Optuna from the
space. The default space (used when `[search.space]` is absent) covers what the field uses on
small CNNs; a `[search.space]` table narrows or widens it:

    [search.space.prune]
    kinds = ["structured", "unstructured"]    # "none" lets a trial skip pruning
    ratio = [0.2, 0.8]
    ratio_step = 0.1                          # optional: only these ratios (a grid)
    finetune_epochs = [1, 4]
    lr_scale = [0.2, 1.0]                     # fine-tune lr = lr_scale x [train] lr (log scale)
    skip_sensitive = [false, 0.05]            # layer sensitivity bounds the ratios: leave dense each
                                              # layer whose pruning alone changes > 5% of predictions
    [search.space.lowrank]
    use = [false, true]
    ratio = [0.3, 0.8]
    [search.space.quantize]
    schemes = ["none", "fp16", "int8_static", "int8_dynamic"]
    keep_float = [0, 2]                       # int8_static: keep the K modules that add the most
                                              # error in float (keep_float = "auto:K"), K in 0..2
"""

from __future__ import annotations

import copy

from edgebench.errors import ConfigError

DEFAULT_SPACE: dict = {
    "prune": {"kinds": ["none", "structured", "unstructured"], "ratio": [0.2, 0.8], "ratio_step": None,
              "finetune_epochs": [1, 4], "lr_scale": [0.2, 1.0], "skip_sensitive": [False, 0.05]},
    "lowrank": {"use": [False, True], "ratio": [0.3, 0.8], "finetune_epochs": [1, 4]},
    "quantize": {"schemes": ["none", "fp16", "int8_static", "int8_dynamic"], "keep_float": [0, 0]},
}
CHOICES = {("prune", "kinds"): {"none", "structured", "unstructured"},
           ("quantize", "schemes"): {"none", "fp16", "int8_static", "int8_dynamic"},
           ("lowrank", "use"): {False, True}}
RANGES = {("prune", "ratio"): (0.0, 0.95), ("prune", "finetune_epochs"): (0, 50), ("prune", "lr_scale"): (1e-3, 10.0),
          ("lowrank", "ratio"): (0.05, 1.0), ("lowrank", "finetune_epochs"): (0, 50), ("quantize", "keep_float"): (0, 8)}


def make_space(table: dict | None) -> dict:
    """The default space with `table`'s parts over it; a wrong key or range exits 2."""
    space = copy.deepcopy(DEFAULT_SPACE)
    for part, values in (table or {}).items():
        where = f"[search.space.{part}]"
        if part not in space:
            raise ConfigError(f"{where}: unknown part (valid: {', '.join(space)})")
        if not isinstance(values, dict):
            raise ConfigError(f"{where}: expected a table")
        for key, value in values.items():
            if key not in space[part]:
                raise ConfigError(f"{where}: unknown key {key!r} (valid: {', '.join(space[part])})")
            if key == "skip_sensitive":
                if not isinstance(value, list) or not value or not all(
                        v is False or (isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 1) for v in value):
                    raise ConfigError(f"{where}: skip_sensitive must be a list of false and shares in (0, 1], got {value!r}")
            elif key == "ratio_step":
                if not isinstance(value, (int, float)) or not 0 < value <= 1:
                    raise ConfigError(f"{where}: ratio_step must be a number in (0, 1], got {value!r}")
            elif (part, key) in CHOICES:
                if not isinstance(value, list) or not value or not set(value) <= CHOICES[(part, key)]:
                    raise ConfigError(f"{where}: {key} must be a non-empty list of {sorted(map(str, CHOICES[(part, key)]))}")
            else:
                lo, hi = RANGES[(part, key)]
                if (not isinstance(value, list) or len(value) != 2 or not all(isinstance(v, (int, float)) for v in value)
                        or not lo <= value[0] <= value[1] <= hi):
                    raise ConfigError(f"{where}: {key} must be [low, high] within [{lo:g}, {hi:g}], got {value!r}")
                if key == "keep_float" and not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                    raise ConfigError(f"{where}: keep_float must be [low, high] module counts (integers), got {value!r}")
            space[part][key] = value
    return space


def suggest(trial, space: dict, train_lr: float) -> list[dict]:
    """One trial's chain of steps, as [[variant]] step tables."""
    steps: list[dict] = []
    p = space["prune"]
    kind = trial.suggest_categorical("prune", p["kinds"])
    if kind != "none":
        epochs = trial.suggest_int("prune_epochs", *p["finetune_epochs"])
        ratio = trial.suggest_float("prune_ratio", *p["ratio"], step=p.get("ratio_step"))
        step = {"method": "prune", "kind": kind, "ratio": round(ratio, 3), "finetune_epochs": epochs}
        sensitive = trial.suggest_categorical("prune_skip_sensitive", p["skip_sensitive"])
        if sensitive is not False:
            step["skip_sensitive"] = float(sensitive)
        if epochs:
            step["lr"] = float(f"{train_lr * trial.suggest_float('prune_lr_scale', *p['lr_scale'], log=True):.3g}")
        steps.append(step)
    low = space["lowrank"]
    if trial.suggest_categorical("lowrank", low["use"]):
        steps.append({"method": "lowrank", "ratio": round(trial.suggest_float("lowrank_ratio", *low["ratio"]), 3),
                      "finetune_epochs": trial.suggest_int("lowrank_epochs", *low["finetune_epochs"])})
    q = space["quantize"]
    scheme = trial.suggest_categorical("quantize", q["schemes"])
    if scheme != "none":
        steps.append({"method": "quantize", "scheme": scheme})
        keep = trial.suggest_int("keep_float", *q["keep_float"]) if scheme == "int8_static" and q["keep_float"][1] else 0
        if keep:
            steps[-1]["keep_float"] = f"auto:{keep}"
    return steps


def grid(space: dict) -> dict[str, list]:
    """Every value of every parameter, for Optuna's GridSampler (`sampler = "grid"`): a space
    with a continuous range needs a `ratio_step`, and lowrank off, lr_scale fixed."""
    p, low = space["prune"], space["lowrank"]
    if any(k != "none" for k in p["kinds"]) and not p.get("ratio_step"):
        raise ConfigError("[search] sampler = \"grid\" needs [search.space.prune] ratio_step (a finite set of ratios)")
    if True in low["use"]:
        raise ConfigError("[search] sampler = \"grid\" needs [search.space.lowrank] use = [false]")
    if p["lr_scale"][0] != p["lr_scale"][1]:
        raise ConfigError("[search] sampler = \"grid\" needs a fixed [search.space.prune] lr_scale = [x, x]")
    n = round((p["ratio"][1] - p["ratio"][0]) / p["ratio_step"]) if p.get("ratio_step") else 0
    out = {"prune": list(p["kinds"]), "prune_epochs": list(range(p["finetune_epochs"][0], p["finetune_epochs"][1] + 1)),
           "prune_ratio": [round(p["ratio"][0] + i * p["ratio_step"], 6) for i in range(n + 1)] if n or p.get("ratio_step") else [],
           "prune_lr_scale": [p["lr_scale"][0]], "prune_skip_sensitive": list(p["skip_sensitive"]), "lowrank": [False],
           "quantize": list(space["quantize"]["schemes"]),
           "keep_float": list(range(int(space["quantize"]["keep_float"][0]), int(space["quantize"]["keep_float"][1]) + 1))
           if space["quantize"]["keep_float"][1] else []}
    return {k: v for k, v in out.items() if v}

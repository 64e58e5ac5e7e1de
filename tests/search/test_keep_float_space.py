"""The search space can keep the modules that add the most error in float (`keep_float = "auto:K"`)."""

from __future__ import annotations

import pytest

optuna = pytest.importorskip("optuna", reason="Optuna is not installed (pip install 'edgebench[search]')")


def test_int8_trials_may_keep_the_worst_modules_float_and_others_never_do():
    from edgebench.config import parse_step
    from edgebench.search.space import grid, make_space, suggest

    space = make_space({"prune": {"kinds": ["none"], "lr_scale": [1.0, 1.0]}, "lowrank": {"use": [False]},
                        "quantize": {"schemes": ["int8_static", "fp16"], "keep_float": [0, 2]}})
    chain = suggest(optuna.trial.FixedTrial({"prune": "none", "lowrank": False, "quantize": "int8_static",
                                             "keep_float": 2}), space, 0.05)
    assert chain == [{"method": "quantize", "scheme": "int8_static", "keep_float": "auto:2"}]
    assert parse_step(chain[0], "trial").keep_float == "auto:2"  # a step the experiment file accepts
    none = suggest(optuna.trial.FixedTrial({"prune": "none", "lowrank": False, "quantize": "int8_static",
                                            "keep_float": 0}), space, 0.05)
    assert none == [{"method": "quantize", "scheme": "int8_static"}]
    fp16 = suggest(optuna.trial.FixedTrial({"prune": "none", "lowrank": False, "quantize": "fp16"}), space, 0.05)
    assert fp16 == [{"method": "quantize", "scheme": "fp16"}]
    assert grid(space)["keep_float"] == [0, 1, 2]


def test_keep_float_is_off_unless_the_space_asks_and_takes_module_counts():
    from edgebench.errors import ConfigError
    from edgebench.search.space import DEFAULT_SPACE, make_space

    assert DEFAULT_SPACE["quantize"]["keep_float"] == [0, 0]
    with pytest.raises(ConfigError, match="keep_float must be"):
        make_space({"quantize": {"keep_float": [0.5, 1.5]}})

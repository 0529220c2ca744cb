"""The search space (``sweeps.study.space``): what one trial is given to train with.

Oracles: the config's own fixed ``training`` and ``network`` fields (every key not searched keeps
its configured value), Optuna's stored distributions and raw parameters (what was actually asked
of the sampler), ``json`` for the encoding of list choices, and ``itertools.product`` for the grid.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from sweeps.config import NetworkConfig, TrainingConfig, parse_config
from sweeps.study import space

optuna.logging.set_verbosity(optuna.logging.WARNING)

HIDDEN_CHOICES = [[30], [100, 30]]

#: Every kind of search-space entry; fixed settings chosen away from the defaults so that a merge
#: that fell back to the defaults would show.
CONFIG: dict[str, Any] = {
    "name": "space",
    "seed": 3,
    "data": {"source": "digits", "n_train": 300, "n_eval": 100},
    "network": {"hidden": [7], "activation": "tanh", "cost": "quadratic", "init": "xavier"},
    "training": {"epochs": 4, "eta": 0.3, "batch_size": 20, "lmbda": 2.5, "penalty": "l1", "momentum": 0.2},
    "search_space": {
        "eta": {"type": "float", "low": 0.01, "high": 10.0, "log": True},
        "lmbda": {"type": "float", "low": 0.0, "high": 2.0, "step": 0.25},
        "epochs": {"type": "int", "low": 2, "high": 64, "log": True},
        "batch_size": {"type": "int", "low": 10, "high": 50, "step": 10},
        "hidden": {"type": "categorical", "choices": HIDDEN_CHOICES},
        "activation": {"type": "categorical", "choices": ["sigmoid", "relu"]},
    },
}


def make_cfg(search_space: dict[str, Any] | None = None, **top: Any):
    data = copy.deepcopy(CONFIG)
    if search_space is not None:
        data["search_space"] = copy.deepcopy(search_space)
    data.update(copy.deepcopy(top))
    return parse_config(data)


def ask(n: int, cfg, seed: int = 0) -> list[tuple[optuna.Trial, dict[str, Any]]]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append((trial, space.suggest(trial, cfg)))
    return out


def test_settings_are_every_training_and_network_field_with_the_searched_ones_replaced():
    cfg = make_cfg()
    searched = set(CONFIG["search_space"])
    [(trial, settings)] = ask(1, cfg)
    assert set(settings) == set(TrainingConfig.model_fields) | set(NetworkConfig.model_fields) | {"n_train"}
    assert settings["n_train"] == CONFIG["data"]["n_train"]  # not searched: every row loaded
    for section in ("training", "network"):
        for key, fixed in getattr(cfg, section).model_dump().items():
            if key not in searched:
                assert settings[key] == fixed, key
    # the fixed values are the file's, not the model defaults
    assert (settings["cost"], settings["init"], settings["penalty"], settings["momentum"]) == \
        ("quadratic", "xavier", "l1", 0.2)
    # exactly the searched keys were asked of Optuna
    assert set(trial.params) == searched


def test_an_empty_search_space_gives_the_fixed_settings_and_asks_nothing():
    cfg = make_cfg(search_space={})
    [(trial, settings)] = ask(1, cfg)
    assert settings == {**TrainingConfig(**CONFIG["training"]).model_dump(),
                        **NetworkConfig(**CONFIG["network"]).model_dump(), "n_train": 300}
    assert trial.params == {} and trial.distributions == {}


def test_float_log_and_step_entries_are_offered_as_such_and_stay_in_range():
    cfg = make_cfg()
    drawn = ask(40, cfg)
    trial = drawn[0][0]
    assert trial.distributions["eta"] == FloatDistribution(0.01, 10.0, log=True)
    assert trial.distributions["lmbda"] == FloatDistribution(0.0, 2.0, step=0.25)
    etas = [s["eta"] for _, s in drawn]
    assert all(isinstance(v, float) and 0.01 <= v <= 10.0 for v in etas)
    # log-uniform over 3 decades: some draws below 0.1 (uniform would give ~1% there, log ~33%)
    assert sum(v < 0.1 for v in etas) >= 5, etas
    lmbdas = {s["lmbda"] for _, s in drawn}
    assert lmbdas <= {k * 0.25 for k in range(9)}, lmbdas
    assert len(lmbdas) > 3


def test_int_entries_are_ints_on_their_step_and_log_scale():
    cfg = make_cfg()
    drawn = ask(40, cfg)
    trial = drawn[0][0]
    assert trial.distributions["epochs"] == IntDistribution(2, 64, log=True)
    assert trial.distributions["batch_size"] == IntDistribution(10, 50, step=10)
    for _, s in drawn:
        assert type(s["epochs"]) is int and 2 <= s["epochs"] <= 64
        assert type(s["batch_size"]) is int and s["batch_size"] in (10, 20, 30, 40, 50)
    # log scale: the lower half of the decades (2..8) gets about half the draws, not ~10%
    assert sum(s["epochs"] <= 8 for _, s in drawn) >= 10


def test_list_choices_go_to_optuna_as_json_text_and_come_back_as_lists():
    cfg = make_cfg()
    drawn = ask(30, cfg)
    trial = drawn[0][0]
    assert trial.distributions["hidden"] == CategoricalDistribution([json.dumps(c) for c in HIDDEN_CHOICES])
    assert trial.distributions["activation"] == CategoricalDistribution(["sigmoid", "relu"])
    seen = []
    for t, s in drawn:
        assert isinstance(t.params["hidden"], str)  # what the storage holds
        assert s["hidden"] == json.loads(t.params["hidden"]) and s["hidden"] in HIDDEN_CHOICES
        assert s["activation"] == t.params["activation"]  # scalar choices pass unchanged
        seen.append(s["hidden"])
    assert [100, 30] in seen and [30] in seen
    assert cfg.network.hidden == [7], "suggest must not change the config"


def test_enqueued_parameters_are_decoded_like_sampled_ones():
    """Retries and grid slots are enqueued with the stored (encoded) values."""
    cfg = make_cfg()
    study = optuna.create_study()
    study.enqueue_trial({"hidden": "[100, 30]", "eta": 0.5, "lmbda": 1.75, "epochs": 3, "batch_size": 40,
                         "activation": "relu"})
    settings = space.suggest(study.ask(), cfg)
    assert settings["hidden"] == [100, 30]
    assert (settings["eta"], settings["lmbda"], settings["epochs"], settings["batch_size"], settings["activation"]) \
        == (0.5, 1.75, 3, 40, "relu")


def test_a_categorical_of_numbers_keeps_numbers():
    cfg = make_cfg(search_space={"batch_size": {"type": "categorical", "choices": [10, 25, 50]},
                                 "eta": {"type": "categorical", "choices": [0.1, 1.0]}})
    drawn = ask(20, cfg)
    assert {s["batch_size"] for _, s in drawn} <= {10, 25, 50}
    assert all(type(s["batch_size"]) is int and type(s["eta"]) is float for _, s in drawn)


def test_n_train_is_searched_like_the_training_fields():
    cfg = make_cfg(search_space={"n_train": {"type": "int", "low": 50, "high": 300, "step": 50}})
    drawn = ask(30, cfg)
    assert drawn[0][0].distributions["n_train"] == IntDistribution(50, 300, step=50)
    values = {s["n_train"] for _, s in drawn}
    assert values <= {50, 100, 150, 200, 250, 300} and len(values) > 2
    assert all(type(s["n_train"]) is int for _, s in drawn)
    cfg = make_cfg(search_space={"n_train": {"type": "categorical", "choices": [100, 300]}})
    assert {s["n_train"] for _, s in ask(20, cfg)} == {100, 300}


def test_grid_lists_only_categorical_entries_encoded():
    cfg = make_cfg()
    assert space.grid(cfg) == {"hidden": ["[30]", "[100, 30]"], "activation": ["sigmoid", "relu"]}


def test_grid_sampler_on_the_grid_visits_every_combination_once():
    ss = {"hidden": {"type": "categorical", "choices": HIDDEN_CHOICES},
          "batch_size": {"type": "categorical", "choices": [10, 25]},
          "activation": {"type": "categorical", "choices": ["sigmoid", "tanh", "relu"]}}
    cfg = make_cfg(search_space=ss, study={"sampler": {"name": "grid"}})
    study = optuna.create_study(sampler=optuna.samplers.GridSampler(space.grid(cfg), seed=0))
    n = math.prod(len(s["choices"]) for s in ss.values())
    visited = []
    for _ in range(n):
        settings = space.suggest(study.ask(), cfg)
        visited.append((tuple(settings["hidden"]), settings["batch_size"], settings["activation"]))
    expected = {(tuple(h), b, a) for h, b, a in itertools.product(HIDDEN_CHOICES, [10, 25],
                                                                 ["sigmoid", "tanh", "relu"])}
    assert sorted(visited) == sorted(expected)


@pytest.mark.parametrize("choice", [[30], [100, 30], {"a": 1}])
def test_encode_decode_round_trip(choice):
    encoded = space._encode(choice)
    assert encoded == json.dumps(choice)
    assert space._decode(encoded) == choice
    assert space._decode("sigmoid") == "sigmoid" and space._decode(0.5) == 0.5

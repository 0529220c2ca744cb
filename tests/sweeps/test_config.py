"""Sweep YAML validation (``sweeps.config``): every error names the field.

The same errors through the command line (exit code 2, nothing created) are in ``cli/test_commands.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sweeps.config import CategoricalParam, ConfigError, FloatParam, load_config, parse_config


def config_error(sw, tmp_path: Path, changes: dict) -> str:
    path = sw.write_config(tmp_path, changes)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value)


def test_base_config_is_valid(sw, digits_config: Path) -> None:
    cfg = load_config(digits_config)
    assert cfg.name == "tiny"
    assert cfg.data.n_train == 300 and cfg.network.hidden == [10] and cfg.training.epochs == 3
    assert set(cfg.search_space) == {"eta", "lmbda", "batch_size"}


@pytest.mark.parametrize("changes, field", [
    ({"study": {"bogus": 1}}, "study.bogus"),
    ({"training": {"etaa": 0.1}}, "training.etaa"),
    ({"bogus_top": 1}, "bogus_top"),
    ({"search_space": {"eta": {"type": "float", "low": 0.1, "high": 1.0, "logg": True}}}, "search_space.eta.logg"),
])
def test_unknown_key_names_the_dotted_field(sw, tmp_path: Path, changes: dict, field: str) -> None:
    msg = config_error(sw, tmp_path, changes)
    assert f"{field}: unknown key" in msg, msg


def test_wrong_type_names_the_field_and_value(sw, tmp_path: Path) -> None:
    msg = config_error(sw, tmp_path, {"training": {"epochs": "ten"}})
    assert "training.epochs" in msg and "'ten'" in msg, msg


def test_negative_eta_names_training_eta(sw, tmp_path: Path) -> None:
    msg = config_error(sw, tmp_path, {"training": {"eta": -1}})
    assert "training.eta" in msg and "-1" in msg, msg


def test_search_space_low_above_high(sw, tmp_path: Path) -> None:
    msg = config_error(sw, tmp_path, {"search_space": {"eta": {"type": "float", "low": 2.0, "high": 1.0}}})
    assert "search_space.eta" in msg and "low=2.0" in msg and "high=1.0" in msg, msg
    msg = config_error(sw, tmp_path, {"search_space": {"batch_size": {"__replace__": True, "type": "int", "low": 50,
                                                                       "high": 10}}})
    assert "search_space.batch_size" in msg and "low=50" in msg, msg


def test_unknown_search_space_parameter_lists_allowed(sw, tmp_path: Path) -> None:
    msg = config_error(sw, tmp_path, {"search_space": {"learning_rate": {"type": "float", "low": 0.1,
                                                                           "high": 1.0}}})
    assert "search_space" in msg and "'learning_rate'" in msg, msg
    for allowed in ("eta", "lmbda", "batch_size", "momentum", "hidden"):
        assert allowed in msg.split("allowed:")[1], msg


def test_sampler_not_allowed_lists_values_and_value_got(sw, tmp_path: Path) -> None:
    msg = config_error(sw, tmp_path, {"study": {"sampler": {"name": "bayes"}}})
    assert "study.sampler.name" in msg and "'bayes'" in msg, msg
    for allowed in ("tpe", "random", "grid", "qmc"):
        assert f"'{allowed}'" in msg, msg


def test_duplicate_yaml_key_names_key_and_line(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("name: dup\ntraining:\n  eta: 0.5\n  batch_size: 10\n  eta: 0.7\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert "duplicate key 'eta'" in msg and "line 5" in msg and "line 3" in msg, msg


def test_duplicate_top_level_key(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("name: a\nseed: 1\nname: b\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'name' at line 3"):
        load_config(path)


def test_exponent_without_dot_is_a_float(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text("name: exp\n"
                    "training:\n  eta: 1e-3\n  lmbda: 5E+2\n  epochs: 10\n"
                    "search_space:\n"
                    "  lmbda: {type: float, low: 1e-4, high: 1e2, log: true}\n"
                    "  momentum: {type: categorical, choices: [0.0, 1e-1]}\n")
    cfg = load_config(path)
    assert cfg.training.eta == pytest.approx(1e-3) and isinstance(cfg.training.eta, float)
    assert cfg.training.lmbda == 500.0
    assert isinstance(cfg.training.epochs, int) and cfg.training.epochs == 10
    spec = cfg.search_space["lmbda"]
    assert isinstance(spec, FloatParam) and spec.low == pytest.approx(1e-4) and spec.high == 100.0
    choices = cfg.search_space["momentum"]
    assert isinstance(choices, CategoricalParam) and choices.choices == [0.0, 0.1]
    assert all(isinstance(c, float) for c in choices.choices)


def test_unknown_objective_metric(sw, tmp_path: Path) -> None:
    msg = config_error(sw, tmp_path, {"objective": {"metric": "eval/f1"}})
    assert "objective.metric" in msg and "'eval/f1'" in msg, msg


def test_layer_metric_must_exist_in_the_network(sw, tmp_path: Path) -> None:
    msg = config_error(sw, tmp_path, {"objective": {"metric": "layer3/weight_rms", "direction": "minimize"}})
    assert "objective.metric" in msg and "layer3" in msg, msg
    cfg = load_config(sw.write_config(tmp_path, {"objective": {"metric": "layer2/weight_rms", "direction": "minimize"}}))
    assert cfg.objective.metric == "layer2/weight_rms"


def test_eval_metric_needs_eval_rows(sw, tmp_path: Path) -> None:
    msg = config_error(sw, tmp_path, {"data": {"n_eval": 0}})
    assert "data.n_eval" in msg and "eval/accuracy" in msg, msg
    # the same without an eval metric is fine
    cfg = load_config(sw.write_config(tmp_path, {"data": {"n_eval": 0}, "objective": {"metric": "train/accuracy"}}))
    assert cfg.data.n_eval == 0


def test_grid_sampler_needs_categorical_entries(sw, tmp_path: Path) -> None:
    msg = config_error(sw, tmp_path, {"study": {"sampler": {"name": "grid"}}})
    assert "grid" in msg and "categorical" in msg, msg
    cfg = load_config(sw.write_config(tmp_path, {
        "study": {"sampler": {"name": "grid"}},
        "search_space": {"__replace__": True, "batch_size": {"type": "categorical", "choices": [10, 25]}}}))
    assert cfg.study.sampler.name == "grid"


def _n_train_space(spec: dict) -> dict:
    return {"search_space": {"n_train": spec}}


def test_n_train_is_searchable_within_the_rows_loaded(sw, tmp_path: Path) -> None:
    """data.n_train (300 in the base config) rows are loaded; the space picks prefixes of them."""
    cfg = load_config(sw.write_config(tmp_path, _n_train_space({"type": "categorical", "choices": [100, 300]})))
    assert cfg.search_space["n_train"].choices == [100, 300]
    # an int range whose last step lands on 300 (100, 200, 300) though high is 350
    cfg = load_config(sw.write_config(tmp_path, _n_train_space({"type": "int", "low": 100, "high": 350,
                                                                "step": 100})))
    assert cfg.search_space["n_train"].high == 350


@pytest.mark.parametrize("spec, words", [
    ({"type": "categorical", "choices": [100, 301]},
     ["search_space.n_train allows up to 301", "data.n_train loads 300"]),
    ({"type": "int", "low": 100, "high": 400}, ["up to 400", "data.n_train loads 300"]),
    ({"type": "float", "low": 10.0, "high": 100.0}, ["n_train must be an int or categorical", "'float'"]),
    ({"type": "categorical", "choices": [100, 0.5, True]}, ["n_train choices must be integers >= 1", "[0.5, True]"]),
    ({"type": "categorical", "choices": [0, 100]}, ["n_train choices must be integers >= 1", "[0]"]),
    ({"type": "int", "low": 0, "high": 100}, ["n_train must be >= 1", "low=0"]),
])
def test_n_train_search_space_errors_name_the_field_and_value(sw, tmp_path: Path, spec: dict, words: list) -> None:
    msg = config_error(sw, tmp_path, _n_train_space(spec))
    assert "n_train" in msg and all(w in msg for w in words), msg


# -- populations and the batch order --------------------------------------------------------------------------

def test_population_and_batch_order_defaults_and_limits(sw, tmp_path: Path) -> None:
    cfg = load_config(sw.write_config(tmp_path))
    assert cfg.study.population == 1 and cfg.training.batch_order == "common"
    assert load_config(sw.write_config(tmp_path, {"study": {"population": 16}})).study.population == 16
    for bad in (0, -1, 1025, "many"):
        msg = config_error(sw, tmp_path, {"study": {"population": bad}})
        assert "study.population" in msg, msg
    msg = config_error(sw, tmp_path, {"training": {"batch_order": "random"}})
    assert "training.batch_order" in msg and "common" in msg and "per_trial" in msg, msg


def test_a_population_needs_the_common_batch_order(sw, tmp_path: Path) -> None:
    msg = config_error(sw, tmp_path, {"study": {"population": 4}, "training": {"batch_order": "per_trial"}})
    assert "study.population 4 needs training.batch_order 'common'" in msg, msg
    assert load_config(sw.write_config(tmp_path, {"study": {"population": 1},
                                                  "training": {"batch_order": "per_trial"}}))


def test_fingerprint_has_the_batch_order_only_when_common(sw, tmp_path: Path) -> None:
    """A per_trial config keeps the fingerprint the config had before batch_order existed; common changes it;
    the population (how trials run, not what they compute) never enters it."""
    import hashlib
    import json

    per_trial = load_config(sw.write_config(tmp_path, {"training": {"batch_order": "per_trial"}}))
    training = per_trial.training.model_dump()
    del training["batch_order"]
    before = hashlib.sha256(json.dumps({
        "search_space": {k: v.model_dump() for k, v in sorted(per_trial.search_space.items())},
        "objective": per_trial.objective.model_dump(), "data": per_trial.data.model_dump(exclude={"cache_dir"}),
        "network": per_trial.network.model_dump(), "training": training, "seed": per_trial.seed,
    }, sort_keys=True, default=str).encode()).hexdigest()
    assert per_trial.fingerprint() == before
    common = load_config(sw.write_config(tmp_path))
    assert common.fingerprint() != before
    assert load_config(sw.write_config(tmp_path, {"study": {"population": 8}})).fingerprint() == common.fingerprint()


def test_a_storage_opened_without_heartbeat_settings_beats_like_a_config_without_them() -> None:
    """``open_storage``'s own defaults (callers without a config) are the YAML's defaults."""
    import inspect

    from sweeps.config import parse_config
    from sweeps.study.storage import open_storage

    study = parse_config({"name": "defaults"}).study
    params = inspect.signature(open_storage).parameters
    assert (params["heartbeat_interval"].default, params["heartbeat_grace"].default) == \
        (study.heartbeat_interval, study.heartbeat_grace)


def test_a_negative_seed_is_refused_before_any_trial_runs() -> None:
    """NumPy's SeedSequence refuses it; accepted, every trial would fail in load_data."""
    import numpy as np

    with pytest.raises(ValueError):
        np.random.SeedSequence(-1)  # the oracle
    with pytest.raises(ConfigError, match=r"seed: .*greater than or equal to 0 \(got -1\)"):
        parse_config({"name": "x", "seed": -1})
    assert parse_config({"name": "x", "seed": 0}).seed == 0

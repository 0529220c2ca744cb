"""Samplers: every trial draws from its own seeded stream (``sweeps.study.samplers``).

Oracles: the seed formula the module docstring specifies, ``itertools.product`` of the config's
choices, and plain (process-seeded) Optuna samplers as the control that shows the scenario would
catch a sampler seeded once per process.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
from typing import Any

import numpy as np
import optuna
import pytest

from sweeps.config import ConfigError, parse_config
from sweeps.study.samplers import TrialSeededSampler, build_sampler, grid_points, trial_seed

optuna.logging.set_verbosity(optuna.logging.WARNING)
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

#: Float-only space: two different streams never draw the same point.
CONFIG: dict[str, Any] = {
    "name": "s",
    "seed": 7,
    "data": {"source": "digits", "n_train": 300, "n_eval": 100},
    "search_space": {
        "eta": {"type": "float", "low": 0.01, "high": 10.0, "log": True},
        "lmbda": {"type": "float", "low": 1e-3, "high": 10.0, "log": True},
    },
    "study": {"n_trials": 4, "sampler": {"name": "random"}},
}

GRID_SPACE = {
    "batch_size": {"type": "categorical", "choices": [10, 25, 50]},
    "activation": {"type": "categorical", "choices": ["sigmoid", "tanh", "relu"]},
    "hidden": {"type": "categorical", "choices": [[10], [20, 10]]},
}


@pytest.fixture
def fast_dir(scratch):
    """A scratch directory in RAM when there is one (the shared ``scratch`` fixture)."""
    return scratch

def make_cfg(sampler: str = "random", *, seed: int = 7, options: dict | None = None, space: dict | None = None):
    data = copy.deepcopy(CONFIG)
    data["seed"] = seed
    data["study"]["sampler"] = {"name": sampler, "options": options or {}}
    if space is not None:
        data["search_space"] = copy.deepcopy(space)
    return parse_config(data)


def sample(trial: optuna.Trial) -> tuple[float, float]:
    return trial.suggest_float("eta", 0.01, 10.0, log=True), trial.suggest_float("lmbda", 1e-3, 10.0, log=True)


def value_of(point: tuple[float, float]) -> float:
    """A deterministic objective (so TPE's model depends only on the points)."""
    eta, lmbda = point
    return -((math.log10(eta) - 0.2) ** 2) - (math.log10(lmbda) + 1.0) ** 2


def run_in_memory(sampler: optuna.samplers.BaseSampler, n: int) -> list[tuple[float, float]]:
    study = optuna.create_study(direction="maximize", sampler=sampler)
    points = []
    for _ in range(n):
        trial = study.ask()
        point = sample(trial)
        study.tell(trial, value_of(point))
        points.append(point)
    return points


# -- trial_seed ----------------------------------------------------------------------------------

def test_trial_seed_is_the_documented_32_bit_seed_sequence_value_and_differs_per_trial_and_seed():
    seeds, numbers = range(6), range(200)
    table = {(s, n): trial_seed(s, n) for s in seeds for n in numbers}
    assert len(set(table.values())) == len(table)  # no two (seed, trial) pairs share a stream
    for (s, n), value in table.items():
        assert 0 <= value < 2 ** 32
        # the formula the module docstring specifies, computed here from numpy directly
        assert value == int(np.random.SeedSequence([s, n, 0x5A3]).generate_state(1, dtype=np.uint32)[0])
        # and not the stream of the trial's training seeds (SeedSequence([seed, number]))
        assert value != int(np.random.SeedSequence([s, n]).generate_state(1, dtype=np.uint32)[0])
    assert [trial_seed(3, n) for n in numbers] == [table[3, n] for n in numbers]  # stable across calls


def test_each_trial_gets_a_wrapped_sampler_seeded_with_its_trial_seed():
    made: list[int] = []

    def make(seed: int) -> optuna.samplers.BaseSampler:
        made.append(seed)
        return optuna.samplers.RandomSampler(seed=seed)

    sampler = TrialSeededSampler(make, seed=11)
    assert sampler.name == "RandomSampler"
    made.clear()  # the probe built at construction
    run_in_memory(sampler, 5)
    assert made == [int(np.random.SeedSequence([11, n, 0x5A3]).generate_state(1)[0]) for n in range(5)]


# -- two launchers, reproducibility, resume ---------------------------------------------------------

@pytest.mark.parametrize("sampler, options", [("random", {}), ("tpe", {"n_startup_trials": 3})])
def test_two_launchers_with_the_same_seed_draw_distinct_points(sampler, options):
    """Two ``load_study`` objects on one storage, each with its own sampler object, asking in turn."""
    cfg = make_cfg(sampler, options=options)
    storage = optuna.storages.InMemoryStorage()
    optuna.create_study(study_name="s", storage=storage, direction="maximize")
    launchers = [optuna.load_study(study_name="s", storage=storage, sampler=build_sampler(cfg)) for _ in range(2)]
    points: dict[int, tuple[float, float]] = {}
    for _ in range(8):  # interleaved: A asks, B asks, A tells, B tells
        asked = [(study, study.ask()) for study in launchers]
        for study, trial in asked:
            points[trial.number] = sample(trial)
        for study, trial in asked:
            study.tell(trial, value_of(points[trial.number]))
    assert sorted(points) == list(range(16))
    assert len(set(points.values())) == 16, points


def test_control_process_seeded_samplers_would_repeat_each_others_points():
    """The scenario above detects the fault it is about: plain seeded samplers collide in it."""
    storage = optuna.storages.InMemoryStorage()
    optuna.create_study(study_name="s", storage=storage)
    launchers = [optuna.load_study(study_name="s", storage=storage, sampler=optuna.samplers.RandomSampler(seed=7))
                 for _ in range(2)]
    points = []
    for _ in range(4):
        for study in launchers:
            trial = study.ask()
            points.append(sample(trial))
            study.tell(trial, value_of(points[-1]))
    assert len(set(points)) == 4  # every point drawn twice


@pytest.mark.parametrize("sampler, options", [("random", {}), ("tpe", {"n_startup_trials": 4}),
                                              ("tpe", {"n_startup_trials": 2, "multivariate": True})])
def test_the_same_config_run_twice_draws_the_same_points(sampler, options):
    first = run_in_memory(build_sampler(make_cfg(sampler, options=options)), 12)
    second = run_in_memory(build_sampler(make_cfg(sampler, options=options)), 12)
    assert first == second
    assert len(set(first)) == 12
    other_seed = run_in_memory(build_sampler(make_cfg(sampler, seed=8, options=options)), 12)
    assert not set(other_seed) & set(first)


@pytest.mark.parametrize("sampler, options, on_file", [("random", {}, True), ("tpe", {"n_startup_trials": 3}, False)])
def test_a_resumed_study_draws_new_points(fast_dir, sampler, options, on_file):
    """A resume: the same study loaded again (a SQLite file, or one in-memory storage) with a new sampler."""
    cfg = make_cfg(sampler, options=options)
    storage = f"sqlite:///{fast_dir / 'optuna.db'}" if on_file else optuna.storages.InMemoryStorage()

    def run(study: optuna.Study, n: int) -> list[tuple[float, float]]:
        out = []
        for _ in range(n):
            trial = study.ask()
            out.append(sample(trial))
            study.tell(trial, value_of(out[-1]))
        return out

    first = run(optuna.create_study(study_name="s", storage=storage, direction="maximize",
                                    sampler=build_sampler(cfg)), 6)
    resumed = run(optuna.load_study(study_name="s", storage=storage, sampler=build_sampler(cfg)), 6)
    assert len(set(first) | set(resumed)) == 12
    # and the resumed trials are those a single uninterrupted run would have drawn
    assert first + resumed == run_in_memory(build_sampler(cfg), 12)


# -- after_trial ---------------------------------------------------------------------------------

class _Recording(optuna.samplers.RandomSampler):
    def __init__(self, seed: int, log: list) -> None:
        super().__init__(seed=seed)
        self.seed, self.log = seed, log

    def after_trial(self, study, trial, state, values) -> None:
        self.log.append((self.seed, trial.number, state))
        super().after_trial(study, trial, state, values)


def test_after_trial_drops_the_trials_sampler_and_forwards_the_call():
    log: list = []
    sampler = TrialSeededSampler(lambda s: _Recording(s, log), seed=5)
    study = optuna.create_study(sampler=sampler)
    a, b = study.ask(), study.ask()
    sample(a), sample(b)
    assert set(sampler._by_trial) == {a.number, b.number}
    own_a = sampler._by_trial[a.number]
    assert own_a.seed == trial_seed(5, a.number)
    study.tell(a, 1.0)
    assert set(sampler._by_trial) == {b.number}  # b's sampler stays while b runs
    study.tell(b, state=optuna.trial.TrialState.FAIL)
    assert sampler._by_trial == {}
    assert log == [(trial_seed(5, a.number), a.number, optuna.trial.TrialState.COMPLETE),
                   (trial_seed(5, b.number), b.number, optuna.trial.TrialState.FAIL)]
    # a sampler made again for a finished trial is a new one (nothing was kept)
    assert sampler.sampler_for(study.trials[a.number]) is not own_a


# -- build_sampler -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["random", "tpe", "grid", "qmc", "nsga2"])
def test_unknown_sampler_option_is_a_config_error_naming_the_field(name):
    space = GRID_SPACE if name == "grid" else None
    with pytest.raises(ConfigError, match=r"study\.sampler\.options") as err:
        build_sampler(make_cfg(name, options={"no_such_option": 1}, space=space))
    assert repr(name) in str(err.value)


def test_build_sampler_kinds():
    for name in ("random", "tpe", "nsga2"):
        sampler = build_sampler(make_cfg(name))
        assert isinstance(sampler, TrialSeededSampler)
        assert str(sampler) == f"TrialSeeded({sampler.name}, seed=7)"
    assert isinstance(build_sampler(make_cfg("grid", space=GRID_SPACE)), optuna.samplers.GridSampler)
    assert isinstance(build_sampler(make_cfg("qmc")), optuna.samplers.QMCSampler)
    assert build_sampler(make_cfg("tpe", options={"n_startup_trials": 3})).name == "TPESampler"


@pytest.mark.parametrize("name, package", [("cmaes", "cmaes"), ("gp", "torch")])
def test_sampler_whose_package_is_missing_is_a_config_error(name, package):
    try:
        __import__(package)
    except ImportError:
        pass
    else:
        pytest.skip(f"{package} is installed")
    with pytest.raises(ConfigError, match=rf"study\.sampler\.name: '{name}' needs the package '{package}'"):
        build_sampler(make_cfg(name))


# -- grid_points ---------------------------------------------------------------------------------

def _product_of(space: dict) -> list[dict[str, Any]]:
    names = list(space)
    enc = [[json.dumps(c) if isinstance(c, list) else c for c in space[n]["choices"]] for n in names]
    return [dict(zip(names, values)) for values in itertools.product(*enc)]


def _key(point: dict[str, Any]) -> tuple:
    return tuple(sorted(point.items()))


def test_grid_points_list_every_point_once_in_a_seed_dependent_order():
    expected = sorted(map(_key, _product_of(GRID_SPACE)))
    orders = set()
    for seed in range(6):
        points = grid_points(make_cfg("grid", seed=seed, space=GRID_SPACE))
        assert sorted(map(_key, points)) == expected  # each of the 18 points exactly once
        assert points == grid_points(make_cfg("grid", seed=seed, space=GRID_SPACE))  # stable for a seed
        orders.add(tuple(map(_key, points)))
    assert len(orders) > 1


def test_grid_points_are_values_the_grid_sampler_accepts():
    cfg = make_cfg("grid", space=GRID_SPACE)
    study = optuna.create_study(sampler=build_sampler(cfg))
    for point in grid_points(cfg)[:3]:
        study.enqueue_trial(point)
    from sweeps.study import space

    for point in grid_points(cfg)[:3]:
        trial = study.ask()
        settings = space.suggest(trial, cfg)
        assert trial.params == point
        assert settings["hidden"] == json.loads(point["hidden"])
        study.tell(trial, 0.0)


@pytest.mark.parametrize("population, options, liar", [(1, {}, None), (4, {}, True), (4, {"constant_liar": False},
                                                                                     False)])
def test_a_population_s_tpe_uses_constant_liar_unless_set(sw, population, options, liar):
    """K trials asked together see each other as pending (TPE constant_liar), unless the user chose otherwise."""
    from sweeps.config import parse_config
    from sweeps.study.samplers import build_sampler

    raw = sw.merge(sw.BASE_CONFIG, {"study": {"population": population,
                                              "sampler": {"name": "tpe", "options": options}}})
    made = []
    real = optuna.samplers.TPESampler.__init__

    def spy(self, *args, **kwargs):
        made.append(kwargs.get("constant_liar"))
        real(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(optuna.samplers.TPESampler, "__init__", spy)
        build_sampler(parse_config(raw))
    assert made and set(made) == {liar}

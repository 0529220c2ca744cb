"""What the study room's test modules share: a small sweep config (random sampler or a 6-point grid) and a
reader of the study as stored, with a storage of its own per database."""

from __future__ import annotations

import copy
from typing import Any

import optuna

from sweeps.config import parse_config

CONFIG: dict[str, Any] = {
    "name": "s",
    "seed": 3,
    "data": {"source": "digits", "n_train": 300, "n_eval": 100},
    "search_space": {
        "eta": {"type": "float", "low": 0.01, "high": 10.0, "log": True},
        "batch_size": {"type": "categorical", "choices": [10, 25, 50]},
    },
    "study": {"n_trials": 4, "sampler": {"name": "random"}},
}

#: 3 x 2 = 6 grid points.
GRID = {"search_space": {"batch_size": {"type": "categorical", "choices": [10, 25, 50]},
                         "activation": {"type": "categorical", "choices": ["sigmoid", "tanh"]}},
        "study": {"sampler": {"name": "grid"}}}


def cfg_data(n_trials: int = 4, grid: bool = False, **top: Any) -> dict[str, Any]:
    data = copy.deepcopy(CONFIG)
    if grid:
        data["search_space"] = copy.deepcopy(GRID["search_space"])
        data["study"]["sampler"] = {"name": "grid"}
    data["study"]["n_trials"] = n_trials
    data.update(copy.deepcopy(top))
    return data


def make_cfg(n_trials: int = 4, grid: bool = False, **top: Any):
    return parse_config(cfg_data(n_trials, grid, **top))


_READERS: dict[str, Any] = {}


def fresh(url: str, name: str = "s") -> optuna.Study:
    """The study as stored now, read through a storage of its own (one per database: opening one costs)."""
    storage = _READERS.get(url)
    if storage is None:
        storage = _READERS[url] = optuna.storages.RDBStorage(url)
    return optuna.load_study(study_name=name, storage=storage)

"""The search space: the only caller of ``trial.suggest_*``.

:func:`suggest` returns the complete settings of one trial: the fixed ``training``
and ``network`` fields of the config and ``n_train`` (``data.n_train`` unless the space
samples it: the trial then trains on the first ``n_train`` rows loaded), overridden by
the sampled values. Lists
(``hidden`` choices such as ``[30]`` or ``[100, 30]``) are offered to Optuna as
their JSON text, since Optuna's categorical choices must be scalars.
"""

from __future__ import annotations

import json
from typing import Any

import optuna

from sweeps.config import CategoricalParam, FloatParam, IntParam, SweepConfig


def _encode(choice: Any) -> Any:
    return json.dumps(choice) if isinstance(choice, (list, dict)) else choice


def _decode(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in "[{":
        return json.loads(value)
    return value


def suggest(trial: optuna.Trial, cfg: SweepConfig) -> dict[str, Any]:
    """Sample every ``search_space`` entry and merge with the fixed settings."""
    settings: dict[str, Any] = {**cfg.training.model_dump(), **cfg.network.model_dump(), "n_train": cfg.data.n_train}
    for name, spec in cfg.search_space.items():
        if isinstance(spec, FloatParam):
            value: Any = trial.suggest_float(name, spec.low, spec.high, log=spec.log, step=spec.step)
        elif isinstance(spec, IntParam):
            value = trial.suggest_int(name, spec.low, spec.high, log=spec.log, step=spec.step)
        elif isinstance(spec, CategoricalParam):
            value = _decode(trial.suggest_categorical(name, [_encode(c) for c in spec.choices]))
        else:  # pragma: no cover - the config's discriminated union admits nothing else
            raise TypeError(f"unknown parameter spec for {name}: {spec!r}")
        settings[name] = value
    return settings


def grid(cfg: SweepConfig) -> dict[str, list[Any]]:
    """The search space as a grid for ``GridSampler`` (every entry is categorical)."""
    return {name: [_encode(c) for c in spec.choices] for name, spec in cfg.search_space.items()
            if isinstance(spec, CategoricalParam)}

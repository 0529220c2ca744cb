"""Samplers and pruners from the config, seeded so that every trial is a new point.

Seeding: a sampler seeded once per process repeats its random stream in every process that has
the same seed: two launchers (or a resumed study) would draw the same startup points. Here the
random stream belongs to the **trial**, not to the process: :class:`TrialSeededSampler` gives
each trial its own sampler, seeded from ``SeedSequence([seed, trial number, 0x5A3])``. Trial
numbers are unique in a study (the storage hands them out), so no two trials share a stream,
whatever the number of workers, launchers or resumes; and a one-worker run of a config draws
exactly the same points every time. The sampler's model (TPE's Parzen estimators, NSGA-II's
population, CMA-ES's state) is built from the study's trials, which every process reads from the
storage, so building it per trial loses nothing.

Grid and QMC sweeps are different: their points are a fixed sequence that every process must
agree on, so they get the study seed unchanged. The grid's points are enqueued once when the study
is created (:mod:`sweeps.study.budget`), each exactly once; QMC indexes its sequence by a counter kept in
the study (Optuna's ``QMCSampler``; two workers asking at the same instant can read the same index,
which Optuna documents).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from sweeps.config import ConfigError, SweepConfig

#: Mixed into each trial's sampler seed so that it differs from the trial's training seeds
#: (``SeedSequence([seed, number])`` in :mod:`sweeps.engine.objective`).
SAMPLER_STREAM = 0x5A3


def trial_seed(seed: int, trial_number: int) -> int:
    """The sampler seed of one trial: 32 bits of ``SeedSequence([seed, trial_number, 0x5A3])``."""
    return int(np.random.SeedSequence([seed, trial_number, SAMPLER_STREAM]).generate_state(1)[0])


class TrialSeededSampler(optuna.samplers.BaseSampler):
    """Delegates every call about a trial to a sampler made for that trial with :func:`trial_seed`.

    ``make(seed)`` builds the wrapped sampler (e.g. ``lambda s: TPESampler(seed=s)``). The
    per-trial samplers are dropped when their trial ends (``after_trial``).
    """

    def __init__(self, make: Callable[[int], optuna.samplers.BaseSampler], seed: int) -> None:
        self._make = make
        self._seed = seed
        self._by_trial: dict[int, optuna.samplers.BaseSampler] = {}
        self.name = type(make(seed)).__name__  # builds one now: option errors surface at construction

    def __str__(self) -> str:
        return f"TrialSeeded({self.name}, seed={self._seed})"

    def sampler_for(self, trial: FrozenTrial) -> optuna.samplers.BaseSampler:
        sampler = self._by_trial.get(trial.number)
        if sampler is None:
            sampler = self._by_trial[trial.number] = self._make(trial_seed(self._seed, trial.number))
        return sampler

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self.sampler_for(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study: Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self.sampler_for(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self.sampler_for(trial).sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self.sampler_for(trial).before_trial(study, trial)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        sampler = self._by_trial.pop(trial.number, None)
        if sampler is not None:
            sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        """Nothing to do: each trial's stream is fixed by its number (that is the point)."""


def build_sampler(cfg: SweepConfig) -> optuna.samplers.BaseSampler:
    """The configured sampler; per-trial seeded except grid and QMC (see the module docstring)."""
    from sweeps.study import space

    name, opts = cfg.study.sampler.name, dict(cfg.study.sampler.options)
    if name == "tpe" and cfg.study.population > 1:
        # K trials asked together: each sees the others (RUNNING) as pending, so they are not K copies of one
        # guess (Optuna 5's default too; set here so that a population never depends on that default)
        opts.setdefault("constant_liar", True)
    makers: dict[str, Callable[[int], optuna.samplers.BaseSampler]] = {
        "tpe": lambda s: optuna.samplers.TPESampler(seed=s, **opts),
        "random": lambda s: optuna.samplers.RandomSampler(seed=s, **opts),
        "nsga2": lambda s: optuna.samplers.NSGAIISampler(seed=s, **opts),
        "cmaes": lambda s: optuna.samplers.CmaEsSampler(seed=s, **opts),
        "gp": lambda s: optuna.samplers.GPSampler(seed=s, **opts),
    }
    try:
        if name == "cmaes":
            import cmaes  # noqa: F401 - optuna imports it lazily; fail here, before anything starts
        if name == "gp":
            import torch  # noqa: F401
        if name == "grid":
            return optuna.samplers.GridSampler(space.grid(cfg), seed=cfg.seed, **opts)
        if name == "qmc":
            return optuna.samplers.QMCSampler(seed=cfg.seed, **opts)
        if name in makers:
            return TrialSeededSampler(makers[name], cfg.seed)
    except ImportError as err:
        raise ConfigError(f"study.sampler.name: {name!r} needs the package {err.name!r}, which is not installed "
                          f"(pip install {err.name}); installed samplers: tpe, random, grid, qmc, nsga2") from None
    except TypeError as err:
        raise ConfigError(f"study.sampler.options: invalid option for {name!r}: {err}") from None
    raise ConfigError(f"study.sampler.name: unknown sampler {name!r}")  # pragma: no cover


def build_pruner(cfg: SweepConfig) -> optuna.pruners.BasePruner:
    """The configured pruner (``hyperband`` defaults to ``min_resource=1, max_resource=epochs``)."""
    name, opts = cfg.study.pruner.name, dict(cfg.study.pruner.options)
    try:
        if name == "median":
            return optuna.pruners.MedianPruner(**opts)
        if name == "percentile":
            if "percentile" not in opts:
                raise ConfigError("study.pruner.options.percentile: required for the 'percentile' pruner "
                                  "(a number in [0, 100])")
            return optuna.pruners.PercentilePruner(**opts)
        if name == "successive_halving":
            return optuna.pruners.SuccessiveHalvingPruner(**opts)
        if name == "hyperband":
            opts.setdefault("min_resource", 1)
            opts.setdefault("max_resource", cfg.training.epochs)
            return optuna.pruners.HyperbandPruner(**opts)
        return optuna.pruners.NopPruner()
    except (TypeError, ValueError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"study.pruner.options: invalid option for {name!r}: {err}") from None


def grid_points(cfg: SweepConfig) -> list[dict[str, Any]]:
    """Every point of a grid sweep once, in an order shuffled by the study seed (as Optuna's
    ``GridSampler`` shuffles): the first ``n_trials`` of them are the study's trials."""
    import itertools

    from sweeps.study import space

    grid = space.grid(cfg)
    names = sorted(grid)
    points = [dict(zip(names, values)) for values in itertools.product(*(grid[n] for n in names))]
    order = np.random.default_rng(cfg.seed).permutation(len(points))
    return [points[i] for i in order]

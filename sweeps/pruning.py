"""Pruning decisions for a population: the study's own pruner, without one storage read per member per epoch.

``trial.should_prune()`` reads the trial and the study's trials from the storage each time it is asked
(~5-10 ms on SQLite). A population of K trials asks K times per epoch. :class:`PopulationPruner` asks
the **same pruner object** (``study.pruner``: median, percentile, successive halving, hyperband, ...)
with a read-only view of the study whose trials come from **one snapshot** read at most once per
population epoch (:meth:`PopulationPruner.refresh`), kept up to date with what this process wrote
since: the members' reported values (:meth:`report`), the trials it told (:meth:`told`, from
``study.tell``'s returned trial) and the system attributes the pruner itself writes (successive
halving's rungs, written through to the storage and into the snapshot). So a decision is the one
``trial.should_prune()`` would make at the same moment, except for what *other* processes changed
since the snapshot (which a live read sees a few milliseconds earlier or later anyway).
``tests/sweeps/test_pruning.py`` checks decision by decision against ``trial.should_prune()``.
"""

from __future__ import annotations

import copy
from typing import Any, Container

import optuna
from optuna.trial import FrozenTrial, TrialState


class _SnapshotStorage:
    """The storage calls a pruner makes, served from a snapshot; writes go to the storage and the snapshot."""

    def __init__(self, storage: Any, study_id: int, directions: list[Any]) -> None:
        self._storage = storage
        self._study_id = study_id
        self._directions = directions
        self.trials: dict[int, FrozenTrial] = {}  # trial id -> trial
        self.reads = 0  # storage reads made for the snapshot (refreshes)

    def get_study_id_from_name(self, study_name: str) -> int:
        return self._study_id

    def get_study_directions(self, study_id: int) -> list[Any]:
        return list(self._directions)

    def get_all_trials(self, study_id: int, deepcopy: bool = True,
                       states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        out = sorted((t for t in self.trials.values() if states is None or t.state in states), key=lambda t: t.number)
        return copy.deepcopy(out) if deepcopy else out

    def get_trial(self, trial_id: int) -> FrozenTrial:
        return copy.deepcopy(self.trials[trial_id])

    def get_trial_system_attrs(self, trial_id: int) -> dict[str, Any]:
        return dict(self.trials[trial_id].system_attrs)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._storage.set_trial_system_attr(trial_id, key, value)
        # copy on write, as the storages do: trials a pruner read before this write keep what they held
        changed = copy.copy(self.trials[trial_id])
        changed.system_attrs = {**changed.system_attrs, key: value}
        self.trials[trial_id] = changed

    def __getattr__(self, name: str) -> Any:  # anything else a pruner might call: the storage itself
        return getattr(self._storage, name)


class PopulationPruner:
    """``should_prune(trial)`` for the running members of a population, served from one snapshot per epoch."""

    def __init__(self, study: optuna.Study) -> None:
        self.study = study
        storage = study._storage  # noqa: SLF001 - Optuna's own pruners write through study._storage too
        study_id = storage.get_study_id_from_name(study.study_name)
        self._view = _SnapshotStorage(storage, study_id, list(study.directions))
        self.view = optuna.Study(study.study_name, storage=self._view, sampler=study.sampler, pruner=study.pruner)
        self._members: dict[int, FrozenTrial] = {}  # trial id -> this process' copy of a running member
        self._epoch: int | None = None

    @property
    def reads(self) -> int:
        return self._view.reads

    def refresh(self, epoch: int) -> None:
        """Read the study once for ``epoch`` (later calls for the same epoch read nothing)."""
        if self._epoch == epoch:
            return
        self._epoch = epoch
        trials = {t._trial_id: t for t in self.study.get_trials(deepcopy=False)}  # noqa: SLF001
        self._view.reads += 1
        for tid, mine in self._members.items():  # this process' knowledge of its running members is the newest
            if tid in trials and trials[tid].state == TrialState.RUNNING:
                stored = trials[tid]
                mine.params, mine.distributions = stored.params, stored.distributions
                mine.user_attrs = stored.user_attrs
                mine.system_attrs = {**stored.system_attrs, **mine.system_attrs}
                trials[tid] = mine
        self._view.trials = trials

    def _member(self, trial: optuna.Trial) -> FrozenTrial:
        tid = trial._trial_id  # noqa: SLF001
        mine = self._members.get(tid)
        if mine is None:
            stored = self._view.trials.get(tid)
            if stored is None:
                stored = trial.study._storage.get_trial(tid)  # noqa: SLF001 - once per member, before its epoch 1
            mine = self._members[tid] = copy.deepcopy(stored)
            self._view.trials[tid] = mine
        return mine

    def report(self, trial: optuna.Trial, value: float, step: int) -> None:
        """Mirror ``trial.report(value, step)`` (made by the caller) in the snapshot."""
        mine = self._member(trial)
        values = dict(mine.intermediate_values)
        values[step] = float(value)
        mine.intermediate_values = values

    def should_prune(self, trial: optuna.Trial, epoch: int) -> bool:
        """The study pruner's decision for ``trial`` at ``epoch``, as ``trial.should_prune()`` would make it."""
        self.refresh(epoch)
        mine = self._member(trial)
        decision = self.study.pruner.prune(self.view, copy.copy(mine))
        tid = trial._trial_id  # noqa: SLF001
        self._members[tid] = self._view.trials[tid]  # with what the pruner wrote (successive halving's rungs)
        return decision

    def told(self, frozen: FrozenTrial) -> None:
        """A member's trial was told (``study.tell`` returned ``frozen``): the snapshot holds its end."""
        tid = frozen._trial_id  # noqa: SLF001
        mine = self._members.pop(tid, None)
        if mine is not None:
            frozen = copy.copy(frozen)
            frozen.system_attrs = {**frozen.system_attrs, **mine.system_attrs}
        self._view.trials[tid] = frozen

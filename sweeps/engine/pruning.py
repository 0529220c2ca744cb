"""Pruning decisions for a population: the study's own pruner, without one storage read per member per epoch.

``trial.should_prune()`` reads the trial and the study's trials from the storage each time it is asked
(~5-10 ms on SQLite). A population of K trials asks K times per epoch. :class:`PopulationPruner` asks
the **same pruner object** (``study.pruner``: median, percentile, successive halving, hyperband, ...)
with a read-only view of the study whose trials come from **one snapshot** read at most once per
population epoch and once per :data:`REFRESH_S` seconds (:meth:`PopulationPruner.refresh`), kept up to
date with what this process wrote since: the members' reported values (:meth:`report`), the trials it told (:meth:`told`, from
``study.tell``'s returned trial) and the system attributes the pruner itself writes (successive
halving's rungs, written through to the storage and into the snapshot). So a decision is the one
``trial.should_prune()`` would make at the same moment, except for what *other* processes changed
since the snapshot (at most ~1 s old; Optuna's pruners compare with finished trials, so a trial another
worker finished in that second is left out of one decision). The members' values reach the storage in
batches (:mod:`sweeps.engine.reports`), which the pruner does not wait for.
``tests/sweeps/engine/test_pruning.py`` checks decision by decision against ``trial.should_prune()``.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any, Callable, Container

import optuna
from optuna.trial import FrozenTrial, TrialState

from sweeps import compat

#: Seconds between two reads of the study by a population's pruner (at most one read per population epoch as
#: well). A read of a SQLite study of ~100 trials took ~30 ms, and a digits population's epoch ~50 ms.
REFRESH_S = 1.0


class _SnapshotStorage:
    """The storage calls a pruner makes, served from a snapshot; writes go to the storage and the snapshot.

    The snapshot is keyed by trial number (public on every trial); the pruner asks by trial id, which
    :meth:`number_of` translates (an id not seen yet is looked up once, with the public storage API).
    """

    def __init__(self, backing: Any, study_id: int, directions: list[Any]) -> None:
        self.backing = backing
        self.study_id = study_id
        self.directions = directions
        self.trials: dict[int, FrozenTrial] = {}  # trial number -> trial
        self.numbers: dict[int, int] = {}  # trial id -> trial number
        self.reads = 0  # storage reads made for the snapshot (refreshes)

    def number_of(self, trial_id: int) -> int:
        if trial_id not in self.numbers:
            self.numbers[trial_id] = self.backing.get_trial(trial_id).number
        return self.numbers[trial_id]

    def fetch(self, number: int) -> FrozenTrial:
        """Trial ``number`` read from the storage (public API), its id remembered."""
        tid = self.backing.get_trial_id_from_study_id_trial_number(self.study_id, number)
        self.numbers[tid] = number
        return self.backing.get_trial(tid)

    def get_study_id_from_name(self, study_name: str) -> int:
        return self.study_id

    def get_study_directions(self, study_id: int) -> list[Any]:
        return list(self.directions)

    def get_all_trials(self, study_id: int, deepcopy: bool = True,
                       states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        out = sorted((t for t in self.trials.values() if states is None or t.state in states), key=lambda t: t.number)
        return copy.deepcopy(out) if deepcopy else out

    def get_trial(self, trial_id: int) -> FrozenTrial:
        return copy.deepcopy(self.trials[self.number_of(trial_id)])

    def get_trial_system_attrs(self, trial_id: int) -> dict[str, Any]:
        return dict(self.trials[self.number_of(trial_id)].system_attrs)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self.backing.set_trial_system_attr(trial_id, key, value)
        # copy on write, as the storages do: trials a pruner read before this write keep what they held
        number = self.number_of(trial_id)
        changed = copy.copy(self.trials[number])
        changed.system_attrs = {**changed.system_attrs, key: value}
        self.trials[number] = changed

    def __getattr__(self, name: str) -> Any:  # anything else a pruner might call: the storage itself
        return getattr(self.backing, name)


class PopulationPruner:
    """``should_prune(trial)`` for the running members of a population, served from one snapshot per epoch.

    ``storage`` is the study's storage (the one the worker opened it with). The view is an ``optuna.Study`` over
    the snapshot (:func:`sweeps.compat.snapshot_study`); on an Optuna where that does not hold, the pruner asks
    the study itself, one study read per decision (as ``trial.should_prune()``), with the members' values mirrored.
    """

    def __init__(self, study: optuna.Study, storage: Any, refresh_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.study = study
        study_id = storage.get_study_id_from_name(study.study_name)
        self._view = _SnapshotStorage(storage, study_id, list(study.directions))
        self.view = compat.snapshot_study(study.study_name, self._view, study.sampler, study.pruner)
        self._ids: dict[int, int] = {}  # trial number -> trial id (without the view only)
        self._members: dict[int, FrozenTrial] = {}  # trial number -> this process' copy of a running member
        self._epoch: int | None = None
        self.refresh_s = REFRESH_S if refresh_s is None else refresh_s
        self.clock = clock
        self._read_at = -math.inf

    @property
    def reads(self) -> int:
        return self._view.reads

    @property
    def study_id(self) -> int:
        return self._view.study_id

    def refresh(self, epoch: int) -> None:
        """Read the study for ``epoch``: at most once per epoch and once per ``refresh_s`` seconds (what this
        process reports and tells is in the snapshot without a read; other processes' trials are that old)."""
        if self._epoch == epoch or self.clock() - self._read_at < self.refresh_s:
            return
        self._epoch = epoch
        self._read_at = self.clock()
        trials = {t.number: t for t in self.study.get_trials(deepcopy=False)}
        self._view.reads += 1
        for number, mine in self._members.items():  # this process' knowledge of its running members is the newest
            if number in trials and trials[number].state == TrialState.RUNNING:
                stored = trials[number]
                mine.params, mine.distributions = stored.params, stored.distributions
                mine.user_attrs = stored.user_attrs
                mine.system_attrs = {**stored.system_attrs, **mine.system_attrs}
                trials[number] = mine
        self._view.trials = trials

    def _member(self, trial: optuna.Trial) -> FrozenTrial:
        number = trial.number
        mine = self._members.get(number)
        if mine is None:
            stored = self._view.trials.get(number)
            if stored is None:  # once per member, before its epoch 1
                stored = self._view.fetch(number)
            mine = self._members[number] = copy.deepcopy(stored)
            self._view.trials[number] = mine
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
        if self.view is None:  # compat's fallback: the study itself, then the rungs the pruner wrote read back
            decision = self.study.pruner.prune(self.study, copy.copy(mine))
            number = trial.number
            if number not in self._ids:
                self._ids[number] = self._view.backing.get_trial_id_from_study_id_trial_number(self.study_id, number)
            mine.system_attrs = {**mine.system_attrs, **self._view.backing.get_trial_system_attrs(self._ids[number])}
            return decision
        decision = self.study.pruner.prune(self.view, copy.copy(mine))
        self._members[trial.number] = self._view.trials[trial.number]  # with what the pruner wrote (rungs)
        return decision

    def told(self, frozen: FrozenTrial) -> None:
        """A member's trial was told (``study.tell`` returned ``frozen``): the snapshot holds its end."""
        mine = self._members.pop(frozen.number, None)
        if mine is not None:
            frozen = copy.copy(frozen)
            frozen.system_attrs = {**frozen.system_attrs, **mine.system_attrs}
        self._view.trials[frozen.number] = frozen

"""Several claimed trials trained at once (``study.population``), each told as soon as it ends.

Members are grouped by structure (:func:`nncore.population.population_key` and their training rows); each
group trains with :func:`nncore.train_population` in the common batch order, every member through the same
phases as a single trial (:meth:`Objective.begin`, :meth:`Objective.setup`, :meth:`Objective.epoch_callback`,
:meth:`Objective.conclude`), so a member's metrics, reason and run are those it would have alone. The
pruner is asked through :class:`sweeps.engine.pruning.PopulationPruner` (at most one study read per
population epoch and per second); members report through :class:`sweeps.engine.reports.ReportBuffer`
(batched writes, flushed before every tell).

How a population ends early:

* a signal (``KeyboardInterrupt``): every member not yet told ends ``interrupted`` (runs KILLED);
* a member whose run cannot reach the tracking store (``tracking``): training stops, and every member not yet
  told ends ``tracking`` with the same reason (their runs stay queued; the worker retries each trial);
* a lost storage (:class:`~sweeps.study.storage.StorageUnavailable`) propagates: the untold trials are left to
  the repair passes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import optuna

import nncore
from nncore.population import population_key
from sweeps.engine.objective import Objective, TrialRun
from sweeps.engine.outcome import Interrupted, Kind, TrialEnd, end_of
from sweeps.engine.pruning import PopulationPruner
from sweeps.engine.reports import ReportBuffer
from sweeps.study.storage import StorageUnavailable

#: ``tell(trial, end) -> (the end as told, the told FrozenTrial or None)``: the worker's tell (an ``abandoned``
#: end when the trial was failed elsewhere meanwhile).
Tell = Callable[[optuna.Trial, TrialEnd], "tuple[TrialEnd, Any]"]


class _TrackingDown(Exception):
    """A member's run could not reach the tracking store: the population stops (its other runs cannot either)."""


class Population:
    """One worker's claimed ``trials`` run as populations; :meth:`run` returns each trial's end by number."""

    def __init__(self, objective: Objective, trials: list[optuna.Trial], tell: Tell, storage: Any) -> None:
        self.objective, self.trials, self.tell = objective, trials, tell
        self.pruner = PopulationPruner(trials[0].study, storage)
        self.reports = ReportBuffer(storage, self.pruner.study_id)
        self.members: dict[int, TrialRun] = {}
        self.ends: dict[int, TrialEnd] = {}

    def run(self) -> dict[int, TrialEnd]:
        obj = self.objective
        obj.in_trial = True
        try:
            try:
                self._begin_all()
                for group in self._groups():
                    self._train(group)
            except KeyboardInterrupt as exc:
                self._end_untold(functools.partial(self._interrupted, exc))
            except _TrackingDown as down:
                reason = str(down)
                self._end_untold(lambda trial: obj.record(trial, TrialEnd(Kind.TRACKING, reason)))
        finally:
            obj.in_trial = False
        return dict(self.ends)

    def _interrupted(self, exc: KeyboardInterrupt, trial: optuna.Trial) -> TrialEnd:
        """The end of a member not yet told when a signal stops the population (its run ends KILLED)."""
        if trial.number in self.members:
            return self._conclude(self.members[trial.number], exc)
        return self.objective.record(trial, TrialEnd(Kind.INTERRUPTED, "interrupted before the trial started"))

    def _begin_all(self) -> None:
        """Settings, params and MLflow run of every member, one after the other; members that end here are told."""
        obj = self.objective
        for trial in self.trials:
            if obj.interrupt_flag():
                raise Interrupted("interrupted before the trial started")
            member = obj.begin(trial)
            if isinstance(member, TrialEnd):
                self._settle(trial, obj.record(trial, member))
                if member.kind == Kind.INTERRUPTED:
                    raise Interrupted(member.reason)
                continue
            self.members[trial.number] = member
            try:
                obj.setup(member)
            except Exception as exc:  # noqa: BLE001 - the member's end, as in the single path
                self._settle(trial, self._conclude(member, exc))

    def _groups(self) -> list[list[TrialRun]]:
        groups: dict[tuple, list[TrialRun]] = {}
        for number, member in self.members.items():
            if number not in self.ends:
                key = (population_key(member.net, member.train_cfg), member.data.train.n)
                groups.setdefault(key, []).append(member)
        return list(groups.values())

    def _train(self, group: list[TrialRun]) -> None:
        """Train one group (one structure) as a population; each member is concluded and told as it ends."""
        obj, first = self.objective, group[0]
        callbacks = [[obj.epoch_callback(m, functools.partial(self.pruner.should_prune, m.trial),
                                         functools.partial(self._report, m.trial))] for m in group]
        if obj.interrupt_flag():
            raise Interrupted("signal received before training started")
        with obj.interruptible_while(computing=True):
            nncore.train_population([m.net for m in group], first.data.train.X, first.data.train.Y,
                                    [m.train_cfg for m in group], eval_data=first.eval_data,
                                    rng=obj.batch_rng(first.trial.number), callbacks=callbacks,
                                    on_end=functools.partial(self._on_end, group))

    def _report(self, trial: optuna.Trial, value: float, epoch: int) -> None:
        self.reports.add(trial, value, epoch)
        self.pruner.report(trial, value, epoch)

    def _on_end(self, group: list[TrialRun], i: int, result: Any) -> None:
        """Member ``i`` ended: its values the study refused (its trial finished elsewhere) end it as
        ``trial.report`` would have; then it is concluded and told. A lost tracking store stops the population."""
        member = group[i]
        with self.objective.interruptible_while(computing=False):
            self.reports.flush()
            refused = self.reports.error_of(member.trial.number)
            if refused is not None and not isinstance(result, KeyboardInterrupt):
                result = refused
            end = self._settle(member.trial, self._conclude(member, result))
        if end.kind == Kind.TRACKING:
            raise _TrackingDown(end.reason)

    def _conclude(self, member: TrialRun, result: Any) -> TrialEnd:
        """:meth:`Objective.conclude`; an unexpected error while concluding (not a lost storage) ends it failed."""
        try:
            return self.objective.conclude(member, result)
        except StorageUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. a permanent MLflow error at the run's end
            return self.objective.record(member.trial, end_of(exc, [], self.objective.cfg.objective.metric,
                                                              tracking_uri=self.objective.tracking_uri))

    def _settle(self, trial: optuna.Trial, end: TrialEnd) -> TrialEnd:
        """Tell ``end`` (every member's values are in the study first); the pruner's snapshot learns the tell."""
        self.reports.flush()
        told, frozen = self.tell(trial, end)
        self.ends[trial.number] = told
        if frozen is not None:
            self.pruner.told(frozen)
        return told

    def _end_untold(self, end_of_trial: Callable[[optuna.Trial], TrialEnd]) -> None:
        with self.objective.interruptible_while(computing=False):
            for trial in self.trials:
                if trial.number not in self.ends:
                    self._settle(trial, end_of_trial(trial))

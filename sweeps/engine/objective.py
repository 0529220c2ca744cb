"""The Optuna objective: one trial = one nncore training, every epoch logged and reported.

Trial outcomes (Optuna state / MLflow status / ``reason``):

* finished all epochs (or stopped early by nncore's early stopping): COMPLETE / FINISHED;
  the value is the objective metric of the last epoch;
* stopped by the pruner: PRUNED / KILLED, ``pruned at epoch k (<metric>=<value>)``;
* diverged (NaN/inf loss or weights): **PRUNED** / KILLED, ``diverged: ...``. Pruned rather
  than failed so that the samplers (TPE) learn that the region is bad; failed trials are
  ignored by them;
* any other exception: FAIL / FAILED, ``<ExceptionType>: message``; the sweep goes on;
* interrupted (SIGINT/SIGTERM): FAIL / KILLED, ``interrupted``;
* the tracking store did not take the run within the outage limit: FAIL, ``lost: tracking
  unavailable: ...`` (:class:`TrackingLost`; the worker's repair retries such trials);
* the trial was failed elsewhere while this process was not heard from (stopped past the heartbeat
  grace): its run ends KILLED, ``abandoned: ...``, and :class:`TrialAbandoned` tells the worker to
  drop the trial (the study already retried it).

A completed trial's ``reason`` says how it ended: ``completed: 15 epochs`` (or ``early_stopping``,
``schedule_floor`` after ``completed:``).

Epoch 0: when ``nncore.train`` records the initial network (``record.epoch == 0``, before any
step), that record goes to MLflow at step 0 (so ``sweeps history`` shows it) and to the trial's
plots, but **not to Optuna**: intermediate values stay 1-based (step k = after k epochs of
training), and nothing that counts epochs counts it (``epochs_run``, ``completed: N epochs``, the
pruners' warm-up steps, the final value).

Early stopping and the learning-rate schedule (``training.early_stopping``,
``training.schedule_patience``) watch the objective metric in the objective's direction
(``nncore.TrainConfig(monitor=objective.metric, monitor_mode="max" | "min")``), whatever its name.

``n_train`` (``data.n_train``, or a ``search_space`` entry): the trial trains on the first
``n_train`` rows of the training rows loaded (:func:`trial_data`): nested subsets, the same
evaluation set for every trial.

Each trial's initial weights derive from ``SeedSequence([seed, trial.number])``; its batch order
(``training.batch_order``) from ``SeedSequence([seed, 0xBA7C])`` (``common``: epoch e has the same
permutation in every trial) or from the trial's own sequence (``per_trial``). So the same config and
seed give the same metrics whatever worker runs the trial, alone or in a population
(:meth:`Objective.population`: several claimed trials trained with ``nncore.train_population``,
through the same phases as one trial).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import socket
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import optuna

import nncore
from nncore.datasets import Dataset
from nncore.population import population_key
from nncore.regularizers import convert_lambda, decay_rate
from sweeps import names
from sweeps.study import space
from sweeps.config import SweepConfig
from sweeps.engine.data import trial_data
from sweeps.stores import TrackingUnavailable
from sweeps.tracking.tracker import Tracker, package_versions

_log = logging.getLogger("sweeps.objective")

# Earlier spellings (the names live in sweeps.names).
STUDY_ATTR_FINGERPRINT, STUDY_ATTR_PARENT_RUN = names.STUDY_FINGERPRINT, names.STUDY_PARENT_RUN
TRIAL_ATTR_RUN, TRIAL_ATTR_REASON, TRIAL_ATTR_WORKER = names.TRIAL_RUN, names.TRIAL_REASON, names.TRIAL_WORKER


#: Mixed into the study seed for the ``common`` batch order: ``SeedSequence([seed, 0xBA7C])`` draws epoch e's
#: permutation for every trial (a trial's own streams come from ``SeedSequence([seed, trial number])``).
BATCH_ORDER_STREAM = 0xBA7C


class Interrupted(KeyboardInterrupt):
    """Raised inside a running trial when the worker receives SIGINT or SIGTERM."""


class TrialAbandoned(Exception):
    """The trial was failed elsewhere (stale heartbeat) while this process ran it: drop it, tell nothing."""


class TrackingLost(Exception):
    """The trial's MLflow run could not be created or delivered within the outage limit."""


def lmbda_equivalents_exact(n_train: int, batch_size: int) -> bool:
    """Whether the logged ``lmbda_as_*`` equivalents give the same decay on *every* step.

    The conversions match the per-step decay rate of full batches (``lmbda/n = alpha/m = wd``).
    With ``n_train % batch_size = m' != 0`` each epoch ends with a partial batch of ``m'`` rows,
    which ``per_batch`` decays by ``alpha/m'`` (not ``alpha/m``) while ``dataset`` and
    ``decoupled`` keep ``lmbda/n`` and ``wd``: the ``per_batch`` value is then equivalent to the
    other two on every step but the last of each epoch (``dataset`` <-> ``decoupled`` stays exact).
    """
    return n_train % batch_size == 0


def trial_params(cfg: SweepConfig, settings: dict[str, Any], data: Dataset, trial_number: int) -> dict[str, Any]:
    """Every setting of a trial, flat, as logged to MLflow (suggested and fixed alike).

    ``data`` is the trial's data set (:func:`trial_data`): ``n_train`` is its training rows.
    With a penalty: ``decay_rate`` (the per-step rate of a full batch) and ``lmbda_as_dataset``,
    ``lmbda_as_per_batch``, ``lmbda_as_decoupled`` (the same strength in each convention), with
    ``lmbda_equivalents_exact`` (:func:`lmbda_equivalents_exact`: False when ``n_train`` is not a
    multiple of ``batch_size``). The equivalents are left out when ``batch_size > n_train`` (the
    trial fails before training).
    """
    n = data.train.n
    m = int(settings["batch_size"])
    params = dict(settings)
    params["sizes"] = [data.n_features, *settings["hidden"], data.n_classes]
    params.update({
        "seed": cfg.seed, "trial_number": trial_number, "study": cfg.name,
        "data.source": cfg.data.source, "n_train": n, "n_eval": data.eval.n if data.eval else 0,
        "n_test": data.test.n if data.test else 0,
        "objective.metric": cfg.objective.metric, "objective.direction": cfg.objective.direction,
    })
    if settings["penalty"] != "none" and m <= n:
        lm = float(settings["lmbda"])
        conv = settings["convention"]
        params["decay_rate"] = decay_rate(lm, conv, n_train=n, batch_size=m)
        for other in ("dataset", "per_batch", "decoupled"):
            params[f"lmbda_as_{other}"] = convert_lambda(lm, from_convention=conv, to_convention=other,
                                                         n_train=n, batch_size=m)
        params["lmbda_equivalents_exact"] = lmbda_equivalents_exact(n, m)
    params.update(package_versions())
    return params


def monitor_mode(direction: str) -> str:
    """``nncore.TrainConfig.monitor_mode`` of an objective direction: ``maximize`` -> ``max``, else ``min``."""
    modes = {"maximize": "max", "minimize": "min"}
    if direction not in modes:
        raise ValueError(f"direction must be one of {sorted(modes)}, got {direction!r}")
    return modes[direction]


def final_value(history: list[dict[str, float]], metric: str) -> float:
    """The objective value of a finished training: ``metric`` at the last epoch (epoch 0 never counts).

    ``history`` holds epochs 1, 2, ...; ValueError when it is empty or its last epoch lacks ``metric``.
    """
    if not history:
        raise ValueError(f"no epoch was trained, so there is no value of {metric!r}")
    if metric not in history[-1]:
        raise ValueError(f"the last epoch's record has no value of {metric!r} (undefined for this run)")
    return history[-1][metric]


def _reason_of(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclasses.dataclass(eq=False)
class TrialRun:
    """One trial while it runs: its settings, data, params, MLflow run, network and what it logged."""

    trial: optuna.Trial
    settings: dict[str, Any]
    data: Dataset
    params: dict[str, Any]
    run_id: str | None
    net: Any = None
    train_cfg: Any = None
    history: list[dict[str, float]] = dataclasses.field(default_factory=list)  # epochs 1, 2, ...: Optuna's
    logged: list[dict[str, float]] = dataclasses.field(default_factory=list)  # every record: MLflow, plots
    steps: list[int] = dataclasses.field(default_factory=list)  # the epoch of each row of ``logged``

    @property
    def eval_data(self) -> tuple[Any, Any] | None:
        return (self.data.eval.X, self.data.eval.Y) if self.data.eval is not None else None


class Objective:
    """Callable objective bound to a config, a loaded data set and (optionally) a tracker."""

    def __init__(self, cfg: SweepConfig, data: Dataset, tracker: Tracker | None, parent_run_id: str | None, *,
                 artifacts: str = "best", interrupt_flag: Callable[[], bool] = lambda: False,
                 names_worker: bool = True) -> None:
        self.cfg = cfg
        self.data = data
        self.tracker = tracker
        self.parent_run_id = parent_run_id
        from sweeps.stores import TRIAL_ARTIFACTS

        if artifacts not in TRIAL_ARTIFACTS:
            raise ValueError(f"artifacts must be one of {list(TRIAL_ARTIFACTS)}, got {artifacts!r}")
        self.artifacts = artifacts
        self.interrupt_flag = interrupt_flag
        self.names_worker = names_worker  # False when the caller (sweeps.worker) has set ``worker`` already
        self.in_trial = False
        #: True only while nncore computes (no storage or MLflow call in progress): a signal handler
        #: may raise :class:`Interrupted` right away only then. Otherwise the flag is checked at the
        #: end of the epoch, after its I/O (an exception raised inside a SQLite commit left the
        #: database locked for the other workers and the run RUNNING/FAILED instead of KILLED).
        self.interruptible = False

    def __call__(self, trial: optuna.Trial) -> float:
        self.in_trial = True
        try:
            if self.interrupt_flag():
                trial.set_user_attr(TRIAL_ATTR_REASON, "interrupted before the trial started")
                raise Interrupted("interrupted before the trial started")
            return self._run(trial)
        finally:
            self.in_trial = False

    def _run(self, trial: optuna.Trial) -> float:
        """The single-trial path: the phases below around one ``nncore.train``."""
        member = self.begin(trial)
        try:
            self.setup(member)
            if self.interrupt_flag():
                raise Interrupted("signal received before training started")
            self.interruptible = True
            try:
                outcome: Any = nncore.train(member.net, member.data.train.X, member.data.train.Y, member.train_cfg,
                                            eval_data=member.eval_data, rng=self.batch_rng(trial.number),
                                            callbacks=[self.epoch_callback(member, lambda epoch: trial.should_prune())])
            finally:
                self.interruptible = False
        except (Exception, KeyboardInterrupt) as exc:
            outcome = exc
        return self.conclude(member, outcome)

    # -- the phases of one trial, shared by the single path and populations ---------------------

    def batch_rng(self, trial_number: int) -> np.random.Generator:
        """The Generator of the batch order: the study's (``common``) or the trial's (``per_trial``)."""
        if self.cfg.training.batch_order == "common":
            return np.random.default_rng(np.random.SeedSequence([self.cfg.seed, BATCH_ORDER_STREAM]))
        return np.random.default_rng(np.random.SeedSequence([self.cfg.seed, trial_number]).spawn(2)[1])

    def begin(self, trial: optuna.Trial) -> "TrialRun":
        """Suggest the trial's settings, build its params and start its MLflow run (raises as the trial's end)."""
        cfg = self.cfg
        if self.names_worker:
            trial.set_user_attr(TRIAL_ATTR_WORKER, f"{socket.gethostname()}:{os.getpid()}")
        try:
            settings = space.suggest(trial, cfg)
        except optuna.exceptions.UpdateFinishedTrialError as exc:
            raise TrialAbandoned(f"trial {trial.number} was ended elsewhere before it started: {exc}") from exc
        try:
            data = trial_data(self.data, int(settings["n_train"]))
            params = trial_params(cfg, settings, data, trial.number)
        except Exception as exc:
            trial.set_user_attr(TRIAL_ATTR_REASON, _reason_of(exc))
            raise
        run_id = None
        if self.tracker is not None:
            try:
                run_id = self.tracker.start_trial(self.parent_run_id or "", cfg.name, trial.number, params,
                                                  should_stop=self.interrupt_flag)
            except TrackingUnavailable as exc:
                reason = f"{names.REASON_LOST_TRACKING}: {exc}"
                trial.set_user_attr(TRIAL_ATTR_REASON, reason)
                raise TrackingLost(reason) from exc
            except Exception as exc:
                trial.set_user_attr(TRIAL_ATTR_REASON, f"MLflow: could not start the trial's run: {_reason_of(exc)}")
                raise
            except KeyboardInterrupt as exc:  # the run may exist: the launcher's repair closes it (by its tag)
                trial.set_user_attr(TRIAL_ATTR_REASON, f"interrupted ({exc}) before training started")
                raise
            try:
                trial.set_user_attr(TRIAL_ATTR_RUN, run_id)
            except optuna.exceptions.UpdateFinishedTrialError as exc:
                self._abandon(trial, run_id, [])
                raise TrialAbandoned(str(exc)) from exc
        return TrialRun(trial, settings, data, params, run_id)

    def setup(self, member: "TrialRun") -> None:
        """The trial's network (initial weights from ``(seed, trial number)``) and TrainConfig; raises to end it."""
        cfg, settings, data = self.cfg, member.settings, member.data
        if settings["batch_size"] > data.train.n:
            searched = " (searched)" if "n_train" in cfg.search_space else ""
            raise ValueError(f"batch_size must be <= n_train={data.train.n}{searched}, "
                             f"got {settings['batch_size']}")
        init_seq, _ = np.random.SeedSequence([cfg.seed, member.trial.number]).spawn(2)
        member.net = nncore.Network(member.params["sizes"], activation=settings["activation"], cost=settings["cost"],
                                    init=settings["init"], dtype=settings["dtype"],
                                    rng=np.random.default_rng(init_seq))
        member.train_cfg = nncore.TrainConfig(
            eta=float(settings["eta"]), epochs=int(settings["epochs"]), batch_size=int(settings["batch_size"]),
            lmbda=float(settings["lmbda"]), penalty=settings["penalty"], convention=settings["convention"],
            momentum=float(settings["momentum"]), shuffle=settings["shuffle"],
            early_stopping=settings["early_stopping"], schedule_patience=settings["schedule_patience"],
            monitor=cfg.objective.metric, monitor_mode=monitor_mode(cfg.objective.direction),
            track_gradients=settings["track_gradients"])

    def epoch_callback(self, member: "TrialRun", should_prune: Callable[[int], bool],
                       report: Callable[[float, int], None] | None = None) -> Callable[[nncore.EpochRecord], None]:
        """The trial's nncore callback: log every record (epoch 0 at step 0), report epochs >= 1, prune, stop on a
        signal. ``should_prune(epoch)`` is asked only where the pruner could answer "prune"; ``report(value, epoch)``
        reports (default ``trial.report``; a population's members report through its buffer)."""
        metric, trial = self.cfg.objective.metric, member.trial
        report = report or trial.report

        def on_epoch(record: nncore.EpochRecord) -> None:
            values = record.to_metrics()
            member.logged.append(values)
            member.steps.append(record.epoch)
            self.interruptible = False
            if member.run_id is not None:
                self.tracker.log_epoch(member.run_id, values, record.epoch)  # type: ignore[union-attr]
            if record.epoch > 0:  # epoch 0 (the initial network) goes to MLflow only
                member.history.append(values)
                if metric in values:  # an undefined value (None) is left out of to_metrics()
                    report(values[metric], record.epoch)
                if self._pruner_may_act(record.epoch) and should_prune(record.epoch):
                    raise optuna.TrialPruned(f"pruned at epoch {record.epoch} "
                                             f"({metric}={values.get(metric, float('nan')):.6g})")
            if self.interrupt_flag():
                raise Interrupted(f"signal received, stopped after epoch {record.epoch}")
            self.interruptible = True

        return on_epoch

    def conclude(self, member: "TrialRun", outcome: Any) -> float:
        """End the trial from its training's outcome (a ``TrainResult`` or the exception that ended it): its
        reason, artifacts and run end; return its value, or raise what the worker tells the study
        (``TrialPruned``, the exception, ``KeyboardInterrupt``, :class:`TrialAbandoned`, :class:`TrackingLost`)."""
        trial, run_id, history = member.trial, member.run_id, member.history
        net = member.net
        value: float | None = None
        status: str | None = None
        to_raise: BaseException | None = None
        try:
            if isinstance(outcome, BaseException):
                raise outcome
            value = final_value(history, self.cfg.objective.metric)
            trial.set_user_attr(names.TRIAL_STOP_REASON, outcome.stop_reason)
            trial.set_user_attr(names.TRIAL_EPOCHS_RUN, len(history))
            state, reason = "COMPLETE", f"completed: {len(history)} epochs ({outcome.stop_reason})"
        except optuna.exceptions.UpdateFinishedTrialError as exc:
            self._abandon(trial, run_id, history)
            raise TrialAbandoned(str(exc)) from exc
        except optuna.TrialPruned as exc:
            state, reason, to_raise = "PRUNED", str(exc), exc
        except nncore.DivergenceError as exc:
            if exc.record is not None and run_id is not None:
                self.tracker.log_epoch(run_id, exc.record.to_metrics(), exc.record.epoch)  # type: ignore[union-attr]
            state, reason, net = "PRUNED", f"diverged: {exc}", None
            to_raise = optuna.TrialPruned(reason)
            to_raise.__cause__ = exc
        except Exception as exc:
            state, reason, net, to_raise = "FAIL", _reason_of(exc), None, exc
        except KeyboardInterrupt as exc:
            state, net, to_raise, status = "FAIL", None, exc, "KILLED"
            reason = f"interrupted ({exc})" if str(exc) else "interrupted"
        try:
            trial.set_user_attr(TRIAL_ATTR_REASON, reason)
        except optuna.exceptions.UpdateFinishedTrialError as exc:
            self._abandon(trial, run_id, history)
            raise TrialAbandoned(str(exc)) from exc
        try:
            self._finish(trial, run_id, state, reason, net, member.logged, member.params, status=status,
                         epochs=member.steps)
        except TrackingUnavailable as exc:
            lost = f"{names.REASON_LOST_TRACKING}: the run's data could not be delivered ({exc})"
            trial.set_user_attr(TRIAL_ATTR_REASON, lost)
            raise TrackingLost(lost) from exc
        if to_raise is not None:
            raise to_raise
        assert value is not None
        return value

    # -- populations ------------------------------------------------------------------------------

    def population(self, trials: list[optuna.Trial], tell: Callable[[optuna.Trial, Any], Any], storage: Any) -> None:
        """Run claimed ``trials`` as populations, telling each trial's outcome as soon as it ends.

        ``storage``: the study's storage (the pruner's snapshot reads and writes through it).
        ``tell(trial, outcome)``: ``outcome`` is the trial's value or the exception the single path raises for
        it; it returns the told ``FrozenTrial`` (or None). Members are grouped by structure
        (:func:`nncore.population.population_key` and their training rows); each group trains with
        :func:`nncore.train_population` in the common batch order, every member through the same phases as a
        single trial (:meth:`begin`, :meth:`setup`, :meth:`epoch_callback`, :meth:`conclude`). The pruner is
        asked through :class:`sweeps.pruning.PopulationPruner` (at most one study read per population epoch and
        per second); members report through :class:`sweeps.reports.ReportBuffer` (batched writes).

        ``KeyboardInterrupt`` (a signal) ends every trial not yet told FAIL "interrupted ..." (runs KILLED),
        then propagates; so does an exception of ``tell`` (e.g. the storage lost), leaving the untold trials
        to the repair passes.
        """
        from sweeps.engine.pruning import PopulationPruner
        from sweeps.engine.reports import ReportBuffer

        self.in_trial = True
        pruner = PopulationPruner(trials[0].study, storage)
        reports = ReportBuffer(storage, pruner.study_id)
        members: dict[int, TrialRun] = {}
        told: set[int] = set()

        def settle(trial: optuna.Trial, run: Callable[[], float]) -> None:
            reports.flush()  # every member's values are in the study before any tell
            try:
                outcome: Any = run()
            except (Exception, KeyboardInterrupt) as exc:
                outcome = exc
            told.add(trial.number)
            frozen = tell(trial, outcome)
            if frozen is not None:
                pruner.told(frozen)

        def not_started(trial: optuna.Trial) -> float:
            trial.set_user_attr(TRIAL_ATTR_REASON, "interrupted before the trial started")
            raise Interrupted("interrupted before the trial started")

        try:
            for trial in trials:  # settings, params and MLflow run of every member, one after the other
                if self.interrupt_flag():
                    raise Interrupted("interrupted before the trial started")
                try:
                    member = self.begin(trial)
                except (Exception, KeyboardInterrupt) as exc:
                    told.add(trial.number)
                    frozen = tell(trial, exc)
                    if frozen is not None:
                        pruner.told(frozen)
                    if isinstance(exc, KeyboardInterrupt):
                        raise
                    continue
                members[trial.number] = member
                try:
                    self.setup(member)
                except Exception as exc:  # noqa: BLE001 - the member's end, as in the single path
                    settle(trial, functools.partial(self.conclude, member, exc))
            groups: dict[tuple, list[TrialRun]] = {}
            for number, member in members.items():
                if number not in told:
                    key = (population_key(member.net, member.train_cfg), member.data.train.n)
                    groups.setdefault(key, []).append(member)
            for group in groups.values():
                self._train_group(group, pruner, reports, settle)
        except KeyboardInterrupt as exc:
            self.interruptible = False
            for trial in trials:
                if trial.number not in told:
                    member = members.get(trial.number)
                    settle(trial, functools.partial(self.conclude, member, exc) if member is not None
                           else functools.partial(not_started, trial))
            raise
        finally:
            self.interruptible = False
            self.in_trial = False

    def _train_group(self, group: list["TrialRun"], pruner: Any, reports: Any, settle: Callable[..., None]) -> None:
        """Train one group (one structure) as a population; ``settle`` ends and tells each member as it ends.

        Members report into ``reports`` (a :class:`sweeps.reports.ReportBuffer`, written in batches) and ``pruner``'s
        snapshot; a member whose values the study refused (its trial finished elsewhere) ends with that error."""
        callbacks = [[self.epoch_callback(m, functools.partial(self._population_prune, pruner, m.trial),
                                          functools.partial(self._population_report, reports, pruner, m.trial))]
                     for m in group]

        def on_end(i: int, result: Any) -> None:
            self.interruptible = False
            reports.flush()
            refused = reports.error_of(group[i].trial.number)
            if refused is not None and not isinstance(result, KeyboardInterrupt):
                result = refused  # as trial.report would have raised it during the training
            try:
                settle(group[i].trial, functools.partial(self.conclude, group[i], result))
            finally:
                self.interruptible = True

        first = group[0]
        if self.interrupt_flag():
            raise Interrupted("signal received before training started")
        self.interruptible = True
        try:
            nncore.train_population([m.net for m in group], first.data.train.X, first.data.train.Y,
                                    [m.train_cfg for m in group], eval_data=first.eval_data,
                                    rng=self.batch_rng(first.trial.number), callbacks=callbacks, on_end=on_end)
        finally:
            self.interruptible = False

    @staticmethod
    def _population_prune(pruner: Any, trial: optuna.Trial, epoch: int) -> bool:
        return pruner.should_prune(trial, epoch)

    @staticmethod
    def _population_report(reports: Any, pruner: Any, trial: optuna.Trial, value: float, epoch: int) -> None:
        reports.add(trial, value, epoch)
        pruner.report(trial, value, epoch)

    def _abandon(self, trial: optuna.Trial, run_id: str | None, history: list[dict[str, float]]) -> None:
        """The trial was failed elsewhere (and retried): end its run KILLED with the reason, keep its epochs."""
        reason = (f"{names.REASON_ABANDONED}: trial {trial.number} was failed while this worker was not heard from "
                  f"(no heartbeat for longer than the grace period, e.g. a stopped process); the study retried it")
        if run_id is not None and self.tracker is not None:
            try:
                self.tracker.finish(run_id, "FAIL", reason, status="KILLED", should_stop=lambda: True)
            except TrackingUnavailable:
                pass  # stays queued: later tries or the launcher's repair close it

    def _pruner_may_act(self, epoch: int) -> bool:
        """False where the configured pruner is certain to answer "continue" (no storage read needed).

        ``trial.should_prune()`` reads the trial and, for median/percentile, every completed trial
        from the storage (~5-10 ms on SQLite) before the pruner looks at the step; this skips the
        call with no pruner and, for median/percentile, before ``n_warmup_steps`` (the pruners'
        own ``step < n_warmup_steps`` rule). The decisions are the same.
        """
        pruner = self.cfg.study.pruner
        if pruner.name == "none":
            return False
        if pruner.name in ("median", "percentile"):
            return epoch >= int(pruner.options.get("n_warmup_steps", 0))
        return True

    def _finish(self, trial: optuna.Trial, run_id: str | None, state: str, reason: str, net: Any,
                history: list[dict[str, float]], params: dict[str, Any], status: str | None = None,
                epochs: list[int] | None = None) -> None:
        """Log the trial's artifacts, then end its run with the state and reason (through an outage).

        ``history``: every logged record (epoch 0 included), ``epochs`` their epoch numbers.
        """
        if run_id is None or self.tracker is None:
            return
        from sweeps.analysis.diagnosis import diagnose_trial
        from sweeps.tracking import files as trial_files

        diagnosis = diagnose_trial(trial.number, history, epochs, params) if state != "FAIL" and history \
            else None
        if diagnosis is not None:
            from sweeps.analysis.diagnosis import finding_tags

            self.tracker.queue_tags(run_id, finding_tags(diagnosis[1]))  # delivered with the run's end
        try:
            if self.artifacts != "none" and history and state != "FAIL":
                # ``best``: the launcher draws the best trials' PNGs at the end (sweeps.trial_plots)
                plots = self.artifacts == "all" or (self.artifacts == "complete" and state == "COMPLETE")
                with tempfile.TemporaryDirectory() as tmp:  # the trial's files, sent in one call
                    if trial_files.write(Path(tmp), net, history, params, plots=plots, epochs=epochs,
                                         diagnosis=diagnosis[0] if diagnosis is not None else None):
                        self.tracker.log_artifacts(run_id, tmp)
        except Exception as exc:  # noqa: BLE001 - an artifact store failure does not undo the training
            from sweeps.tracking.tracker import is_transient

            if not is_transient(exc):
                raise
        finally:
            from sweeps.names import run_status

            self.tracker.finish(run_id, state, reason, status=status or run_status(state, reason),
                                should_stop=self.interrupt_flag)

"""The Optuna objective: one trial = one nncore training, every epoch logged and reported.

How a trial can end (Optuna state, MLflow run status, ``reason``) is :mod:`sweeps.engine.outcome`.

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
(:mod:`sweeps.engine.population`: several claimed trials trained with ``nncore.train_population``,
through the same phases as one trial).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import numpy as np
import optuna

import nncore
from nncore.datasets import Dataset
from nncore.regularizers import convert_lambda, decay_rate
from sweeps import names
from sweeps.config import SweepConfig
from sweeps.engine.data import trial_data
from sweeps.engine.outcome import (Interrupted, Kind, TrialEnd, abandoned, end_of, reason_of, refused,
                                   tracking_lost)
from sweeps.stores import DEFAULT_TRIAL_ARTIFACTS, TRIAL_ARTIFACTS, TrackingUnavailable, refused_credentials
from sweeps.study import space
from sweeps.study.storage import StorageUnavailable
from sweeps.tracking.tracker import Tracker, is_transient, package_versions

_log = logging.getLogger("sweeps.objective")

#: Mixed into the study seed for the ``common`` batch order: ``SeedSequence([seed, 0xBA7C])`` draws epoch e's
#: permutation for every trial (a trial's own streams come from ``SeedSequence([seed, trial number])``).
BATCH_ORDER_STREAM = 0xBA7C


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
    """One trial at a time (:meth:`run`), bound to a config, a loaded data set and (optionally) a tracker.

    Also an Optuna objective (``study.optimize(objective)``: :meth:`__call__`); populations of trials go
    through the same phases (:mod:`sweeps.engine.population`).
    """

    def __init__(self, cfg: SweepConfig, data: Dataset, tracker: Tracker | None, parent_run_id: str | None, *,
                 artifacts: str = DEFAULT_TRIAL_ARTIFACTS, interrupt_flag: Callable[[], bool] = lambda: False,
                 names_worker: bool = True) -> None:
        self.cfg = cfg
        self.data = data
        self.tracker = tracker
        #: Named in a ``refused`` trial's reason (the tracker's URI; "" without tracking).
        self.tracking_uri: str = getattr(tracker, "tracking_uri", "")
        self.parent_run_id = parent_run_id
        if artifacts not in TRIAL_ARTIFACTS:
            raise ValueError(f"artifacts must be one of {list(TRIAL_ARTIFACTS)}, got {artifacts!r}")
        self.artifacts = artifacts
        self.interrupt_flag = interrupt_flag
        self.names_worker = names_worker  # False when the caller (the worker) has set ``worker`` already
        self.in_trial = False
        #: True only while nncore computes (no storage or MLflow call in progress): a signal handler
        #: may raise :class:`Interrupted` right away only then. Otherwise the flag is checked at the
        #: end of the epoch, after its I/O (an exception raised inside a SQLite commit left the
        #: database locked for the other workers and the run RUNNING/FAILED instead of KILLED).
        #: Set only through :meth:`interruptible_while`.
        self.interruptible = False

    @contextlib.contextmanager
    def interruptible_while(self, computing: bool) -> Iterator[None]:
        """Inside the block a signal may interrupt at once (``computing``: nncore runs) or only after the epoch's
        I/O (``computing=False``: a storage or MLflow call); the previous setting is restored after it."""
        before, self.interruptible = self.interruptible, computing
        try:
            yield
        finally:
            self.interruptible = before

    def __call__(self, trial: optuna.Trial) -> float:
        """As an Optuna objective: the trial's value, or the exception that tells its state (:meth:`run`)."""
        return self.run(trial).for_optuna()

    def run(self, trial: optuna.Trial) -> TrialEnd:
        """Run one claimed trial to its end: begin (settings, params, MLflow run), train, conclude.

        Never raises for the trial's own end (a failure, a signal, a lost tracking store: all in the
        :class:`TrialEnd`); :class:`~sweeps.study.storage.StorageUnavailable` ends the worker, not the trial,
        and propagates.
        """
        self.in_trial = True
        try:
            if self.interrupt_flag():
                return self.record(trial, TrialEnd(Kind.INTERRUPTED, "interrupted before the trial started"))
            member = self.begin(trial)
            if isinstance(member, TrialEnd):
                return self.record(trial, member)
            return self.conclude(member, self.train(member))
        finally:
            self.in_trial = False

    # -- the phases of one trial, shared by the single path and populations ---------------------

    def batch_rng(self, trial_number: int) -> np.random.Generator:
        """The Generator of the batch order: the study's (``common``) or the trial's (``per_trial``)."""
        if self.cfg.training.batch_order == "common":
            return np.random.default_rng(np.random.SeedSequence([self.cfg.seed, BATCH_ORDER_STREAM]))
        return np.random.default_rng(np.random.SeedSequence([self.cfg.seed, trial_number]).spawn(2)[1])

    def begin(self, trial: optuna.Trial) -> "TrialRun | TrialEnd":
        """Suggest the trial's settings, build its params and start its MLflow run; or the trial's end if one of
        these fails (its reason not yet recorded: :meth:`record`)."""
        cfg = self.cfg
        if self.names_worker:
            trial.set_user_attr(names.TRIAL_WORKER, names.worker_name())
        try:
            settings = space.suggest(trial, cfg)
        except optuna.exceptions.UpdateFinishedTrialError:
            return abandoned(trial.number)
        try:
            data = trial_data(self.data, int(settings["n_train"]))
            params = trial_params(cfg, settings, data, trial.number)
        except Exception as exc:  # noqa: BLE001 - the trial's end
            return end_of(exc, [], cfg.objective.metric, number=trial.number)
        run_id = None
        if self.tracker is not None:
            try:
                run_id = self.tracker.start_trial(self.parent_run_id or "", cfg.name, trial.number, params,
                                                  should_stop=self.interrupt_flag)
            except TrackingUnavailable as exc:
                return tracking_lost(str(exc), exc)
            except Exception as exc:  # noqa: BLE001 - the trial's end
                if refused_credentials(exc):
                    return refused(self.tracking_uri, exc)
                return TrialEnd(Kind.FAILED, f"MLflow: could not start the trial's run: {reason_of(exc)}", error=exc)
            except KeyboardInterrupt as exc:  # the run may exist: the launcher's repair closes it (by its tag)
                return TrialEnd(Kind.INTERRUPTED, f"{names.REASON_INTERRUPTED} ({exc}) before training started",
                                error=exc)
            try:
                trial.set_user_attr(names.TRIAL_RUN, run_id)
            except optuna.exceptions.UpdateFinishedTrialError:
                end = abandoned(trial.number)
                self.end_run(run_id, end)
                return end
        return TrialRun(trial, settings, data, params, run_id)

    def train(self, member: "TrialRun") -> Any:
        """The single-trial training: :meth:`setup`, then ``nncore.train`` with :meth:`epoch_callback`; return its
        ``TrainResult`` or the exception that ended it (a lost storage propagates)."""
        try:
            self.setup(member)
            if self.interrupt_flag():
                raise Interrupted("signal received before training started")
            with self.interruptible_while(computing=True):
                return nncore.train(member.net, member.data.train.X, member.data.train.Y, member.train_cfg,
                                    eval_data=member.eval_data, rng=self.batch_rng(member.trial.number),
                                    callbacks=[self.epoch_callback(member, lambda epoch: member.trial.should_prune())])
        except StorageUnavailable:
            raise
        except (Exception, KeyboardInterrupt) as exc:
            return exc

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
            with self.interruptible_while(computing=False):
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

        return on_epoch

    def conclude(self, member: "TrialRun", result: Any) -> TrialEnd:
        """End a trial from what its training produced (a ``TrainResult`` or the exception that ended it): its end
        (:func:`~sweeps.engine.outcome.end_of`), recorded on the trial with its artifacts and its run's end.

        A lost storage propagates (it ends the worker). The end becomes ``abandoned`` when the trial was failed
        elsewhere meanwhile, and ``tracking`` when its run could not be delivered within the outage limit."""
        if isinstance(result, StorageUnavailable):
            raise result
        trial = member.trial
        end = end_of(result, member.history, self.cfg.objective.metric, number=trial.number,
                     tracking_uri=self.tracking_uri)
        if end.kind == Kind.ABANDONED:
            self.end_run(member.run_id, end)
            return end
        if isinstance(result, nncore.DivergenceError) and result.record is not None and member.run_id is not None:
            self.tracker.log_epoch(member.run_id, result.record.to_metrics(), result.record.epoch)  # type: ignore[union-attr]
        try:
            if end.kind == Kind.COMPLETE:
                trial.set_user_attr(names.TRIAL_STOP_REASON, result.stop_reason)
                trial.set_user_attr(names.TRIAL_EPOCHS_RUN, len(member.history))
            trial.set_user_attr(names.TRIAL_REASON, end.reason)
        except optuna.exceptions.UpdateFinishedTrialError:
            end = abandoned(trial.number)
            self.end_run(member.run_id, end)
            return end
        if end.kind == Kind.REFUSED:  # the server takes nothing from this worker now: its run stays queued
            return end
        try:
            self._finish(member, end)
        except TrackingUnavailable as exc:
            end = tracking_lost(f"the run's data could not be delivered ({exc})", exc)
            return self.record(trial, end)
        return end

    def record(self, trial: optuna.Trial, end: TrialEnd) -> TrialEnd:
        """Record ``end``'s reason on the trial (nothing for ``abandoned``); ``abandoned`` if it ended elsewhere."""
        if end.kind == Kind.ABANDONED:
            return end
        try:
            trial.set_user_attr(names.TRIAL_REASON, end.reason)
        except optuna.exceptions.UpdateFinishedTrialError:
            return abandoned(trial.number)
        return end

    def end_run(self, run_id: str | None, end: TrialEnd) -> None:
        """End a trial's MLflow run with ``end``'s state, reason and status; ``abandoned`` runs get one try (a
        store that does not answer keeps them queued: later tries or the launcher's repair close them)."""
        if run_id is None or self.tracker is None:
            return
        state = end.state or names.STATE_FAIL
        if end.kind == Kind.ABANDONED:
            try:
                self.tracker.finish(run_id, state, end.reason, status=end.run_status, should_stop=lambda: True)
            except TrackingUnavailable:
                pass
            return
        self.tracker.finish(run_id, state, end.reason, status=end.run_status, should_stop=self.interrupt_flag)

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

    def _finish(self, member: "TrialRun", end: TrialEnd) -> None:
        """Log the trial's artifacts, then end its run (:meth:`end_run`, through an outage).

        Artifacts and the diagnosis for trials told COMPLETE or PRUNED with a history: the network files when the
        training was kept (:attr:`TrialEnd.keeps_network`), PNGs as ``trial_artifacts`` says.
        """
        if member.run_id is None or self.tracker is None:
            return
        from sweeps.analysis.diagnosis import diagnose_trial, finding_tags
        from sweeps.tracking import files as trial_files

        told_fail = end.state == names.STATE_FAIL
        history, epochs, run_id = member.logged, member.steps, member.run_id
        diagnosis = diagnose_trial(member.trial.number, history, epochs, member.params) \
            if not told_fail and history else None
        if diagnosis is not None:
            self.tracker.queue_tags(run_id, finding_tags(diagnosis[1]))  # delivered with the run's end
        try:
            if self.artifacts != "none" and history and not told_fail:
                # ``best``: the launcher draws the best trials' PNGs at the end (sweeps.report.trial_plots)
                plots = self.artifacts == "all" or (self.artifacts == "complete" and end.kind == Kind.COMPLETE)
                net = member.net if end.keeps_network else None
                with tempfile.TemporaryDirectory() as tmp:  # the trial's files, sent in one call
                    if trial_files.write(Path(tmp), net, history, member.params, plots=plots, epochs=epochs,
                                         diagnosis=diagnosis[0] if diagnosis is not None else None):
                        self.tracker.log_artifacts(run_id, tmp)
        except Exception as exc:  # noqa: BLE001 - an artifact store failure does not undo the training
            if not is_transient(exc):
                raise
        finally:
            self.end_run(run_id, end)

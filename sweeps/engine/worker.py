"""One worker process: take enqueued trials one at a time, train them, tell the study.

The loop (ask/tell with Optuna's public API, not ``study.optimize``, so that every storage call
can be retried and no trial is created beyond the budget):

1. repair what others lost (:func:`sweeps.study.lost.fail_lost`: heartbeat-stale trials and orphans),
   at most once per heartbeat interval;
2. try again to deliver MLflow data left queued by an outage (:meth:`Tracker.retry_pending`);
3. take a WAITING trial (:func:`sweeps.study.claims.claim_trial`); none left: the worker is done;
4. name this worker on it (``worker``) and give it the reason it keeps if this worker is lost
   (``lost: ...``), both before its first heartbeat; start its heartbeat thread
   (:class:`Heartbeat`), run the objective, and tell the study how the trial ended (a
   :class:`~sweeps.engine.outcome.TrialEnd`; its kind decides what the worker does next).

A trial stopped by SIGTERM or SIGINT ends "interrupted" (its run KILLED), its point is put back as a
WAITING copy, and the worker exits 130. A trial that was failed elsewhere while this worker was stopped is dropped (logged, its MLflow
run KILLED with the reason "abandoned: ..."), and the worker goes on with the next trial. A trial
whose run could not reach the tracking store within the outage limit is failed "lost: tracking
unavailable" and retried; a worker whose tracking store stays down that long stops taking trials
and exits with :data:`EXIT_TRACKING_UNAVAILABLE`. Storage errors are retried by the storage
(:mod:`sweeps.study.storage`); one that outlasts the retries ends the worker with
:data:`EXIT_STORAGE_UNAVAILABLE` (its trial is failed and retried by the heartbeat or the launcher).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import warnings
from typing import Any

import optuna
from optuna.trial import TrialState

from sweeps import names
from sweeps.config import parse_config
from sweeps.engine.data import load_data
from sweeps.engine.objective import Objective
from sweeps.engine.outcome import Interrupted, Kind, TrialEnd, abandoned, end_of
from sweeps.engine.population import Population
from sweeps.redaction import guard_output
from sweeps.stores import (DEFAULT_TRIAL_ARTIFACTS, Locations, TrackingUnavailable, bound_mlflow_http_retries,
                           refused_credentials, refused_message)
from sweeps.study import lost as repair
from sweeps.study.budget import load, open_study_storage
from sweeps.study.claims import claim_trial, claim_trials, trial_id
from sweeps.study.storage import StorageUnavailable
from sweeps.tracking.tracker import Tracker

_log = logging.getLogger("sweeps.worker")

#: Worker exit codes the launcher reports (0: done; 130: interrupted).
EXIT_STORAGE_UNAVAILABLE = 75
EXIT_TRACKING_UNAVAILABLE = 76
#: The tracking server refused the worker's credentials (HTTP 401/403).
EXIT_TRACKING_REFUSED = 77


def population_size(cfg: Any) -> int:
    """Trials a worker takes and trains at once: ``study.population`` (1 with ``batch_order: per_trial``)."""
    return cfg.study.population if cfg.training.batch_order == "common" else 1


def claim_share(population: int, waiting: int, workers: int) -> int:
    """How many trials a population worker claims now: its population, but no more than its share of
    the ``waiting`` trials among the sweep's ``workers`` (rounded up), so that near the end (or in a
    sweep smaller than workers x population) one worker does not take what the others could run."""
    return max(1, min(population, -(-waiting // max(1, workers))))


def startup_cap(cfg: Any, completed: int, waiting: int) -> int | None:
    """At most how many trials a population worker claims while the pruner cannot prune yet, or None.

    Optuna's median and percentile pruners prune nothing until ``n_startup_trials`` trials are COMPLETE
    (default 5). Members that start together before any trial has finished all run to the end, so a
    first population of K per worker would train K x workers trials in full that the pruner could have
    stopped (a 96-trial digits sweep pruned 28-44 trials at population 16 against 63 at population 1).
    Until ``completed`` reaches ``n_startup_trials``, a worker takes at most its share of them,
    ``ceil(n_startup_trials / workers)``; the pruner's decisions are its own, only the trials' start order
    changes (as with population 1). Not when the ``waiting`` trials all fit in one round of populations
    (``population x workers``): then running them together beat running the startup trials first
    (measured: the 16-trial MNIST recipe, 2 workers, took 19.2 s with the cap and 17.8 s without; the
    96-trial digits sweep with one batch size 10.4 s with it and 11.7 s without). Other pruners
    (successive halving and hyperband compare running trials' rungs) and ``none``: no cap.
    """
    pruner = cfg.study.pruner
    if pruner.name not in ("median", "percentile") or waiting <= population_size(cfg) * cfg.study.workers:
        return None
    startup = int(pruner.options.get("n_startup_trials", 5))
    if completed >= startup:
        return None
    return max(1, -(-startup // max(1, cfg.study.workers)))


def flush_interval(seconds: float, cfg: Any) -> float:
    """How often a run's queued epochs are sent: ``flush_interval_s`` times the population size.

    A population of K trains its K trials side by side, each K times longer in wall time than
    alone; flushing each run every ``flush_interval_s`` would cost up to K times the MLflow calls per
    trial (~7 ms each on the SQL store). Scaled by K, a trial costs about the calls it costs alone.
    """
    return seconds * population_size(cfg)


class Heartbeat:
    """Records the heartbeats of one trial (or several: a population) now and then every ``interval`` s from one
    thread, until the block ends.

    Optuna runs such a thread only inside ``study.optimize``; this one also survives a storage error
    (logged; the next beat tries again) instead of dying silently and letting the trial go stale.
    ``trial_id``: one id or a list of ids; :meth:`discard` stops beating one (its trial was told).
    """

    def __init__(self, storage: Any, trial_id: Any, interval: float) -> None:
        ids = [trial_id] if isinstance(trial_id, int) else list(trial_id)
        self.storage, self.trial_id, self.interval = storage, ids[0] if ids else None, interval
        self.trial_ids = ids
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.beats = 0

    def discard(self, trial_id: int) -> None:
        """Beat no more for ``trial_id`` (told, or dropped)."""
        with self._lock:
            if trial_id in self.trial_ids:
                self.trial_ids.remove(trial_id)

    def _beat(self) -> None:
        with self._lock:
            ids = list(self.trial_ids)
        for tid in ids:
            try:
                self.storage.record_heartbeat(tid)
                self.beats += 1
            except Exception as err:  # noqa: BLE001 - the storage retried already; the next beat tries again
                _log.warning("heartbeat of trial id %d not recorded: %s", tid, err)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._beat()

    def __enter__(self) -> "Heartbeat":
        if getattr(self.storage, "get_heartbeat_interval", lambda: None)() is None:
            return self  # journal storages: no heartbeat
        self._beat()
        name = f"heartbeat-{self.trial_id}" + (f"+{len(self.trial_ids) - 1}" if len(self.trial_ids) > 1 else "")
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def run_worker(cfg_data: dict, loc: Locations, study_name: str, worker_index: int = 0, timeout: float | None = None,
               tracking: bool = True, artifacts: str = DEFAULT_TRIAL_ARTIFACTS, ready: Any = None, cancelled: Any = None) -> int:
    """Run trials of ``study_name`` until none is left to take; return an exit code (0, 75, 76, 130).

    ``ready``/``cancelled`` (events): the launcher prepares the MLflow store and the parent run while
    its workers start; a worker waits for ``ready`` before its first MLflow call (concurrent first
    use of a fresh SQLite store breaks MLflow's migrations) and exits if ``cancelled`` is set.

    What the worker prints or logs (and what the libraries print in it) goes out with every secret masked
    (:func:`sweeps.redaction.guard_output`).
    """
    with guard_output([loc.storage, loc.tracking_uri]):
        return _run_worker(cfg_data, loc, study_name, worker_index, timeout, tracking, artifacts, ready, cancelled)


def _run_worker(cfg_data: dict, loc: Locations, study_name: str, worker_index: int, timeout: float | None,
                tracking: bool, artifacts: str, ready: Any, cancelled: Any) -> int:
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # a worker process of our own: its settings are ours
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    logging.basicConfig(level=logging.WARNING, format=f"worker {worker_index} (pid {os.getpid()}): %(message)s")
    bound_mlflow_http_retries(loc.request_timeout_s, worker=True)
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    cfg = parse_config(cfg_data, source="worker")
    try:
        storage = open_study_storage(cfg, loc.storage, role=f"worker {worker_index}", schema_checked=True)
        study = load(cfg, storage, study_name)
    except StorageUnavailable as err:
        _log.error("%s", err)
        return EXIT_STORAGE_UNAVAILABLE
    data = load_data(cfg.data, cfg.seed)
    if tracking and not loc.tracking_uri.startswith(("http://", "https://")):
        from sweeps.compat import preimport_mlflow_sql_store  # MLflow's SQL store: ~0.6 s, while the launcher prepares
        preimport_mlflow_sql_store()
    if ready is not None:
        ready.wait()
        if cancelled is not None and cancelled.is_set():
            return 0
    parent_run_id = study.user_attrs.get(names.STUDY_PARENT_RUN) if tracking else None
    try:  # waits out a tracking server that is down for up to tracking_outage_s
        tracker = Tracker(loc.tracking_uri, loc.experiment_name(study_name), loc.artifact_location,
                          flush_interval=flush_interval(loc.flush_interval_s, cfg), outage_s=loc.tracking_outage_s) if tracking else None
    except TrackingUnavailable as err:
        _log.error("%s", err)
        return EXIT_TRACKING_UNAVAILABLE
    except Exception as err:
        if not refused_credentials(err):
            raise
        _log.error("%s", refused_message(loc.tracking_uri, err))
        return EXIT_TRACKING_REFUSED
    stop = threading.Event()
    objective = Objective(cfg, data, tracker, parent_run_id, artifacts=artifacts, interrupt_flag=stop.is_set,
                          names_worker=False)

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()
        if objective.in_trial and objective.interruptible:  # else: the objective stops after the epoch's I/O
            raise Interrupted(f"signal {signal.Signals(signum).name}")

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        threadpool_limits = None
    limiter = threadpool_limits(1) if threadpool_limits is not None else None
    loop = _Loop(cfg, study, storage, objective, tracker, stop)
    try:
        return loop.run(timeout)
    finally:
        if limiter is not None:
            limiter.unregister()


class _Loop:
    def __init__(self, cfg: Any, study: optuna.Study, storage: Any, objective: Objective, tracker: Tracker | None,
                 stop: threading.Event) -> None:
        self.cfg, self.study, self.storage, self.objective, self.tracker, self.stop = \
            cfg, study, storage, objective, tracker, stop
        #: trials taken and trained at once (``study.population``; 1 with ``training.batch_order: per_trial``)
        self.population = population_size(cfg)
        self.last_told: Any = None  # the FrozenTrial of the last tell

    def run(self, timeout: float | None) -> int:
        start = time.monotonic()
        grace, retries = self.cfg.study.heartbeat_grace, self.cfg.study.max_retries
        next_repair = start  # at most once per heartbeat interval: lost trials are found within the grace anyway
        try:
            study_id = self.storage.get_study_id_from_name(self.study.study_name)
            startup_done = False  # the pruner has its startup trials (see startup_cap)
            while not self.stop.is_set():
                now = time.monotonic()
                if timeout is not None and now - start >= timeout:
                    break
                if now >= next_repair:
                    repair.fail_lost(self.study, self.storage, grace, retries)
                    next_repair = now + self.cfg.study.heartbeat_interval
                if self.tracker is not None:
                    self.tracker.retry_pending()
                if self.population > 1:
                    waiting = self.storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.WAITING,))
                    share = claim_share(self.population, len(waiting), self.cfg.study.workers)
                    if not startup_done:
                        completed = len(self.storage.get_all_trials(study_id, deepcopy=False,
                                                                    states=(TrialState.COMPLETE,)))
                        cap = startup_cap(self.cfg, completed, len(waiting))
                        startup_done = cap is None
                        share = min(share, cap or share)
                    trials = claim_trials(self.study, self.storage, share, study_id, waiting)
                    if not trials:
                        break
                    ends = self.run_population(trials)
                else:
                    trial = claim_trial(self.study, self.storage, study_id)
                    if trial is None:
                        break
                    ends = {trial.number: self.run_trial(trial)}
                kinds = {end.kind for end in ends.values()}
                if Kind.INTERRUPTED in kinds:
                    return self._finish(130)
                if Kind.REFUSED in kinds:
                    return self._finish(EXIT_TRACKING_REFUSED)
                if Kind.TRACKING in kinds:
                    return self._finish(EXIT_TRACKING_UNAVAILABLE)
        except StorageUnavailable as err:
            _log.error("%s", err)
            return self._finish(EXIT_STORAGE_UNAVAILABLE)
        except KeyboardInterrupt:
            return self._finish(130)
        return self._finish(130 if self.stop.is_set() else 0)

    def _finish(self, code: int) -> int:
        if self.tracker is not None:
            left = self.tracker.drain(0 if code else min(self.tracker.outage_s, 60.0))
            if left:
                _log.error("%d MLflow run(s) could not be delivered (tracking store down); the launcher's repair "
                           "closes them when it is back", len(left))
        return code

    def _name_self(self, tid: int) -> bool:
        """Name this worker on a claimed trial and give it its lost reason, before its first heartbeat
        (a RUNNING trial without ``worker`` never had one: :mod:`sweeps.study.lost`). False: it ended elsewhere."""
        try:
            self.storage.set_trial_user_attr(tid, names.TRIAL_WORKER, names.worker_name())
            self.storage.set_trial_user_attr(tid, names.TRIAL_REASON, names.REASON_LOST_HEARTBEAT)
        except optuna.exceptions.UpdateFinishedTrialError:
            return False
        return True

    def run_trial(self, trial: optuna.Trial) -> TrialEnd:
        """Run one claimed trial and tell its end (an ``interrupted`` or ``tracking`` end is retried with its
        parameters: :attr:`~sweeps.engine.outcome.TrialEnd.retried`)."""
        tid = trial_id(self.storage, self.study, trial.number)
        if not self._name_self(tid):
            return abandoned(trial.number)
        with Heartbeat(self.storage, tid, self.cfg.study.heartbeat_interval):
            try:
                end = self.objective.run(trial)
            except StorageUnavailable:
                raise
            except Exception as err:  # noqa: BLE001 - e.g. a permanent MLflow error at the run's end: the trial's
                end = self.objective.record(trial, end_of(err, [], self.cfg.objective.metric,  # end, not the worker's
                                                          tracking_uri=self.objective.tracking_uri))
            end = self._tell(trial, end)
        if end.retried:
            repair.retry_trial(self.study, self.storage.get_trial(tid), self.cfg.study.max_retries)
        return end

    def run_population(self, trials: list[optuna.Trial]) -> dict[int, TrialEnd]:
        """Run claimed trials as populations (:class:`~sweeps.engine.population.Population`), one heartbeat thread
        for all of them; tell each as soon as it ends; retry those stopped by a signal or cut off from tracking."""
        held: dict[int, int] = {}  # trial number -> trial id
        kept = []
        for trial in trials:  # worker and lost reason on every trial before the first heartbeat
            tid = trial_id(self.storage, self.study, trial.number)
            if self._name_self(tid):
                held[trial.number] = tid
                kept.append(trial)
        if not kept:
            return {trial.number: abandoned(trial.number) for trial in trials}
        with Heartbeat(self.storage, list(held.values()), self.cfg.study.heartbeat_interval) as beat:
            def tell(trial: optuna.Trial, end: TrialEnd) -> tuple[TrialEnd, Any]:
                told = self._tell(trial, end)
                beat.discard(held[trial.number])
                return told, self.last_told

            ends = Population(self.objective, kept, tell, self.storage).run()
        for number, end in ends.items():
            if end.retried:
                repair.retry_trial(self.study, self.storage.get_trial(held[number]), self.cfg.study.max_retries)
        return ends

    def _tell(self, trial: optuna.Trial, end: TrialEnd) -> TrialEnd:
        """Tell the study a trial's end; return it as told: ``abandoned`` when the trial was failed elsewhere
        meanwhile (its run is then ended KILLED with that reason). A lost storage (StorageUnavailable) is raised."""
        self.last_told = None
        if end.kind == Kind.ABANDONED:
            _log.warning("trial %d dropped: %s", trial.number, end.reason)
            return end
        if end.kind in (Kind.TRACKING, Kind.REFUSED):
            _log.error("trial %d: %s", trial.number, end.reason)
        elif end.kind == Kind.FAILED:
            _log.warning("trial %d failed: %s", trial.number, end.reason)
        try:
            self.last_told = self.study.tell(trial, end.value, state=TrialState[end.state])
        except optuna.exceptions.UpdateFinishedTrialError as err:
            _log.warning("trial %d was failed elsewhere before it could be told (%s); dropped", trial.number, err)
            dropped = abandoned(trial.number)
            self.objective.end_run(trial.user_attrs.get(names.TRIAL_RUN) if self.tracker is not None else None,
                                   dropped)
            return dropped
        return end

"""Run a study with N worker processes on one machine.

The launching process validates everything and creates (or resumes) the study before any
worker starts; it then starts ``workers`` processes (never threads: NumPy training is
CPU-bound), each with one BLAS thread, ``n_jobs=1`` and its share of the remaining trials,
so that the study ends with exactly ``n_trials`` finished trials, and prepares the MLflow
store and the study's parent run while they import and load data: no worker touches MLflow
before the launcher has created the store. ``n_trials`` is the study's total: re-running a
sweep resumes it and runs only what is missing.

Signals: SIGINT/SIGTERM to the launcher are forwarded to the workers; a worker
interrupted mid-trial marks the trial FAIL (reason ``interrupted``) and its MLflow run
KILLED, then exits. Afterwards the launcher fails trials that its dead workers left
RUNNING (a SIGKILL) and closes every MLflow trial run still RUNNING whose trial has
ended, so nothing stays RUNNING. Trials that finished are never touched.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import socket
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.trial import TrialState

from sweeps.config import ConfigError, SweepConfig, parse_config
from sweeps.objective import (STUDY_ATTR_FINGERPRINT, STUDY_ATTR_PARENT_RUN, TRIAL_ATTR_REASON,
                              TRIAL_ATTR_RUN, TRIAL_ATTR_WORKER, Objective, load_data)
from sweeps.storage import Locations, bound_mlflow_http_retries, check_tracking_server, open_storage
from sweeps.tracking import RUN_STATUS, STATE, TRIAL_NUMBER, Tracker, package_versions

FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
BLAS_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


class StudyMismatch(ConfigError):
    """Resuming a study whose search space, objective or direction differ from the config."""


@dataclass
class SweepSummary:
    study_name: str
    counts: dict[str, int] = field(default_factory=dict)
    best_value: float | None = None
    best_params: dict[str, Any] | None = None
    best_trial: int | None = None
    interrupted: bool = False
    parent_run_id: str | None = None


# -- samplers and pruners ---------------------------------------------------------------------

def build_sampler(cfg: SweepConfig, worker_index: int = 0) -> optuna.samplers.BaseSampler:
    """The configured sampler, seeded with ``seed + worker_index``."""
    from sweeps import space

    name, opts = cfg.study.sampler.name, dict(cfg.study.sampler.options)
    seed = cfg.seed + worker_index
    try:
        if name == "tpe":
            return optuna.samplers.TPESampler(seed=seed, **opts)
        if name == "random":
            return optuna.samplers.RandomSampler(seed=seed, **opts)
        if name == "grid":
            return optuna.samplers.GridSampler(space.grid(cfg), seed=seed, **opts)
        if name == "qmc":
            return optuna.samplers.QMCSampler(seed=seed, **opts)
        if name == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed, **opts)
        if name == "cmaes":
            import cmaes  # noqa: F401 - optuna imports it lazily; fail here, before anything starts

            return optuna.samplers.CmaEsSampler(seed=seed, **opts)
        if name == "gp":
            import torch  # noqa: F401

            return optuna.samplers.GPSampler(seed=seed, **opts)
    except ImportError as err:
        raise ConfigError(f"study.sampler.name: {name!r} needs the package {err.name!r}, which is not installed "
                          f"(pip install {err.name}); installed samplers: tpe, random, grid, qmc, nsga2") from None
    except TypeError as err:
        raise ConfigError(f"study.sampler.options: invalid option for {name!r}: {err}") from None
    raise ConfigError(f"study.sampler.name: unknown sampler {name!r}")  # pragma: no cover


def build_pruner(cfg: SweepConfig) -> optuna.pruners.BasePruner:
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


# -- study preparation -------------------------------------------------------------------------

def _existing_study(storage: Any, name: str) -> optuna.Study | None:
    names = {s.study_name for s in optuna.study.get_all_study_summaries(storage, include_best_trial=False)}
    return optuna.load_study(study_name=name, storage=storage) if name in names else None


def _free_name(storage: Any, base: str) -> str:
    names = {s.study_name for s in optuna.study.get_all_study_summaries(storage, include_best_trial=False)}
    k = 2
    while f"{base}-v{k}" in names:
        k += 1
    return f"{base}-v{k}"


def prepare_study(cfg: SweepConfig, loc: Locations, *, new_study: bool = False) -> tuple[str, optuna.Study]:
    """Create or resume the study; refuse a changed fingerprint unless ``new_study``."""
    build_sampler(cfg)
    build_pruner(cfg)
    storage = open_storage(loc.storage)
    name = cfg.name
    existing = _existing_study(storage, name)
    if existing is not None:
        stored = existing.user_attrs.get(STUDY_ATTR_FINGERPRINT)
        direction = existing.direction.name.lower()
        if (stored is not None and stored != cfg.fingerprint()) or direction != cfg.objective.direction:
            if not new_study:
                what = "direction" if direction != cfg.objective.direction else \
                    "search space, objective or fixed settings"
                raise StudyMismatch(
                    f"study {name!r} in {loc.storage} was created with a different {what} than {cfg.name!r} now has "
                    f"(stored direction: {direction}); resuming would mix incomparable trials. Use --new-study to "
                    f"start a new study, or change 'name'.")
            name = _free_name(storage, name)
    study = optuna.create_study(study_name=name, storage=storage, direction=cfg.objective.direction,
                                load_if_exists=True)
    if STUDY_ATTR_FINGERPRINT not in study.user_attrs:
        study.set_user_attr(STUDY_ATTR_FINGERPRINT, cfg.fingerprint())
    return name, study


def _flat(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and prefix != "search_space":
        for k, v in value.items():
            _flat(f"{prefix}.{k}" if prefix else k, v, out)
    else:
        out[prefix] = json.dumps(value) if isinstance(value, (dict, list)) else value


def study_params(cfg: SweepConfig, fingerprint: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    _flat("", cfg.model_dump(mode="json"), out)
    out["fingerprint"] = fingerprint
    out.update(package_versions())
    return out


# -- workers -----------------------------------------------------------------------------------

def run_worker(cfg_data: dict, loc: Locations, study_name: str, n_trials: int, worker_index: int = 0,
               timeout: float | None = None, tracking: bool = True, artifacts: str = "complete",
               ready: Any = None, cancelled: Any = None) -> None:
    """One worker: load the study and the data, run ``n_trials`` trials (n_jobs=1).

    ``ready``/``cancelled`` (events): the launcher prepares the MLflow store and the parent run while
    its workers start; a worker waits for ``ready`` before its first MLflow call (concurrent first
    use of a fresh SQLite store breaks MLflow's migrations) and exits if ``cancelled`` is set.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    bound_mlflow_http_retries()
    cfg = parse_config(cfg_data, source="worker")
    storage = open_storage(loc.storage)
    study = optuna.load_study(study_name=study_name, storage=storage, sampler=build_sampler(cfg, worker_index),
                              pruner=build_pruner(cfg))
    data = load_data(cfg.data, cfg.seed)
    if tracking and not loc.tracking_uri.startswith(("http://", "https://")):
        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401 - ~0.6 s import, while the launcher prepares
    if ready is not None:
        ready.wait()
        if cancelled is not None and cancelled.is_set():
            return
    parent_run_id = study.user_attrs.get(STUDY_ATTR_PARENT_RUN) if tracking else None
    tracker = Tracker(loc.tracking_uri, loc.experiment_name(study_name), loc.artifact_location,
                      flush_interval=loc.flush_interval_s) if tracking else None
    stop = threading.Event()
    objective = Objective(cfg, data, tracker, parent_run_id, artifacts=artifacts, interrupt_flag=stop.is_set)

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()
        if objective.in_trial and objective.interruptible:  # else: the objective stops after the epoch's I/O
            raise_interrupt(signum)

    def raise_interrupt(signum: int) -> None:
        from sweeps.objective import Interrupted

        raise Interrupted(f"signal {signal.Signals(signum).name}")

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    def stop_between_trials(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if stop.is_set():
            study.stop()

    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        threadpool_limits = None
    limiter = threadpool_limits(1) if threadpool_limits is not None else None
    try:
        # n_trials is this worker's share; MaxTrialsCallback (all states) also stops it once the shared
        # study holds cfg.study.n_trials trials, when several launchers (machines) work on one study.
        cap = optuna.study.MaxTrialsCallback(cfg.study.n_trials, states=None)
        study.optimize(objective, n_trials=n_trials, timeout=timeout, catch=(Exception,),
                       callbacks=[stop_between_trials, cap], gc_after_trial=False, show_progress_bar=False)
    finally:
        if limiter is not None:
            limiter.unregister()


def _worker_entry(*args: Any) -> None:
    try:
        run_worker(*args)
    except KeyboardInterrupt:
        os._exit(130)


# -- repair ------------------------------------------------------------------------------------

def reconcile(study: optuna.Study, tracker: Tracker | None, dead_workers: set[str] = frozenset()) -> int:
    """Fail trials left RUNNING by dead workers; close MLflow trial runs whose trial ended.

    Returns the number of repaired trials and runs.
    """
    repaired = 0
    storage = study._storage
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    for t in trials.values():
        if t.state == TrialState.RUNNING and t.user_attrs.get(TRIAL_ATTR_WORKER) in dead_workers:
            storage.set_trial_user_attr(t._trial_id, TRIAL_ATTR_REASON, "worker died while running the trial")
            try:
                storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
                repaired += 1
            except RuntimeError:
                pass  # finished meanwhile
    if tracker is None:
        return repaired
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    for run in tracker.running_trial_runs():
        number = run.data.tags.get(TRIAL_NUMBER)
        trial = trials.get(int(number)) if number is not None and number.isdigit() else None
        if trial is None or trial.state == TrialState.RUNNING:
            continue
        if trial.user_attrs.get(TRIAL_ATTR_RUN) not in (None, run.info.run_id):
            continue
        state = trial.state.name
        reason = trial.user_attrs.get(TRIAL_ATTR_REASON, "")
        if state == "FAIL" and not reason:
            reason = "trial failed while its worker was not running (killed worker or stale heartbeat)"
        status = "KILLED" if reason.startswith("interrupted") else RUN_STATUS.get(state, "FAILED")
        tracker.finish(run.info.run_id, state, reason, status=status)
        repaired += 1
    return repaired


# -- the sweep ---------------------------------------------------------------------------------

def counts_of(study: optuna.Study) -> dict[str, int]:
    out = {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0, "RUNNING": 0, "WAITING": 0}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


ProgressFn = Callable[[dict[str, int], float | None, int], None]


@dataclass
class Prepared:
    """A study ready for workers: its name, the study, the tracker and the parent run id."""

    cfg: SweepConfig
    name: str
    study: optuna.Study
    tracker: Tracker | None
    parent_run_id: str | None


def prepare_tracking(cfg: SweepConfig, loc: Locations, name: str, study: optuna.Study) -> tuple[Tracker, str]:
    """Create the MLflow store, experiment and parent run (or find them); repair stale runs."""
    bound_mlflow_http_retries()
    tracker = Tracker(loc.tracking_uri, loc.experiment_name(name), loc.artifact_location,
                      flush_interval=loc.flush_interval_s)
    parent_run_id = study.user_attrs.get(STUDY_ATTR_PARENT_RUN)
    if parent_run_id is not None:
        try:
            tracker.client.update_run(parent_run_id, status="RUNNING")
        except Exception:  # noqa: BLE001 - the run is gone (another tracking store): make a new one
            parent_run_id = None
    if parent_run_id is None:
        parent_run_id = tracker.study_run(name, study_params(cfg, cfg.fingerprint()))
        study.set_user_attr(STUDY_ATTR_PARENT_RUN, parent_run_id)
    reconcile(study, tracker)
    return tracker, parent_run_id


def _check_and_open_study(cfg: SweepConfig, loc: Locations, *, new_study: bool,
                          tracking: bool) -> tuple[str, optuna.Study]:
    """Fail on unreadable data or an unreachable tracking server, then create or resume the study."""
    load_data(cfg.data, cfg.seed)  # fails now (missing file, bad checksum) rather than in every worker
    if tracking:
        check_tracking_server(loc.tracking_uri)
    return prepare_study(cfg, loc, new_study=new_study)


def prepare(cfg: SweepConfig, loc: Locations, *, new_study: bool = False, tracking: bool = True) -> Prepared:
    """Everything that must exist before trials run: data check, study, MLflow store and parent run.

    Idempotent: a second launcher (or ``sweeps prepare`` run first, as docker-compose does) finds the
    study and its parent run (the run id is a study user attribute) and reuses them.
    """
    name, study = _check_and_open_study(cfg, loc, new_study=new_study, tracking=tracking)
    tracker, parent_run_id = prepare_tracking(cfg, loc, name, study) if tracking else (None, None)
    return Prepared(cfg, name, study, tracker, parent_run_id)


def run_sweep(cfg: SweepConfig, loc: Locations, *, workers: int | None = None, n_trials: int | None = None,
              new_study: bool = False, tracking: bool = True, artifacts: str | bool | None = None,
              progress: ProgressFn | None = None, poll_interval: float = 1.0) -> SweepSummary:
    """Run (or resume) the study described by ``cfg`` until it has ``n_trials`` finished trials.

    ``artifacts``: ``complete`` | ``all`` | ``none`` (``True``/``False``: ``complete``/``none``;
    ``None``: ``loc.trial_artifacts``).
    """
    cfg = cfg.with_overrides(workers=workers, n_trials=n_trials)
    if artifacts is None or artifacts is True:
        artifacts = loc.trial_artifacts if artifacts is None else "complete"
    elif artifacts is False:
        artifacts = "none"
    name, study = _check_and_open_study(cfg, loc, new_study=new_study, tracking=tracking)
    tracker: Tracker | None = None
    parent_run_id: str | None = None
    counts = counts_of(study)
    remaining = cfg.study.n_trials - (counts["COMPLETE"] + counts["PRUNED"] + counts["FAIL"])
    summary = SweepSummary(study_name=name)
    shares = [s for s in _split(max(remaining, 0), cfg.study.workers) if s > 0]

    ctx = mp.get_context("spawn")
    saved_env = {k: os.environ.get(k) for k in BLAS_ENV}
    os.environ.update({k: "1" for k in BLAS_ENV})
    procs: list[mp.process.BaseProcess] = []
    interrupted = threading.Event()
    previous = {}

    def on_signal(signum: int, frame: Any) -> None:
        interrupted.set()
        for p in procs:
            if p.is_alive() and p.pid is not None:
                try:
                    os.kill(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass

    try:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, on_signal)
        cfg_data = cfg.model_dump(mode="json")
        ready, cancelled = ctx.Event(), ctx.Event()
        for i, share in enumerate(shares):  # workers start (imports, data) while MLflow is prepared below
            p = ctx.Process(target=_worker_entry, name=f"sweeps-worker-{i}",
                            args=(cfg_data, loc, name, share, i, cfg.study.timeout, tracking, artifacts, ready,
                                  cancelled))
            p.start()
            procs.append(p)
        try:
            if tracking:
                tracker, parent_run_id = prepare_tracking(cfg, loc, name, study)
                summary.parent_run_id = parent_run_id
        except BaseException:
            cancelled.set()
            ready.set()
            for p in procs:
                p.join(timeout=30)
            raise
        ready.set()
        deadline_kill = None
        while any(p.is_alive() for p in procs):
            for p in procs:
                p.join(timeout=poll_interval / max(len(procs), 1))
            if progress is not None:
                _report(study, progress, cfg.study.n_trials)
            if interrupted.is_set():
                deadline_kill = deadline_kill or time.monotonic() + 60
                if time.monotonic() > deadline_kill:
                    for p in procs:
                        if p.is_alive():
                            p.kill()
    finally:
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    host = socket.gethostname()
    dead = {f"{host}:{p.pid}" for p in procs}
    reconcile(study, tracker, dead)
    if progress is not None:
        _report(study, progress, cfg.study.n_trials)
    summary.counts = counts_of(study)
    summary.interrupted = interrupted.is_set()
    try:
        best = study.best_trial
        summary.best_value, summary.best_params, summary.best_trial = best.value, dict(best.params), best.number
    except ValueError:
        pass
    if tracker is not None and parent_run_id is not None:
        _close_parent(study, tracker, parent_run_id, summary, artifacts)
    return summary


def _report(study: optuna.Study, progress: ProgressFn, total: int) -> None:
    try:
        best = study.best_value
    except ValueError:
        best = None
    progress(counts_of(study), best, total)


def _close_parent(study: optuna.Study, tracker: Tracker, run_id: str, summary: SweepSummary, artifacts: str) -> None:
    metrics = {f"trials_{k.lower()}": float(v) for k, v in summary.counts.items()}
    if summary.best_value is not None:
        metrics["best_value"] = float(summary.best_value)
        tracker.set_tags(run_id, {"best_trial": summary.best_trial,
                                  **{f"best.{k}": v for k, v in (summary.best_params or {}).items()}})
    tracker.log_epoch(run_id, metrics, step=sum(summary.counts.values()), flush=True)
    if artifacts != "none" and summary.best_value is not None:
        from sweeps import plots

        with warnings.catch_warnings(), tempfile.TemporaryDirectory() as tmp:
            warnings.simplefilter("ignore")
            for key, fig in plots.study_figures(study).items():
                path = plots.save_figure(fig, Path(tmp) / f"{key}.png")
                tracker.log_artifact(run_id, path, "study_plots")
    status = "KILLED" if summary.interrupted else "FINISHED"
    tracker.client.set_terminated(run_id, status=status)
    tracker.set_tags(run_id, {STATE: "INTERRUPTED" if summary.interrupted else "FINISHED"})

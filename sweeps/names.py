"""Every name that the writers of a study (launcher, workers) and its readers share.

One place for the keys of Optuna study and trial attributes and of MLflow tags, so that the
runner, the worker, the repair pass, :mod:`sweeps.query` and the CLI spell them alike.

Optuna study user attributes
    ``sweeps.fingerprint``: SHA-256 of what makes trials comparable (see ``SweepConfig.fingerprint``);
    ``sweeps.mlflow_parent_run_id``: the study's MLflow parent run;
    ``sweeps.n_trials``: the study's budget, the number of trial slots created for it (see
    :mod:`sweeps.study.budget`); ``"preparing"`` while the launcher that created the study enqueues them.

Optuna trial user attributes
    ``reason``: why the trial ended as it did (every FAIL and PRUNED trial has one). While a trial
    runs it already holds :data:`REASON_LOST`: if the trial is failed from outside (Optuna's
    heartbeat, a launcher's repair pass), that is the reason it keeps; every normal end overwrites it;
    ``worker``: ``host:pid`` of the process that ran it; ``mlflow_run_id``: its MLflow child run;
    ``retry_of``: for a retry of a trial lost to an infrastructure fault, the failed trial's number;
    ``stop_reason`` and ``epochs_run``: how training ended.

Optuna trial system attributes (those of ``optuna.storages.RetryHeartbeatStaleTrialCallback``, so
that its ``retried_trial_number`` and ``retry_history`` read our retries too)
    ``failed_trial``: the first trial of a retry chain; ``retry_history``: every earlier attempt.

MLflow tags of runs
    ``sweeps.role`` (``study`` | ``trial``: :data:`ROLE_STUDY`, :data:`ROLE_TRIAL`), ``sweeps.study``,
    ``sweeps.trial_number``, ``sweeps.state`` (the Optuna state: COMPLETE / PRUNED / FAIL), ``sweeps.reason``,
    ``sweeps.attempt`` (a token unique to one creation of a trial's run: a worker whose request timed
    out finds the run the server did create by it, instead of creating a second one), and MLflow's
    own ``mlflow.parentRunId``. A trial's run ends with the status :func:`run_status` gives its state
    and reason (FINISHED / KILLED / FAILED).

MLflow tags and metrics of the study's parent run
    (``sweeps.role=study``; its params are the sweep YAML's fields flattened, ``training.eta``, where a
    trial's run logs its own settings, ``eta``). Written at the end of a sweep
    (:mod:`sweeps.report.closing`): metrics ``trials_<state>``, one per count of the sweep's result
    (:func:`trials_metric`: ``trials_complete``, ``trials_pruned``, ``trials_fail``, ...) and, when a
    trial completed, ``best_value``; tags ``best_trial``, ``best.<param>`` per parameter of the best
    trial (:func:`best_param_tag`), ``sweeps.lambda_scaling.steadiest``, and ``sweeps.state``:
    ``FINISHED``, or ``INTERRUPTED`` for a sweep stopped by a signal (its run then ends KILLED, else
    FINISHED: :func:`parent_state`).

MLflow experiments
    one per study, ``<experiment_prefix><study name>``; ``experiment_prefix`` in ``mlflow.yml``,
    default :data:`EXPERIMENT_PREFIX` (``sweeps/``; :mod:`sweeps.stores`).
"""

from __future__ import annotations

import os
import socket

# -- Optuna study user attributes -------------------------------------------------------------
STUDY_FINGERPRINT = "sweeps.fingerprint"
STUDY_PARENT_RUN = "sweeps.mlflow_parent_run_id"
STUDY_N_TRIALS = "sweeps.n_trials"
PREPARING = "preparing"

# -- Optuna trial user attributes -------------------------------------------------------------
TRIAL_REASON = "reason"
TRIAL_WORKER = "worker"
TRIAL_RUN = "mlflow_run_id"
TRIAL_RETRY_OF = "retry_of"
TRIAL_STOP_REASON = "stop_reason"
TRIAL_EPOCHS_RUN = "epochs_run"

# -- Optuna trial system attributes (RetryHeartbeatStaleTrialCallback's keys) ------------------
SYS_FAILED_TRIAL = "failed_trial"
SYS_RETRY_HISTORY = "retry_history"
SYS_FIXED_PARAMS = "fixed_params"  # Optuna's own key for enqueued parameters

# -- MLflow tags ------------------------------------------------------------------------------
TAG_ROLE = "sweeps.role"
TAG_STUDY = "sweeps.study"
TAG_TRIAL_NUMBER = "sweeps.trial_number"
TAG_STATE = "sweeps.state"
TAG_REASON = "sweeps.reason"
TAG_ATTEMPT = "sweeps.attempt"
#: One tag per finding code of the trial (:mod:`sweeps.analysis.diagnosis`): ``sweeps.finding.<code>`` = its severity.
TAG_FINDING_PREFIX = "sweeps.finding."
#: On a study's parent run: the lambda convention(s) whose best value moved least (:mod:`sweeps.analysis.diagnosis`).
TAG_STEADIEST = "sweeps.lambda_scaling.steadiest"
TAG_PARENT = "mlflow.parentRunId"

#: Values of ``sweeps.role``: the study's parent run, a trial's run.
ROLE_STUDY = "study"
ROLE_TRIAL = "trial"

#: The default ``experiment_prefix`` (``mlflow.yml``): the study ``digits`` logs to ``sweeps/digits``.
EXPERIMENT_PREFIX = "sweeps/"

# -- Optuna trial states (``TrialState`` names; also the values of a trial run's ``sweeps.state``) --------
STATE_COMPLETE = "COMPLETE"
STATE_PRUNED = "PRUNED"
STATE_FAIL = "FAIL"
STATE_RUNNING = "RUNNING"
STATE_WAITING = "WAITING"
#: Not an Optuna state: the count of FAIL trials that were retried (``sweeps.study.budget.counts_of``).
COUNT_RETRIED = "RETRIED"

# -- MLflow run statuses (``mlflow.entities.RunStatus`` names) --------------------------------------------
RUN_RUNNING = "RUNNING"
RUN_FINISHED = "FINISHED"
RUN_FAILED = "FAILED"
RUN_KILLED = "KILLED"

#: Optuna state -> MLflow run status. A trial interrupted by a signal or abandoned after it was
#: failed elsewhere ends its run KILLED (with ``sweeps.state=FAIL``).
RUN_STATUS = {STATE_COMPLETE: RUN_FINISHED, STATE_PRUNED: RUN_KILLED, STATE_FAIL: RUN_FAILED}

# -- the study's parent run (see the module docstring) ------------------------------------------
#: ``sweeps.state`` of the parent run once the sweep ended: it ran to its end / a signal stopped it.
PARENT_FINISHED = "FINISHED"
PARENT_INTERRUPTED = "INTERRUPTED"
TAG_BEST_TRIAL = "best_trial"
#: ``best.<param>``: one tag per parameter of the best trial (:func:`best_param_tag`).
TAG_BEST_PARAM_PREFIX = "best."
METRIC_BEST_VALUE = "best_value"
#: ``trials_<state>``: one metric per count of the sweep's result (:func:`trials_metric`).
METRIC_TRIALS_PREFIX = "trials_"

# -- reasons ----------------------------------------------------------------------------------
#: Reasons that start with this word mark a trial stopped by SIGINT/SIGTERM (its run ends KILLED).
REASON_INTERRUPTED = "interrupted"
#: The run of a trial that was failed elsewhere while its worker was stopped ends with a reason that
#: starts with this word (status KILLED); the trial itself was failed and retried by others.
REASON_ABANDONED = "abandoned"
#: Reasons of trials lost to an infrastructure fault start with this word; such trials are retried.
REASON_LOST = "lost"
#: The reason a trial holds while it runs (see the module docstring).
REASON_LOST_HEARTBEAT = ("lost: its worker stopped sending heartbeats for longer than the grace period "
                         "(killed, stopped, or cut off from the study's storage)")
REASON_LOST_BEFORE_START = ("lost: taken by a worker that never started it (no heartbeat within the grace "
                            "period; the worker died or lost the storage right after taking it)")
REASON_LOST_WORKER_DIED = "lost: worker died while running the trial"
REASON_LOST_TRACKING = "lost: tracking unavailable"
#: The tracking server refused the worker's credentials (HTTP 401/403): the trial is put back like a lost one.
REASON_REFUSED = "lost: tracking refused the credentials"
REASON_LOST_STORAGE = "lost: the study's storage was unavailable"
#: The reason given to a second MLflow run of one trial (a creation whose answer timed out); such a
#: run never received data and is deleted by the repair pass.
REASON_DUPLICATE_RUN = "duplicate"


def is_infrastructure_failure(reason: str | None) -> bool:
    """True for the reasons of trials lost to a fault outside the trial (they are retried)."""
    return bool(reason) and reason.startswith(REASON_LOST)  # type: ignore[union-attr]


def run_status(state: str, reason: str) -> str:
    """MLflow status of a trial's run: interrupted and abandoned runs end KILLED, lost ones FAILED."""
    if reason.startswith((REASON_INTERRUPTED, REASON_ABANDONED)):
        return RUN_KILLED
    return RUN_STATUS.get(state, RUN_FAILED)


def parent_state(interrupted: bool) -> tuple[str, str]:
    """``(sweeps.state, run status)`` of the study's parent run at the end of a sweep."""
    return (PARENT_INTERRUPTED, RUN_KILLED) if interrupted else (PARENT_FINISHED, RUN_FINISHED)


def trials_metric(state: str) -> str:
    """The parent run's metric counting the trials of ``state`` (``COMPLETE`` -> ``trials_complete``)."""
    return f"{METRIC_TRIALS_PREFIX}{state.lower()}"


def best_param_tag(param: str) -> str:
    """The parent run's tag holding the best trial's value of ``param`` (``eta`` -> ``best.eta``)."""
    return f"{TAG_BEST_PARAM_PREFIX}{param}"


def worker_name(pid: int | None = None, host: str | None = None) -> str:
    """``host:pid`` of a worker process (user attribute ``worker``): this process by default."""
    return f"{socket.gethostname() if host is None else host}:{os.getpid() if pid is None else pid}"

"""MLflow tracking with explicit run ids (``MlflowClient``), safe across processes.

Layout (what :mod:`sweeps.query` reads back; tag names in :mod:`sweeps.names`):

* one experiment per study: ``<experiment_prefix><study name>`` (``sweeps/digits``);
* one parent run per study, tags ``sweeps.role=study``, ``sweeps.study``;
* one child run per trial, tags ``mlflow.parentRunId`` (the UI nests it under the study),
  ``sweeps.role=trial``, ``sweeps.study``, ``sweeps.trial_number``, and at the end
  ``sweeps.state`` (COMPLETE / PRUNED / FAIL) and ``sweeps.reason``;
* metrics: every field of the epoch record (``EpochRecord.to_metrics`` names), step = epoch.
  Each epoch's metrics are one batch; batches are sent with ``log_batch`` at most once per
  ``flush_interval`` seconds per run (default 1 s, ``flush_interval_s`` in ``mlflow.yml``; 0 sends
  every epoch at once), several epochs in one call when epochs are fast (MLflow's SQL store spends
  ~7 ms per call whatever its size, longer than a digits epoch).
  On a SQLite or PostgreSQL store a run's queued metrics, params, tags and end are written in one
  transaction (:mod:`sweeps.tracking.bulk_writer`: the rows MLflow's client would store, ~10x faster than its
  ORM path); to a tracking server they go through ``log_batch`` and ``set_terminated``.

Delivery (the tracking server may go away):

* nothing queued is dropped: params, metrics and tags leave a run's queue only once MLflow has
  accepted them. A transient failure (connection refused or reset, a timeout, a 5xx answer, a
  locked SQLite store) keeps them queued, and the next try waits 0.5, 1, 2, ... up to 5 s after a
  refused try or 30 s after one that timed out (:data:`MAX_BACKOFF_FAST`, :data:`MAX_BACKOFF`);
  epochs in between are only queued, so training goes on at full speed;
* each call is bounded by MLflow's HTTP timeout (``request_timeout_s`` in ``mlflow.yml``, default
  10 s, no MLflow-side retries in workers): a hung server costs one timeout per try, not minutes;
* the end of a run (its last epochs, its ``sweeps.state``/``sweeps.reason`` tags and its status,
  sent together) is retried until it is delivered or ``outage_s`` seconds have passed
  (``tracking_outage_s``, default 300 s): then :class:`TrackingUnavailable` is raised, the run
  stays queued (later tries and :meth:`Tracker.drain` still deliver it), and the caller decides
  (the worker fails the trial "lost: tracking unavailable" and retries it);
* metrics carry the time they were measured, so a batch sent twice (its answer was lost) is stored
  once: MLflow ignores a metric identical in key, step, time and value;
* creating a trial's run is made idempotent the same way: the run carries a ``sweeps.attempt``
  token, and a try after a failed one first looks for a run with that token (the server may have
  created it and only its answer was lost). A run created anyway (a hung server may hold the
  request and carry it out after the lookup) never receives data; the repair pass deletes it
  (:func:`sweeps.engine.reconcile.close_runs`).

Optuna state -> MLflow run status: COMPLETE -> FINISHED, PRUNED -> KILLED, FAIL -> FAILED
(and a run interrupted by a signal -> KILLED with ``sweeps.state=FAIL``).

Thread safety: a ``Tracker`` is used by one thread (the worker's); it holds no lock.
"""

from __future__ import annotations

import logging
import platform
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

_log = logging.getLogger("sweeps.tracking")

from sweeps.names import (
    ROLE_STUDY,
    ROLE_TRIAL,
    RUN_KILLED,
    RUN_RUNNING,
    RUN_STATUS,
    STATE_FAIL,
    TAG_ATTEMPT,
    TAG_PARENT,
    TAG_REASON,
    TAG_ROLE,
    TAG_STATE,
    TAG_STUDY,
    TAG_TRIAL_NUMBER,
)
from sweeps.redaction import redact, redact_url
from sweeps.stores import FLUSH_INTERVAL_S, TRACKING_OUTAGE_S, TrackingUnavailable  # noqa: F401 - raised here too

#: Longest wait between two delivery tries while the tracking store fails: 30 s after tries that
#: timed out (a hung server costs a timeout per try), 5 s after tries refused at once (a server
#: that is down costs nothing to ask, and the data then goes out at most 5 s after it is back).
MAX_BACKOFF = 30.0
MAX_BACKOFF_FAST = 5.0
#: MLflow error codes that no retry can fix (a bad value, a missing run): raised at once.
PERMANENT_ERRORS = frozenset({"INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS",
                              "BAD_REQUEST", "INVALID_STATE", "PERMISSION_DENIED", "UNAUTHENTICATED",
                              "MALFORMED_REQUEST", "FEATURE_DISABLED"})
#: MLflow refuses params longer than this many characters (it truncates with a warning).
MAX_PARAM_LENGTH = 6000
#: MLflow's limits on metrics + params + tags, and on params (or tags), in one ``log_batch`` call.
MAX_BATCH_ITEMS = 1000
MAX_BATCH_PARAMS = 100


def package_versions() -> dict[str, str]:
    """Versions of what produced a run (logged as params)."""
    import mlflow
    import numpy
    import optuna

    import nncore

    return {"version.python": platform.python_version(), "version.numpy": numpy.__version__,
            "version.optuna": optuna.__version__, "version.mlflow": mlflow.__version__,
            "version.nncore": nncore.__version__}


def _param_text(value: Any) -> str:
    """A param's or tag's value as MLflow stores it: text, with every secret masked (a storage URL given in the
    sweep YAML is a param of the parent run: its password is not), cut to :data:`MAX_PARAM_LENGTH`."""
    text = redact(value) if isinstance(value, str) else str(value)
    return text if len(text) <= MAX_PARAM_LENGTH else text[: MAX_PARAM_LENGTH - 3] + "..."


def is_transient(err: BaseException) -> bool:
    """A failure another try may cure: connection errors, timeouts, 5xx, a locked SQLite store."""
    from mlflow.exceptions import MlflowException

    if isinstance(err, MlflowException):
        return err.error_code not in PERMANENT_ERRORS
    if isinstance(err, (OSError, TimeoutError, ConnectionError)):
        return True
    try:
        import requests

        if isinstance(err, requests.exceptions.RequestException):
            return True
    except ImportError:  # pragma: no cover - mlflow depends on requests
        pass
    return type(err).__name__ == "OperationalError"  # sqlalchemy / sqlite3 "database is locked"


@dataclass
class _Outbox:
    """What a run still owes MLflow, oldest first."""

    params: list[Param] = field(default_factory=list)
    metrics: list[Metric] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    status: str | None = None  # set when the run is to be ended
    last_try: float = float("-inf")

    def empty(self) -> bool:
        return not (self.params or self.metrics or self.tags) and self.status is None


class Tracker:
    """All MLflow writes of a sweep: a client, the experiment id and the runs' outboxes."""

    def __init__(self, tracking_uri: str, experiment_name: str, artifact_location: str | None = None, *,
                 flush_interval: float = FLUSH_INTERVAL_S, outage_s: float = TRACKING_OUTAGE_S, bulk: bool = True,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.tracking_uri = tracking_uri
        self.flush_interval = flush_interval
        self.outage_s = outage_s
        self._clock, self._sleep = clock, sleep
        self._outbox: dict[str, _Outbox] = {}
        self._retry_at = float("-inf")  # no try before this (monotonic), after a transient failure
        self._failures = 0
        self._last_call_s = 0.0
        #: Longest single MLflow call seen, in seconds (what a hung server cost this worker at most).
        self.longest_call_s = 0.0
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.experiment_name = experiment_name
        self.experiment_id = self._until_delivered(lambda: self._experiment(artifact_location),
                                                   what=f"finding the experiment {experiment_name!r}")
        #: Writes runs straight into a SQLite/PostgreSQL store (:mod:`sweeps.tracking.bulk_writer`), ~10x faster than
        #: MLflow's client; None (the client) for a tracking server, another schema or ``bulk=False``.
        self.bulk_writer = None
        if bulk:
            from sweeps.tracking.bulk_writer import BulkWriter

            self.bulk_writer = BulkWriter.for_uri(tracking_uri)

    def _experiment(self, artifact_location: str | None) -> str:
        """The experiment's id: found, restored if deleted, or created."""
        exp = self.client.get_experiment_by_name(self.experiment_name)
        if exp is None:
            try:
                return self.client.create_experiment(self.experiment_name, artifact_location=artifact_location)
            except Exception:  # noqa: BLE001 - another process created it first
                exp = self.client.get_experiment_by_name(self.experiment_name)
                if exp is None:
                    raise
        if exp.lifecycle_stage == "deleted":
            self.client.restore_experiment(exp.experiment_id)
        return exp.experiment_id

    # -- study (parent) run ----------------------------------------------------------------
    def study_run(self, study_name: str, params: Mapping[str, Any]) -> str:
        """The study's parent run: reused when resuming, created (with ``params``) otherwise."""
        found = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{TAG_ROLE}` = '{ROLE_STUDY}' and tags.`{TAG_STUDY}` = '{study_name}'", max_results=1)
        if found:
            run_id = found[0].info.run_id
            self.client.update_run(run_id, status=RUN_RUNNING)
            return run_id
        run = self.client.create_run(self.experiment_id, run_name=study_name,
                                     tags={TAG_ROLE: ROLE_STUDY, TAG_STUDY: study_name})
        self.log_params(run.info.run_id, params)
        return run.info.run_id

    # -- trial (child) runs ----------------------------------------------------------------
    def start_trial(self, parent_run_id: str, study_name: str, trial_number: int, params: Mapping[str, Any], *,
                    should_stop: Callable[[], bool] = lambda: False) -> str:
        """Create the trial's child run (retried through an outage); its params go out with the first metrics.

        Raises :class:`TrackingUnavailable` after ``outage_s`` seconds of transient failures.
        """
        token = uuid.uuid4().hex
        tags = {TAG_PARENT: parent_run_id, TAG_ROLE: ROLE_TRIAL, TAG_STUDY: study_name,
                TAG_TRIAL_NUMBER: str(trial_number), TAG_ATTEMPT: token}
        tried = False

        def create() -> Any:
            nonlocal tried
            if tried:  # the last try may have created the run and lost only the answer
                found = self.client.search_runs([self.experiment_id],
                                                filter_string=f"tags.`{TAG_ATTEMPT}` = '{token}'", max_results=1)
                if found:
                    return found[0]
            tried = True
            return self.client.create_run(self.experiment_id, run_name=f"trial-{trial_number:04d}", tags=tags)

        run = self._until_delivered(create, what=f"creating the run of trial {trial_number}",
                                    should_stop=should_stop)
        run_id = run.info.run_id
        self._outbox[run_id] = _Outbox(params=[Param(k, _param_text(v)) for k, v in params.items()],
                                       last_try=self._clock())
        return run_id

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        items = [Param(k, _param_text(v)) for k, v in params.items()]
        for i in range(0, len(items), MAX_BATCH_PARAMS):
            self.client.log_batch(run_id, params=items[i:i + MAX_BATCH_PARAMS])

    def log_epoch(self, run_id: str, metrics: Mapping[str, float], step: int, *, flush: bool = False) -> None:
        """Queue one epoch's metrics (step = epoch); try to send the run's queue if ``flush_interval`` has
        passed (or ``flush``) and the store is not in a back-off. Never raises for a transient failure."""
        ts = int(time.time() * 1000)
        box = self._outbox.setdefault(run_id, _Outbox())
        if self.bulk_writer is None and box.metrics and len(box.metrics) + len(metrics) > MAX_BATCH_ITEMS:
            self.flush(run_id)  # a full batch goes out first
            box = self._outbox.setdefault(run_id, box)
        box.metrics.extend(Metric(k, float(v), ts, step) for k, v in metrics.items())
        if flush or self._clock() - box.last_try >= self.flush_interval:
            self.flush(run_id)

    def flush(self, run_id: str) -> bool:
        """One try to send everything queued for ``run_id`` (False: some is still queued: store failing).

        Skipped (False) while a back-off after a failure is running. Permanent errors raise.
        """
        box = self._outbox.get(run_id)
        if box is None or box.empty():
            return True
        if self._clock() < self._retry_at:
            return False
        box.last_try = self._clock()
        try:
            self._send(run_id, box)
        except Exception as err:  # noqa: BLE001 - transient ones are kept for the next try
            if not is_transient(err):
                raise
            self._failed(err)
            return False
        self._failures, self._retry_at = 0, float("-inf")
        self._outbox.pop(run_id, None)
        return True

    def _send(self, run_id: str, box: _Outbox) -> None:
        """Send ``box`` in as few calls as MLflow allows; remove each part once accepted.

        With :attr:`bulk_writer`: everything queued (metrics, params, tags, the run's end) in one transaction.
        Otherwise ``log_batch`` calls of at most :data:`MAX_BATCH_ITEMS` values, then ``set_terminated``.
        """
        if self.bulk_writer is not None and self.bulk_writer.handles(box.tags):
            m, p = list(box.metrics), list(box.params)
            t = [RunTag(k, v) for k, v in box.tags.items()]
            status = box.status
            self._timed(lambda: self.bulk_writer.write(run_id, m, params=p, tags=t, status=status))
            del box.metrics[:len(m)]
            del box.params[:len(p)]
            for tag in t:
                box.tags.pop(tag.key, None)
            box.status = None
            return
        while box.params or box.metrics or box.tags:
            p = box.params[:MAX_BATCH_PARAMS]
            t = [RunTag(k, v) for k, v in list(box.tags.items())[:MAX_BATCH_PARAMS - len(p)]] \
                if len(box.metrics) <= MAX_BATCH_ITEMS - len(p) else []  # tags go with the last batch
            room = MAX_BATCH_ITEMS - len(p) - len(t)
            m = box.metrics[:room]
            self._timed(lambda: self.client.log_batch(run_id, metrics=m, params=p, tags=t))
            del box.params[:len(p)]
            del box.metrics[:len(m)]
            for tag in t:
                box.tags.pop(tag.key, None)
        if box.status is not None:
            status = box.status
            self._timed(lambda: self.client.set_terminated(run_id, status=status))
            box.status = None

    def _timed(self, call: Callable[[], Any]) -> Any:
        start = self._clock()
        try:
            return call()
        finally:
            self._last_call_s = self._clock() - start
            self.longest_call_s = max(self.longest_call_s, self._last_call_s)

    def _failed(self, err: BaseException) -> None:
        self._failures += 1
        cap = MAX_BACKOFF if getattr(self, "_last_call_s", 0.0) >= 1.0 else MAX_BACKOFF_FAST
        delay = min(cap, 0.5 * 2 ** (self._failures - 1))
        self._retry_at = self._clock() + delay
        _log.warning("MLflow did not accept queued data (try again in %.1f s): %s", delay,
                     str(err).splitlines()[0][:300] if str(err) else type(err).__name__)

    def _until_delivered(self, call: Callable[[], Any], *, what: str,
                         should_stop: Callable[[], bool] = lambda: False) -> Any:
        """``call()`` retried through transient failures for up to ``outage_s`` seconds."""
        deadline = self._clock() + self.outage_s
        while True:
            wait = self._retry_at - self._clock()
            if wait > 0 and not should_stop():
                self._sleep(min(wait, max(deadline - self._clock(), 0)))
            try:
                result = self._timed(call)
            except Exception as err:  # noqa: BLE001
                if not is_transient(err):
                    raise
                self._failed(err)
                if self._clock() >= deadline or should_stop():
                    raise TrackingUnavailable(f"{what}: the tracking store {redact_url(self.tracking_uri)} failed for "
                                              f"{self.outage_s:.0f} s: {str(err).splitlines()[0][:300]}") from err
                continue
            self._failures, self._retry_at = 0, float("-inf")
            return result

    def finish(self, run_id: str, state: str, reason: str = "", *, status: str | None = None,
               should_stop: Callable[[], bool] = lambda: False) -> None:
        """Send the run's last epochs with its ``sweeps.state``/``sweeps.reason`` tags, then end it: the one way a
        run of a sweep ends (trial runs, duplicates in :meth:`discard_run`, the study's parent run).

        ``status``: the MLflow status (default: :data:`~sweeps.names.RUN_STATUS` of ``state``). Retried through an
        outage for up to ``outage_s`` s, or one try when ``should_stop()`` is true; then :class:`TrackingUnavailable`,
        with the run left queued (:meth:`drain` and later tries still deliver it).
        """
        box = self._outbox.setdefault(run_id, _Outbox())
        box.tags[TAG_STATE] = state
        if reason:
            box.tags[TAG_REASON] = _param_text(reason)
        box.status = status or RUN_STATUS[state]

        def deliver() -> None:
            self._send(run_id, box)
            self._outbox.pop(run_id, None)

        self._until_delivered(deliver, what=f"ending run {run_id}", should_stop=should_stop)

    def queue_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        """Queue tags for ``run_id``: they go out with its next batch (at the latest with :meth:`finish`)."""
        self._outbox.setdefault(run_id, _Outbox()).tags.update({k: _param_text(v) for k, v in tags.items()})

    def pending_runs(self) -> list[str]:
        """Runs with data not yet accepted by MLflow."""
        return [r for r, box in self._outbox.items() if not box.empty()]

    def retry_pending(self) -> None:
        """One try for every run with queued data (between trials); never raises for a transient failure."""
        for run_id in self.pending_runs():
            if not self.flush(run_id):
                return

    def drain(self, timeout: float) -> list[str]:
        """Try to deliver every queued run for up to ``timeout`` s; return the runs still undelivered."""
        deadline = self._clock() + timeout
        while self.pending_runs() and self._clock() < deadline:
            wait = self._retry_at - self._clock()
            if wait > 0:
                self._sleep(min(wait, max(deadline - self._clock(), 0)))
            self.retry_pending()
        return self.pending_runs()

    def log_artifact(self, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

    def log_artifacts(self, run_id: str, local_dir: str | Path, artifact_path: str | None = None) -> None:
        """Every file of ``local_dir`` to the run's artifacts, in one call."""
        self.client.log_artifacts(run_id, str(local_dir), artifact_path)

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        self.client.log_batch(run_id, tags=[RunTag(k, _param_text(v)) for k, v in tags.items()])

    # -- repair ---------------------------------------------------------------------------
    def discard_run(self, run_id: str, reason: str) -> None:
        """End a run that must not be read (a duplicate) KILLED with ``reason``, then delete it.

        One try; a transient failure raises :class:`TrackingUnavailable` (the next repair pass tries again).
        """
        self.finish(run_id, STATE_FAIL, reason, status=RUN_KILLED, should_stop=lambda: True)
        self.client.delete_run(run_id)
        self._outbox.pop(run_id, None)

    def running_trial_runs(self) -> list[Any]:
        """Trial runs still marked RUNNING in this experiment."""
        return self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{TAG_ROLE}` = '{ROLE_TRIAL}' and attributes.status = '{RUN_RUNNING}'",
            max_results=10_000)

"""MLflow tracking with explicit run ids (``MlflowClient``), safe across threads and processes.

Layout (what :mod:`sweeps.query` reads back):

* one experiment per study: ``<experiment_prefix><study name>`` (``sweeps/digits``);
* one parent run per study, tags ``sweeps.role=study``, ``sweeps.study``;
* one child run per trial, tags ``mlflow.parentRunId`` (the UI nests it under the study),
  ``sweeps.role=trial``, ``sweeps.study``, ``sweeps.trial_number``, and at the end
  ``sweeps.state`` (COMPLETE / PRUNED / FAIL) and ``sweeps.reason``;
* metrics: every field of the epoch record (``EpochRecord.to_metrics`` names), step = epoch.
  Each epoch's metrics are one batch; batches are sent with ``log_batch`` at most once per
  ``flush_interval`` seconds per run (default 1 s, ``flush_interval_s`` in ``mlflow.yml``; 0 sends
  every epoch at once), several epochs in one call when epochs are fast (MLflow's SQL store spends
  ~7 ms per call whatever its size, longer than a digits epoch). Pending epochs are always sent
  before a run is ended, also on SIGINT/SIGTERM; a SIGKILL can lose the last interval's epochs.

Optuna state -> MLflow run status: COMPLETE -> FINISHED, PRUNED -> KILLED, FAIL -> FAILED
(and a run interrupted by a signal -> KILLED with ``sweeps.state=FAIL``).
"""

from __future__ import annotations

import platform
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

ROLE, STUDY, TRIAL_NUMBER, STATE, REASON = "sweeps.role", "sweeps.study", "sweeps.trial_number", "sweeps.state", \
    "sweeps.reason"
PARENT = "mlflow.parentRunId"
RUN_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
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
    text = str(value)
    return text if len(text) <= MAX_PARAM_LENGTH else text[: MAX_PARAM_LENGTH - 3] + "..."


class Tracker:
    """All MLflow writes of a sweep. Holds only a client and the experiment id."""

    def __init__(self, tracking_uri: str, experiment_name: str, artifact_location: str | None = None, *,
                 flush_interval: float = 1.0) -> None:
        self.tracking_uri = tracking_uri
        self.flush_interval = flush_interval
        self._pending: dict[str, list[Metric]] = defaultdict(list)
        self._pending_params: dict[str, list[Param]] = {}
        self._last_flush: dict[str, float] = {}
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.experiment_name = experiment_name
        exp = self.client.get_experiment_by_name(experiment_name)
        if exp is None:
            try:
                self.experiment_id = self.client.create_experiment(experiment_name,
                                                                   artifact_location=artifact_location)
            except Exception:  # noqa: BLE001 - another process created it first
                exp = self.client.get_experiment_by_name(experiment_name)
                if exp is None:
                    raise
                self.experiment_id = exp.experiment_id
        else:
            if exp.lifecycle_stage == "deleted":
                self.client.restore_experiment(exp.experiment_id)
            self.experiment_id = exp.experiment_id

    # -- study (parent) run ----------------------------------------------------------------
    def study_run(self, study_name: str, params: Mapping[str, Any]) -> str:
        """The study's parent run: reused when resuming, created (with ``params``) otherwise."""
        found = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{ROLE}` = 'study' and tags.`{STUDY}` = '{study_name}'",
            max_results=1)
        if found:
            run_id = found[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
            return run_id
        run = self.client.create_run(self.experiment_id, run_name=study_name,
                                     tags={ROLE: "study", STUDY: study_name})
        self.log_params(run.info.run_id, params)
        return run.info.run_id

    # -- trial (child) runs ----------------------------------------------------------------
    def start_trial(self, parent_run_id: str, study_name: str, trial_number: int, params: Mapping[str, Any]) -> str:
        """Create the trial's child run; its params go out with the first batch of metrics."""
        run = self.client.create_run(
            self.experiment_id, run_name=f"trial-{trial_number:04d}",
            tags={PARENT: parent_run_id, ROLE: "trial", STUDY: study_name, TRIAL_NUMBER: str(trial_number)})
        run_id = run.info.run_id
        self._pending_params[run_id] = [Param(k, _param_text(v)) for k, v in params.items()]
        self._last_flush[run_id] = time.monotonic()
        return run_id

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        items = [Param(k, _param_text(v)) for k, v in params.items()]
        for i in range(0, len(items), MAX_BATCH_PARAMS):
            self.client.log_batch(run_id, params=items[i:i + MAX_BATCH_PARAMS])

    def log_epoch(self, run_id: str, metrics: Mapping[str, float], step: int, *, flush: bool = False) -> None:
        """Queue one epoch's metrics (step = epoch); send the run's queue if ``flush_interval`` has passed."""
        ts = int(time.time() * 1000)
        pending = self._pending[run_id]
        if len(pending) + len(metrics) > MAX_BATCH_ITEMS:
            self.flush(run_id)
            pending = self._pending[run_id]
        pending.extend(Metric(k, float(v), ts, step) for k, v in metrics.items())
        if flush or time.monotonic() - self._last_flush.get(run_id, float("-inf")) >= self.flush_interval:
            self.flush(run_id)

    def flush(self, run_id: str, tags: Mapping[str, str] | None = None) -> None:
        """Send the run's queued params, metrics (and ``tags``) in as few ``log_batch`` calls as MLflow allows."""
        params = self._pending_params.pop(run_id, [])
        metrics = self._pending.pop(run_id, [])
        tag_items = [RunTag(k, _param_text(v)) for k, v in (tags or {}).items()]
        while params or metrics or tag_items:
            p, params = params[:MAX_BATCH_PARAMS], params[MAX_BATCH_PARAMS:]
            t, tag_items = tag_items[:MAX_BATCH_PARAMS], tag_items[MAX_BATCH_PARAMS:]
            room = MAX_BATCH_ITEMS - len(p) - len(t)
            m, metrics = metrics[:room], metrics[room:]
            self.client.log_batch(run_id, metrics=m, params=p, tags=t)
        self._last_flush[run_id] = time.monotonic()

    def finish(self, run_id: str, state: str, reason: str = "", *, status: str | None = None) -> None:
        """Send pending epochs with the Optuna state and reason tags, then end the run (mapped status)."""
        tags = {STATE: state}
        if reason:
            tags[REASON] = reason
        try:
            self.flush(run_id, tags)
        finally:
            self._last_flush.pop(run_id, None)
            self.client.set_terminated(run_id, status=status or RUN_STATUS[state])

    def log_artifact(self, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        self.client.log_batch(run_id, tags=[RunTag(k, _param_text(v)) for k, v in tags.items()])

    # -- repair ---------------------------------------------------------------------------
    def running_trial_runs(self) -> list[Any]:
        """Trial runs still marked RUNNING in this experiment."""
        return self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{ROLE}` = 'trial' and attributes.status = 'RUNNING'",
            max_results=10_000)

"""Read sweeps back: Optuna trials joined with MLflow runs, and per-epoch histories.

The tracker writes one MLflow experiment per study (``<prefix><study_name>``, prefix
``experiment_prefix`` of ``mlflow.yml``, ``"sweeps/"`` by default) holding one parent run (tags
``sweeps.role=study``, ``sweeps.study``) and one child run per Optuna trial
(tags ``sweeps.role=trial``, ``sweeps.study``, ``sweeps.trial_number``,
``sweeps.state``, ``sweeps.reason``; params = hyperparameters; metrics = the
epoch-record keys of :mod:`nncore.records`, step = epoch: 0 for the initial network
before any step, then 1, 2, ...). The Optuna
trial carries the child run's id as user attribute ``mlflow_run_id`` and, for
pruned or failed trials, a ``reason`` user attribute (names: :mod:`sweeps.names`).

Two entry points:

:func:`trials`
    one row per Optuna trial (state, value, params, timing, run id, reason) and,
    given a tracking URI, the final value of every MLflow metric, fetched with a
    single (paginated) ``search_runs`` for the experiment. Parameters are bare names
    (``eta``), metrics their keys (``train/eta``): every metric key has a group prefix
    with a slash and no parameter name has one (``docs/vocabulary.md``), so they
    never collide.

:func:`history`
    every logged value of every trial run at once, long or wide (``params=True``: with
    the trial's parameters as columns), read by one of three backends behind one
    interface (:mod:`sweeps.query.base`; ``method``):

    ``"sql"`` (:mod:`sweeps.query.database`)
        read-only queries on MLflow's backend database through MLflow's ORM models,
        only at a known schema revision. Fastest by far.
    ``"http"`` (:mod:`sweeps.query.rest`)
        the tracking server's bulk history route, through MLflow's REST helpers
        (MLflow's credentials, TLS and retry settings apply).
    ``"api"`` (:mod:`sweeps.query.client`)
        ``MlflowClient.get_metric_history`` per run per key (slow, always works).

    ``"auto"`` picks ``sql`` for database tracking URIs, ``http`` for ``http(s)://``
    and ``api`` otherwise. When the chosen backend cannot serve the store correctly
    (another schema revision, a server without the route: :class:`~sweeps.query.base.Unsupported`)
    it warns, naming the reason, and reads through ``api`` instead: with ``"auto"``
    and with an explicit ``"sql"`` or ``"http"`` alike.

Building, de-duplicating and sorting the frames is :mod:`sweeps.query.frames`.
When several values were logged for the same (run, key, step), every backend
keeps the one with the latest timestamp. NaN values come back as NaN; MLflow
itself stores +/-inf as +/-1.7976931348623157e308, and that is what is read.
"""

from __future__ import annotations

from sweeps.query.base import Unsupported
from sweeps.query.explanations import FINDING_COLUMNS, findings
from sweeps.query.frames import LONG_COLUMNS
from sweeps.query.reading import DEFAULT_PREFIX, METHODS, READERS, experiment_for, history, trials

__all__ = ["DEFAULT_PREFIX", "FINDING_COLUMNS", "LONG_COLUMNS", "METHODS", "READERS", "Unsupported", "experiment_for",
           "findings", "history", "trials"]

"""The ``"api"`` backend: ``MlflowClient`` calls, one ``get_metric_history`` per run and key.

Slow (one request or query per run and key) but it goes through MLflow's public client
only, so it works on any store MLflow itself can read: the fallback of the other two
backends. Also home of the one paginated ``search_runs`` that :func:`sweeps.query.trials`
and the ``"http"`` backend use to list the trial runs.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from sweeps.names import ROLE_STUDY, TAG_ROLE, TAG_TRIAL_NUMBER
from sweeps.query.base import TRIAL_FILTER, as_int, trial_or_missing
from sweeps.query.frames import raw_frame

__all__ = ["final_metrics", "make_client", "metric_history", "read_history", "run_params", "runs_and_keys",
           "search_trial_runs", "searched_names"]

#: ``search_runs`` filter selecting the study's parent run(s) of an experiment.
STUDY_FILTER = f"tags.`{TAG_ROLE}` = '{ROLE_STUDY}'"
#: The parent run's param holding the study's search space (JSON; ``sweeps.engine.runner.study_params``).
SEARCH_SPACE_PARAM = "search_space"

_SEARCH_PAGE = 1000


def make_client(uri: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def search_trial_runs(uri: str, experiment: str, client: Any = None) -> list[Any] | None:
    """All active trial runs of the experiment (one paginated search); None if no experiment."""
    client = client or make_client(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs(experiment_ids=[exp.experiment_id], filter_string=TRIAL_FILTER,
                                  max_results=_SEARCH_PAGE, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def run_params(runs: list[Any], names: list[str]) -> pd.DataFrame:
    """One row per run: ``run_id`` and the MLflow param ``names`` as logged (text; None where a run
    lacks one)."""
    rows = [{"run_id": r.info.run_id, **{k: r.data.params.get(k) for k in names}} for r in runs]
    return pd.DataFrame(rows, columns=["run_id", *names], dtype=object)


def searched_names(uri: str, experiment: str, client: Any = None) -> list[str] | None:
    """The parameter names the study searched: the keys of the ``search_space`` param of the
    experiment's parent run(s), in their order; None when no parent run has a readable one."""
    client = client or make_client(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    names: dict[str, None] = {}
    found = False
    for run in client.search_runs(experiment_ids=[exp.experiment_id], filter_string=STUDY_FILTER, max_results=100):
        try:
            space = json.loads(run.data.params[SEARCH_SPACE_PARAM])
        except (KeyError, ValueError):  # absent, or truncated by MLflow's param length limit
            continue
        if isinstance(space, dict):
            found = True
            names.update(dict.fromkeys(map(str, space)))
    return list(names) if found else None


def final_metrics(runs: list[Any]) -> pd.DataFrame:
    """One row per run: ``run_id``, ``trial`` (-1: no valid tag) and the final value of
    every metric key (NaN where a run lacks the key)."""
    rows = [{"run_id": r.info.run_id, "trial": trial_or_missing(as_int(r.data.tags.get(TAG_TRIAL_NUMBER))),
             **r.data.metrics} for r in runs]
    return pd.DataFrame(rows, columns=None if rows else ["run_id", "trial"]).astype({"trial": "int64"})


def runs_and_keys(
    uri: str, experiment: str, keys: list[str] | None, trials: list[int] | None, client: Any = None
) -> list[tuple[str, int, list[str]]]:
    """(run_id, trial, metric keys to read) for the selected trial runs: the run's keys
    (sorted), or those of ``keys`` it has."""
    runs = search_trial_runs(uri, experiment, client) or []
    wanted = set(trials) if trials is not None else None
    out = []
    for r in runs:
        number = as_int(r.data.tags.get(TAG_TRIAL_NUMBER))
        if wanted is not None and number not in wanted:
            continue
        run_keys = sorted(r.data.metrics) if keys is None else [k for k in keys if k in r.data.metrics]
        out.append((r.info.run_id, trial_or_missing(number), run_keys))
    return out


def metric_history(client: Any, run_id: str, key: str) -> list[Any]:
    """Every logged value of ``key`` in ``run_id`` (``Metric`` objects; MLflow pages through them)."""
    return list(client.get_metric_history(run_id, key))


def read_history(uri: str, experiment: str, keys: list[str] | None, trials: list[int] | None) -> pd.DataFrame:
    """The backend's ``read_history`` (see :mod:`sweeps.query.base`)."""
    client = make_client(uri)
    rows = [(run_id, number, mt)
            for run_id, number, run_keys in runs_and_keys(uri, experiment, keys, trials, client)
            for key in run_keys
            for mt in metric_history(client, run_id, key)]
    return raw_frame((r for r, _, _ in rows), (n for _, n, _ in rows), (m.step for _, _, m in rows),
                     (m.key for _, _, m in rows), (m.timestamp for _, _, m in rows),
                     (m.value for _, _, m in rows))

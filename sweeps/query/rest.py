"""The ``"http"`` backend: the tracking server's bulk history route, through MLflow's own REST helpers.

Route: ``GET /ajax-api/2.0/mlflow/metrics/get-history-bulk`` (:data:`ROUTE`), the one the MLflow
UI's run-comparison charts use: every value (never sampled) of one metric key for up to 100
runs per request, at most 25,000 rows per answer (MLflow's ``get_metric_history_bulk_handler``
cuts the rest off silently), answers sorted by run id. One request per metric key and chunk
of 100 runs; a full answer is read again for the runs it may lack, and a single run with more
values than that is read with ``MlflowClient.get_metric_history``.

Which MLflow servers serve it
    ``mlflow server`` serves ``get-history-bulk`` since mlflow/mlflow#7593 (December 2022, so
    the MLflow 2.x releases of 2023 on), first with a lower cap on run ids per request; 100 runs
    per request since mlflow/mlflow#11231 (February 2024, MLflow 2.11); verified here on MLflow
    3.17.2 (``mlflow/server/__init__.py``: the route; ``handlers.py``:
    ``get_metric_history_bulk_handler``, 100 run ids, 25,000 rows). It is an ``/ajax-api``
    route only (no ``/api/2.0`` twin). Its sibling ``/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval``
    (mlflow/mlflow#11182, MLflow 2.11 on; also under ``/api/2.0``) is *not* used: it samples
    each run down to at most 2,500 points (``MAX_RESULTS_PER_RUN``), so long histories would
    come back incomplete. A server (or a proxy in front of it) without the route answers 404,
    one with a lower run cap answers 400: both raise :class:`~sweeps.query.base.Unsupported`,
    and the caller falls back to the per-run API with a warning.

Credentials, TLS, retries and timeouts are MLflow's: requests go through
``mlflow.utils.rest_utils.http_request`` with the host credentials MLflow builds for the
tracking URI (:func:`host_creds`), so ``MLFLOW_TRACKING_USERNAME`` / ``_PASSWORD`` /
``_TOKEN``, ``~/.mlflow/credentials``, ``MLFLOW_TRACKING_INSECURE_TLS``,
``MLFLOW_TRACKING_SERVER_CERT_PATH`` / ``_CLIENT_CERT_PATH``, ``MLFLOW_TRACKING_AUTH`` and
``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` / ``_BACKOFF_FACTOR`` / ``_TIMEOUT`` apply exactly as they
do to ``MlflowClient``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pandas as pd

from sweeps import compat
from sweeps.query import client as api
from sweeps.query.base import Unsupported
from sweeps.query.frames import raw_frame
from sweeps.redaction import redact_url

__all__ = ["MAX_RESULTS", "MAX_RUNS", "ROUTE", "BulkHistory", "host_creds", "read_history"]

ROUTE = "/ajax-api/2.0/mlflow/metrics/get-history-bulk"
#: The route accepts at most this many run ids per request ...
MAX_RUNS = 100
#: ... and returns at most this many rows per request (``MAX_HISTORY_RESULTS`` in MLflow's
#: handler), cutting the rest off: an answer with exactly this many rows is read again.
MAX_RESULTS = 25000
_THREADS = 2  # the server answers one request at a time anyway; 2 overlaps the transfers

def host_creds(uri: str) -> Any:
    """The ``MlflowHostCreds`` MLflow uses for the tracking URI ``uri``.

    On the MLflow versions of :data:`sweeps.compat.CREDS_VERIFIED`: ``mlflow.utils.credentials.get_default_host_creds``
    (what MLflow's tracking REST store is built with for http(s) URIs; :func:`sweeps.compat.default_host_creds`).
    Elsewhere, or if that function is gone, the ``get_host_creds`` of the store ``MlflowClient(uri)`` talks to
    (a private attribute path: :func:`sweeps.compat.client_store_host_creds`): the same credentials by another
    road. Neither: :class:`~sweeps.query.base.Unsupported`.
    """
    creds = compat.default_host_creds(uri)
    if creds is not None:
        return creds
    creds = compat.client_store_host_creds(api.make_client(uri))
    if creds is None:
        raise Unsupported(f"no host credentials for {redact_url(uri)!r} from the installed MLflow's store")
    return creds


class BulkHistory:
    """Client of :data:`ROUTE` for one tracking server."""

    ROUTE = ROUTE

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.creds = host_creds(uri)

    def get(self, run_ids: Sequence[str], key: str) -> list[dict]:
        """One request: the rows of ``key`` for ``run_ids`` (<= 100); when exactly
        :data:`MAX_RESULTS` rows come back, the answer may have been cut off."""
        helpers = compat.mlflow_rest_helpers()
        if helpers is None:  # logged by compat
            raise Unsupported("the installed MLflow has no REST helpers where this reader expects them")
        http_request, verify_rest_response = helpers
        params: list[tuple[str, Any]] = [("run_id", rid) for rid in run_ids]
        params += [("metric_key", key), ("max_results", MAX_RESULTS)]
        resp = http_request(self.creds, self.ROUTE, "GET", params=params)
        if resp.status_code == 404 and not _is_mlflow_error(resp, "RESOURCE_DOES_NOT_EXIST"):
            raise Unsupported(f"GET {self.ROUTE}: HTTP 404 (the server does not serve the bulk route)")
        if resp.status_code == 400 and _is_mlflow_error(resp, "INVALID_PARAMETER_VALUE") \
                and "run_id" in resp.text:
            raise Unsupported(f"GET {self.ROUTE} with {len(run_ids)} runs: HTTP 400: {resp.text[:200]}")
        verify_rest_response(resp, self.ROUTE)  # any other error: MLflow's exception
        return resp.json().get("metrics", [])

    def complete(self, run_ids: Sequence[str], key: str) -> list[dict]:
        """Every value of ``key`` for ``run_ids`` (<= 100), re-reading cut-off answers."""
        done: list[dict] = []
        todo = [list(run_ids)]
        while todo:
            ids = todo.pop()
            rows = self.get(ids, key)
            if len(rows) < MAX_RESULTS:
                done += rows
                continue
            if len(ids) == 1:
                # >= 25,000 values of one run: the per-run API pages through them.
                done += self._per_run(ids[0], key)
                continue
            seen = [row["run_id"] for row in rows]
            if all(a <= b for a, b in zip(seen, seen[1:])):
                # MLflow answers sorted by run id (its SQL store and its fallback for
                # other stores both do), so only the last run seen can be cut off, and
                # runs before it are complete (or have no values).
                last = seen[-1]
                if seen[0] != last:
                    done += [row for row in rows if row["run_id"] != last]
                    rest = [rid for rid in ids if rid >= last]
                else:  # one run alone fills the answer
                    done += self._per_run(last, key)
                    rest = [rid for rid in ids if rid > last]
                if len(rest) < len(ids):
                    if rest:
                        todo.append(rest)
                    continue
            # not sorted as expected: split the runs in halves and read each again
            half = len(ids) // 2
            todo += [ids[half:], ids[:half]]
        return done

    def _per_run(self, run_id: str, key: str) -> list[dict]:
        return [{"run_id": run_id, "key": key, "step": mt.step, "timestamp": mt.timestamp, "value": mt.value}
                for mt in api.metric_history(api.make_client(self.uri), run_id, key)]


def _is_mlflow_error(resp: Any, code: str) -> bool:
    try:
        return json.loads(resp.text).get("error_code") == code
    except (ValueError, AttributeError):
        return False


def read_history(uri: str, experiment: str, keys: list[str] | None, trials: list[int] | None) -> pd.DataFrame:
    """The backend's ``read_history`` (see :mod:`sweeps.query.base`)."""
    bulk = BulkHistory(uri)
    selected = api.runs_and_keys(uri, experiment, keys, trials)
    trial_of = {rid: number for rid, number, _ in selected}
    jobs: list[tuple[list[str], str]] = []
    for i in range(0, len(selected), MAX_RUNS):
        chunk_keys: dict[str, list[str]] = {}
        for rid, _, run_keys in selected[i: i + MAX_RUNS]:
            for k in run_keys:
                chunk_keys.setdefault(k, []).append(rid)
        jobs += [(rids, k) for k, rids in chunk_keys.items()]
    # the first request alone: a server without the route is found out before any other is sent
    results = [bulk.complete(*jobs[0])] if jobs else []
    if len(jobs) > 1:
        with ThreadPoolExecutor(max_workers=_THREADS) as pool:
            results += pool.map(lambda job: bulk.complete(*job), jobs[1:])
    rows = pd.DataFrame([row for res in results for row in res],
                        columns=["run_id", "key", "step", "timestamp", "value"])
    return raw_frame(rows["run_id"], rows["run_id"].map(trial_of), rows["step"].fillna(0), rows["key"],
                     rows["timestamp"], rows["value"].astype("float64"))  # "NaN" / "Infinity" strings too

"""sweeps.query.rest: the ``"http"`` backend (the tracking server's bulk history route through MLflow's
REST helpers): against a real ``mlflow server``, and against a small fake server that records what
it is sent (credentials, paths) and answers as told (errors, retries, a missing route)."""

from __future__ import annotations

import base64
import http.server
import json
import threading
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("optuna")
mlflow = pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Metric  # noqa: E402
from servicekit import MlflowServer  # noqa: E402
from test_reading import TS0, Store, _values, assert_same_long, expected_long, log_trial_run  # noqa: E402

from sweeps import compat, query  # noqa: E402
from sweeps.query import rest  # noqa: E402

# ---------------------------------------------------------------------------- fake server


class FakeServer:
    """Answers every GET from ``answers`` (status, JSON body), the last one for ever; records requests."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, list[str]], dict[str, str]]] = []
        self.answers: list[tuple[int, dict]] = [(200, {"metrics": []})]
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                parts = urlsplit(self.path)
                fake.requests.append((parts.path, parse_qs(parts.query), dict(self.headers)))
                status, body = fake.answers.pop(0) if len(fake.answers) > 1 else fake.answers[0]
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake(monkeypatch) -> Iterator[FakeServer]:
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN",
                 "MLFLOW_TRACKING_INSECURE_TLS", "MLFLOW_TRACKING_SERVER_CERT_PATH", "MLFLOW_TRACKING_AUTH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("HOME", "/nonexistent")  # no ~/.mlflow/credentials
    server = FakeServer()
    yield server
    server.close()


ROW = {"run_id": "r1", "key": "train/eta", "step": 1, "timestamp": 5, "value": "NaN"}


def test_requests_carry_mlflows_basic_auth_and_the_uri_prefix(fake, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "s3cret:x")
    fake.answers = [(200, {"metrics": [ROW]})]
    rows = rest.BulkHistory(fake.url + "/prefix/").get(["r1", "r2"], "train/eta")
    assert rows == [ROW]
    path, params, headers = fake.requests[-1]
    assert path == "/prefix" + rest.ROUTE == "/prefix/ajax-api/2.0/mlflow/metrics/get-history-bulk"
    assert params == {"run_id": ["r1", "r2"], "metric_key": ["train/eta"], "max_results": [str(rest.MAX_RESULTS)]}
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"alice:s3cret:x").decode()
    assert "User-Agent" in headers  # MLflow's own request headers


def test_requests_carry_mlflows_bearer_token(fake, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "tok")
    rest.BulkHistory(fake.url).get(["r1"], "train/eta")
    assert fake.requests[-1][2]["Authorization"] == "Bearer tok"


def test_tls_settings_follow_mlflow(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_SERVER_CERT_PATH", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_INSECURE_TLS", "true")
    assert rest.host_creds("https://mlflow.example").verify is False
    monkeypatch.delenv("MLFLOW_TRACKING_INSECURE_TLS")
    monkeypatch.setenv("MLFLOW_TRACKING_SERVER_CERT_PATH", str(tmp_path / "ca.pem"))
    assert rest.host_creds("https://mlflow.example").verify == str(tmp_path / "ca.pem")


def test_host_creds_outside_the_verified_versions_come_from_the_clients_store(monkeypatch, caplog):
    """The guarded fallback: on an MLflow version outside CREDS_VERIFIED the credentials come from
    the REST store MlflowClient builds for the URI, and they are the same (with compat's WARNING, once)."""
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "bob")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "pw")
    monkeypatch.setenv("MLFLOW_TRACKING_INSECURE_TLS", "true")
    monkeypatch.setattr(compat, "_WARNED", set())
    uri = "http://127.0.0.1:1/p"
    verified = rest.host_creds(uri)
    called = []
    original = compat.client_store_host_creds
    monkeypatch.setattr(compat, "client_store_host_creds", lambda c: called.append(c) or original(c))
    assert rest.host_creds(uri) is not None and not called  # 3.17: the public function
    monkeypatch.setattr(compat, "mlflow_version", lambda: (9, 0))
    with caplog.at_level("WARNING", logger="sweeps.compat"):
        other = rest.host_creds(uri)
        rest.host_creds(uri)
    assert len(called) == 2
    assert len([r for r in caplog.records if r.name == "sweeps.compat"]) == 1
    for attr in ("host", "username", "password", "token", "verify", "auth", "client_cert_path"):
        assert getattr(other, attr) == getattr(verified, attr), attr


def test_no_host_creds_at_all_is_unsupported(monkeypatch):
    monkeypatch.setattr(compat, "mlflow_version", lambda: (9, 0))
    monkeypatch.setattr(compat, "client_store_host_creds", lambda c: None)
    with pytest.raises(rest.Unsupported, match="no host credentials"):
        rest.host_creds("http://127.0.0.1:1/p")


def test_mlflow_version_is_parsed(monkeypatch):
    monkeypatch.setattr(mlflow, "__version__", "3.17.2")
    assert compat.mlflow_version() == (3, 17)
    monkeypatch.setattr(mlflow, "__version__", "4.0rc1")
    assert compat.mlflow_version() == (4, 0)
    monkeypatch.setattr(mlflow, "__version__", "5")
    assert compat.mlflow_version() == (5, 0)


def test_retries_follow_mlflows_settings(fake, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    fake.answers = [(503, {"error_code": "TEMPORARILY_UNAVAILABLE"}), (200, {"metrics": [ROW]})]
    assert rest.BulkHistory(fake.url).get(["r1"], "train/eta") == [ROW]
    assert len(fake.requests) == 2


def test_other_errors_raise_mlflows_exception(fake):
    fake.answers = [(403, {"error_code": "PERMISSION_DENIED", "message": "boom"})]
    with pytest.raises(mlflow.exceptions.RestException, match="PERMISSION_DENIED: boom"):
        rest.BulkHistory(fake.url).get(["r1"], "train/eta")
    fake.answers = [(500, {"error_code": "INTERNAL_ERROR", "message": "boom"})]
    with pytest.raises(mlflow.exceptions.MlflowException, match="500"):  # after MLflow's retries
        rest.BulkHistory(fake.url).get(["r1"], "train/eta")


@pytest.mark.parametrize("answer", [
    (404, {"error_code": "ENDPOINT_NOT_FOUND"}),
    (400, {"error_code": "INVALID_PARAMETER_VALUE",
           "message": "GetMetricHistoryBulk request cannot specify more than 10 run_ids. Received 11 run_ids."}),
])
def test_a_missing_route_or_a_lower_run_cap_is_unsupported(fake, answer):
    fake.answers = [answer]
    with pytest.raises(rest.Unsupported):
        rest.BulkHistory(fake.url).get(["r1"], "train/eta")


def test_read_history_converts_the_rows(monkeypatch):
    """Rows of several chunks and keys become one raw frame; "NaN" strings become NaN."""
    monkeypatch.setattr(rest.api, "runs_and_keys", lambda *a: [("r1", 3, ["train/eta"]), ("r2", -1, [])])
    monkeypatch.setattr(rest, "host_creds", lambda uri: None)
    monkeypatch.setattr(rest.BulkHistory, "get", lambda self, ids, key: [dict(ROW, value=0.5), ROW])
    raw = rest.read_history("http://127.0.0.1:1", "sweeps/x", None, None)
    assert raw["trial"].tolist() == [3, 3] and raw["run_id"].tolist() == ["r1", "r1"]
    assert raw["value"].iloc[0] == 0.5 and np.isnan(raw["value"].iloc[1])


# -------------------------------------------------------------------------- real server

N_HTTP_RUNS, N_HTTP_EPOCHS, HTTP_KEYS, LONG_STEPS = 120, 3, ["eval/accuracy", "train/total_loss"], 2600


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A real ``mlflow server`` over a SQLite store holding 120 trial runs (+ a long run)."""
    tmp = tmp_path_factory.mktemp("served")
    store = Store(uri=f"sqlite:///{tmp}/mlflow.db", path=tmp / "mlflow.db")
    client = MlflowClient(tracking_uri=store.uri)  # creates (migrates) the store first
    rng = np.random.default_rng(7)
    exp = client.create_experiment("sweeps/wide", artifact_location=str(tmp / "artifacts"))
    parent = client.create_run(exp, tags={"sweeps.role": "study", "sweeps.study": "wide"})
    for n in range(N_HTTP_RUNS):
        log_trial_run(client, store, exp, parent.info.run_id, "wide", n, N_HTTP_EPOCHS, HTTP_KEYS,
                      rng, {"eta": 0.5}, nan_at=[("eval/accuracy", 2)] if n % 17 == 0 else [])
    # More steps than the UI's bulk-interval route returns per run (2500, sampled): all
    # must come back.
    long_store = Store(uri=store.uri, path=store.path)
    exp_long = client.create_experiment("sweeps/long", artifact_location=str(tmp / "artifacts"))
    run = client.create_run(exp_long, tags={"sweeps.role": "trial", "sweeps.trial_number": "0"})
    vals = _values(rng, LONG_STEPS)
    metrics = [Metric("train/total_loss", float(v), TS0 + i, i + 1) for i, v in enumerate(vals)]
    for i in range(0, len(metrics), 1000):
        client.log_batch(run.info.run_id, metrics=metrics[i:i + 1000])
    long_store.oracle = {(run.info.run_id, "train/total_loss", i + 1): float(v) for i, v in enumerate(vals)}
    long_store.trial_of = {run.info.run_id: 0}
    with MlflowServer(store.uri, tmp / "artifacts", tmp / "server.log") as server:
        yield server.url, store, long_store


@pytest.mark.services
def test_history_http_equals_sql_equals_logged(served, monkeypatch):
    url, store, long_store = served
    requests_made = []
    original_get = rest.BulkHistory.get

    def counting_get(self, run_ids, key):
        requests_made.append((len(run_ids), key))
        return original_get(self, run_ids, key)

    monkeypatch.setattr(rest.BulkHistory, "get", counting_get)
    want = expected_long(store)
    via_http = query.history("wide", tracking_uri=url, method="http")
    # 120 runs -> chunks of 100 and 20, one request per key and chunk
    assert sorted(requests_made) == sorted((n, k) for n in (100, 20) for k in HTTP_KEYS)
    via_auto = query.history("wide", tracking_uri=url)  # auto -> http for http URIs
    via_sql = query.history("wide", tracking_uri=store.uri, method="sql")
    assert len(want) == N_HTTP_RUNS * N_HTTP_EPOCHS * len(HTTP_KEYS)
    assert_same_long(via_http, want)
    assert_same_long(via_sql, want)
    pd.testing.assert_frame_equal(via_http, via_sql)
    pd.testing.assert_frame_equal(via_auto, via_http)
    sel = query.history("wide", tracking_uri=url, method="http", metrics=["eval/accuracy"],
                        trials=range(100, 120))
    assert_same_long(sel, expected_long(store, keys=["eval/accuracy"], trials=set(range(100, 120))))

    requests_made.clear()
    got = query.history("long", tracking_uri=url, method="http")
    # more values than the bulk-interval route returns per run (2500, sampled):
    # get-history-bulk returns them all, in one request
    assert len(got) == LONG_STEPS
    assert requests_made == [(1, "train/total_loss")]
    assert_same_long(got, expected_long(long_store))


@pytest.mark.services
@pytest.mark.parametrize("sorted_answers", [True, False])
def test_history_http_rereads_cut_off_answers(served, monkeypatch, sorted_answers):
    """Answers cut off at the row cap are read again until complete: from the last
    run seen when the server answers sorted by run id, else by halves; a single run
    over the cap through the per-run API."""
    url, store, long_store = served
    cap = 100
    monkeypatch.setattr(rest, "MAX_RESULTS", cap)  # also the max_results sent
    requests_made, per_run = [], []
    original_get, original_per_run = rest.BulkHistory.get, rest.BulkHistory._per_run

    def get(self, run_ids, key):
        rows = original_get(self, run_ids, key)
        assert len(rows) <= cap  # the server honours max_results
        requests_made.append((len(run_ids), key, len(rows)))
        return rows if sorted_answers else rows[::-1]  # reversed: no longer sorted by run

    def counting_per_run(self, run_id, key):
        per_run.append((run_id, key))
        return original_per_run(self, run_id, key)

    monkeypatch.setattr(rest.BulkHistory, "get", get)
    monkeypatch.setattr(rest.BulkHistory, "_per_run", counting_per_run)
    got = query.history("wide", tracking_uri=url, method="http")
    assert_same_long(got, expected_long(store))
    pd.testing.assert_frame_equal(got, query.history("wide", tracking_uri=store.uri, method="sql"))
    assert any(n == cap for _, _, n in requests_made)  # some answers were cut off ...
    assert not per_run  # ... and every run has fewer values than the cap
    if sorted_answers:
        # 100 runs x 3 values at 100 rows per answer: 33 complete runs per request
        # (the last run seen may be cut off), so 4 requests per key for that chunk
        per_key = [n for n, k, _ in requests_made if k == HTTP_KEYS[0]]
        assert sorted(per_key) == sorted([100, 67, 34, 1, 20])

    requests_made.clear()
    got = query.history("long", tracking_uri=url, method="http")
    assert_same_long(got, expected_long(long_store))
    assert requests_made == [(1, "train/total_loss", cap)]
    assert [key for _, key in per_run] == ["train/total_loss"]


@pytest.mark.services
def test_history_http_falls_back_to_api_without_the_route(served, monkeypatch):
    url, store, _ = served
    monkeypatch.setattr(rest.BulkHistory, "ROUTE", "/ajax-api/2.0/mlflow/metrics/no-such-route")
    calls = []
    original_get = rest.BulkHistory.get
    monkeypatch.setattr(rest.BulkHistory, "get", lambda self, *a: calls.append(a) or original_get(self, *a))
    with pytest.warns(RuntimeWarning, match="HTTP 404.*falling back"):
        got = query.history("wide", tracking_uri=url, method="http", trials=range(10))
    assert_same_long(got, expected_long(store, trials=set(range(10))))
    assert len(calls) == 1  # the first request found the route missing: no other was sent


def test_mlflow_without_its_rest_helpers_is_unsupported(monkeypatch):
    """Where MLflow's REST helpers moved (compat logs it), the bulk route is not used: the reader falls back."""
    monkeypatch.setattr(compat, "mlflow_rest_helpers", lambda: None)
    with pytest.raises(rest.Unsupported, match="REST helpers"):
        rest.BulkHistory("http://127.0.0.1:1").get(["r1"], "train/eta")

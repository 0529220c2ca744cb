"""Credentials on the tracking server, and no password ever shown (issue #16), against real servers.

A real ``mlflow server --app-name basic-auth`` on loopback (servicekit's :class:`MlflowServer` with
:class:`BasicAuth`; required in CI): the workers log in as a user of their own (not the admin); a sweep with
their credentials logs every epoch; without credentials or with a wrong password ``sweeps run`` and ``sweeps
history`` stop at once with one line and exit 5; a request without credentials cannot create or change a run.

The canary test puts one password in the study's storage URL (PostgreSQL: trust auth here, so any password
logs in) and another in the tracking URI (the workers' real password), runs a whole sweep, every reading
command, and failing ones, and greps everything they produced: stdout, stderr, every file under the working
directory (logs, plots, exports), the tracking server's log, its backend database and artifacts, and every
row of the study's database (Optuna attributes included).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from servicekit import BasicAuth, MlflowServer, free_port, pg_database

pytestmark = [pytest.mark.services, pytest.mark.slow]

BASE = {
    "name": "secure", "seed": 5,
    "data": {"source": "digits", "n_train": 200, "n_eval": 60},
    "network": {"hidden": [8]},
    "training": {"epochs": 3, "eta": 0.5, "batch_size": 20, "lmbda": 1.0},
    "search_space": {"eta": {"type": "float", "low": 0.1, "high": 2.0, "log": True}},
    "study": {"n_trials": 3, "workers": 2, "sampler": {"name": "random"}, "pruner": {"name": "none"}},
}
EPOCHS = BASE["training"]["epochs"]
WORKER = "sweeps-worker"
#: A command that hangs fails the test here: "within seconds" is checked as "well within this".
QUICK_S = 90


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SWEEPS_", "PG"))}
    env.update(MPLBACKEND="Agg", PYTHONUNBUFFERED="1", MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", **extra)
    return env


def _sweeps(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sweeps", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _describe(p: subprocess.CompletedProcess) -> str:
    return f"{p.args}: exit {p.returncode}\n--- stdout\n{p.stdout[-3000:]}\n--- stderr\n{p.stderr[-3000:]}"


def _one_error_line(p: subprocess.CompletedProcess) -> str:
    """The failure's stderr is exactly one ``error:`` line (no traceback); returns it."""
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), _describe(p)
    assert "Traceback" not in p.stdout + p.stderr
    return lines[0]


@contextlib.contextmanager
def _as(env: dict[str, str]) -> Iterator[None]:
    from sweeps.stores import restore_environment, set_environment

    saved = set_environment(env)
    try:
        yield
    finally:
        restore_environment(saved)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[MlflowServer]:
    """One basic-auth tracking server for the module, with the workers' user (password: ``server.worker_password``)."""
    import mlflow.server

    root = tmp_path_factory.mktemp("basic-auth")
    srv = MlflowServer(f"sqlite:///{root / 'mlflow.db'}", root / "artifacts", root / "mlflow.log",
                       auth=BasicAuth(auth_cache_ttl_seconds=60))  # as deploy/mlflow/basic_auth.ini
    with srv:
        srv.worker_password = secrets.token_hex(12)  # type: ignore[attr-defined]
        with _as(srv.client_env()):
            users = mlflow.server.get_app_client("basic-auth", tracking_uri=srv.url)
            users.create_user(WORKER, srv.worker_password)  # type: ignore[attr-defined]
            assert users.get_user(WORKER).is_admin is False
        yield srv


def _admin_client(srv: MlflowServer):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=srv.url)


def _config(directory: Path, name: str, **changes) -> Path:
    data = json.loads(json.dumps(BASE))
    data["name"] = name
    for key, value in changes.items():
        data[key] = {**data.get(key, {}), **value}
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_sweep_with_the_workers_credentials_logs_every_epoch(server, tmp_path) -> None:
    import optuna

    cfg = _config(tmp_path, "secure-ok")
    env = _env(**server.client_env(WORKER, server.worker_password))
    run = _sweeps(["run", str(cfg), "-q"], tmp_path, env)
    assert run.returncode == 0, _describe(run)
    study = optuna.load_study(study_name="secure-ok", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 3 and all(t.state.name == "COMPLETE" for t in trials)
    with _as(server.client_env()):  # read back as the admin
        client = _admin_client(server)
        exp = client.get_experiment_by_name("sweeps/secure-ok")
        runs = {r.info.run_id: r for r in client.search_runs([exp.experiment_id])
                if r.data.tags.get("sweeps.role") == "trial"}
        assert len(runs) == 3
        for t in trials:
            history = client.get_metric_history(t.user_attrs["mlflow_run_id"], "eval/accuracy")
            assert sorted(m.step for m in history) == list(range(EPOCHS + 1))  # every epoch, epoch 0 included
            assert runs[t.user_attrs["mlflow_run_id"]].info.status == "FINISHED"
    # the reading commands with the same (non-admin) credentials
    hist = _sweeps(["history", "secure-ok", "-m", "eval/accuracy"], tmp_path, env, timeout=QUICK_S)
    assert hist.returncode == 0, _describe(hist)
    assert len(hist.stdout.strip().splitlines()) == 1 + 3 * (EPOCHS + 1)  # header, a row per trial and epoch


@pytest.mark.parametrize("who", ["none", "wrong password"])
def test_without_or_with_wrong_credentials_run_and_history_stop_at_once_with_one_line(server, tmp_path, who) -> None:
    creds = {} if who == "none" else {"MLFLOW_TRACKING_USERNAME": WORKER, "MLFLOW_TRACKING_PASSWORD": "not-its-pw-1"}
    env = _env(MLFLOW_TRACKING_URI=server.url, **creds)
    run = _sweeps(["run", str(_config(tmp_path, "secure-refused")), "-q"], tmp_path, env, timeout=QUICK_S)
    history = _sweeps(["history", "secure-ok"], tmp_path, env, timeout=QUICK_S)
    for p in (run, history):
        assert p.returncode == 5, _describe(p)
        line = _one_error_line(p)
        assert "HTTP 401" in line and server.url in line
        if who == "none":
            assert "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" in line
        else:
            assert f"MLFLOW_TRACKING_USERNAME={WORKER!r}" in line and "check MLFLOW_TRACKING_PASSWORD" in line
            assert "not-its-pw-1" not in p.stdout + p.stderr
    with _as(server.client_env()):
        assert _admin_client(server).get_experiment_by_name("sweeps/secure-refused") is None  # nothing created


def test_a_request_without_credentials_cannot_create_or_change_a_run(server) -> None:
    with _as(server.client_env(WORKER, server.worker_password)):
        client = _admin_client(server)
        exp_id = client.create_experiment(f"sweeps/unauthenticated-{secrets.token_hex(4)}")
        run_id = client.create_run(exp_id).info.run_id
    api = "/api/2.0/mlflow"
    for auth in (None, (WORKER, "wrong-password-1")):
        assert server.status_of(f"{api}/runs/create", auth, {"experiment_id": exp_id}) == 401
        assert server.status_of(f"{api}/runs/log-metric", auth, {"run_id": run_id, "key": "m", "value": 1.0,
                                                                 "timestamp": 0, "step": 0}) == 401
        assert server.status_of(f"{api}/runs/update", auth, {"run_id": run_id, "status": "FAILED"}) == 401
        assert server.status_of(f"{api}/experiments/create", auth, {"name": f"intruder-{secrets.token_hex(4)}"}) == 401
    assert server.status_of(f"{api}/runs/log-metric", (WORKER, server.worker_password),  # the oracle: a good login
                            {"run_id": run_id, "key": "ok", "value": 2.0, "timestamp": 0, "step": 0}) == 200
    with _as(server.client_env()):
        run = _admin_client(server).get_run(run_id)
        assert run.data.metrics == {"ok": 2.0} and run.info.status == "RUNNING"
        assert len(_admin_client(server).search_runs([exp_id])) == 1


def _all_rows(url: str) -> str:
    """Every row of every table of a database, as text."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        meta = sa.MetaData()
        meta.reflect(engine)
        with engine.connect() as conn:
            return "\n".join(str(row) for table in meta.sorted_tables for row in conn.execute(table.select()))
    finally:
        engine.dispose()


def _files_text(*roots: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for root in roots for p in Path(root).rglob("*") if p.is_file()}


def test_a_canary_password_is_never_shown_stored_or_logged(server, tmp_path) -> None:
    import mlflow.server

    db_canary, tracking_canary, wrong_canary = (f"Canary{secrets.token_hex(6)}" for _ in range(3))
    user = f"canary-{secrets.token_hex(3)}"
    with _as(server.client_env()):
        mlflow.server.get_app_client("basic-auth", tracking_uri=server.url).create_user(user, tracking_canary)
    host = server.url.removeprefix("http://")
    tracking_uri = f"http://{user}:{tracking_canary}@{host}"
    work = tmp_path / "work"
    work.mkdir()
    outputs: list[subprocess.CompletedProcess] = []
    with pg_database("sweeps_test_canary") as plain_url:
        storage = plain_url.replace("postgresql+psycopg2://postgres@", f"postgresql+psycopg2://postgres:{db_canary}@")
        env = _env(SWEEPS_STORAGE=storage, MLFLOW_TRACKING_URI=tracking_uri)
        cfg = str(_config(work, "secure-canary", study={"storage": storage}))  # the parent run's params hold it

        def ok(args: list[str], **kw) -> subprocess.CompletedProcess:
            p = _sweeps(args, work, kw.pop("env", env), **kw)
            outputs.append(p)
            assert p.returncode == 0, _describe(p)
            return p

        ok(["validate", cfg])
        ok(["prepare", cfg])
        shown = ok(["run", cfg])  # with its progress lines
        assert "postgresql+psycopg2://postgres:***@" in shown.stdout and f"{user}:***@" in shown.stdout
        ok(["status", "secure-canary"])
        ok(["best", "secure-canary", "--json"])
        ok(["trials", "secure-canary", "-o", str(work / "trials.csv")])
        ok(["history", "secure-canary", "--wide", "-o", str(work / "history.csv")])
        ok(["explain", "secure-canary"])
        ok(["plots", "secure-canary", "--trial", "0", "--out", str(work / "plots")])
        ok(["ui", "secure-canary"])  # a server already: prints its links
        # ... and failing ones: a wrong tracking password (also with --debug's traceback), a dead database
        wrong = _env(SWEEPS_STORAGE=storage, MLFLOW_TRACKING_URI=f"http://{user}:{wrong_canary}@{host}")
        for args in (["run", cfg, "-q"], ["--debug", "explain", "secure-canary"]):
            p = _sweeps(args, work, wrong, timeout=QUICK_S)
            outputs.append(p)
            assert p.returncode == 5, _describe(p)
        dead = storage.replace(plain_url.split("@")[1].split("/")[0], f"127.0.0.1:{free_port()}")
        for args in (["run", cfg, "-q"], ["--debug", "status"]):
            p = _sweeps(args, work, _env(SWEEPS_STORAGE=dead, MLFLOW_TRACKING_URI=tracking_uri), timeout=QUICK_S)
            outputs.append(p)
            assert p.returncode == 3 and "postgres:***@127.0.0.1:" in p.stderr, _describe(p)
        assert "Traceback" in outputs[-1].stderr  # --debug shows one, masked
        study_rows = _all_rows(plain_url)  # every Optuna row: attributes, params, values
    assert "sweeps.mlflow_parent_run_id" in study_rows  # the dump is real
    places: dict[str, bytes] = {}
    for p in outputs:
        places[f"stdout of {p.args[3:]}"] = p.stdout.encode()
        places[f"stderr of {p.args[3:]}"] = p.stderr.encode()
    places.update({str(k): v for k, v in _files_text(work, server.log_path.parent).items()  # MLflow's db and log too
                   if str(k) != cfg})  # but the user's own config file, which holds the storage URL
    places["the study database"] = study_rows.encode()
    with _as(server.client_env()):
        client = _admin_client(server)
        exp = client.get_experiment_by_name("sweeps/secure-canary")
        for run in client.search_runs([exp.experiment_id]):
            places[f"run {run.info.run_id} params/tags"] = json.dumps([run.data.params, run.data.tags]).encode()
    assert any(b"png" in k.encode() or k.endswith(".png") for k in places), "the plots were written"
    for canary in (db_canary, tracking_canary, wrong_canary):
        leaks = [where for where, data in places.items() if canary.encode() in data]
        assert not leaks, f"a canary password appears in: {leaks}"

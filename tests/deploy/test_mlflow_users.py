"""deploy/mlflow/add_user.py against a real ``mlflow server --app-name basic-auth`` on loopback.

One basic-auth server (SQLite backend store and user store in a temporary directory, a fresh random
admin password; ``tests/servicekit.py``) is shared by the module and stopped at its end. Each test
adds a user of its own. add_user.py runs as a subprocess with the admin's credentials in its
environment, as docker-compose.yml's ``mlflow-users`` and the Kubernetes Job ``mlflow-users`` run it:
the user it makes is not an admin and can do what the sweeps workers do (create the study's
experiment, its runs, log metrics; ``sweeps prepare`` and ``sweeps run`` end to end), running it
again is harmless and sets a changed password, and a failure is one line on stderr that shows no
password. Without a valid login the server answers 401 and nothing is created. The last test puts both stores on
PostgreSQL behind a real PgBouncer with the shipped settings, as the recipes do.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from servicekit import (
    BasicAuth,
    MlflowServer,
    PgBouncer,
    database_name,
    free_port,
    pg_database,
    pgbouncer_settings,
)

pytestmark = pytest.mark.services

REPO = Path(__file__).resolve().parents[2]
ADD_USER = REPO / "deploy" / "mlflow" / "add_user.py"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    directory = tmp_path_factory.mktemp("basic_auth_server")
    # auth_cache_ttl_seconds as deploy/mlflow/basic_auth.ini sets it
    with MlflowServer(f"sqlite:///{directory / 'mlflow.db'}", directory / "artifacts", directory / "server.log",
                      auth=BasicAuth(auth_cache_ttl_seconds=60)) as srv:
        yield srv


def _clean_env() -> dict[str, str]:
    """This process's environment without anything that points MLflow or sweeps elsewhere or logs in."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SWEEPS_"))}


def add_user(server: MlflowServer, user: str, password: str, *, admin_password: str | None = None,
             **extra: str | None) -> subprocess.CompletedProcess[str]:
    """Run add_user.py as the admin (or with ``admin_password``), to give ``user`` the password ``password``."""
    env = {**_clean_env(), **server.client_env(password=admin_password), "SWEEPS_MLFLOW_USER": user,
           "SWEEPS_MLFLOW_USER_PASSWORD": password, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", **extra}
    env = {k: v for k, v in env.items() if v is not None}
    return subprocess.run([sys.executable, str(ADD_USER)], env=env, capture_output=True, text=True, timeout=120,
                          check=False)


def new_user() -> tuple[str, str]:
    return f"worker-{uuid.uuid4().hex[:8]}", secrets.token_hex(12)


def status(server: MlflowServer, path: str, login: tuple[str, str] | None = None, body: dict | None = None) -> int:
    """The HTTP status of one request to the tracking API, with a basic-auth login or none."""
    return server.status_of(path, login, body)


SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"


def as_user(monkeypatch: pytest.MonkeyPatch, server: MlflowServer, user: str, password: str) -> None:
    """Make this process's MLflow clients log in as ``user`` (MLflow reads the variables at each request)."""
    for key, value in server.client_env(user, password).items():
        monkeypatch.setenv(key, value)


def admin_client(server: MlflowServer, monkeypatch: pytest.MonkeyPatch) -> Any:
    from mlflow.server import get_app_client

    as_user(monkeypatch, server, server.auth.admin_username, server.auth.admin_password)
    return get_app_client("basic-auth", tracking_uri=server.url)


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


def test_add_user_creates_a_user_that_is_not_admin_and_can_log_a_run(server, monkeypatch):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    user, password = new_user()
    result = add_user(server, user, password)
    assert result.returncode == 0, result.stderr
    line = one_line(result.stdout)
    assert line.startswith("add_user.py: created user") and repr(user) in line and "not an admin" in line
    assert result.stderr == ""
    assert password not in result.stdout and server.auth.admin_password not in result.stdout

    admin = admin_client(server, monkeypatch)
    assert admin.get_user(user).is_admin is False

    # what the workers do: create their study's experiment, a run, log a metric, end the run
    as_user(monkeypatch, server, user, password)
    client = MlflowClient(tracking_uri=server.url)
    experiment_id = client.create_experiment(f"sweeps/{user}")
    run = client.create_run(experiment_id)
    client.log_metric(run.info.run_id, "eval/accuracy", 0.75, step=1)
    client.set_terminated(run.info.run_id)
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "eval/accuracy")] == [(1, 0.75)]
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
    # ... and nothing an admin does
    with pytest.raises(MlflowException) as refused:
        admin.create_user(f"{user}-x", secrets.token_hex(12))
    assert refused.value.get_http_status_code() == 403

    admin = admin_client(server, monkeypatch)
    assert admin.get_user_permission(user, "experiment", experiment_id).permission == "MANAGE"


def test_add_user_again_is_idempotent_and_a_changed_password_takes_effect(server):
    user, password = new_user()
    assert add_user(server, user, password).returncode == 0
    again = add_user(server, user, password)
    assert again.returncode == 0, again.stderr
    assert "exists (not an admin)" in one_line(again.stdout) and password not in again.stdout
    assert status(server, SEARCH, (user, password)) == 200

    changed = secrets.token_hex(12)
    result = add_user(server, user, changed)
    assert result.returncode == 0, result.stderr
    assert changed not in result.stdout and password not in result.stdout
    assert status(server, SEARCH, (user, changed)) == 200
    assert status(server, SEARCH, (user, password)) == 401  # auth_cache_ttl_seconds = 0 here


def test_a_wrong_admin_password_fails_with_one_line_and_shows_no_password(server, monkeypatch):
    from mlflow.exceptions import MlflowException

    user, password = new_user()
    wrong = secrets.token_hex(12)
    result = add_user(server, user, password, admin_password=wrong)
    assert result.returncode == 1
    assert result.stdout == ""
    line = one_line(result.stderr)
    assert line.startswith("add_user.py: ") and "401" in line and "Traceback" not in result.stderr
    for secret in (wrong, password, server.auth.admin_password):
        assert secret not in result.stdout + result.stderr
    with pytest.raises(MlflowException) as missing:
        admin_client(server, monkeypatch).get_user(user)
    assert missing.value.error_code == "RESOURCE_DOES_NOT_EXIST"


def test_add_user_as_a_user_that_is_not_admin_is_refused(server):
    user, password = new_user()
    assert add_user(server, user, password).returncode == 0
    other, other_password = new_user()
    result = add_user(server, other, other_password, MLFLOW_TRACKING_USERNAME=user, MLFLOW_TRACKING_PASSWORD=password)
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert f"{user!r} is not an admin" in line and "403" in line
    assert password not in result.stderr and other_password not in result.stderr


def test_add_user_refuses_to_make_the_admin_its_user(server):
    result = add_user(server, server.auth.admin_username, secrets.token_hex(12))
    assert result.returncode == 2
    assert "the workers need a user of their own" in one_line(result.stderr)
    assert status(server, SEARCH, (server.auth.admin_username, server.auth.admin_password)) == 200  # unchanged


@pytest.mark.parametrize("case", ["no-uri", "no-admin-password", "no-user", "no-password", "short-password",
                                  "not-http", "unreachable"])
def test_add_user_fails_with_one_line_naming_the_problem(case):
    """Before (or without) any answer from a server: one line on stderr, exit 2 for a setting, 1 for the network."""
    secret = secrets.token_hex(12)
    env = {**_clean_env(), "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}", "MLFLOW_TRACKING_USERNAME": "admin",
           "MLFLOW_TRACKING_PASSWORD": secret, "SWEEPS_MLFLOW_USER": "sweeps-worker",
           "SWEEPS_MLFLOW_USER_PASSWORD": secret[::-1], "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    change, expected, code = {
        "no-uri": ({"MLFLOW_TRACKING_URI": None}, "MLFLOW_TRACKING_URI is not set", 2),
        "no-admin-password": ({"MLFLOW_TRACKING_PASSWORD": None}, "MLFLOW_TRACKING_PASSWORD is not set", 2),
        "no-user": ({"SWEEPS_MLFLOW_USER": ""}, "SWEEPS_MLFLOW_USER is not set", 2),
        "no-password": ({"SWEEPS_MLFLOW_USER_PASSWORD": None}, "SWEEPS_MLFLOW_USER_PASSWORD is not set", 2),
        "short-password": ({"SWEEPS_MLFLOW_USER_PASSWORD": "a" * 11}, "shorter than 12 characters", 2),
        "not-http": ({"MLFLOW_TRACKING_URI": "sqlite:///mlflow.db"}, "http(s)://", 2),
        "unreachable": ({}, "cannot reach the tracking server", 1),
    }[case]
    env.update(change)
    env = {k: v for k, v in env.items() if v is not None}
    result = subprocess.run([sys.executable, str(ADD_USER)], env=env, capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == code, result.stderr
    assert result.stdout == ""
    line = one_line(result.stderr)
    assert expected in line
    assert secret not in result.stderr and secret[::-1] not in result.stderr


def test_without_a_login_the_server_answers_401_and_creates_nothing(server, monkeypatch):
    from mlflow import MlflowClient

    name = f"unauthenticated-{uuid.uuid4().hex[:8]}"
    assert status(server, "/health") == 200
    assert status(server, "/api/2.0/mlflow/experiments/create", body={"name": name}) == 401
    as_user(monkeypatch, server, server.auth.admin_username, server.auth.admin_password)
    client = MlflowClient(tracking_uri=server.url)
    assert client.get_experiment_by_name(name) is None
    experiment_id = client.create_experiment(name)

    create_run = {"experiment_id": experiment_id}
    assert status(server, "/api/2.0/mlflow/runs/create", body=create_run) == 401
    assert status(server, "/api/2.0/mlflow/runs/create", ("nobody", secrets.token_hex(12)), create_run) == 401
    wrong = (server.auth.admin_username, secrets.token_hex(12))
    assert status(server, "/api/2.0/mlflow/runs/create", wrong, create_run) == 401
    assert status(server, SEARCH) == 401
    assert client.search_runs([experiment_id]) == []


def test_the_prepare_jobs_wait_ends_once_the_workers_login_works(server):
    """deploy/kubernetes/prepare-job.yaml's init container (the URL and its patience shortened): it keeps waiting
    while the worker's login is refused, and ends as soon as add_user.py has made the user."""
    job = yaml.safe_load((REPO / "deploy" / "kubernetes" / "prepare-job.yaml").read_text())
    (wait,) = job["spec"]["template"]["spec"]["initContainers"]
    script = wait["command"][-1]
    for old, new in (("http://mlflow:5000", server.url), ("range(120)", "range(3)"), ("time.sleep(5)", "time.sleep(0.1)")):
        assert script.count(old) == 1, old
        script = script.replace(old, new)
    user, password = new_user()
    env = {**_clean_env(), "MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password}
    before = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60,
                            check=False)
    assert before.returncode == 1 and "did not accept the login of" in before.stderr and password not in before.stderr
    assert add_user(server, user, password).returncode == 0
    after = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60,
                           check=False)
    assert after.returncode == 0, after.stderr


def _config(directory: Path) -> Path:
    cfg = {
        "name": f"auth-{uuid.uuid4().hex[:6]}", "seed": 1,
        "data": {"source": "digits", "n_train": 300, "n_eval": 100},
        "network": {"hidden": [10]},
        "training": {"epochs": 2, "eta": 0.5, "batch_size": 10, "lmbda": 1.0},
        "search_space": {"eta": {"type": "float", "low": 0.1, "high": 2.0, "log": True}},
        "study": {"n_trials": 2, "sampler": {"name": "random"}, "pruner": {"name": "none"}},
    }
    path = directory / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_sweeps_prepare_and_run_as_the_workers_user(server, tmp_path, monkeypatch):
    """The worker's own user (READ by default) is enough for the whole sweep: prepare creates the experiment and
    the parent run, run logs every trial; the admin sees them all, and the user manages the experiment."""
    from mlflow import MlflowClient

    exe = BIN / "sweeps"
    if not exe.exists():
        pytest.skip(f"no sweeps executable next to {sys.executable}")
    user, password = new_user()
    assert add_user(server, user, password).returncode == 0
    config = _config(tmp_path)
    name = yaml.safe_load(config.read_text())["name"]
    env = {**_clean_env(), **server.client_env(user, password),
           "SWEEPS_STORAGE": f"sqlite:///{tmp_path / 'optuna.db'}", "MPLBACKEND": "Agg"}
    for argv in (["prepare", str(config)], ["run", str(config), "--workers", "1", "--quiet"]):
        done = subprocess.run([str(exe), *argv], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                              check=False)
        assert done.returncode == 0, f"sweeps {argv[0]}:\n{done.stdout}\n{done.stderr}"
        assert password not in done.stdout + done.stderr

    admin = admin_client(server, monkeypatch)
    client = MlflowClient(tracking_uri=server.url)
    experiment = client.get_experiment_by_name(f"sweeps/{name}")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    roles = sorted(r.data.tags.get("sweeps.role") for r in runs)
    assert roles == ["study", "trial", "trial"], roles
    assert all(r.info.status == "FINISHED" for r in runs if r.data.tags.get("sweeps.role") == "trial")
    assert admin.get_user_permission(user, "experiment", experiment.experiment_id).permission == "MANAGE"


def test_the_user_store_works_on_postgres_through_pgbouncer_in_transaction_mode(tmp_path):
    """The recipes' layout (deploy/mlflow/basic_auth.ini): the backend store and the user store are databases
    behind PgBouncer in transaction pooling (deploy/kubernetes/pgbouncer.ini), the server runs 2 processes with
    the 60 s login cache. The user store's migrations run through PgBouncer, add_user.py works, the workers' user
    logs in, and its logins reach the user store through PgBouncer."""
    settings = pgbouncer_settings(REPO / "deploy" / "kubernetes" / "pgbouncer.ini")
    assert settings["pool_mode"] == "transaction"
    with pg_database("sweeps_auth_backend") as backend, pg_database("sweeps_auth_users") as users:
        names = [database_name(backend), database_name(users)]
        with PgBouncer(names, settings, tmp_path / "pgbouncer.log") as bouncer, \
                MlflowServer(bouncer.url(names[0]), tmp_path / "artifacts", tmp_path / "mlflow.log", workers=2,
                             auth=BasicAuth(database_uri=bouncer.url(names[1]), auth_cache_ttl_seconds=60)) as server:
            user, password = new_user()
            result = add_user(server, user, password)
            assert result.returncode == 0, result.stderr
            assert status(server, SEARCH, (user, password)) == 200
            assert status(server, SEARCH, (user, password[::-1])) == 401
            assert status(server, "/api/2.0/mlflow/experiments/create", (user, password), {"name": user}) == 200
            stats = {row["database"]: row for row in bouncer.admin_query("SHOW STATS")}
        tables = pg_admin_query_in(names[1], "SELECT username, is_admin FROM users ORDER BY username")
    assert stats[names[1]]["total_xact_count"] > 0  # the user store's traffic went through PgBouncer
    assert sorted(tables) == sorted([(server.auth.admin_username, True), (user, False)])


def pg_admin_query_in(dbname: str, statement: str) -> list[tuple]:
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname=dbname, connect_timeout=3)
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
            return cur.fetchall()
    finally:
        conn.close()

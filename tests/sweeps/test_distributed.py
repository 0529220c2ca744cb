"""The docker-compose topology, run natively: PostgreSQL study + MLflow tracking server + 2 launchers.

Needs PostgreSQL on 127.0.0.1:5432 (trust auth, user postgres). Skipped with a reason when it is
absent, except when ``SWEEPS_REQUIRE_SERVICES=1`` (CI), where its absence is a failure. That test is
``services`` and ``slow`` (PostgreSQL, ``mlflow server`` and three ``sweeps`` subprocesses); the
compose-file check is fast.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
BIN = Path(sys.executable).parent


def _require(reason: str) -> None:
    if os.environ.get("SWEEPS_REQUIRE_SERVICES") == "1":
        pytest.fail(f"SWEEPS_REQUIRE_SERVICES=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture
def pg_databases():
    """Two fresh databases (Optuna study, MLflow backend store), dropped afterwards."""
    try:
        import psycopg2
    except ImportError:
        _require("psycopg2 is not installed (pip install -e '.[test]')")
    try:
        admin = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", connect_timeout=3)
    except Exception as err:  # noqa: BLE001
        _require(f"PostgreSQL is not reachable at {PG_HOST}:{PG_PORT} as {PG_USER}: {err}")
    admin.autocommit = True
    suffix = uuid.uuid4().hex[:8]
    names = [f"sweeps_test_optuna_{suffix}", f"sweeps_test_mlflow_{suffix}"]
    with admin.cursor() as cur:
        for name in names:
            cur.execute(f"CREATE DATABASE {name}")
    yield [f"postgresql+psycopg2://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}" for name in names]
    with admin.cursor() as cur:
        for name in names:
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.close()


@pytest.fixture
def mlflow_server(pg_databases, tmp_path, services):
    """`mlflow server` on a PostgreSQL backend store: the command the compose service runs."""
    exe = BIN / "mlflow"
    if not exe.exists():
        pytest.skip(f"no mlflow executable next to {sys.executable}")
    port = services.free_port()
    cmd = [str(exe), "server", "--backend-store-uri", pg_databases[1], "--artifacts-destination",
           str(tmp_path / "mlartifacts"), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with services.serve(cmd, port, tmp_path / "mlflow-server.log",
                        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}) as (url, _):
        yield url


def _config(tmp_path: Path, n_trials: int) -> Path:
    cfg = {
        "name": "distributed-digits", "seed": 3,
        "data": {"source": "digits", "n_train": 300, "n_eval": 100},
        "network": {"hidden": [10]},
        "training": {"epochs": 3, "eta": 0.5, "batch_size": 10, "lmbda": 1.0},
        "search_space": {"eta": {"type": "float", "low": 0.1, "high": 2.0, "log": True},
                         "lmbda": {"type": "float", "low": 0.01, "high": 5.0, "log": True}},
        "study": {"n_trials": n_trials, "sampler": {"name": "random"}, "pruner": {"name": "none"}},
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.services
@pytest.mark.slow
def test_two_launchers_share_one_postgres_study_and_one_tracking_server(pg_databases, mlflow_server, tmp_path):
    import mlflow
    import optuna

    optuna_url, _ = pg_databases
    config = _config(tmp_path, n_trials=6)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SWEEPS_"))}
    env.update(SWEEPS_STORAGE=optuna_url, MLFLOW_TRACKING_URI=mlflow_server)  # as docker-compose sets them
    sweeps = str(BIN / "sweeps")

    prep = subprocess.run([sweeps, "prepare", str(config)], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=180)
    assert prep.returncode == 0, prep.stderr
    machines = []
    for i in range(2):  # two "machines": separate working directories, same study, same server
        cwd = tmp_path / f"machine{i}"
        cwd.mkdir()
        machines.append(subprocess.Popen([sweeps, "run", str(config), "--workers", "1", "--quiet"], env=env, cwd=cwd,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [p.communicate(timeout=400) for p in machines]
    for p, (out, err) in zip(machines, outputs):
        assert p.returncode == 0, f"stdout:{out}\nstderr:{err}"
        # neither launcher touched the embedded defaults
        assert not (Path(p.args[2]).parent / "optuna.db").exists()

    study = optuna.load_study(study_name="distributed-digits", storage=optuna_url)
    trials = study.get_trials(deepcopy=False)
    # MaxTrialsCallback(states=None) stops both launchers at n_trials; two asks at the same instant
    # can add one more (documented), never a trial that is lost or left running.
    assert 6 <= len(trials) <= 7
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)

    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    exp = client.get_experiment_by_name("sweeps/distributed-digits")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("sweeps.role") == "study"]
    children = [r for r in runs if r.data.tags.get("sweeps.role") == "trial"]
    assert len(parents) == 1, "prepare + two launchers must share one parent run"
    assert parents[0].info.run_id == study.user_attrs["sweeps.mlflow_parent_run_id"]
    assert len(children) == len(trials)
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert sorted(int(r.data.tags["sweeps.trial_number"]) for r in children) == sorted(t.number for t in trials)
    assert all(r.info.status == "FINISHED" for r in children)
    by_run = {r.info.run_id: r for r in children}
    for t in trials:
        run = by_run[t.user_attrs["mlflow_run_id"]]
        history = client.get_metric_history(run.info.run_id, "eval/accuracy")
        assert [m.step for m in sorted(history, key=lambda m: m.step)] == [0, 1, 2, 3]
        assert {m.step: m.value for m in history if m.step >= 1} == t.intermediate_values
        assert json.loads(run.data.params["sizes"]) == [64, 10, 10]


def test_docker_compose_file_is_valid_and_runs_the_tested_commands():
    """Schema-check docker-compose.yml (no Docker engine here) and pin its commands to the ones tested above."""
    import jsonschema  # the [test] extra: installed with the README's test command
    schema = json.loads((REPO / "tests/data/compose-spec.json").read_text())
    doc = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    jsonschema.Draft201909Validator(schema).validate(doc)  # the schema's $schema URL is malformed
    services = doc["services"]
    assert set(services) == {"postgres", "pgbouncer", "mlflow", "mlflow-users", "prepare", "worker"}
    assert services["mlflow"]["command"].split()[:2] == ["mlflow", "server"]
    assert services["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg2://sweeps@pgbouncer:6432/")
    assert "sweeps prepare" in " ".join(services["prepare"]["command"])
    assert "exec sweeps run" in " ".join(services["worker"]["command"])  # exec: sweeps itself gets SIGTERM
    env = services["worker"]["environment"]
    assert env["SWEEPS_STORAGE"] == "postgresql+psycopg2://sweeps@pgbouncer:6432/optuna"  # no password in a URL
    assert env["PGPASSWORD"].startswith("${SWEEPS_DB_PASSWORD:?")  # from the environment, no default
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    # the tracking server's pool is set, and the fleet's connections fit PostgreSQL's default 100
    mlflow_env = services["mlflow"]["environment"]
    per_process = int(mlflow_env["MLFLOW_SQLALCHEMYSTORE_POOL_SIZE"]) + int(mlflow_env["MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW"])
    assert 0 < per_process * int(services["mlflow"]["command"].split("--workers")[1].split()[0]) <= 20
    assert "ports" not in services["postgres"] and "ports" not in services["pgbouncer"]
    assert all(port.startswith("127.0.0.1:") for port in services["mlflow"]["ports"])
    assert services["worker"]["depends_on"]["prepare"]["condition"] == "service_completed_successfully"
    # the example the workers run exists in the image (COPY examples) and is a valid sweep
    from sweeps.config import load_config

    load_config(REPO / "examples" / Path(env["SWEEP_CONFIG"]).name)
    init_sql = (REPO / "deploy/postgres-init.sql").read_text()
    assert "CREATE DATABASE mlflow" in init_sql


@pytest.mark.services
@pytest.mark.slow
def test_a_sweep_through_pgbouncer_in_transaction_mode(pg_databases, tmp_path):
    """The study and MLflow's store behind a real PgBouncer with the shipped settings (deploy/kubernetes/pgbouncer.ini:
    transaction pooling, the ``options`` startup parameter ignored): prepare, then two launchers of two workers and a
    tracking server, all through PgBouncer. Optuna's RDB storage needs nothing PgBouncer's transaction mode drops
    (psycopg2 prepares no statements; ``SELECT ... FOR UPDATE`` and heartbeats are single transactions): every trial
    is claimed once and completes, every run ends, and PgBouncer serves the clients with a few server connections."""
    import mlflow
    import optuna
    from servicekit import MlflowServer, PgBouncer, database_name, pg_admin_query, pgbouncer_settings

    settings = pgbouncer_settings(REPO / "deploy/kubernetes/pgbouncer.ini")
    assert settings["pool_mode"] == "transaction" and "options" in settings["ignore_startup_parameters"]
    names = [database_name(url) for url in pg_databases]
    n_trials = 8
    with PgBouncer(names, settings, tmp_path / "pgbouncer.log") as bouncer, \
            MlflowServer(bouncer.url(names[1]), tmp_path / "artifacts", tmp_path / "mlflow.log") as server:
        optuna_url = bouncer.url(names[0])
        config = _config(tmp_path, n_trials=n_trials)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SWEEPS_"))}
        env.update(SWEEPS_STORAGE=optuna_url, MLFLOW_TRACKING_URI=server.url)
        sweeps = str(BIN / "sweeps")
        prep = subprocess.run([sweeps, "prepare", str(config)], env=env, cwd=tmp_path, capture_output=True,
                              text=True, timeout=180)
        assert prep.returncode == 0, prep.stderr
        launchers = [subprocess.Popen([sweeps, "run", str(config), "--workers", "2", "--quiet"], env=env,
                                      cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                     for _ in range(2)]
        try:
            outputs = [p.communicate(timeout=400) for p in launchers]
        finally:
            for p in launchers:
                if p.poll() is None:
                    p.kill()
        for p, (out, err) in zip(launchers, outputs):
            assert p.returncode == 0, f"stdout:{out}\nstderr:{err}"
        pools = {row["database"]: row for row in bouncer.admin_query("SHOW POOLS")}
        stats = {row["database"]: row for row in bouncer.admin_query("SHOW STATS")}
        server_side = pg_admin_query("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (names[0],))[0][0]
        study = optuna.load_study(study_name="distributed-digits", storage=optuna_url)
        trials = study.get_trials(deepcopy=False)
        client = mlflow.MlflowClient(tracking_uri=server.url)
        exp = client.get_experiment_by_name("sweeps/distributed-digits")
        runs = client.search_runs([exp.experiment_id], max_results=1000)
    assert len(trials) == n_trials and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert len({tuple(sorted(t.params.items())) for t in trials}) == n_trials
    children = [r for r in runs if r.data.tags.get("sweeps.role") == "trial"]
    assert len(children) == n_trials and all(r.info.status == "FINISHED" for r in children)
    assert stats[names[0]]["total_xact_count"] > 10 * n_trials  # the study's traffic went through PgBouncer
    pool = pools[names[0]]
    assert pool["pool_mode"] == "transaction"
    assert pool["sv_active"] + pool["sv_idle"] + pool["sv_used"] <= int(settings["default_pool_size"])
    assert server_side <= int(settings["default_pool_size"])

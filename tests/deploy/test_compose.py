"""docker-compose.yml's credentials, checked offline (no Docker engine here).

Every password and secret key comes from the environment as ``${VAR:?message}`` (no default, a clear
message when unset), and every such variable is listed, empty, in .env.example; .env is ignored by git
and kept out of the image's build context. The tracking server runs MLflow's basic-auth app with the
settings baked into the image; the one-shot ``mlflow-users`` logs in as the admin to add the workers'
own user, and prepare and the workers log in as that user, never as the admin. The Compose schema
check and the commands' pins are in tests/sweeps/test_distributed.py; no literal password in the
file: tests/deploy/test_kubernetes.py.
"""

from __future__ import annotations

import configparser
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
AUTH_INI = REPO / "deploy" / "mlflow" / "basic_auth.ini"
AUTH_INI_IN_IMAGE = "/app/deploy/mlflow/basic_auth.ini"
#: Environment keys that hold a secret.
SECRET_KEY = re.compile(r"PASSW(?:OR)?D|SECRET|TOKEN", re.IGNORECASE)
#: ${VAR:?message}: compose refuses to start while VAR is unset or empty, and says the message.
REQUIRED = re.compile(r"\$\{([A-Z][A-Z0-9_]*):\?([^}]+)\}")
#: Every interpolation in the file, whatever its form.
INTERPOLATION = re.compile(r"(?<!\$)\$\{([^}]*)\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict[str, dict[str, Any]]:
    return compose["services"]


def env(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment", {})
    assert isinstance(environment, dict), "environment as a mapping (KEY: value)"
    return {k: str(v) for k, v in environment.items()}


def required_var(value: str) -> str:
    """The VAR of a value that is exactly ``${VAR:?message}``."""
    m = REQUIRED.fullmatch(value)
    assert m, f"{value!r} is not ${{VAR:?message}}"
    return m.group(1)


def env_example() -> dict[str, str]:
    out = {}
    for line in (REPO / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            out[name] = value
    return out


def admin_username() -> str:
    ini = configparser.ConfigParser()
    ini.read_string(AUTH_INI.read_text())
    return ini["mlflow"]["admin_username"]


def test_every_secret_is_required_from_the_environment_with_a_message(services):
    """A secret in any service's environment is ``${VAR:?message}``, the message naming VAR and .env."""
    seen = set()
    for name, service in services.items():
        for key, value in env(service).items():
            if SECRET_KEY.search(key):
                var = required_var(value)
                message = REQUIRED.fullmatch(value).group(2)
                assert var in message and ".env" in message, f"{name}: {key}: {message!r}"
                seen.add(var)
    assert seen == {"SWEEPS_DB_PASSWORD", "SWEEPS_MLFLOW_ADMIN_PASSWORD", "SWEEPS_MLFLOW_SECRET_KEY",
                    "SWEEPS_MLFLOW_WORKER_PASSWORD"}


def test_every_interpolation_is_required_and_listed_in_env_example():
    """No ``${VAR}`` or ``${VAR:-default}`` anywhere: each variable is required, and .env.example lists exactly
    those, each with how to make a value and an empty one."""
    text = COMPOSE.read_text()
    found = INTERPOLATION.findall(text)
    assert found, "docker-compose.yml interpolates nothing?"
    for inner in found:
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*:\?.+", inner), f"${{{inner}}}: use ${{VAR:?message}}"
    used = {inner.split(":", 1)[0] for inner in found}
    example = env_example()
    assert set(example) == used
    assert all(value == "" for value in example.values())
    comments = (REPO / ".env.example").read_text()
    assert comments.count("openssl rand") >= len(used)  # how to make each one


def test_the_required_check_rejects_defaults_and_plain_references():
    for value in ("${SWEEPS_DB_PASSWORD}", "${SWEEPS_DB_PASSWORD:-sweeps}", "${SWEEPS_DB_PASSWORD:?}", "sweeps"):
        with pytest.raises(AssertionError):
            required_var(value)
    assert required_var("${SWEEPS_DB_PASSWORD:?set SWEEPS_DB_PASSWORD in .env}") == "SWEEPS_DB_PASSWORD"


def test_mlflow_runs_basic_auth_with_the_image_settings_and_its_secrets(services, monkeypatch):
    from mlflow import environment_variables as mlflow_env
    from mlflow.cli import server

    mlflow = services["mlflow"]
    argv = shlex.split(mlflow["command"])
    assert argv[:2] == ["mlflow", "server"]
    for var in [p.envvar for p in server.params if isinstance(getattr(p, "envvar", None), str)]:
        monkeypatch.delenv(var, raising=False)
    ctx = server.make_context("server", argv[2:])
    assert ctx.params["app_name"] == "basic-auth"
    e = env(mlflow)
    assert e[mlflow_env.MLFLOW_AUTH_CONFIG_PATH.name] == AUTH_INI_IN_IMAGE
    assert (REPO / AUTH_INI_IN_IMAGE.removeprefix("/app/")).is_file()
    assert required_var(e[mlflow_env.MLFLOW_AUTH_ADMIN_PASSWORD.name]) == "SWEEPS_MLFLOW_ADMIN_PASSWORD"
    assert required_var(e[mlflow_env.MLFLOW_FLASK_SERVER_SECRET_KEY.name]) == "SWEEPS_MLFLOW_SECRET_KEY"
    assert required_var(e["PGPASSWORD"]) == "SWEEPS_DB_PASSWORD"  # the user store's login too
    assert mlflow["healthcheck"]["test"][-1].endswith("/health')")  # open without a login


def test_the_auth_database_is_served_and_created_for_compose(services):
    """basic_auth.ini's user store (database mlflow_auth on pgbouncer:6432) is in the PgBouncer config and the init
    SQL that compose mounts."""
    ini = configparser.ConfigParser()
    ini.read_string(AUTH_INI.read_text())
    m = re.fullmatch(r"postgresql\+psycopg2://sweeps@pgbouncer:(\d+)/(\w+)", ini["mlflow"]["database_uri"])
    assert m, ini["mlflow"]["database_uri"]
    database = m.group(2)
    mounts = {v.split(":")[1]: REPO / v.split(":")[0] for s in services.values() for v in s.get("volumes", [])
              if v.startswith("./")}
    pgbouncer_ini = mounts["/etc/pgbouncer-config/pgbouncer.ini"].read_text()
    assert re.search(rf"^{database} = host=postgres port=5432 dbname={database}$", pgbouncer_ini, re.MULTILINE)
    assert re.search(rf"^listen_port = {m.group(1)}$", pgbouncer_ini, re.MULTILINE)
    init_sql = mounts["/docker-entrypoint-initdb.d/10-mlflow.sql"].read_text()
    assert f"CREATE DATABASE {database} OWNER sweeps;" in init_sql


def test_mlflow_users_adds_the_workers_user_as_the_admin_once_the_server_is_healthy(services):
    users = services["mlflow-users"]
    assert users["command"] == ["python", "/app/deploy/mlflow/add_user.py"]
    assert (REPO / "deploy" / "mlflow" / "add_user.py").is_file()
    assert users["depends_on"] == {"mlflow": {"condition": "service_healthy"}}
    assert users["restart"] == "no"
    e = env(users)
    assert e["MLFLOW_TRACKING_URI"] == env(services["worker"])["MLFLOW_TRACKING_URI"]
    assert e["MLFLOW_TRACKING_USERNAME"] == admin_username()
    assert required_var(e["MLFLOW_TRACKING_PASSWORD"]) == required_var(env(services["mlflow"])["MLFLOW_AUTH_ADMIN_PASSWORD"])
    assert e["SWEEPS_MLFLOW_USER"] != admin_username()
    for name in ("prepare", "worker"):
        assert services[name]["depends_on"]["mlflow-users"] == {"condition": "service_completed_successfully"}, name


def test_prepare_and_workers_log_in_as_the_workers_user_not_the_admin(services):
    users = env(services["mlflow-users"])
    admin_var = required_var(env(services["mlflow"])["MLFLOW_AUTH_ADMIN_PASSWORD"])
    for name in ("prepare", "worker"):
        e = env(services[name])
        assert e["MLFLOW_TRACKING_USERNAME"] == users["SWEEPS_MLFLOW_USER"] != admin_username(), name
        assert required_var(e["MLFLOW_TRACKING_PASSWORD"]) == required_var(users["SWEEPS_MLFLOW_USER_PASSWORD"]), name
        assert required_var(e["MLFLOW_TRACKING_PASSWORD"]) != admin_var, name
    # the admin's password reaches the server and mlflow-users, no other service
    holders = {name for name, s in services.items() if any(admin_var in v for v in env(s).values())}
    assert holders == {"mlflow", "mlflow-users"}


def test_only_the_ui_is_published_and_on_loopback(services):
    for name, service in services.items():
        if name != "mlflow":
            assert "ports" not in service, name
    assert services["mlflow"]["ports"] == ["127.0.0.1:5000:5000"]


def test_env_is_ignored_by_git_and_kept_out_of_the_build_context():
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    ignored = subprocess.run(["git", "check-ignore", "-q", "--no-index", ".env"], cwd=REPO, check=False, timeout=30)
    assert ignored.returncode == 0, ".env is not ignored by git"
    example = subprocess.run(["git", "check-ignore", "-q", "--no-index", ".env.example"], cwd=REPO, check=False,
                             timeout=30)
    assert example.returncode == 1, ".env.example is ignored by git"
    dockerignore = (REPO / ".dockerignore").read_text().splitlines()
    assert ".env" in dockerignore

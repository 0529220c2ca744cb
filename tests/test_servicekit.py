"""The fault-injection kit (``tests/servicekit.py``) really does what it says, against real services.

One ``mlflow server`` on a fresh PostgreSQL database is shared by the module (its first start runs
the migrations); the kill/restart test runs last and leaves it running again. The basic-auth server
test starts its own, on SQLite stores.
"""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from servicekit import (
    BackendTerminator,
    BasicAuth,
    MlflowServer,
    StallingProxy,
    database_name,
    free_port,
    group_members,
    pg_database,
    port_open,
    process_tree,
    require_services,
    wait_until,
)

pytestmark = pytest.mark.services


def _pg_connect(dbname: str) -> Any:
    import psycopg2

    return psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname=dbname, connect_timeout=3)


def _database_exists(name: str) -> bool:
    conn = _pg_connect("postgres")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            return cur.fetchone() is not None
    finally:
        conn.close()


SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"


def _health(base: str, timeout: float = 10) -> int:
    with urllib.request.urlopen(base + "/health", timeout=timeout) as resp:
        resp.read()
        return resp.status


def _is_timeout(err: BaseException) -> bool:
    return isinstance(err, TimeoutError) or isinstance(getattr(err, "reason", None), TimeoutError)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    directory = tmp_path_factory.mktemp("mlflow_server")
    with pg_database("sweeps_kit_mlflow") as url, \
            MlflowServer(url, directory / "artifacts", directory / "server.log") as srv:
        yield srv


def test_helpers(monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    assert 1024 <= port < 65536 and not port_open(port)
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        assert port_open(port)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert child.pid in process_tree(os.getpid())
    finally:
        child.kill()
        child.wait(timeout=10)
    assert wait_until(lambda: 42, 1, "an answer") == 42
    with pytest.raises(pytest.fail.Exception, match="waiting for nothing"):
        wait_until(lambda: False, 0.3, "nothing", interval=0.05)
    monkeypatch.setenv("SWEEPS_REQUIRE_SERVICES", "1")
    with pytest.raises(pytest.fail.Exception, match="SWEEPS_REQUIRE_SERVICES=1 but no service"):
        require_services("no service")
    monkeypatch.delenv("SWEEPS_REQUIRE_SERVICES")
    with pytest.raises(pytest.skip.Exception, match="no service"):
        require_services("no service")


def test_pg_database_exists_inside_and_is_dropped_after() -> None:
    with pg_database("sweeps_kit") as url:
        name = database_name(url)
        assert url == f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
        assert name.startswith("sweeps_kit_") and len(name) == len("sweeps_kit_") + 8
        assert _database_exists(name)
        conn = _pg_connect(name)  # left open on purpose: the drop is forced
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE t (x int)")
    assert not _database_exists(name)
    conn.close()


def test_server_answers_health_in_its_own_group(server: MlflowServer) -> None:
    assert _health(server.url) == 200
    assert server.url == f"http://127.0.0.1:{server.port}"
    assert os.getpgid(server.pid) == server.pid
    tree = process_tree(server.pid)
    assert tree, "mlflow server has no worker process"
    assert set(tree) <= set(group_members(server.pid))


def test_proxy_forwards_then_stalls_then_resumes(server: MlflowServer) -> None:
    with StallingProxy("127.0.0.1", server.port) as proxy:
        assert proxy.url.startswith("http://127.0.0.1:") and proxy.port != server.port
        assert _health(proxy.url) == 200
        keep_alive = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=2)
        keep_alive.request("GET", "/health")
        assert keep_alive.getresponse().read() == b"OK"

        proxy.stall()
        started = time.monotonic()
        with pytest.raises(OSError) as fresh:  # a new connection: accepted, then nothing comes back
            _health(proxy.url, timeout=2)
        assert _is_timeout(fresh.value), repr(fresh.value)
        assert time.monotonic() - started >= 1.9
        keep_alive.request("GET", "/health")  # an existing connection hangs as well
        with pytest.raises(TimeoutError):
            keep_alive.getresponse()
        keep_alive.close()

        proxy.resume()
        assert _health(proxy.url) == 200
        assert proxy.connections == 4
    assert not port_open(proxy.port)


def test_backend_terminator_kills_connections_to_its_database() -> None:
    import psycopg2

    with pg_database("sweeps_kit") as url:
        name = database_name(url)
        victim = _pg_connect(name)
        with victim.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            victim_pid = cur.fetchone()[0]
        with BackendTerminator(name, interval=0.1, duration=10) as term:
            wait_until(lambda: term.terminated >= 1, 5, "the terminator to kill the victim's backend")
        assert not term.is_alive() and term.error is None
        assert victim_pid in term.terminated_pids
        with pytest.raises(psycopg2.OperationalError), victim.cursor() as cur:
            cur.execute("SELECT 1")
        victim.close()

        term = BackendTerminator(name, interval=0.1, duration=0.6)  # stops by itself
        term.start()
        term.join(timeout=5)
        assert not term.is_alive() and term.error is None
        assert term.rounds >= 3 and term.terminated == 0


def test_server_kill_and_restart_on_the_same_port(server: MlflowServer) -> None:
    import mlflow

    name = f"kit-{os.getpid()}-{time.monotonic_ns()}"
    exp_id = mlflow.MlflowClient(tracking_uri=server.url).create_experiment(name)
    port, old_pid = server.port, server.pid

    server.kill()
    assert not group_members(old_pid)
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass

    server.restart()
    assert server.port == port and server.pid != old_pid
    assert _health(server.url) == 200
    exp = mlflow.MlflowClient(tracking_uri=server.url).get_experiment_by_name(name)
    assert exp is not None and exp.experiment_id == exp_id
    print(f"mlflow server start times (s): {[round(t, 1) for t in server.start_times]}")


def test_basic_auth_server_needs_a_login_except_for_health(tmp_path: Path) -> None:
    """``auth=BasicAuth()``: the server runs ``--app-name basic-auth`` with its settings in its own environment
    only; /health answers without a login, the API only to the admin's; a restart keeps the user store."""
    auth = BasicAuth()
    assert BasicAuth().admin_password != auth.admin_password and len(auth.admin_password) >= 12
    assert auth.admin_password not in repr(auth) and auth.secret_key not in repr(auth)
    with MlflowServer(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts", tmp_path / "server.log",
                      auth=auth) as srv:
        assert srv.command[srv.command.index("--app-name") + 1] == "basic-auth"
        assert srv.healthy() and _health(srv.url) == 200
        assert srv.status_of(SEARCH) == 401
        assert srv.status_of(SEARCH, (auth.admin_username, auth.admin_password + "x")) == 401
        assert srv.status_of(SEARCH, (auth.admin_username, auth.admin_password)) == 200
        assert srv.client_env() == {"MLFLOW_TRACKING_URI": srv.url, "MLFLOW_TRACKING_USERNAME": auth.admin_username,
                                    "MLFLOW_TRACKING_PASSWORD": auth.admin_password}
        # the secrets are in the server's environment, not in this process's nor in the ini it reads
        server_env = dict(item.split(b"=", 1) for item in Path(f"/proc/{srv.pid}/environ").read_bytes().split(b"\0")
                          if b"=" in item)
        assert server_env[b"MLFLOW_AUTH_ADMIN_PASSWORD"] == auth.admin_password.encode()
        assert server_env[b"MLFLOW_FLASK_SERVER_SECRET_KEY"] == auth.secret_key.encode()
        ini = Path(server_env[b"MLFLOW_AUTH_CONFIG_PATH"].decode())
        assert ini.parent == srv.auth_dir and (srv.auth_dir / "basic_auth.db").is_file()
        assert auth.admin_password not in ini.read_text() and auth.secret_key not in ini.read_text()
        assert os.environ.get("MLFLOW_AUTH_ADMIN_PASSWORD") != auth.admin_password
        assert os.environ.get("MLFLOW_FLASK_SERVER_SECRET_KEY") != auth.secret_key

        srv.kill()
        srv.restart()
        assert srv.status_of(SEARCH) == 401
        assert srv.status_of(SEARCH, (auth.admin_username, auth.admin_password)) == 200
    assert not srv.running()

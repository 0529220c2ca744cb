"""Loopback services for fault-injection tests: databases, MLflow servers, a stalling proxy, a backend killer.

Import it from a test as ``from servicekit import ...`` (``tests/conftest.py`` puts ``tests/`` on
``sys.path``).  Everything binds or connects to 127.0.0.1 only.  Whatever this module starts is
stopped by its PID or its own process group (never by name): the context managers stop it on exit,
also when the test fails, and an ``atexit`` hook kills the process groups of any
:class:`MlflowServer` still running when the interpreter exits.

Public names:

* :func:`require_services` - skip the test, or fail it when ``SWEEPS_REQUIRE_SERVICES=1``.
* :func:`pg_database` - a fresh PostgreSQL database for the duration of a ``with`` block.
* :func:`database_name` - the database name of a SQLAlchemy / libpq URL.
* :func:`ram_directory` - a scratch directory in RAM when there is one.
* :func:`free_port`, :func:`port_open` - loopback port helpers.
* :func:`process_tree`, :func:`group_members` - live processes below a PID / in a process group.
* :func:`wait_until` - poll a condition, fail the test on timeout.
* :class:`MlflowServer` - ``mlflow server`` in its own session; start, kill, stop, restart.
* :class:`BasicAuth` - the settings of MLflow's basic-auth app, for ``MlflowServer(..., auth=BasicAuth())``.
* :class:`StallingProxy` - a TCP proxy that can stop forwarding bytes on demand.
* :class:`BackendTerminator` - a thread that keeps terminating the backends of one database.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, Self, TypeVar

import pytest

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
LOOPBACK = "127.0.0.1"

T = TypeVar("T")


# --------------------------------------------------------------------------------------------------
# generic helpers


def require_services(reason: str) -> NoReturn:
    """Skip the test because a service is missing; fail it instead when ``SWEEPS_REQUIRE_SERVICES=1``."""
    if os.environ.get("SWEEPS_REQUIRE_SERVICES") == "1":
        pytest.fail(f"SWEEPS_REQUIRE_SERVICES=1 but {reason}")
    pytest.skip(reason)


@contextlib.contextmanager
def ram_directory(fallback: Path, prefix: str = "sweeps-test-") -> Iterator[Path]:
    """A fresh directory in RAM (``/dev/shm``) when there is one, else ``fallback``; removed afterwards.

    SQLite studies and MLflow stores on disk cost ~0.5-1.5 s each to create here (fsync); in RAM, a few ms.
    """
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield fallback
        return
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=shm))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago (bind to port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = LOOPBACK, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections on ``host:port`` (refused or timed out: False)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _port_bindable(port: int) -> bool:
    """Whether a listener with ``SO_REUSEADDR`` (as uvicorn/gunicorn use) could bind ``127.0.0.1:port`` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


def wait_until(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    """Call ``predicate`` every ``interval`` s until it returns something truthy, and return that.

    Fails the test with ``what`` after ``timeout`` seconds.  Exceptions raised by ``predicate``
    propagate (write the predicate so that "not yet" is a false value).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of ``/proc/PID/stat`` after the command name (state is [0], ppid [1], pgrp [2])."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()


def _all_pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def process_tree(pid: int) -> list[int]:
    """PIDs of all descendants of ``pid`` (children, grandchildren, ...) found via ``/proc``; not ``pid`` itself."""
    parents: dict[int, list[int]] = {}
    for child in _all_pids():
        fields = _stat_fields(child)
        if fields is not None:
            parents.setdefault(int(fields[1]), []).append(child)
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def group_members(pgid: int) -> list[int]:
    """PIDs of the live (not zombie) processes in process group ``pgid``, via ``/proc``.

    Zombies are left out: once killed they only wait for their (possibly re-parented) parent to reap them.
    """
    members = []
    for pid in _all_pids():
        fields = _stat_fields(pid)
        if fields is not None and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(pid)
    return members


def _killpg(pgid: int, sig: int) -> bool:
    """Send ``sig`` to process group ``pgid``; False if the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


# --------------------------------------------------------------------------------------------------
# PostgreSQL


def _pg_admin(purpose: str) -> Any:
    """An autocommit psycopg2 connection to database ``postgres``, or skip/fail the test (``require_services``)."""
    try:
        import psycopg2
    except ImportError:
        require_services(f"psycopg2 is not installed (pip install -e '.[test]'), needed for {purpose}")
    try:
        conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", connect_timeout=3)
    except Exception as err:  # noqa: BLE001 - any connection failure means "no service"
        require_services(f"PostgreSQL is not reachable at {PG_HOST}:{PG_PORT} as {PG_USER} ({purpose}): {err}")
    conn.autocommit = True
    return conn


def pg_admin_query(statement: str, params: tuple = ()) -> list[tuple]:
    """The rows of one statement run as the admin user (e.g. a look at ``pg_stat_activity``)."""
    admin = _pg_admin("a query")
    try:
        with admin.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall()
    finally:
        admin.close()


def database_name(url: str) -> str:
    """The database name at the end of a SQLAlchemy / libpq URL (``.../<name>[?query]``)."""
    return url.rsplit("/", 1)[1].split("?", 1)[0]


@contextlib.contextmanager
def pg_database(prefix: str = "sweeps_test") -> Iterator[str]:
    """Create a fresh database ``<prefix>_<8 hex>``; yield its SQLAlchemy URL; drop it (``WITH (FORCE)``) on exit.

    The URL is ``postgresql+psycopg2://postgres@127.0.0.1:5432/<name>`` (see :func:`database_name`).
    Skips the test (fails it with ``SWEEPS_REQUIRE_SERVICES=1``) when psycopg2 or the server is missing.
    The drop terminates any connection still open to the database.
    """
    from psycopg2 import sql

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = _pg_admin(f"database {name}")
    try:
        with admin.cursor() as cur:
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    finally:
        admin.close()
    try:
        yield f"postgresql+psycopg2://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        admin = _pg_admin(f"dropping database {name}")
        try:
            with admin.cursor() as cur:
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        finally:
            admin.close()


class BackendTerminator(threading.Thread):
    """A daemon thread that terminates every backend connected to database ``dbname``, again and again.

    Every ``interval`` seconds (the first round at once) for ``duration`` seconds it runs
    ``SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()``
    on its own admin connection (database ``postgres``, so it never kills itself).  ``terminated``
    counts the backends signalled (in total), ``rounds`` the queries run, ``terminated_pids`` lists
    them.  It stops by itself after ``duration``; :meth:`stop` ends it early.  If its admin
    connection fails, the exception is kept in ``error`` and the thread ends.  Usable as a context
    manager (start on enter; stop and join on exit).

    Create it inside the test (not at import time): the admin connection is opened in ``__init__``
    so that a missing server skips/fails the test right there.
    """

    QUERY = ("SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity "
             "WHERE datname = %s AND pid <> pg_backend_pid()")

    def __init__(self, dbname: str, interval: float = 0.25, duration: float = 15.0) -> None:
        super().__init__(name=f"BackendTerminator({dbname})", daemon=True)
        self.dbname, self.interval, self.duration = dbname, interval, duration
        self.terminated = 0
        self.rounds = 0
        self.terminated_pids: list[int] = []
        self.error: BaseException | None = None
        self._stop_event = threading.Event()
        self._conn = _pg_admin(f"terminating backends of {dbname}")

    def run(self) -> None:
        deadline = time.monotonic() + self.duration
        try:
            with self._conn.cursor() as cur:
                while not self._stop_event.is_set() and time.monotonic() < deadline:
                    cur.execute(self.QUERY, (self.dbname,))
                    pids = [pid for pid, ok in cur.fetchall() if ok]
                    self.terminated_pids.extend(pids)
                    self.terminated += len(pids)
                    self.rounds += 1
                    self._stop_event.wait(min(self.interval, max(0.0, deadline - time.monotonic())))
        except Exception as err:  # noqa: BLE001 - reported through ``error``
            self.error = err
        finally:
            self._conn.close()

    def stop(self, timeout: float | None = 10.0) -> None:
        """Ask the thread to end and join it; if it was never started, just close its admin connection."""
        self._stop_event.set()
        if self.ident is None:
            self._conn.close()
        elif self.is_alive():
            self.join(timeout)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------------
# MLflow server

_live_groups: set[int] = set()


@atexit.register
def _kill_leftover_groups() -> None:
    for pgid in list(_live_groups):
        _killpg(pgid, signal.SIGKILL)


@dataclass(frozen=True)
class BasicAuth:
    """MLflow's basic-auth app for :class:`MlflowServer` (``mlflow server --app-name basic-auth``).

    The passwords are fresh random ones unless given: a test logs in as the admin with
    ``auth.admin_username`` / ``auth.admin_password`` (or :meth:`MlflowServer.client_env`). The server
    refuses an admin password under 12 characters or ``password1234``. ``database_uri`` is the user
    store: None puts it in a SQLite file next to the server's log (it outlives a restart, so the admin
    is created once, with the password of the first start). ``auth_cache_ttl_seconds`` as in
    deploy/mlflow/basic_auth.ini (0: every request checks its password).
    """

    admin_password: str = field(default_factory=lambda: secrets.token_hex(16))
    secret_key: str = field(default_factory=lambda: secrets.token_hex(32))
    admin_username: str = "admin"
    default_permission: str = "READ"
    auth_cache_ttl_seconds: int = 0
    database_uri: str | None = None

    def __repr__(self) -> str:  # a failing test's report never shows the passwords
        return (f"BasicAuth(admin_username={self.admin_username!r}, default_permission={self.default_permission!r}, "
                f"auth_cache_ttl_seconds={self.auth_cache_ttl_seconds}, database_uri={self.database_uri!r})")


class MlflowServer:
    """``mlflow server`` on ``127.0.0.1:port`` in its own session (process group), for fault injection.

    Runs ``<dir of sys.executable>/mlflow server --backend-store-uri URI --artifacts-destination DIR
    --host 127.0.0.1 --port PORT --workers 1`` with ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``; its
    output is appended to ``log_path`` (a restart appends to the same log).  ``port`` defaults to
    a free one, and stays the same across :meth:`restart`.

    Measured here (MLflow 3.17, Python 3.11, 2 CPUs shared with other work, PostgreSQL 15 on
    loopback), from ``Popen`` until ``GET /health`` answers 200: the first start on a fresh
    PostgreSQL database (which runs the schema migrations) took 13.5-16.1 s; a restart on the
    already-migrated database 9.8-12.3 s (most of it is importing MLflow, twice: the ``mlflow``
    CLI, then its uvicorn worker).  :meth:`kill` returns in about 0.1 s, :meth:`stop` (SIGTERM,
    graceful) in about 2-2.5 s.  Hence the generous default ``timeout=120``; ``start_times``
    records each start.

    Use it as a context manager (starts on enter unless started already, and always stops on exit)
    or call :meth:`start` / :meth:`stop` yourself.

    ``auth=BasicAuth(...)`` runs MLflow's basic-auth app (``--app-name basic-auth``): :meth:`start` writes
    its ini (and, by default, its SQLite user store) to ``auth_dir`` (``mlflow-auth-<port>`` next to
    ``log_path``) and passes ``MLFLOW_AUTH_CONFIG_PATH``, ``MLFLOW_AUTH_ADMIN_PASSWORD`` and
    ``MLFLOW_FLASK_SERVER_SECRET_KEY`` to the server's environment only. ``/health`` stays open, so
    :meth:`healthy` needs no login; every other request without valid credentials gets 401.
    """

    def __init__(self, backend_store_uri: str, artifacts_dir: Path, log_path: Path, port: int | None = None, *,
                 workers: int = 1, env: dict[str, str] | None = None, auth: BasicAuth | None = None) -> None:
        self.backend_store_uri = backend_store_uri
        self.workers, self.extra_env = workers, dict(env or {})
        self.auth = auth
        self.artifacts_dir = Path(artifacts_dir)
        self.log_path = Path(log_path)
        self.port = port if port is not None else free_port()
        self.exe = Path(sys.executable).with_name("mlflow")
        self._proc: subprocess.Popen[bytes] | None = None
        #: Seconds each successful :meth:`start` took until ``/health`` answered, in order.
        self.start_times: list[float] = []

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int | None:
        """PID of the ``mlflow server`` process (also its process group id), None before the first start."""
        return self._proc.pid if self._proc is not None else None

    @property
    def command(self) -> list[str]:
        app = ["--app-name", "basic-auth"] if self.auth is not None else []
        return [str(self.exe), "server", *app, "--backend-store-uri", self.backend_store_uri,
                "--artifacts-destination", str(self.artifacts_dir), "--host", LOOPBACK, "--port", str(self.port),
                "--workers", str(self.workers)]

    @property
    def auth_dir(self) -> Path:
        """Where a basic-auth server's ini (``basic_auth.ini``) and default user store (``basic_auth.db``) live."""
        return self.log_path.parent / f"mlflow-auth-{self.port}"

    def client_env(self, username: str | None = None, password: str | None = None) -> dict[str, str]:
        """``MLFLOW_TRACKING_URI`` and, for a basic-auth server, ``MLFLOW_TRACKING_USERNAME`` / ``_PASSWORD``: the
        admin's unless ``username`` / ``password`` are given. Add it to a client's environment."""
        env = {"MLFLOW_TRACKING_URI": self.url}
        if self.auth is not None:
            username = self.auth.admin_username if username is None else username
            password = self.auth.admin_password if password is None else password
        if username is not None:
            env["MLFLOW_TRACKING_USERNAME"] = username
        if password is not None:
            env["MLFLOW_TRACKING_PASSWORD"] = password
        return env

    def _auth_env(self) -> dict[str, str]:
        """Write the basic-auth ini; the server's own environment for it (nothing when auth is off)."""
        if self.auth is None:
            return {}
        self.auth_dir.mkdir(parents=True, exist_ok=True)
        database_uri = self.auth.database_uri or f"sqlite:///{self.auth_dir / 'basic_auth.db'}"
        ini = self.auth_dir / "basic_auth.ini"
        ini.write_text("[mlflow]\n"
                       f"default_permission = {self.auth.default_permission}\n"
                       f"database_uri = {database_uri}\n"
                       f"admin_username = {self.auth.admin_username}\n"
                       "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
                       f"auth_cache_ttl_seconds = {self.auth.auth_cache_ttl_seconds}\n")
        return {"MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_AUTH_ADMIN_PASSWORD": self.auth.admin_password,
                "MLFLOW_FLASK_SERVER_SECRET_KEY": self.auth.secret_key}

    def status_of(self, path: str, login: tuple[str, str] | None = None, body: dict | None = None,
                  timeout: float = 30) -> int:
        """The HTTP status of one request to the server (``GET``, or ``POST`` of ``body`` as JSON), with a
        basic-auth ``login`` (user, password) or none."""
        import base64
        import json
        import urllib.error

        request = urllib.request.Request(self.url + path, method="GET" if body is None else "POST",
                                         data=None if body is None else json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        if login is not None:
            request.add_header("Authorization", "Basic " + base64.b64encode(":".join(login).encode()).decode())
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp:
                resp.read()
                return resp.status
        except urllib.error.HTTPError as err:
            return err.code

    def running(self) -> bool:
        """Whether any live process of the server's group is left."""
        return self._proc is not None and bool(group_members(self._proc.pid))

    def healthy(self, timeout: float = 2.0) -> bool:
        """Whether ``GET /health`` answers 200 right now."""
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=timeout) as resp:
                return resp.status == 200
        except OSError:
            return False

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "<no log>"

    def start(self, timeout: float = 120.0) -> MlflowServer:
        """Start the server and wait until ``GET /health`` answers 200.

        Fails the test with the tail of the log if the process exits first or ``timeout`` passes
        (the process group is killed before failing).
        """
        if not self.exe.exists():
            require_services(f"the `mlflow` executable is not next to {sys.executable}")
        if self.running():
            raise RuntimeError(f"mlflow server (pid {self.pid}) is running already")
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("MLFLOW_AUTH_", "MLFLOW_TRACKING_")) and k != "MLFLOW_FLASK_SERVER_SECRET_KEY"}
        env.update({"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "PYTHONUNBUFFERED": "1", **self.extra_env,
                    **self._auth_env()})
        begin = time.monotonic()
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== servicekit: starting {' '.join(self.command)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          env=env, cwd=self.log_path.parent, start_new_session=True)
        _live_groups.add(self._proc.pid)
        deadline = begin + timeout
        while not self.healthy():
            if self._proc.poll() is not None or time.monotonic() >= deadline:
                code = self._proc.poll()
                self.kill()
                why = f"exited with {code}" if code is not None else f"did not answer within {timeout:g} s"
                pytest.fail(f"mlflow server on {self.url} {why}; log {self.log_path}:\n{self.log_tail()}")
            time.sleep(0.2)
        self.start_times.append(time.monotonic() - begin)
        return self

    def _wait_gone(self, timeout: float) -> bool:
        """Wait until the group has no live process and the port refuses connections; True if so in time."""
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=0.05)  # reap the leader as soon as it exits
            if not group_members(self._proc.pid) and not port_open(self.port, timeout=0.5):
                _live_groups.discard(self._proc.pid)
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def kill(self, timeout: float = 30.0) -> None:
        """SIGKILL the whole process group; return once it is gone and the port refuses connections."""
        if self._proc is None:
            return
        _killpg(self._proc.pid, signal.SIGKILL)
        if not self._wait_gone(timeout):
            pytest.fail(f"mlflow server group {self._proc.pid} still alive ({group_members(self._proc.pid)}) "
                        f"or port {self.port} still open {timeout:g} s after SIGKILL")

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM the process group; SIGKILL it if it is not gone after ``grace`` seconds."""
        if self._proc is None:
            return
        if _killpg(self._proc.pid, signal.SIGTERM) and self._wait_gone(grace):
            return
        self.kill()

    def restart(self, timeout: float = 120.0) -> MlflowServer:
        """Start again on the same port (killing the group first if it still runs; waits until the port is free)."""
        if self.running():
            self.kill()
        wait_until(lambda: _port_bindable(self.port), 60, f"port {self.port} to be free for a restart", 0.2)
        return self.start(timeout)

    def __enter__(self) -> Self:
        if not self.running():
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class PgBouncer:
    """A real PgBouncer (Debian package ``pgbouncer``) on ``127.0.0.1:port`` in front of the test PostgreSQL, in its
    own session (process group), stopped by that group.

    ``settings``: the ``[pgbouncer]`` section to use (e.g. the shipped ``deploy/kubernetes/pgbouncer.ini``'s,
    read by :func:`pgbouncer_settings`); this class overrides only where it listens, its trust login
    (PostgreSQL here trusts loopback) and its files. ``databases``: names that PgBouncer serves, each
    forwarded to the database of the same name. PgBouncer refuses to run as root: it is started as the
    ``postgres`` user (``-u postgres``) with its files in a directory that user can read.
    """

    def __init__(self, databases: list[str], settings: dict[str, str], log_path: Path) -> None:
        self.exe = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        self.databases, self.settings, self.log_path = databases, dict(settings), Path(log_path)
        self.port = free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="sweeps-pgbouncer-"))
        self._proc: subprocess.Popen[bytes] | None = None

    def url(self, database: str) -> str:
        return f"postgresql+psycopg2://{PG_USER}@{LOOPBACK}:{self.port}/{database}"

    def admin_query(self, statement: str) -> list[dict[str, Any]]:
        """Rows of a PgBouncer admin command (``SHOW POOLS``, ``SHOW STATS``) as dicts."""
        import psycopg2

        conn = psycopg2.connect(host=LOOPBACK, port=self.port, user=PG_USER, dbname="pgbouncer", connect_timeout=3)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(statement)
                names = [d[0] for d in cur.description]
                return [dict(zip(names, row)) for row in cur.fetchall()]
        finally:
            conn.close()

    def start(self, timeout: float = 30.0) -> PgBouncer:
        if not Path(self.exe).exists():
            require_services("PgBouncer is not installed (Debian package pgbouncer; .ci/run installs it)")
        _pg_admin("PgBouncer's server").close()
        settings = {**self.settings, "listen_addr": LOOPBACK, "listen_port": str(self.port), "unix_socket_dir": "",
                    "auth_type": "trust", "auth_file": str(self._dir / "users.txt"), "admin_users": PG_USER,
                    "logfile": "", "pidfile": ""}
        lines = ["[databases]", *[f"{name} = host={PG_HOST} port={PG_PORT} dbname={name}" for name in self.databases],
                 "[pgbouncer]", *[f"{k} = {v}" for k, v in settings.items()]]
        (self._dir / "pgbouncer.ini").write_text("\n".join(lines) + "\n")
        (self._dir / "users.txt").write_text(f'"{PG_USER}" ""\n')
        for path in (self._dir, *self._dir.iterdir()):
            path.chmod(0o755 if path.is_dir() else 0o644)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen([self.exe, "-u", PG_USER, str(self._dir / "pgbouncer.ini")], stdout=log,
                                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        _live_groups.add(self._proc.pid)
        deadline = time.monotonic() + timeout
        while not port_open(self.port, timeout=0.5):
            if self._proc.poll() is not None or time.monotonic() >= deadline:
                self.stop()
                pytest.fail(f"pgbouncer on port {self.port} did not start; log:\n"
                            f"{self.log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        if self._proc is not None:
            _killpg(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait(timeout=10)
            _live_groups.discard(self._proc.pid)
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def pgbouncer_settings(path: Path) -> dict[str, str]:
    """The ``[pgbouncer]`` section of a PgBouncer ini file, as ``{key: value}`` (comments and blanks left out)."""
    settings: dict[str, str] = {}
    section = None
    for raw in Path(path).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith((";", "#")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
        elif section == "pgbouncer" and "=" in line:
            key, value = (part.strip() for part in line.split("=", 1))
            settings[key] = value
    return settings


# --------------------------------------------------------------------------------------------------
# TCP proxy


class StallingProxy:
    """A TCP proxy on ``127.0.0.1:<free port>`` to ``(host, port)`` that can stop forwarding on demand.

    Threads of the test process do the work (an accept thread, one daemon thread per connection,
    non-blocking sockets polled with ``select``).  The upstream connection is opened when a client
    connects (if that fails, the client connection is closed).

    * :meth:`stall`: from its return on, not one byte is forwarded in either direction, on existing
      and new connections; the proxy stops reading from its sockets but keeps accepting and keeps
      every socket open (new clients connect, but their upstream connection is only opened after
      :meth:`resume`), so clients hang until their own timeout.  EOFs are not seen while stalled.
    * :meth:`resume`: forwarding continues and **nothing is dropped**: bytes read before the stall
      but not yet sent, and bytes that waited in the kernel buffers during the stall, are all
      delivered - so a request whose client gave up during the stall still reaches the server
      late (its response then fails to reach the closed client and that connection is closed).
    * :meth:`close`: closes the listener and every connection and joins the threads.

    ``connections`` counts the client connections accepted; ``url`` is ``http://127.0.0.1:<port>``.
    A context manager (closes on exit).
    """

    BUFFER_LIMIT = 1 << 20  # stop reading a side while this much is waiting to be written to the other

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.connections = 0
        self._cond = threading.Condition()
        self._stalled = False
        self._closed = threading.Event()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind((LOOPBACK, 0))
        self._listener.listen(64)
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept_loop, name=f"StallingProxy:{self.port}", daemon=True)
        self._acceptor.start()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def stalled(self) -> bool:
        return self._stalled

    def stall(self) -> None:
        """Stop forwarding bytes (existing and new connections) from now on."""
        with self._cond:
            self._stalled = True

    def resume(self) -> None:
        """Forward again, delivering whatever waited (nothing is dropped)."""
        with self._cond:
            self._stalled = False
            self._cond.notify_all()

    def close(self, timeout: float = 5.0) -> None:
        """Close the listener and all connections; join the threads."""
        self._closed.set()
        with self._cond:
            self._cond.notify_all()
        self._acceptor.join(timeout)
        with contextlib.suppress(OSError):
            self._listener.close()
        for thread in list(self._threads):
            thread.join(timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            thread = threading.Thread(target=self._serve, args=(client,), daemon=True,
                                      name=f"StallingProxy:{self.port}#{self.connections}")
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
            thread.start()

    def _wait_flowing(self) -> bool:
        """Block while stalled; False once the proxy is closed."""
        with self._cond:
            while self._stalled and not self._closed.is_set():
                self._cond.wait(0.1)
        return not self._closed.is_set()

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        try:
            if not self._wait_flowing():
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                return
            client.setblocking(False)
            upstream.setblocking(False)
            peer = {client: upstream, upstream: client}
            pending = {client: bytearray(), upstream: bytearray()}  # bytes waiting to be written TO the key
            eof = {client: False, upstream: False}  # key sent EOF (its peer gets SHUT_WR once flushed)
            shut = {client: False, upstream: False}  # key was shut down for writing
            while self._wait_flowing():
                readers = [s for s in (client, upstream) if not eof[s] and len(pending[peer[s]]) < self.BUFFER_LIMIT]
                writers = [s for s in (client, upstream) if pending[s]]
                if not readers and not writers:
                    return  # both directions finished
                readable, writable, _ = select.select(readers, writers, [], 0.1)
                with self._cond:
                    if self._stalled or self._closed.is_set():
                        continue  # nothing moves after stall() returned
                    for sock in readable:
                        data = sock.recv(65536)
                        if data:
                            pending[peer[sock]] += data
                        else:
                            eof[sock] = True
                    for sock in writable:
                        sent = sock.send(pending[sock])
                        del pending[sock][:sent]
                    for sock in (client, upstream):
                        if eof[sock] and not pending[peer[sock]] and not shut[peer[sock]]:
                            peer[sock].shutdown(socket.SHUT_WR)
                            shut[peer[sock]] = True
        except OSError:
            return  # reset / broken pipe: drop the connection
        finally:
            for sock in (client, upstream):
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.close()

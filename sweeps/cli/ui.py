"""The MLflow UI of a sweep: the links to its runs tables, and the server's lifetime in a process group of its own.

``sweeps ui`` (:mod:`sweeps.cli.commands`) starts ``mlflow server`` on the configured store and prints, first,
the link to each sweeps experiment's runs table (:func:`runs_table_url`, :func:`study_experiments`);
:func:`serve_in_own_group` then runs the server until it exits or a signal arrives.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

from sweeps.redaction import without_password
from sweeps.stores import scheme

__all__ = ["echo_links", "runs_table_url", "serve_in_own_group", "server_command", "study_experiments"]


def runs_table_url(base_url: str, experiment_id: str) -> str:
    """The MLflow UI's runs table of one experiment.

    MLflow 3's UI is a hash-routed single page; ``#/experiments/<id>`` alone opens the experiment's
    GenAI overview (empty for a sweep), ``#/experiments/<id>/runs`` its runs table (the route
    ``experimentPageTabRuns`` of MLflow 3.17's UI).
    """
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs"


def study_experiments(tracking_uri: str, experiment_prefix: str, study: str | None = None) -> list[tuple[str, str]]:
    """(experiment name, id) of the sweeps experiments in the store, sorted by name: the experiment of
    ``study`` (none if it does not exist), else every active experiment whose name starts with the prefix.
    A SQLite store that does not exist yet has none (it is not created here)."""
    from sweeps.stores import require_sqlite_file

    try:
        require_sqlite_file(tracking_uri)
    except FileNotFoundError:
        return []
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    if study is not None:
        exp = client.get_experiment_by_name(f"{experiment_prefix}{study}")
        return [(exp.name, exp.experiment_id)] if exp is not None and exp.lifecycle_stage == "active" else []
    found: list[tuple[str, str]] = []
    token = None
    while True:
        page = client.search_experiments(max_results=1000, page_token=token)
        found += [(e.name, e.experiment_id) for e in page if e.name.startswith(experiment_prefix)]
        token = page.token
        if not token:
            return sorted(found)


def echo_links(base_url: str, tracking_uri: str, experiment_prefix: str, study: str | None,
               request_timeout_s: float, *, strict: bool = False) -> None:
    """Print the runs-table link of the study's experiment (or of every sweeps experiment).

    ``strict``: a store that cannot be read raises (the links are all the command does); else the failure is
    one line and the caller goes on (the links are a convenience: the UI starts anyway)."""
    from sweeps.redaction import redact
    from sweeps.stores import check_tracking_server, mlflow_http_settings

    try:
        check_tracking_server(tracking_uri, timeout=request_timeout_s)  # no MLflow client retries on a dead server
        with mlflow_http_settings(request_timeout_s):
            found = study_experiments(tracking_uri, experiment_prefix, study)
    except Exception as err:  # noqa: BLE001 - the links are a convenience: the UI starts anyway
        if strict:
            raise
        click.echo(f"(could not list the experiments: {type(err).__name__}: {redact(err)})", err=True)
        return
    if study is not None and not found:
        click.echo(f"no experiment {experiment_prefix}{study!s} in {redact(tracking_uri)} yet", err=True)
    for name, experiment_id in found:
        click.echo(f"  {name}: {runs_table_url(base_url, experiment_id)}")


def server_command(loc: Any, host: str, port: int) -> tuple[list[str], dict[str, str], str]:
    """``(command, environment, base URL)`` of ``mlflow server`` on the store of ``loc`` (a
    :class:`~sweeps.stores.Locations`); FileNotFoundError when no ``mlflow`` executable is found."""
    beside = Path(sys.executable).with_name("mlflow")  # the MLflow of this environment first
    exe = str(beside) if beside.exists() else shutil.which("mlflow")
    if exe is None:
        raise FileNotFoundError("the mlflow executable was not found (pip install mlflow)")
    # The store's URI travels in the environment, not on the command line (which `ps` shows to every user),
    # and a database password goes to PGPASSWORD (libpq's), out of the URI MLflow might print.
    cmd = [exe, "server", "--host", host, "--port", str(port), "--workers", "1"]
    if loc.artifact_location:
        cmd += ["--default-artifact-root", loc.artifact_location]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_BACKEND_STORE_URI": loc.tracking_uri}
    store, password = without_password(loc.tracking_uri)
    if password is not None and scheme(store) in ("postgresql", "postgres"):  # libpq reads it from there
        env.update(MLFLOW_BACKEND_STORE_URI=store, PGPASSWORD=password)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # a wildcard bind is browsed on loopback
    return cmd, env, f"http://{shown}:{port}"


def serve_in_own_group(cmd: list[str], env: dict[str, str], *, interrupted_code: int = 130) -> int:
    """Run ``cmd`` in a session and process group of its own until it exits (its exit code) or SIGINT,
    SIGTERM or SIGHUP arrives: then SIGTERM to the whole group (the server and its workers), up to 10 s
    for it to go, SIGKILL to whatever is left, and ``interrupted_code``."""
    received: list[int] = []  # the handler only records: Popen.wait() must not be re-entered from it

    def on_signal(signum: int, _frame: Any) -> None:
        received.append(signum)

    def group_alive(pgid: int) -> bool:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):  # gone (or the id now names a group not ours)
            return False
        return True

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    # Its own session and process group: signals reach the server and its workers only from here.
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    while proc.poll() is None and not received:
        time.sleep(0.1)
    if not received:
        return proc.returncode
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + 10
    while proc.poll() is None or group_alive(proc.pid):
        if time.monotonic() >= deadline:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            break
        time.sleep(0.1)
    proc.wait()
    return interrupted_code

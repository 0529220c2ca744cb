"""What every ``sweeps`` command shares: its exit codes, the store options, and the one-line failure.

Every command ends a failure with one ``error:`` line on standard error and an exit code of the table in
``docs/cli.md`` ("Exit codes"), never a traceback: :class:`OneLineGroup` turns whatever a command raises
into that line (:func:`failure_of`); ``sweeps --debug`` (or ``SWEEPS_DEBUG=1``) prints the traceback
first. Secrets never reach the terminal: every line goes through :mod:`sweeps.redaction`.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator
from typing import Any

import click

from sweeps.config import ConfigError, SweepConfig, load_config
from sweeps.redaction import first_line, guard_output, redact

EXIT_NO_COMPLETE, EXIT_BAD_INPUT, EXIT_UNAVAILABLE, EXIT_WORKER_DIED, EXIT_INTERRUPTED = 1, 2, 3, 4, 130
#: The tracking server refused the credentials (HTTP 401/403): set MLFLOW_TRACKING_USERNAME / _PASSWORD.
EXIT_REFUSED = 5
#: Anything else: a bug of sweeps (``--debug`` shows the traceback to report).
EXIT_INTERNAL = 70
#: What ``trials`` and ``history`` write (``--format``).
FORMATS = ("csv", "parquet", "json")

storage_option = click.option("--storage", metavar="URL", default=None,
                              help="Optuna storage URL (default: $SWEEPS_STORAGE, the config's study.storage, "
                                   "else sqlite:///optuna.db in the working directory).")
tracking_option = click.option("--tracking-uri", metavar="URI", default=None,
                               help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, mlflow.yml, else "
                                    "sqlite:///mlflow.db in the working directory).")
mlflow_yml_option = click.option("--mlflow-config", "mlflow_yml", type=click.Path(dir_okay=False), default=None,
                                 help="Path of mlflow.yml (default: ./mlflow.yml if present).")


def one_line(message: str) -> str:
    """``message`` on one line: a config error's field lines joined with ``; `` after its heading."""
    out = ""
    for part in (p.strip() for p in str(message).splitlines()):
        if part:
            out += (" " if out.endswith(":") else "; " if out else "") + part
    return out


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    click.echo(f"error: {redact(one_line(message))}", err=True)
    sys.exit(code)


#: Exceptions raised by the stores' libraries: the store (a database, a server, a file) failed, not sweeps.
STORE_MODULES = ("sqlalchemy", "psycopg2", "psycopg", "optuna.storages", "mlflow", "requests", "urllib3", "redis",
                 "sqlite3", "alembic", "pymysql")


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                      file: Any = None, line: str | None = None) -> None:
    """A warning as the CLI shows it: ``warning: <message>`` on one line (not Python's file, line and source)."""
    click.echo(f"warning: {redact(one_line(str(message)))}", err=True)


def _option(args: list[str], name: str) -> str | None:
    """The value of option ``name`` in a raw argument list (``--name VALUE`` or ``--name=VALUE``)."""
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _tracking_uri_of(args: list[str]) -> str:
    """The tracking URI a command line uses (its ``--tracking-uri``, else the environment, ``mlflow.yml``)."""
    from sweeps.stores import resolve_locations

    try:
        return resolve_locations(tracking_uri=_option(args, "--tracking-uri"),
                                 mlflow_yml=_option(args, "--mlflow-config")).tracking_uri
    except Exception:  # noqa: BLE001 - a bad mlflow.yml: its own error line says so; this must not raise
        return os.environ.get("MLFLOW_TRACKING_URI", "")


def failure_of(err: BaseException, tracking_uri: str = "") -> tuple[int, str]:
    """The exit code and the one line for an exception a command raised.

    Credentials refused (HTTP 401/403) -> :data:`EXIT_REFUSED` with the variable to set; a bad config, option,
    value or study name (``ValueError``, ``LookupError``) -> :data:`EXIT_BAD_INPUT`; a store, server or file
    that failed (``OSError``, or any exception of the stores' libraries, :data:`STORE_MODULES`) ->
    :data:`EXIT_UNAVAILABLE`; anything else -> :data:`EXIT_INTERNAL` (a bug: ``--debug`` shows where).
    """
    from nncore.datasets import DatasetError
    from sweeps.stores import refused_credentials, refused_message

    if isinstance(err, DatasetError):  # a data file that is missing or unreadable
        return EXIT_UNAVAILABLE, first_line(err)
    if refused_credentials(err):
        return EXIT_REFUSED, refused_message(tracking_uri, err)
    module = type(err).__module__ or ""
    if isinstance(err, (ConfigError, LookupError)) or (isinstance(err, ValueError) and not module.startswith(
            STORE_MODULES)):
        return EXIT_BAD_INPUT, first_line(err)
    if isinstance(err, (OSError, DatasetError)) or module.startswith(STORE_MODULES):
        kind = "" if isinstance(err, OSError) and str(err) else f"{type(err).__name__}: "
        return EXIT_UNAVAILABLE, kind + first_line(err)
    return EXIT_INTERNAL, (f"unexpected {type(err).__name__}: {first_line(err)} (a bug of sweeps: rerun with "
                           f"'sweeps --debug ...' and report the traceback)")


class OneLineGroup(click.Group):
    """A click group whose commands end every failure with one ``error:`` line and an exit code
    (:func:`failure_of`), and whose output is guarded: no secret is ever written (:func:`sweeps.redaction.guard_output`,
    with the passwords of the URLs given on the command line)."""

    def invoke(self, ctx: click.Context) -> Any:
        with warnings.catch_warnings():  # click 8.2 deprecates protected_args; before 9.0, args hold them too
            warnings.simplefilter("ignore", DeprecationWarning)
            args = [*getattr(ctx, "protected_args", ()), *ctx.args]
        with guard_output([arg for arg in args if "://" in arg]), warnings.catch_warnings():
            warnings.showwarning = _one_line_warning
            try:
                return super().invoke(ctx)
            except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort, SystemExit):
                raise
            except KeyboardInterrupt:
                click.echo("error: interrupted", err=True)
                sys.exit(EXIT_INTERRUPTED)
            except Exception as err:  # noqa: BLE001 - every failure becomes one line and an exit code
                if ctx.meta.get("sweeps.debug"):  # --debug, or SWEEPS_DEBUG (the option's envvar)
                    import traceback

                    traceback.print_exc()  # through the guard: masked too
                code, line = failure_of(err, _tracking_uri_of(args))
                _fail(line, code)


def _config(path: str) -> SweepConfig:
    try:
        return load_config(path)
    except ConfigError as err:
        _fail(str(err))
        raise  # unreachable


def _locations(storage: str | None, tracking_uri: str | None, mlflow_yml: str | None,
               cfg: SweepConfig | None = None, *, tracking: bool = True, writer: bool = False) -> Any:
    """The resolved locations (:func:`sweeps.stores.resolve_locations`); a bad ``mlflow.yml`` or, for a command
    that uses MLflow (``tracking``), a tracking URI of a scheme MLflow does not open: one line, exit 2.

    ``writer`` (``run``, ``prepare``, ``train``, with ``tracking``): a tracking database that is no database at all,
    or cannot be reached, is refused before any work (:func:`sweeps.stores.require_tracking_store`: exit 3).
    """
    from sweeps.stores import check_tracking_scheme, require_tracking_store, resolve_locations

    try:
        loc = resolve_locations(storage=storage, tracking_uri=tracking_uri, mlflow_yml=mlflow_yml,
                                config_storage=cfg.study.storage if cfg else None)
        if tracking:
            check_tracking_scheme(loc.tracking_uri)
    except ValueError as err:
        _fail(str(err))
    if tracking and writer:
        require_tracking_store(loc.tracking_uri, reader=False)
    return loc


@contextlib.contextmanager
def reading(loc: Any, *, tracking: bool = True) -> Iterator[None]:
    """The block of a reading command: it gives up on an unreachable store within the configured timeout.

    The tracking server (an ``http(s)://`` URI) must answer ``GET /health`` within ``request_timeout_s``
    (``mlflow.yml``, default 10 s) before anything is read, and MLflow's own HTTP retries are bounded inside
    the block (:func:`sweeps.stores.mlflow_http_settings`: a few seconds, not MLflow's minutes); a server that
    stops answering inside it is one line naming it (:class:`~sweeps.stores.TrackingUnavailable`). A tracking
    database must exist and be MLflow's (:func:`sweeps.stores.require_tracking_store`): MLflow's client would
    create it, or its tables in it. ``tracking=False``: neither is checked here (the caller checks).
    """
    from sweeps.stores import check_tracking_server, mlflow_http_settings, require_tracking_store

    if tracking:
        check_tracking_server(loc.tracking_uri, timeout=loc.request_timeout_s)
        require_tracking_store(loc.tracking_uri)  # a missing or foreign database: refused, never created or changed
    with mlflow_http_settings(loc.request_timeout_s):
        try:
            yield
        except Exception as err:
            stopped = _unanswered(err)
            if stopped is None:
                raise
            from sweeps.redaction import redact_url
            from sweeps.stores import TrackingUnavailable

            raise TrackingUnavailable(
                f"the MLflow tracking server {redact_url(loc.tracking_uri)} stopped answering ({stopped}): check the "
                f"server, or raise request_timeout_s in mlflow.yml (now {loc.request_timeout_s:g} s)") from err


def _unanswered(err: BaseException) -> str | None:
    """What an HTTP request of MLflow's client met when the server did not answer (a timeout, a refused or reset
    connection: a ``requests`` connection error or timeout MLflow wrapped); None for any other failure."""
    import re

    import requests

    seen = 0
    while err is not None and seen < 5:
        if isinstance(err, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
            reason = getattr(err.args[0], "reason", None) if err.args else None  # urllib3's MaxRetryError
            text = first_line(reason if isinstance(reason, BaseException) else err)
            return re.sub(r"^\w+ConnectionPool\([^)]*\): ", "", text)  # the host is named in the line already
        err = err.__cause__ or err.__context__
        seen += 1
    return None

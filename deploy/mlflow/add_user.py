"""Create the sweep workers' own user on an MLflow tracking server that runs the basic-auth app, or set
its password if it exists already. Idempotent: run it after every (re)start of the server, or after a
password change. Run as the admin; the user it makes is never an admin.

    MLFLOW_TRACKING_URI=http://mlflow:5000 \\
    MLFLOW_TRACKING_USERNAME=admin MLFLOW_TRACKING_PASSWORD=<the admin's> \\
    SWEEPS_MLFLOW_USER=sweeps-worker SWEEPS_MLFLOW_USER_PASSWORD=<the workers'> \\
    python deploy/mlflow/add_user.py

Environment (never the command line: passwords there are visible to every user of the machine):

    MLFLOW_TRACKING_URI          the tracking server, e.g. http://mlflow:5000
    MLFLOW_TRACKING_USERNAME     an admin of the server (MLflow's own client variables)
    MLFLOW_TRACKING_PASSWORD     its password
    SWEEPS_MLFLOW_USER           the user to create or update, e.g. sweeps-worker
    SWEEPS_MLFLOW_USER_PASSWORD  its password, of 12 characters or more (MLflow's minimum)

Prints one line and exits 0 when the user exists with that password; one line on stderr and exits 1
when the server refuses or cannot be reached, 2 when a variable is missing or invalid. It never
prints a password.
"""

from __future__ import annotations

import logging
import os
import sys
import urllib.parse
import warnings
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow.exceptions import MlflowException

PROG = "add_user.py"
MIN_PASSWORD = 12  # mlflow.utils.validation._validate_password
#: MLflow's HTTP retries for this one-shot script: a few seconds, not MLflow's minutes of backoff.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


class Failure(Exception):
    """One line for the user, and the exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _setting(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise Failure(f"{name} is not set", 2)
    return value


def _redacted(uri: str) -> str:
    """The URI without any user:password@ it may hold."""
    parts = urllib.parse.urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _explain(err: MlflowException, uri: str, admin: str, action: str) -> Failure:
    """A one-line Failure for what the server (or the network) answered."""
    where = _redacted(uri)
    if isinstance(err.__cause__ or err.__context__, OSError):
        return Failure(f"cannot reach the tracking server at {where} "
                       f"({type(err.__cause__ or err.__context__).__name__})")
    code = err.error_code
    if code == "UNAUTHENTICATED":
        return Failure(f"the tracking server at {where} refused the login of {admin!r} (HTTP 401): check "
                       "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (the admin's password is the one "
                       "the server had at its first start)")
    if code == "PERMISSION_DENIED":
        return Failure(f"{admin!r} is not an admin of the tracking server at {where} (HTTP 403): "
                       "run this as the admin (admin_username in basic_auth.ini)")
    if code == "ENDPOINT_NOT_FOUND" or err.get_http_status_code() == 404:
        return Failure(f"the tracking server at {where} has no user API: is it started with "
                       "--app-name basic-auth?")
    said = _scrubbed(str(err.message)) or code  # the server's words: they could echo a request
    return Failure(f"{action} failed (HTTP {err.get_http_status_code()}, {code}): {said[:300]}")


def add_user() -> str:
    uri = _setting("MLFLOW_TRACKING_URI")
    admin = _setting("MLFLOW_TRACKING_USERNAME")
    _setting("MLFLOW_TRACKING_PASSWORD")  # read by MLflow's client itself
    user = _setting("SWEEPS_MLFLOW_USER")
    password = _setting("SWEEPS_MLFLOW_USER_PASSWORD")
    if not uri.startswith(("http://", "https://")):
        raise Failure(f"MLFLOW_TRACKING_URI must be the tracking server's http(s):// address, not {_redacted(uri)}", 2)
    if len(password) < MIN_PASSWORD:
        raise Failure(f"SWEEPS_MLFLOW_USER_PASSWORD is shorter than {MIN_PASSWORD} characters "
                      "(MLflow's minimum; e.g. openssl rand -hex 24)", 2)
    if user == admin:
        raise Failure(f"SWEEPS_MLFLOW_USER is the admin ({admin!r}): the workers need a user of their own", 2)
    for name, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)

    from mlflow.exceptions import MlflowException
    from mlflow.server import get_app_client

    client = get_app_client("basic-auth", tracking_uri=uri)
    try:
        existing = client.get_user(user)
    except MlflowException as err:
        if err.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise _explain(err, uri, admin, f"looking up user {user!r}") from None
        existing = None
    if existing is None:
        try:
            client.create_user(user, password)
        except MlflowException as err:
            raise _explain(err, uri, admin, f"creating user {user!r}") from None
        return f"created user {user!r} (not an admin) on {_redacted(uri)}"
    if existing.is_admin:
        raise Failure(f"user {user!r} is an admin of {_redacted(uri)}: the workers must not be; "
                      "pick another SWEEPS_MLFLOW_USER")
    try:
        client.update_user_password(user, password)
    except MlflowException as err:
        raise _explain(err, uri, admin, f"setting the password of user {user!r}") from None
    return f"user {user!r} exists (not an admin): its password is set on {_redacted(uri)}"


def _scrubbed(text: str) -> str:
    """Someone else's ``text`` (an exception, a server's answer) on one line, with the passwords of this
    environment replaced by ***."""
    for name in ("MLFLOW_TRACKING_PASSWORD", "SWEEPS_MLFLOW_USER_PASSWORD"):
        secret = os.environ.get(name, "")
        if secret:
            text = text.replace(secret, "***")
    return " ".join(text.split())


def main() -> int:
    # One line out, whatever MLflow's imports and HTTP retries would log or warn about.
    warnings.filterwarnings("ignore")
    logging.disable(logging.CRITICAL)
    try:
        done = add_user()
    except Failure as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return err.code
    except Exception as err:  # noqa: BLE001 - one line, no traceback (it could hold a request's body)
        print(f"{PROG}: failed: {_scrubbed(f'{type(err).__name__}: {err}')[:400]}", file=sys.stderr)
        return 1
    print(f"{PROG}: {done}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

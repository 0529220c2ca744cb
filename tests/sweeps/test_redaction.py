"""sweeps.redaction: passwords masked in URLs, pairs, headers, literals; the guarded streams."""

from __future__ import annotations

import io
import logging
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sweeps.redaction import (MASK, MIN_LITERAL, Redactor, RedactingStream, guard_output, known_secrets, redact,
                              redact_url, url_password)


@pytest.mark.parametrize("url, shown", [
    ("postgresql+psycopg2://postgres:S3cretPW@127.0.0.1:5432/test",
     "postgresql+psycopg2://postgres:***@127.0.0.1:5432/test"),
    ("http://alice:pa%40ss%2Fw@mlflow:5000", "http://alice:***@mlflow:5000"),
    ("redis://:hunter22@localhost:6379/0", "redis://:***@localhost:6379/0"),
    ("postgresql://u:S3cretPW@db", "postgresql://u:***@db"),
    # no password: unchanged
    ("postgresql+psycopg2://sweeps@pgbouncer:6432/optuna", "postgresql+psycopg2://sweeps@pgbouncer:6432/optuna"),
    ("http://127.0.0.1:5000/#/experiments/1/runs", "http://127.0.0.1:5000/#/experiments/1/runs"),
    ("sqlite:///optuna.db", "sqlite:///optuna.db"),
    ("journal:///tmp/x.log", "journal:///tmp/x.log"),
])
def test_redact_url_masks_the_password_only(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_url_password_is_decoded_and_absent_without_one() -> None:
    assert url_password("http://alice:pa%40ss@h") == "pa@ss"
    assert url_password("postgresql://sweeps@h/db") is None
    assert url_password("http://h:5000/x") is None
    assert url_password(f"http://u:{MASK}@h") is None  # already masked


def test_urls_inside_free_text_and_library_messages() -> None:
    msg = ("(psycopg2.OperationalError) connection to server at \"127.0.0.1\", port 5999 failed "
           "[SQL: x] (opening postgresql+psycopg2://postgres:S3cretPW@127.0.0.1:5999/test); "
           "dsn 'host=h user=u password=S3cretPW dbname=d'; API request to http://u:S3cretPW@h:5000/api failed")
    out = Redactor()(msg)
    assert "S3cretPW" not in out
    assert out.count(MASK) == 3
    assert "port 5999 failed" in out  # the rest is kept


def test_authorization_header_and_query_parameters() -> None:
    out = Redactor()("headers {'Authorization': 'Basic dXNlcjpwYXNz'} url http://h/x?token=abc123&a=1")
    assert "dXNlcjpwYXNz" not in out and "abc123" not in out and "a=1" in out


def test_literal_secrets_also_percent_encoded_and_longest_first() -> None:
    r = Redactor(["p@ss word!", "p@ss"])
    out = r("said p@ss word! and p%40ss%20word%21 and p@ss")
    assert "p@ss" not in out and "p%40ss" not in out
    assert out == f"said {MASK} and {MASK} and {MASK}"


def test_short_literals_are_masked_only_where_they_are_secrets() -> None:
    short = "x" * (MIN_LITERAL - 1)
    r = Redactor([short])
    assert r(f"box {short}y") == f"box {short}y"
    assert r(f"postgresql://u:{short}@h/db") == f"postgresql://u:{MASK}@h/db"


def test_known_secrets_from_urls_and_environment() -> None:
    env = {"SWEEPS_STORAGE": "postgresql://u:fromstorage@h/d", "MLFLOW_TRACKING_PASSWORD": "trackpw1",
           "MY_SERVICE_PASSWORD": "custompw", "MLFLOW_FLASK_SERVER_SECRET_KEY": "flaskkey", "HOME": "/root",
           "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"}
    found = known_secrets(["http://a:fromflag@h"], environ=env)
    assert set(found) == {"fromflag", "fromstorage", "trackpw1", "custompw", "flaskkey"}


def test_redact_defaults_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "envCanary42")
    assert redact("server said envCanary42 is wrong") == f"server said {MASK} is wrong"


def test_stream_masks_a_secret_split_across_writes() -> None:
    target = io.StringIO()
    s = RedactingStream(target, Redactor(["Canary-Secret"]))
    s.write("user Canary-")
    s.write("Secret logged\npartial Cana")
    assert target.getvalue() == f"user {MASK} logged\n"
    s.write("ry-Secret")
    s.flush()
    assert "Canary-Secret" not in target.getvalue() and target.getvalue().endswith(f"partial {MASK}")


def test_guard_output_covers_print_logging_and_restores(monkeypatch: pytest.MonkeyPatch, capfd) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    before = sys.stdout, sys.stderr
    log = logging.getLogger("test.redaction")
    with guard_output(["postgresql://u:GuardCanary9@h/d"]):
        print("opening postgresql://u:GuardCanary9@h/d")
        print("the bare GuardCanary9 too", file=sys.stderr)
        handler = logging.StreamHandler()  # made inside the guard: writes to the guarded stderr
        log.addHandler(handler)
        try:
            log.warning("retrying GuardCanary9")
        finally:
            log.removeHandler(handler)
    assert (sys.stdout, sys.stderr) == before
    out, err = capfd.readouterr()
    assert "GuardCanary9" not in out + err
    assert "u:***@h/d" in out and err.count(MASK) == 2


@settings(max_examples=200, deadline=None, derandomize=True)
@given(user=st.from_regex(r"[A-Za-z0-9._~%-]{0,8}", fullmatch=True),
       password=st.text(min_size=1, max_size=20), host=st.from_regex(r"[a-z][a-z0-9.-]{0,15}(:[0-9]{1,5})?",
                                                                       fullmatch=True))
def test_no_password_survives_in_any_url(user: str, password: str, host: str) -> None:
    """Whatever the password (encoded as a URL needs it), neither it nor its encoding is shown."""
    from urllib.parse import quote

    encoded = quote(password, safe="")
    url = f"postgresql+psycopg2://{user}:{encoded}@{host}/db"
    shown = redact_url(url)
    assert shown == f"postgresql+psycopg2://{user}:{MASK}@{host}/db"
    assert url_password(url) == password


def test_known_secrets_survive_an_environment_changed_by_another_thread() -> None:
    """MLflow's telemetry thread unsets a variable while other threads read os.environ: a copy that fails
    (KeyError) is taken again, not raised into whatever was being shown."""
    from sweeps.redaction import _snapshot

    class Racing(dict):
        tries = 0

        def items(self):  # the first copy meets a variable unset meanwhile
            Racing.tries += 1
            if Racing.tries == 1:
                raise KeyError("_MLFLOW_TELEMETRY_SESSION_ID")
            return super().items()

    env = Racing(PGPASSWORD="racingpw1")
    assert _snapshot(env) == {"PGPASSWORD": "racingpw1"} and Racing.tries == 2


@pytest.mark.parametrize("err, shown", [
    (ValueError("\n  bad value at postgresql://u:LineCanary1@h/db\n  [SQL: SELECT 1]\n"),
     "bad value at postgresql://u:***@h/db"),
    (KeyError("study 'x' not found"), "study 'x' not found"),  # without str(KeyError)'s quotes
    (RuntimeError(""), "RuntimeError"),
])
def test_first_line_is_the_masked_first_line_of_an_exception(err, shown) -> None:
    from sweeps.redaction import first_line

    assert first_line(err) == shown

"""Secrets are never shown: the one place that masks them.

Every location ``sweeps`` shows (a storage URL, a tracking URI) and every message it passes on from the
libraries underneath goes through :func:`redact` (or :func:`redact_url`) first. What it masks, each
replaced by :data:`MASK`:

* the password of a URL's user-info, ``scheme://user:PASSWORD@host`` -> ``scheme://user:***@host``
  (any scheme: ``postgresql+psycopg2``, ``http``, ``redis``, ...), wherever a URL appears in a text
  (a password holding ``@`` or ``/`` must be percent-encoded in a URL, as RFC 3986 and SQLAlchemy ask);
* the value of a ``password=`` / ``passwd=`` / ``token=`` pair (libpq key/value strings, URL queries);
* an HTTP ``Authorization: Basic|Bearer ...`` value;
* every literal secret it is given (:func:`known_secrets`: the passwords of the URLs in effect and the
  values of the environment variables that hold secrets, :data:`SECRET_VARIABLES` and any variable
  whose name ends in ``PASSWORD``, ``TOKEN`` or ``SECRET_KEY``), also percent-encoded. Literals shorter
  than :data:`MIN_LITERAL` characters are not masked alone (a one-character password would mask every
  such character of every line); they are still masked inside URLs and ``password=`` pairs.

A process of ours (the CLI, a worker) also guards its standard streams with :func:`guard_output`, so a
line a library prints or logs on its own is masked too. Library calls change no global state: only the
command line and the worker processes (ours) install the guard.
"""

from __future__ import annotations

import io
import os
import re
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO
from urllib.parse import quote, unquote

__all__ = ["MASK", "MIN_LITERAL", "SECRET_VARIABLES", "Redactor", "first_line", "guard_output", "known_secrets", "redact",
           "redact_url", "url_password", "without_password"]

MASK = "***"
#: Shorter literal secrets are masked only where their place says they are secrets (URLs, ``password=``).
MIN_LITERAL = 4
#: Environment variables whose values are secrets (besides any ``*PASSWORD``, ``*TOKEN``, ``*SECRET_KEY``).
SECRET_VARIABLES = ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "PGPASSWORD",
                    "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY")
#: Environment variables that hold URLs, whose passwords are secrets.
URL_VARIABLES = ("SWEEPS_STORAGE", "MLFLOW_TRACKING_URI", "MLFLOW_BACKEND_STORE_URI", "MLFLOW_REGISTRY_URI")

# scheme://user:password@ : the password ends at the last '@' before the host part.
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@'\"<>]*:)(?P<pw>[^\s'\"<>@/]*)(?=@)")
_PAIR = re.compile(r"(?P<head>\b(?:password|passwd|pwd|token|secret)\s*[=:]\s*)(?P<quote>['\"]?)(?P<pw>[^\s&'\";,]+)",
                   re.IGNORECASE)
_AUTH_HEADER = re.compile(r"(?P<head>\bAuthorization['\"]?\s*[:=]\s*['\"]?(?:Basic|Bearer|Token)\s+)(?P<pw>[A-Za-z0-9+/=._\-~]+)",
                          re.IGNORECASE)


def url_password(url: str) -> str | None:
    """The password of ``url``'s user-info (percent-decoded), None without one."""
    m = _USERINFO.search(url or "")
    return unquote(m.group("pw")) if m and m.group("pw") and m.group("pw") != MASK else None


def without_password(url: str) -> tuple[str, str | None]:
    """``(url without its password, the password)`` (None and ``url`` unchanged when it has none): for a
    client that takes the password elsewhere (libpq's ``PGPASSWORD``)."""
    m = _USERINFO.search(url or "")
    if not m or not m.group("pw") or m.group("pw") == MASK:
        return url, None
    return url[: m.start("pw") - 1] + url[m.end("pw"):], unquote(m.group("pw"))


def redact_url(url: str) -> str:
    """``url`` with its password replaced by :data:`MASK`: ``postgresql+psycopg2://u:***@host/db``."""
    return redact(url)


def _secret_variable(name: str) -> bool:
    upper = name.upper()
    return upper in SECRET_VARIABLES or upper.endswith(("PASSWORD", "_TOKEN", "SECRET_KEY"))


def _snapshot(environ: Any) -> dict[str, str]:
    """A copy of ``environ``. Another thread may change ``os.environ`` meanwhile (MLflow's telemetry thread unsets a
    variable of its own): a copy that fails for that is taken again."""
    for _ in range(5):
        try:
            return dict(environ.items())
        except (KeyError, RuntimeError):
            continue
    return {}


def known_secrets(urls: Iterable[str | None] = (), environ: Any = None) -> list[str]:
    """The literal secrets in effect: the passwords of ``urls`` and of the URL variables
    (:data:`URL_VARIABLES`), and the values of the secret variables of ``environ`` (default ``os.environ``)."""
    env = _snapshot(os.environ) if environ is None else environ
    found: list[str] = []
    for url in [*urls, *(env.get(name) for name in URL_VARIABLES)]:
        pw = url_password(url) if url else None
        if pw:
            found.append(pw)
    found += [value for name, value in env.items() if value and _secret_variable(name)]
    return list(dict.fromkeys(found))


class Redactor:
    """Masks URL passwords, ``password=`` pairs, authorization headers and the given literal secrets."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        literals: set[str] = set()
        for secret in secrets:
            if secret and len(secret) >= MIN_LITERAL:
                literals |= {secret, quote(secret, safe=""), quote(secret)}
        # longest first: a secret that contains another is masked whole
        self.literals = sorted(literals, key=len, reverse=True)
        self._literal = re.compile("|".join(map(re.escape, self.literals))) if self.literals else None

    def __call__(self, text: str) -> str:
        if not text:
            return text
        if self._literal is not None:
            text = self._literal.sub(MASK, text)
        if "://" in text:
            text = _USERINFO.sub(lambda m: m.group("head") + (MASK if m.group("pw") else ""), text)
        if "=" in text or ":" in text:
            text = _PAIR.sub(lambda m: m.group("head") + m.group("quote") + MASK, text)
            text = _AUTH_HEADER.sub(lambda m: m.group("head") + MASK, text)
        return text


def redact(text: Any, secrets: Iterable[str] | None = None) -> str:
    """``str(text)`` with every secret masked (the module docstring). ``secrets``: the literals to mask,
    default :func:`known_secrets` of the environment."""
    return Redactor(known_secrets() if secrets is None else secrets)(str(text))


def first_line(err: BaseException) -> str:
    """How an exception is shown in one line: the first non-blank line of its text (a ``KeyError``'s without
    the quotes ``str`` gives it), else its type's name; every secret masked."""
    text = str(err).strip()
    if isinstance(err, KeyError) and len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1]  # str(KeyError("x")) is "'x'"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return redact(lines[0] if lines else type(err).__name__)


class RedactingStream(io.TextIOBase):
    """A text stream that masks secrets in what is written, then writes it to ``target``.

    Whole lines are masked at once (a secret split across two ``write`` calls is still found): text is
    held until its newline, a flush, or the close of the guard.
    """

    def __init__(self, target: TextIO, redactor: Redactor) -> None:
        self.target, self.redactor, self._held = target, redactor, ""

    def write(self, text: str) -> int:
        data = self._held + text
        cut = max(data.rfind("\n"), data.rfind("\r")) + 1
        self._held = data[cut:]
        if cut:
            self.target.write(self.redactor(data[:cut]))
        return len(text)

    def flush(self) -> None:
        if self._held:
            self.target.write(self.redactor(self._held))
            self._held = ""
        self.target.flush()

    def isatty(self) -> bool:
        return self.target.isatty()

    def fileno(self) -> int:
        return self.target.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.target, "encoding", "utf-8")

    def writable(self) -> bool:
        return True

    def __getattr__(self, name: str) -> Any:  # buffer, errors, ... of the real stream
        return getattr(self.target, name)


@contextmanager
def guard_output(urls: Iterable[str | None] = (), extra: Iterable[str] = ()) -> Iterator[Redactor]:
    """Inside the block, ``sys.stdout`` and ``sys.stderr`` mask every secret (:func:`known_secrets` of
    ``urls`` and of the environment, and ``extra``) before it is written; restored after it.

    For processes of ours only (the CLI, the workers): it replaces the interpreter's streams.
    Logging handlers that write to ``sys.stderr`` through Python's last-resort handler, or that are
    created inside the block, write through the guard.
    """
    redactor = Redactor([*known_secrets(urls), *extra])
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = RedactingStream(saved[0], redactor), RedactingStream(saved[1], redactor)
    try:
        yield redactor
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        sys.stdout, sys.stderr = saved

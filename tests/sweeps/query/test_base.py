"""sweeps.query.base: the one interface of the history backends."""

from __future__ import annotations

import inspect

import pytest

pytest.importorskip("mlflow")

from sweeps import query  # noqa: E402
from sweeps.query import base, client, database, rest  # noqa: E402


@pytest.mark.parametrize("module", [database, rest, client])
def test_every_backend_has_the_same_read_history(module):
    want = list(inspect.signature(base.HistoryReader.__call__).parameters)[1:]
    assert list(inspect.signature(module.read_history).parameters) == want
    assert query.READERS[{database: "sql", rest: "http", client: "api"}[module]] is module.read_history


def test_helpers():
    assert base.as_int(" 7 ") == 7 and base.as_int("x") is None and base.as_int(None) is None
    assert base.trial_or_missing(None) == -1 and base.trial_or_missing(3) == 3
    assert base.TRIAL_FILTER == "tags.`sweeps.role` = 'trial'"
    assert issubclass(base.Unsupported, RuntimeError) and query.Unsupported is base.Unsupported

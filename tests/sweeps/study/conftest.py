"""The ``url`` fixture of the study room's tests: a fresh SQLite study database, its reader closed after."""

from __future__ import annotations

import pytest
from study_cases import _READERS


@pytest.fixture
def url(scratch):
    """A fresh SQLite study database, in RAM when there is one."""
    url = f"sqlite:///{scratch / 'optuna.db'}"
    try:
        yield url
    finally:
        reader = _READERS.pop(url, None)
        if reader is not None:
            reader.engine.dispose()

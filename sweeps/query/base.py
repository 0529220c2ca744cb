"""The one small interface every history backend implements, and what they share.

A backend is a module with a function ::

    read_history(uri: str, experiment: str, keys: list[str] | None, trials: list[int] | None) -> pd.DataFrame

that returns the *raw* rows of the selected trial runs: the columns :data:`RAW_COLUMNS`
(``run_id, trial, epoch, metric, timestamp, value``), in any order, duplicates of one
(run, metric, epoch) allowed (:func:`sweeps.query.frames.finish_long` keeps the latest).
``keys`` restricts the metric keys (None: all), ``trials`` the trial numbers (None: all).
Only active runs tagged ``sweeps.role=trial`` in ``experiment`` count; a missing
experiment gives no rows. A run without a valid ``sweeps.trial_number`` tag has trial -1.

A backend that cannot serve a store *correctly* (an unknown database schema, a server
without the bulk route) raises :class:`Unsupported` before returning anything; the
caller then warns and reads through the per-run API (:mod:`sweeps.query.client`).

The backends: :mod:`~sweeps.query.database` (``"sql"``), :mod:`~sweeps.query.rest`
(``"http"``), :mod:`~sweeps.query.client` (``"api"``).
"""

from __future__ import annotations

from typing import Any, Protocol

import pandas as pd

from sweeps.names import ROLE_TRIAL, TAG_ROLE

__all__ = ["RAW_COLUMNS", "ROLE_TRIAL", "TRIAL_FILTER", "HistoryReader", "Unsupported", "as_int", "trial_or_missing"]

#: Columns of the raw frame a backend returns.
RAW_COLUMNS = ("run_id", "trial", "epoch", "metric", "timestamp", "value")

#: ``search_runs`` filter selecting the trial runs of an experiment.
TRIAL_FILTER = f"tags.`{TAG_ROLE}` = '{ROLE_TRIAL}'"


class Unsupported(RuntimeError):
    """This backend cannot read this store correctly; the caller falls back to the per-run API.

    The message says why (it is shown in the fallback's warning).
    """


class HistoryReader(Protocol):
    """The signature of a backend's ``read_history`` (see the module docstring)."""

    def __call__(
        self, uri: str, experiment: str, keys: list[str] | None, trials: list[int] | None
    ) -> pd.DataFrame: ...


def as_int(text: Any) -> int | None:
    """``int(text)`` or None when it is not an integer (a missing or malformed tag)."""
    try:
        return int(str(text).strip())
    except (TypeError, ValueError):
        return None


def trial_or_missing(number: int | None) -> int:
    """Trial number of a run; -1 when the run has no (valid) ``sweeps.trial_number`` tag."""
    return -1 if number is None else number

"""The exception every data loader raises for a bad argument or a malformed file."""

from __future__ import annotations

__all__ = ["DatasetError"]


class DatasetError(ValueError):
    """A data set argument or file is invalid (bad size, corrupted file, ...).

    A :class:`ValueError`, so callers that catch ``ValueError`` for bad
    settings catch it too; the message names the argument or file, what was
    expected and what was found.
    """

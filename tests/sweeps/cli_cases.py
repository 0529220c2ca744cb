"""What the CLI's test modules share: how a click result is shown when an assert fails."""

from __future__ import annotations

from click.testing import Result


def describe(r: Result) -> str:
    return f"exit {r.exit_code}\n--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}"

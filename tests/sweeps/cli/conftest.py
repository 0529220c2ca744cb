"""The ``cli`` fixture: ``sweeps`` in process (click's ``CliRunner``) in a scratch directory."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from sweeps.cli.commands import main


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``cli(*args)``: run ``sweeps ARGS`` in process with ``tmp_path`` as the working directory
    and no store selected by the environment."""
    for var in ("SWEEPS_STORAGE", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(main, list(args), catch_exceptions=False)

    return invoke

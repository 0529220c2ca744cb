"""Library calls leave the caller's process as they found it: environment, loggers, warnings filters,
Optuna's verbosity and matplotlib's backend (the CLI and the worker processes, which are ours, may set
what they need).

Third-party packages change some of these once, when they are first imported or first open a store
(scikit-learn and SciPy add warnings filters, Optuna's RDB storage sets alembic's log level): each test
makes one warm-up call first, so that what it measures is what our calls do, every time."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import optuna
import pytest

from sweeps.config import parse_config
from sweeps.stores import resolve_locations
from sweeps.study.storage import open_storage

#: Loggers our code must leave alone. Not "alembic": Optuna's RDBStorage sets it to WARNING itself
#: every time one is opened (optuna/storages/_rdb/storage.py, _VersionManager), whoever opens it.
LOGGERS = ("mlflow", "optuna", "sweeps")


@pytest.fixture
def unusual_settings(monkeypatch):
    """Set the knobs a library might touch to values none would set, so that any change shows."""
    optuna_before = optuna.logging.get_verbosity()
    levels = {n: logging.getLogger(n).level for n in LOGGERS}
    for key in [k for k in os.environ if k.startswith("MLFLOW_HTTP_")]:
        monkeypatch.delenv(key)

    def apply() -> None:
        optuna.logging.set_verbosity(optuna.logging.DEBUG)
        for name in levels:
            logging.getLogger(name).setLevel(7)

    yield apply
    optuna.logging.set_verbosity(optuna_before)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def _state() -> dict:
    return {"env": dict(os.environ), "filters": list(warnings.filters),
            "levels": {n: logging.getLogger(n).level for n in LOGGERS},
            "optuna": optuna.logging.get_verbosity()}


def test_open_storage_changes_nothing_global(tmp_path: Path, unusual_settings) -> None:
    open_storage(f"sqlite:///{tmp_path / 'warm-up.db'}")
    unusual_settings()
    before = _state()
    open_storage(f"sqlite:///{tmp_path / 'optuna.db'}")
    assert _state() == before


@pytest.mark.slow
def test_prepare_a_study_and_its_tracking_changes_nothing_global(tmp_path: Path, monkeypatch,
                                                                 unusual_settings) -> None:
    from sweeps.engine.runner import prepare

    monkeypatch.chdir(tmp_path)
    for key in ("MLFLOW_TRACKING_URI", "SWEEPS_STORAGE", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.delenv(key, raising=False)
    def cfg(name: str):
        return parse_config({"name": name, "data": {"source": "digits", "n_train": 100, "n_eval": 50},
                             "study": {"n_trials": 2}}, source="test")

    prepare(cfg("warm-up"), resolve_locations())
    unusual_settings()
    before = _state()
    prepared = prepare(cfg("g"), resolve_locations())
    assert prepared.parent_run_id is not None
    assert _state() == before


@pytest.mark.slow
def test_importing_plots_selects_no_matplotlib_backend() -> None:
    code = ("import os; os.environ.pop('MPLBACKEND', None); import matplotlib; import sweeps.plots.figures; "
            "print(matplotlib.rcParams._get_backend_or_none())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={k: v for k, v in os.environ.items() if k != "MPLBACKEND"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "None"

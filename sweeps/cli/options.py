"""What every ``sweeps`` command shares: its exit codes, the store options, and the one-line failure."""

from __future__ import annotations

import sys
from typing import Any

import click

from sweeps.config import ConfigError, SweepConfig, load_config

EXIT_NO_COMPLETE, EXIT_BAD_INPUT, EXIT_UNAVAILABLE, EXIT_WORKER_DIED, EXIT_INTERRUPTED = 1, 2, 3, 4, 130
#: What ``trials`` and ``history`` write (``--format``).
FORMATS = ("csv", "parquet", "json")

storage_option = click.option("--storage", metavar="URL", default=None,
                              help="Optuna storage URL (default: $SWEEPS_STORAGE, the config's study.storage, "
                                   "else sqlite:///optuna.db in the working directory).")
tracking_option = click.option("--tracking-uri", metavar="URI", default=None,
                               help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, mlflow.yml, else "
                                    "sqlite:///mlflow.db in the working directory).")
mlflow_yml_option = click.option("--mlflow-config", "mlflow_yml", type=click.Path(dir_okay=False), default=None,
                                 help="Path of mlflow.yml (default: ./mlflow.yml if present).")


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _config(path: str) -> SweepConfig:
    try:
        return load_config(path)
    except ConfigError as err:
        _fail(str(err))
        raise  # unreachable


def _locations(storage: str | None, tracking_uri: str | None, mlflow_yml: str | None,
               cfg: SweepConfig | None = None) -> Any:
    from sweeps.stores import resolve_locations

    try:
        return resolve_locations(storage=storage, tracking_uri=tracking_uri, mlflow_yml=mlflow_yml,
                                 config_storage=cfg.study.storage if cfg else None)
    except ValueError as err:
        _fail(str(err))

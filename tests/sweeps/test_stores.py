"""Where the stores live (``sweeps.stores``): ``mlflow.yml`` and the precedence of the locations, URL schemes
and SQLite paths, MLflow's bounded HTTP settings."""

from __future__ import annotations

import os

import pytest

from sweeps import stores
from sweeps.stores import read_mlflow_yml, resolve_locations

# -- mlflow.yml and the locations ------------------------------------------------------------------

@pytest.mark.parametrize("text, field", [("flush_interval_s: -1\n", "flush_interval_s"),
                                         ("trial_artifacts: some\n", "trial_artifacts"),
                                         ("tracking_url: x\n", "unknown key")])
def test_mlflow_yml_errors_name_the_field(tmp_path, text, field):
    path = tmp_path / "mlflow.yml"
    path.write_text(text)
    with pytest.raises(ValueError, match=field):
        read_mlflow_yml(path)


def test_mlflow_yml_settings_reach_the_locations(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("SWEEPS_STORAGE", raising=False)
    path = tmp_path / "mlflow.yml"
    path.write_text("tracking_uri: sqlite:///x.db\nexperiment_prefix: lab/\nflush_interval_s: 0.25\n"
                    "trial_artifacts: all\n")
    loc = resolve_locations(mlflow_yml=path)
    assert (loc.tracking_uri, loc.experiment_prefix, loc.flush_interval_s, loc.trial_artifacts) == \
        ("sqlite:///x.db", "lab/", 0.25, "all")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///env.db")
    assert resolve_locations(mlflow_yml=path).tracking_uri == "sqlite:///env.db"
    assert resolve_locations(mlflow_yml=path, tracking_uri="sqlite:///flag.db").tracking_uri == "sqlite:///flag.db"
    assert resolve_locations(mlflow_yml=path).storage == "sqlite:///optuna.db"


# -- URL schemes and SQLite files ---------------------------------------------------------------------

def test_schemes_and_paths(tmp_path):
    assert stores.scheme("postgresql+psycopg2://u@h/db") == "postgresql"
    assert stores.scheme("sqlite:///x.db") == "sqlite" and stores.scheme("mlruns") == ""
    assert stores.sqlite_path("sqlite:////abs/x.db?mode=ro") == "/abs/x.db"
    assert stores.sqlite_path("sqlite:///rel.db") == "rel.db"
    assert stores.sqlite_path("sqlite://") is None
    with pytest.raises(FileNotFoundError):
        stores.require_sqlite_file(f"sqlite:///{tmp_path}/absent.db")
    stores.require_sqlite_file("postgresql://u@h/db")  # not a file: nothing to check


# -- MLflow's HTTP settings ---------------------------------------------------------------------------

def test_mlflow_http_settings_bound_the_calls_inside_and_restore_the_environment(monkeypatch):
    from sweeps.stores import mlflow_http_settings

    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_TIMEOUT", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "7")  # the user's own setting wins
    before = dict(os.environ)
    with mlflow_http_settings(3):
        assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "3"
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "7"
    assert dict(os.environ) == before

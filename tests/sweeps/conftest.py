"""Shared fixtures for the ``sweeps`` end-to-end tests.

Every CLI call runs in a subprocess whose working directory is a temporary
directory, so the default stores (``sqlite:///optuna.db``, ``sqlite:///mlflow.db``,
``./mlruns``) land there, with an environment from which ``MLFLOW_TRACKING_URI``,
``SWEEPS_STORAGE`` and the other MLflow run/experiment selectors are removed.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

#: Environment variables that would redirect the stores or attach runs elsewhere.
LEAKY_ENV = ("MLFLOW_TRACKING_URI", "SWEEPS_STORAGE", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME",
             "MLFLOW_EXPERIMENT_ID", "MLFLOW_REGISTRY_URI", "MLFLOW_TRACKING_USERNAME",
             "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "MLFLOW_ARTIFACT_URI")

#: A tiny digits sweep: 300 training rows, 100 evaluation rows, one hidden layer of 10, 3 epochs.
#: The eta range is wide and the median pruner starts after one trial, so trials get pruned.
BASE_CONFIG: dict[str, Any] = {
    "name": "tiny",
    "seed": 0,
    "data": {"source": "digits", "n_train": 300, "n_eval": 100},
    "network": {"hidden": [10], "activation": "sigmoid", "cost": "cross_entropy"},
    "training": {"epochs": 3, "eta": 0.5, "batch_size": 10, "lmbda": 0.1, "penalty": "l2"},
    "objective": {"metric": "eval/accuracy", "direction": "maximize"},
    "search_space": {
        "eta": {"type": "float", "low": 0.01, "high": 10.0, "log": True},
        "lmbda": {"type": "float", "low": 1e-3, "high": 10.0, "log": True},
        "batch_size": {"type": "categorical", "choices": [10, 25, 50]},
    },
    "study": {
        "n_trials": 4,
        "sampler": {"name": "random"},
        "pruner": {"name": "median", "options": {"n_startup_trials": 1, "n_warmup_steps": 0}},
        "workers": 1,
    },
}


def clean_env(**extra: str) -> dict[str, str]:
    """``os.environ`` without the variables that would point the CLI at other stores."""
    env = {k: v for k, v in os.environ.items() if k not in LEAKY_ENV}
    env.update({"MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    env.update(extra)
    return env


def sweeps_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "sweeps", *args]


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict) and not value.pop("__replace__", False):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def write_config(directory: Path, changes: dict[str, Any] | None = None, filename: str = "cfg.yaml") -> Path:
    """Write ``BASE_CONFIG`` deep-merged with ``changes`` (``None`` removes a key; a dict holding
    ``"__replace__": True`` replaces instead of merging) to ``directory/filename``."""
    data = _merge(BASE_CONFIG, copy.deepcopy(changes or {}))
    path = Path(directory) / filename
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def run_cli(args: Sequence[str], cwd: Path, *, timeout: float = 180, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    """Run ``python -m sweeps ARGS`` in ``cwd`` with a clean environment."""
    return subprocess.run(sweeps_cmd(*args), cwd=cwd, env=env or clean_env(), capture_output=True, text=True,
                          timeout=timeout)


def popen_cli(args: Sequence[str], cwd: Path, **kwargs: Any) -> subprocess.Popen[str]:
    log = open(Path(cwd) / "launcher.log", "w")  # noqa: SIM115 - closed by the process' owner via the file
    return subprocess.Popen(sweeps_cmd(*args), cwd=cwd, env=clean_env(), stdout=log, stderr=subprocess.STDOUT,
                            text=True, **kwargs)


def describe(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"


def load_study(directory: Path, name: str = "tiny") -> Any:
    """The Optuna study ``name`` in ``directory/optuna.db`` (read fresh each call)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=name, storage=f"sqlite:///{Path(directory) / 'optuna.db'}")


def mlflow_client(directory: Path) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{Path(directory) / 'mlflow.db'}")


def experiment_runs(directory: Path, experiment_name: str) -> list[Any]:
    """Every run of ``experiment_name`` in ``directory/mlflow.db`` (all statuses)."""
    client = mlflow_client(directory)
    exp = client.get_experiment_by_name(experiment_name)
    assert exp is not None, f"experiment {experiment_name!r} missing in {directory}/mlflow.db"
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs([exp.experiment_id], max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def split_runs(runs: list[Any]) -> tuple[list[Any], list[Any]]:
    """(parent runs, trial runs) by the ``sweeps.role`` tag."""
    parents = [r for r in runs if r.data.tags.get("sweeps.role") == "study"]
    children = [r for r in runs if r.data.tags.get("sweeps.role") == "trial"]
    return parents, children


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.25,
             proc: subprocess.Popen | None = None) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except Exception:  # noqa: BLE001 - the store may not exist yet or be locked
            value = None
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"process exited with {proc.returncode} while waiting for {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class RecordingTracker:
    """A recording stand-in for sweeps.tracking.tracker.Tracker (what the worker loop and the objective call)."""

    def __init__(self) -> None:
        self.epochs: dict[str, list[tuple[int, dict[str, float]]]] = {}
        self.ends: dict[str, tuple[str, str, str]] = {}
        self.params: dict[str, dict[str, Any]] = {}
        self.tags: dict[str, dict[str, str]] = {}
        self.diagnoses: dict[str, dict[str, Any]] = {}
        self.files: dict[str, list[str]] = {}  # artifact file names per run, in the order sent

    def start_trial(self, parent: str, study: str, number: int, params: dict[str, Any], **_: Any) -> str:
        run_id = f"run-{number}"
        self.params[run_id], self.epochs[run_id] = dict(params), []
        return run_id

    def log_epoch(self, run_id: str, values: dict[str, float], step: int, **_: Any) -> None:
        self.epochs[run_id].append((step, dict(values)))

    def finish(self, run_id: str, state: str, reason: str = "", status: str = "", **_: Any) -> None:
        self.ends[run_id] = (state, reason, status)

    def queue_tags(self, run_id: str, tags: dict[str, str]) -> None:
        self.tags.setdefault(run_id, {}).update(tags)

    def log_artifact(self, run_id: str, path: Any, artifact_path: str | None = None) -> None:
        self.files.setdefault(run_id, []).append(Path(path).name)
        if Path(path).name == "diagnosis.json":
            import json

            self.diagnoses[run_id] = json.loads(Path(path).read_text())

    def log_artifacts(self, run_id: str, local_dir: Any, artifact_path: str | None = None) -> None:
        for path in sorted(Path(local_dir).iterdir()):
            self.log_artifact(run_id, path, artifact_path)

    outage_s = 1.0

    def retry_pending(self) -> None:
        pass

    def drain(self, timeout: float) -> list[str]:
        return []


def run_in_process(changes: dict[str, Any], population: int, **loop_kw: Any) -> tuple[Any, Any, Any]:
    """Run a sweep with one in-process worker loop on an in-memory study; (study, tracker, loop)."""
    import optuna

    from sweeps.config import parse_config
    from sweeps.engine.data import load_data
    from sweeps.engine.objective import Objective
    from sweeps.engine.worker import _Loop
    from sweeps.study.samplers import build_pruner, build_sampler, grid_points

    raw = _merge(BASE_CONFIG, copy.deepcopy(changes))
    raw["study"]["population"] = population
    cfg = parse_config(raw)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(study_name=cfg.name, storage=storage, direction=cfg.objective.direction,
                                sampler=build_sampler(cfg), pruner=build_pruner(cfg))
    if cfg.study.sampler.name == "grid":
        for point in grid_points(cfg)[:cfg.study.n_trials]:
            study.enqueue_trial(point)
    else:
        for _ in range(cfg.study.n_trials):
            study.enqueue_trial({})
    tracker = RecordingTracker()
    stop = threading.Event()
    objective = Objective(cfg, load_data(cfg.data, cfg.seed), tracker, None, artifacts="none",
                          interrupt_flag=stop.is_set, names_worker=False)
    loop = _Loop(cfg, study, storage, objective, tracker, stop)
    assert loop.run(None) == 0
    return study, tracker, loop



class Helpers:
    """The helpers above, handed to tests as the ``sw`` fixture."""

    BASE_CONFIG = BASE_CONFIG
    clean_env = staticmethod(clean_env)
    sweeps_cmd = staticmethod(sweeps_cmd)
    write_config = staticmethod(write_config)
    merge = staticmethod(_merge)
    run_cli = staticmethod(run_cli)
    popen_cli = staticmethod(popen_cli)
    describe = staticmethod(describe)
    load_study = staticmethod(load_study)
    mlflow_client = staticmethod(mlflow_client)
    experiment_runs = staticmethod(experiment_runs)
    split_runs = staticmethod(split_runs)
    wait_for = staticmethod(wait_for)
    run_in_process = staticmethod(run_in_process)
    RecordingTracker = RecordingTracker


@pytest.fixture(scope="session")
def sw() -> type[Helpers]:
    return Helpers


@pytest.fixture
def digits_config(tmp_path: Path) -> Path:
    """``tmp_path/cfg.yaml``: the tiny digits sweep (random sampler, median pruner, 4 trials)."""
    return write_config(tmp_path)


@pytest.fixture
def scratch(tmp_path: Path) -> Any:
    """A scratch directory, in RAM when there is one (see ``servicekit.ram_directory``)."""
    from servicekit import ram_directory

    with ram_directory(tmp_path) as path:
        yield path

"""Several workers on one SQLite study never run the same enqueued trial twice.

SQLite ignores Optuna's ``SELECT ... FOR UPDATE``; ``sweeps.study.storage.open_storage`` makes every
transaction ``BEGIN IMMEDIATE`` so popping a WAITING trial is atomic (without it this test saw
duplicates in every run: 25-31 objective calls for 22-29 distinct trials).
"""

from __future__ import annotations

import multiprocessing as mp
from collections import Counter
from pathlib import Path

import optuna
import pytest

from sweeps.study.storage import open_storage

pytestmark = pytest.mark.slow  # spawns 4 worker processes

WORKERS, PER_WORKER = 4, 10


def _work(url: str, out: str) -> None:
    study = optuna.load_study(study_name="q", storage=open_storage(url, heartbeat=False))

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0.0, 100.0)
        with open(out, "a") as f:
            f.write(f"{trial.number}\n")
        return x

    study.optimize(objective, n_trials=PER_WORKER)


def test_enqueued_trials_run_once_each_across_processes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="q", storage=open_storage(url, heartbeat=False))
    for i in range(WORKERS * PER_WORKER):
        study.enqueue_trial({"x": float(i)})
    out = tmp_path / "calls.txt"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_work, args=(url, str(out))) for _ in range(WORKERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * WORKERS
    calls = Counter(int(line) for line in out.read_text().split())
    assert {n: c for n, c in calls.items() if c > 1} == {}
    assert sorted(calls) == list(range(WORKERS * PER_WORKER))
    trials = optuna.load_study(study_name="q", storage=url).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * WORKERS * PER_WORKER
    assert sorted(t.params["x"] for t in trials) == [float(i) for i in range(WORKERS * PER_WORKER)]

"""Which trials get their PNGs, and the records they are drawn from (what was logged, read back)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pandas as pd

from sweeps.report.trial_plots import best_runs, history_rows


def _run(number: int, state: str, value: float | None, direction: str = "maximize", metric: str = "eval/accuracy"):
    metrics = {} if value is None else {metric: value}
    return SimpleNamespace(info=SimpleNamespace(run_id=f"r{number}"),
                           data=SimpleNamespace(tags={"sweeps.state": state, "sweeps.trial_number": str(number)},
                                                params={"objective.metric": metric, "objective.direction": direction},
                                                metrics=metrics))


def test_best_runs_rank_complete_trials_by_their_final_objective() -> None:
    runs = [_run(0, "COMPLETE", 0.90), _run(1, "PRUNED", 0.99), _run(2, "COMPLETE", 0.95), _run(3, "COMPLETE", 0.95),
            _run(4, "COMPLETE", None), _run(5, "COMPLETE", math.nan), _run(6, "FAIL", 1.0)]
    assert [r.info.run_id for r in best_runs(runs, 2)] == ["r2", "r3"]  # a tie keeps the lower number first
    assert [r.info.run_id for r in best_runs(runs, 10)] == ["r2", "r3", "r0"]  # only COMPLETE with a value
    low = [_run(0, "COMPLETE", 0.3, "minimize", "eval/total_loss"), _run(1, "COMPLETE", 0.1, "minimize",
                                                                           "eval/total_loss")]
    assert [r.info.run_id for r in best_runs(low, 1)] == ["r1"]
    assert best_runs(runs, 0) == []


def test_history_rows_give_back_the_logged_records_in_epoch_order() -> None:
    wide = pd.DataFrame({"run_id": ["a", "a", "a"], "trial": [3, 3, 3], "epoch": [2, 0, 1],
                         "train/loss": [0.5, 2.0, 1.0], "train/decay_factor": [0.99, math.nan, 0.98]})
    records, epochs = history_rows(wide)
    assert epochs == [0, 1, 2]
    assert records == [{"train/loss": 2.0}, {"train/loss": 1.0, "train/decay_factor": 0.98},
                       {"train/loss": 0.5, "train/decay_factor": 0.99}]  # absent at epoch 0, as logged

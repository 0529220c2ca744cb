"""The objective (``sweeps.engine.objective``): one trial = one nncore training.

* it asks the pruner only where it could answer "prune", with the same decisions;
* epoch 0 (the initial network) goes to MLflow at step 0, never to Optuna, and counts as no epoch;
* early stopping watches the objective metric in the objective's direction;
* a searched ``n_train`` trains on a prefix of the rows loaded, with one evaluation set;
* the logged lambda equivalents say whether they are exact.

Oracles: Optuna's stored intermediate values, a recording stand-in for the MLflow tracker, the
early-stopping rule recomputed from the logged history, the loaded arrays themselves, and
nncore's own ``train/decay_factor``.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest

import nncore
from sweeps.config import parse_config
from sweeps.engine.data import load_data
from sweeps.engine.objective import Objective, lmbda_equivalents_exact, monitor_mode, trial_params
from sweeps.study.samplers import build_pruner

EPOCHS = 6


def _run(sw, monkeypatch, pruner: dict[str, Any], trials: int = 3) -> tuple[dict[int, list[int]], list[str]]:
    """Run ``trials`` in-memory trials: the epochs at which each trial asked should_prune, and
    each trial's end (state@last epoch)."""
    raw = sw.merge(sw.BASE_CONFIG, {"training": {"epochs": EPOCHS},
                                    "study": {"pruner": {"__replace__": True, **pruner}}})
    cfg = parse_config(raw)
    asked: dict[int, list[int]] = {}
    real = optuna.trial.Trial.should_prune

    def counting(self: Any) -> bool:
        [me] = [t for t in self.study.get_trials(deepcopy=False) if t.number == self.number]
        asked.setdefault(self.number, []).append(me.last_step)
        return real(self)

    monkeypatch.setattr(optuna.trial.Trial, "should_prune", counting)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0),
                                pruner=build_pruner(cfg))
    study.optimize(Objective(cfg, load_data(cfg.data, cfg.seed), None, None), n_trials=trials)
    return asked, [f"{t.state.name}@{t.last_step}" for t in study.trials]


def test_no_pruner_never_reads_the_study(sw, monkeypatch) -> None:
    asked, states = _run(sw, monkeypatch, {"name": "none"})
    assert asked == {} and states == [f"COMPLETE@{EPOCHS}"] * 3


def test_median_pruner_asked_from_its_warmup_step_on(sw, monkeypatch) -> None:
    asked, _ = _run(sw, monkeypatch, {"name": "median", "options": {"n_startup_trials": 1, "n_warmup_steps": 4}})
    assert asked and all(steps == list(range(4, 4 + len(steps))) for steps in asked.values()), asked
    asked, _ = _run(sw, monkeypatch, {"name": "median", "options": {"n_startup_trials": 1}})
    assert asked[0] == list(range(1, EPOCHS + 1))


def test_skipping_changes_no_decision(sw, monkeypatch) -> None:
    """Asking the pruner at every epoch (the skip switched off) prunes the same trials at the same epochs."""
    pruner = {"name": "median", "options": {"n_startup_trials": 1, "n_warmup_steps": 3}}
    trials = 8
    _, skipped = _run(sw, monkeypatch, pruner, trials)
    monkeypatch.setattr(Objective, "_pruner_may_act", lambda self, epoch: True)
    _, every = _run(sw, monkeypatch, pruner, trials)
    assert skipped == every
    assert any(s.startswith("PRUNED") for s in every), every  # the comparison is about real pruning decisions


# ----------------------------------------------------------------------------------- helpers


def _study(sw, changes: dict[str, Any], n_trials: int, *, tracker: Any = None, sampler: Any = None,
           artifacts: str = "none") -> optuna.Study:
    cfg = parse_config(sw.merge(sw.BASE_CONFIG, changes))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction=cfg.objective.direction,
                                sampler=sampler or optuna.samplers.RandomSampler(seed=0), pruner=build_pruner(cfg))
    study.optimize(Objective(cfg, load_data(cfg.data, cfg.seed), tracker, None, artifacts=artifacts), n_trials=n_trials,
                   catch=(ValueError,))
    return study


NO_PRUNER = {"study": {"pruner": {"__replace__": True, "name": "none"}}}


# ------------------------------------------------------------------------------------ epoch 0


@pytest.mark.parametrize("record_initial", [True, False])
def test_epoch_zero_goes_to_mlflow_at_step_0_and_counts_for_nothing(sw, monkeypatch, record_initial: bool) -> None:
    """With or without an epoch-0 record from nncore: Optuna steps 1..E, E epochs run, value of epoch E."""
    monkeypatch.setattr(nncore, "TrainConfig", functools.partial(nncore.TrainConfig, record_initial=record_initial))
    tracker = sw.RecordingTracker()
    study = _study(sw, NO_PRUNER, 2, tracker=tracker)
    metric = sw.BASE_CONFIG["objective"]["metric"]
    for t in study.trials:
        logged = tracker.epochs[t.user_attrs["mlflow_run_id"]]
        steps = [step for step, _ in logged]
        assert steps == ([0] if record_initial else []) + [1, 2, 3]
        by_step = dict(logged)
        assert t.state.name == "COMPLETE"
        assert sorted(t.intermediate_values) == [1, 2, 3]  # epoch 0 is never reported to Optuna
        assert t.intermediate_values == {k: by_step[k][metric] for k in (1, 2, 3)}
        assert t.value == by_step[3][metric]
        assert t.user_attrs["epochs_run"] == 3
        # task: a completed trial carries a reason like pruned and failed ones, the run's end the same
        assert t.user_attrs["reason"] == "completed: 3 epochs (completed)"
        assert tracker.ends[t.user_attrs["mlflow_run_id"]][:2] == ("COMPLETE", "completed: 3 epochs (completed)")
        if record_initial:
            assert "train/decay_factor" not in by_step[0] and metric in by_step[0]  # undefined at epoch 0


def test_epoch_zero_does_not_shift_the_pruners_warmup(sw, monkeypatch) -> None:
    """The median pruner's n_warmup_steps counts trained epochs: it is first asked at epoch 2, not 1."""
    asked: list[int] = []
    real = optuna.trial.Trial.should_prune

    def counting(self: Any) -> bool:
        [me] = [t for t in self.study.get_trials(deepcopy=False) if t.number == self.number]
        asked.append(me.last_step)
        return real(self)

    monkeypatch.setattr(optuna.trial.Trial, "should_prune", counting)
    _study(sw, {"study": {"pruner": {"__replace__": True, "name": "median",
                                     "options": {"n_startup_trials": 0, "n_warmup_steps": 2}}}}, 1)
    assert asked == [2, 3]


# ----------------------------------------------------------------------------- early stopping


def _stop_epoch(values: list[float], patience: int, maximize: bool) -> int | None:
    """nncore's early-stopping rule, recomputed: the first epoch ``patience`` epochs after the last strict best."""
    best, since = None, 0
    for epoch, v in enumerate(values, start=1):
        if best is None or (v > best if maximize else v < best):
            best, since = v, 0
        else:
            since += 1
        if since >= patience:
            return epoch
    return None


def test_monitor_mode_follows_the_direction() -> None:
    assert (monitor_mode("maximize"), monitor_mode("minimize")) == ("max", "min")
    with pytest.raises(ValueError, match="direction must be one of"):
        monitor_mode("max")


def test_a_loss_objective_early_stops_on_the_loss(sw, monkeypatch) -> None:
    """objective eval/data_loss (minimize): training stops when the *loss* stopped improving, not the accuracy."""
    seen: list[nncore.TrainConfig] = []
    real_train = nncore.train

    def recording_train(net: Any, X: Any, Y: Any, config: nncore.TrainConfig, **kw: Any) -> Any:
        seen.append(config)
        return real_train(net, X, Y, config, **kw)

    monkeypatch.setattr(nncore, "train", recording_train)
    patience = 3
    tracker = sw.RecordingTracker()
    study = _study(sw, {**NO_PRUNER, "objective": {"metric": "eval/data_loss", "direction": "minimize"},
                        "training": {"epochs": 60, "eta": 1.0, "lmbda": 0.0, "early_stopping": patience},
                        "search_space": {"__replace__": True}}, 1, tracker=tracker)
    [t] = study.trials
    assert (seen[0].monitor, seen[0].monitor_mode) == ("eval/data_loss", "min")
    history = [values for step, values in tracker.epochs[t.user_attrs["mlflow_run_id"]] if step > 0]
    loss = [h["eval/data_loss"] for h in history]
    accuracy = [h["eval/accuracy"] for h in history]
    assert t.user_attrs["stop_reason"] == "early_stopping"
    assert t.user_attrs["epochs_run"] == len(history) == _stop_epoch(loss, patience, maximize=False) < 60
    # the accuracy rule (the old default monitor) would have stopped at another epoch
    assert _stop_epoch(accuracy, patience, maximize=True) != len(history)


# ------------------------------------------------------------------------------------ n_train


def test_searched_n_train_trains_on_nested_prefixes_with_one_eval_set(sw, monkeypatch) -> None:
    seen: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
    real_train = nncore.train

    def recording_train(net: Any, X: Any, Y: Any, config: Any, *, eval_data: Any = None, **kw: Any) -> Any:
        seen[len(X)] = (np.array(X), np.array(Y), np.array(eval_data[0]), np.array(eval_data[1]))
        return real_train(net, X, Y, config, eval_data=eval_data, **kw)

    monkeypatch.setattr(nncore, "train", recording_train)
    tracker = sw.RecordingTracker()
    changes = {**NO_PRUNER, "data": {"n_train": 1000, "n_eval": 200}, "training": {"epochs": 1, "batch_size": 30},
               "search_space": {"__replace__": True, "n_train": {"type": "categorical", "choices": [500, 1000]}}}
    cfg = parse_config(sw.merge(sw.BASE_CONFIG, copy.deepcopy(changes)))  # merge consumes "__replace__"
    study = _study(sw, changes, 2, tracker=tracker,
                   sampler=optuna.samplers.GridSampler({"n_train": [500, 1000]}, seed=0))
    assert sorted(seen) == [500, 1000]
    X5, Y5, Xe5, Ye5 = seen[500]
    X10, Y10, Xe10, Ye10 = seen[1000]
    np.testing.assert_array_equal(X5, X10[:500])
    np.testing.assert_array_equal(Y5, Y10[:500])
    np.testing.assert_array_equal(Xe5, Xe10)
    np.testing.assert_array_equal(Ye5, Ye10)
    full = load_data(cfg.data, cfg.seed)  # the rows loaded once: the larger set is all of them
    np.testing.assert_array_equal(X10, full.train.X)
    np.testing.assert_array_equal(Xe10, full.eval.X)
    for t in study.trials:
        params = tracker.params[t.user_attrs["mlflow_run_id"]]
        n = t.params["n_train"]
        assert params["n_train"] == n and params["n_eval"] == 200
        assert params["lmbda_as_per_batch"] == pytest.approx(params["lmbda"] * 30 / n)  # alpha = lmbda*m/n
        assert params["lmbda_equivalents_exact"] is (n % 30 == 0)


def test_batch_size_above_the_searched_n_train_fails_the_trial_with_a_clear_reason(sw) -> None:
    study = _study(sw, {**NO_PRUNER, "training": {"batch_size": 50},
                        "search_space": {"__replace__": True, "n_train": {"type": "categorical", "choices": [40]}}}, 1)
    [t] = study.trials
    assert t.state.name == "FAIL"
    assert t.user_attrs["reason"] == "ValueError: batch_size must be <= n_train=40 (searched), got 50"


# -------------------------------------------------------------------------- lambda equivalents


@pytest.mark.parametrize("batch_size, exact", [(25, True), (40, False)])
def test_lambda_equivalents_say_when_per_batch_is_not_exact(sw, batch_size: int, exact: bool) -> None:
    """Oracle: nncore's train/decay_factor of one epoch under dataset lmbda and under the logged per_batch
    equivalent: equal exactly when the flag says so (n_train=300)."""
    cfg = parse_config(sw.BASE_CONFIG)
    data = load_data(cfg.data, cfg.seed)
    settings = {**cfg.training.model_dump(), **cfg.network.model_dump(), "n_train": 300,
                "batch_size": batch_size, "lmbda": 2.0, "convention": "dataset"}
    params = trial_params(cfg, settings, data, 0)
    assert params["lmbda_equivalents_exact"] is exact is lmbda_equivalents_exact(300, batch_size)
    factors = []
    for lm, conv in ((2.0, "dataset"), (params["lmbda_as_per_batch"], "per_batch")):
        net = nncore.Network([64, 5, 10], rng=np.random.default_rng(0))
        result = nncore.train(net, data.train.X, data.train.Y,
                              nncore.TrainConfig(eta=0.5, epochs=1, batch_size=batch_size, lmbda=lm, convention=conv),
                              rng=np.random.default_rng(0))
        factors.append(result.records[-1].to_metrics()["train/decay_factor"])
    assert (factors[0] == pytest.approx(factors[1], rel=1e-12)) is exact, factors
    assert "lmbda_equivalents_exact" not in trial_params(cfg, {**settings, "penalty": "none"}, data, 0)


# ------------------------------------------------------------------------------------ diagnosis


@pytest.mark.parametrize("artifacts", ["best", "complete", "none"])
def test_each_trial_sends_its_findings_as_tags_and_diagnosis_json(sw, monkeypatch, artifacts: str) -> None:
    """The findings recomputed from what was logged (records and params) are the ones sent; the trial's
    files go out together, with its PNGs only where the workers draw them (``complete``)."""
    from sweeps.analysis import diagnosis as dg
    from sweeps.report.trial_plots import PLOT_FILES

    def save_figure(fig: Any, path: Any) -> Any:  # no PNG rendering needed here
        Path(path).write_bytes(b"")
        return path

    monkeypatch.setattr("sweeps.plots.figures.save_figure", save_figure)
    tracker = sw.RecordingTracker()
    study = _study(sw, {**NO_PRUNER, "training": {"lmbda": 5.0}}, 2, tracker=tracker, artifacts=artifacts)
    for t in study.trials:
        run_id = t.user_attrs["mlflow_run_id"]
        logged = tracker.epochs[run_id]
        facts = dg.run_facts(tracker.params[run_id])
        expected = dg.diagnose(dg.rows_table([v for _, v in logged], [e for e, _ in logged]), facts)
        assert expected, "a penalized run always has at least its lambda_conventions finding"
        assert tracker.tags[run_id] == dg.finding_tags(expected)
        assert "sweeps.finding.lambda_conventions" in tracker.tags[run_id]
        if artifacts == "none":
            assert run_id not in tracker.diagnoses and run_id not in tracker.files
        else:
            pngs = sorted(PLOT_FILES) if artifacts == "complete" else []
            assert tracker.files[run_id] == sorted(["diagnosis.json", "network.npz", "network2.json", *pngs])
            doc = tracker.diagnoses[run_id]
            assert doc["trial"] == t.number and doc["facts"]["lmbda"] == t.params["lmbda"]
            assert [f["code"] for f in doc["findings"]] == [f.code for f in expected]
            assert [f["message"] for f in doc["findings"]] == [f.message for f in expected]


def test_a_diagnosis_that_cannot_be_made_does_not_fail_the_trial(sw, monkeypatch, caplog) -> None:
    from sweeps.analysis import diagnosis as dg

    def broken(*_: Any) -> None:
        raise ValueError("no such facts")

    monkeypatch.setattr(dg, "run_facts", broken)
    tracker = sw.RecordingTracker()
    study = _study(sw, NO_PRUNER, 1, tracker=tracker)
    assert study.trials[0].state.name == "COMPLETE" and tracker.tags == {}
    assert "no diagnosis (ValueError: no such facts)" in caplog.text

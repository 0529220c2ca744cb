"""Pruning a population (``sweeps.pruning.PopulationPruner``): the study pruner's own decisions, from one study
read per population epoch instead of one per member per epoch.

Oracle: what ``trial.should_prune()`` computes (the study's pruner on the trial as stored) asked at the same moment
as every decision of a population sweep, for each pruner the config offers.
"""

from __future__ import annotations

from typing import Any

import optuna
import pytest

from sweeps.engine import pruning, reports
from sweeps.engine.pruning import PopulationPruner

PRUNERS = {
    "median": {"name": "median", "options": {"n_startup_trials": 1, "n_warmup_steps": 1}},
    "percentile": {"name": "percentile", "options": {"percentile": 60.0, "n_startup_trials": 1}},
    "successive_halving": {"name": "successive_halving", "options": {"min_resource": 1, "reduction_factor": 2}},
    "hyperband": {"name": "hyperband", "options": {"reduction_factor": 2}},
}


@pytest.mark.parametrize("pruner", sorted(PRUNERS))
def test_every_decision_equals_trial_should_prune(sw, monkeypatch, pruner: str) -> None:
    decisions: list[tuple[int, int, bool, bool]] = []
    pruners: list[PopulationPruner] = []
    real = PopulationPruner.should_prune

    def checked(self: PopulationPruner, trial: optuna.Trial, epoch: int) -> bool:
        if self not in pruners:
            pruners.append(self)
        # successive halving (and hyperband) record a rung in the storage when asked, which the next question
        # sees: take the epoch's snapshot first (as the view does on its first question of an epoch), then ask
        # the oracle (it writes the rung), then the view (it writes the same rung), so neither sees the other
        self.refresh(epoch)
        # trial.should_prune() with the trial as stored (a member's values go to the storage, not to its Trial's cache)
        stored = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
        oracle = trial.study.pruner.prune(trial.study, stored)
        mine = real(self, trial, epoch)
        decisions.append((trial.number, epoch, mine, oracle))
        return mine

    monkeypatch.setattr(PopulationPruner, "should_prune", checked)
    # the oracle reads the members' values from the storage: write each report at once (no batching), and read the
    # study every epoch (the view mirrors this process' own writes; here no other process writes)
    monkeypatch.setattr(reports, "REPORT_FLUSH_S", 0.0)
    monkeypatch.setattr(pruning, "REFRESH_S", 0.0)
    changes = {"training": {"epochs": 6}, "search_space": {"__replace__": True,
                                                          "eta": {"type": "float", "low": 0.05, "high": 8.0,
                                                                  "log": True}},
               "study": {"n_trials": 16, "sampler": {"name": "random"},
                         "pruner": {"__replace__": True, **PRUNERS[pruner]}}}
    study, _, _ = sw.run_in_process(changes, 4)
    assert decisions, "the pruner was never asked"
    assert [d for d in decisions if d[2] != d[3]] == [], "decisions that differ from trial.should_prune()"
    states = [t.state.name for t in study.trials]
    assert states.count("PRUNED") >= 1 and "COMPLETE" in states, states  # real decisions, both ways
    # one study read per population epoch at most (not one per member per epoch)
    for p in pruners:
        assert p.reads <= 6, p.reads
    assert len({(n, e) for n, e, *_ in decisions}) == len(decisions)


def test_the_snapshot_mirrors_reports_and_tells_without_reading(sw) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, direction="maximize",
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=1))
    done = study.ask()
    done.report(0.9, 1)
    study.tell(done, 0.9)
    a, b = study.ask(), study.ask()
    view = PopulationPruner(study, storage)
    for t, value in ((a, 0.95), (b, 0.1)):
        t.report(value, 1)
        view.report(t, value, 1)
    assert not a.should_prune() and not view.should_prune(a, 1)
    assert b.should_prune() and view.should_prune(b, 1)
    assert view.reads == 1
    view.told(study.tell(a, 0.95))  # a completes: b's median is now over two trials, without a read
    c = study.ask()
    c.report(0.92, 1)
    view.report(c, 0.92, 1)
    assert bool(c.should_prune()) == bool(view.should_prune(c, 1))
    assert view.reads == 1

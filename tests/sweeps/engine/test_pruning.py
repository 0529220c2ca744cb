"""Pruning a population (``sweeps.engine.pruning.PopulationPruner``): the study pruner's own decisions, from one study
read per population epoch instead of one per member per epoch.

Oracle: what ``trial.should_prune()`` computes (the study's pruner on the trial as stored) asked at the same moment
as every decision of a population sweep, for each pruner the config offers.
"""

from __future__ import annotations

from typing import Any

import optuna
import pytest

from sweeps import compat
from sweeps.engine import pruning, reports
from sweeps.engine.pruning import PopulationPruner

PRUNERS = {
    "median": {"name": "median", "options": {"n_startup_trials": 1, "n_warmup_steps": 1}},
    "percentile": {"name": "percentile", "options": {"percentile": 60.0, "n_startup_trials": 1}},
    "successive_halving": {"name": "successive_halving", "options": {"min_resource": 1, "reduction_factor": 2}},
    "hyperband": {"name": "hyperband", "options": {"reduction_factor": 2}},
}


#: (pruner, view): the snapshot view for every pruner; compat's fallback (no view: the study itself) for the pruners
#: that write nothing (the rung-writing ones would see the oracle's rung here: see the successive halving test below).
CASES = [(p, "snapshot") for p in sorted(PRUNERS)] + [("median", "study"), ("percentile", "study")]


@pytest.mark.parametrize("pruner, view", CASES)
def test_every_decision_equals_trial_should_prune(sw, monkeypatch, pruner: str, view: str) -> None:
    if view == "study":
        monkeypatch.setattr(compat, "snapshot_study", lambda *args: None)
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
        assert (p.view is None) == (view == "study")
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


def _halving_study() -> tuple[Any, optuna.Study]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, direction="maximize",
                                pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2))
    for final in (0.5, 0.6, 0.7, 0.8):
        done = study.ask()
        for step in range(1, 7):
            done.report(final * step / 6, step)
        study.tell(done, final)
    return storage, study


@pytest.mark.parametrize("view", ["snapshot", "study"])
def test_successive_halving_decisions_and_rungs_equal_trial_should_prune(monkeypatch, view: str) -> None:
    """Two twin studies: the oracle's members ask ``trial.should_prune()``, the other's a PopulationPruner (its
    snapshot view, or compat's fallback without one): the same decisions, the same rungs stored."""
    if view == "study":
        monkeypatch.setattr(compat, "snapshot_study", lambda *args: None)
    _, oracle = _halving_study()
    storage, viewed = _halving_study()
    population = PopulationPruner(viewed, storage, refresh_s=1e9)  # one read: the rungs come from its own writes
    assert (population.view is None) == (view == "study")
    curves = [[0.2 * s for s in range(1, 7)], [0.1, 0.2, 0.3, 0.35, 0.4, 0.5], [0.05, 0.05, 0.05, 0.1, 0.1, 0.1]]
    twins = [(oracle.ask(), viewed.ask()) for _ in curves]
    decisions, pruned = [], set()
    for step in range(1, 7):
        for i, (a, b) in enumerate(twins):
            if i in pruned:
                continue
            value = curves[i][step - 1]
            a.report(value, step)
            b.report(value, step)
            population.report(b, value, step)
            decisions.append((i, step, a.should_prune(), population.should_prune(b, step)))
            if decisions[-1][2]:
                pruned.add(i)
    assert [d for d in decisions if d[2] != d[3]] == []
    assert pruned and len(pruned) < len(curves)  # real decisions, both ways

    def rungs(study: optuna.Study) -> list[dict[str, Any]]:
        return [{k: v for k, v in t.system_attrs.items() if k.startswith("completed_rung")}
                for t in study.trials[-len(curves):]]

    assert rungs(viewed) == rungs(oracle)
    assert any(len(r) > 1 for r in rungs(oracle))  # past the first rung

"""The objective asks the pruner only where it could answer "prune", with the same decisions."""

from __future__ import annotations

from typing import Any

import optuna

from sweeps.config import parse_config
from sweeps.objective import Objective, load_data
from sweeps.samplers import build_pruner

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

"""The study's budget of enqueued slots (``sweeps.study.budget``): created once, topped up, counted
(claiming them: test_claims.py)."""

from __future__ import annotations

import itertools
import multiprocessing as mp
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState
from study_cases import cfg_data, fresh, make_cfg

from sweeps import names
from sweeps.config import ConfigError, parse_config
from sweeps.study import space
from sweeps.study.budget import StudyMismatch, counts_of, prepare_study
from sweeps.study.claims import claim_trial
from sweeps.study.lost import retry_trial
from sweeps.study.samplers import grid_points
from sweeps.study.storage import open_storage

optuna.logging.set_verbosity(optuna.logging.WARNING)

def point_of(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """The grid point of a slot: its enqueued parameters while WAITING, its parameters once sampled."""
    return dict(trial.params) or dict(trial.system_attrs.get(names.SYS_FIXED_PARAMS, {}))


def key(point: dict[str, Any]) -> tuple:
    return tuple(sorted(point.items()))


def all_grid_keys() -> set[tuple]:
    return {key({"batch_size": b, "activation": a}) for b, a in itertools.product([10, 25, 50], ["sigmoid", "tanh"])}


def run_trial(study: optuna.Study, storage: Any, state: TrialState = TrialState.COMPLETE, cfg: Any = None) -> int:
    """Claim a slot, sample it as a worker does, end it with ``state``; return its number."""
    trial = claim_trial(study, storage)
    assert trial is not None
    space.suggest(trial, cfg or make_cfg())
    study.tell(trial, 0.5 if state == TrialState.COMPLETE else None, state=state)
    return trial.number


# -- prepare_study --------------------------------------------------------------------------------

def test_a_new_study_gets_exactly_n_trials_waiting_slots(url):
    name, study = prepare_study(make_cfg(5), url)
    assert name == "s"
    trials = fresh(url).trials
    assert [t.state for t in trials] == [TrialState.WAITING] * 5
    assert [point_of(t) for t in trials] == [{}] * 5  # empty slots: the sampler draws them
    attrs = fresh(url).user_attrs
    assert attrs[names.STUDY_N_TRIALS] == 5
    assert attrs[names.STUDY_FINGERPRINT] == make_cfg(5).fingerprint()
    assert fresh(url).direction == optuna.study.StudyDirection.MAXIMIZE


def test_the_study_names_its_objective_metric(url):
    """study.metric_names (optuna-dashboard's label) is the objective metric, set at creation; a study
    created without it (before this was done) gets it on resume."""
    prepare_study(make_cfg(2), url)
    assert fresh(url).metric_names == ["eval/accuracy"]
    loss = make_cfg(2, name="loss", objective={"metric": "eval/data_loss", "direction": "minimize"})
    unnamed = optuna.create_study(study_name="loss", storage=url, direction="minimize")  # an unnamed study
    unnamed.set_user_attr(names.STUDY_N_TRIALS, 0)  # prepared by a sweeps launcher (no wait for its budget)
    assert fresh(url, "loss").metric_names is None
    prepare_study(loss, url)
    assert fresh(url, "loss").metric_names == ["eval/data_loss"]


def test_a_grid_study_enqueues_grid_points_each_once(url):
    cfg = make_cfg(4, grid=True)
    prepare_study(cfg, url)
    points = [point_of(t) for t in fresh(url).trials]
    assert len(points) == 4 and len({key(p) for p in points}) == 4
    assert {key(p) for p in points} <= all_grid_keys()
    assert points == grid_points(cfg)[:4]  # "the first n_trials of them are the study's trials"


def test_a_grid_budget_larger_than_the_grid_is_the_grid(url):
    prepare_study(make_cfg(50, grid=True), url)
    study = fresh(url)
    assert {key(point_of(t)) for t in study.trials} == all_grid_keys()
    assert len(study.trials) == 6
    assert study.user_attrs[names.STUDY_N_TRIALS] == 6


def test_resume_with_a_larger_budget_tops_up(url):
    name, study = prepare_study(make_cfg(4), url)
    storage = study._storage
    done = [run_trial(study, storage) for _ in range(2)]
    name2, _ = prepare_study(make_cfg(7), url)
    assert name2 == name
    study = fresh(url)
    assert len(study.trials) == 7
    assert study.user_attrs[names.STUDY_N_TRIALS] == 7
    assert [t.number for t in study.trials if t.state == TrialState.COMPLETE] == done
    assert sum(t.state == TrialState.WAITING for t in study.trials) == 5
    # resuming with the same budget changes nothing
    prepare_study(make_cfg(7), url)
    assert len(fresh(url).trials) == 7


def test_grid_top_up_after_trials_ran_adds_unused_points(url):
    cfg = make_cfg(3, grid=True)
    _, study = prepare_study(cfg, url)
    for _ in range(3):
        run_trial(study, study._storage, cfg=cfg)
    prepare_study(make_cfg(5, grid=True), url)
    points = [key(point_of(t)) for t in fresh(url).trials]
    assert len(points) == 5 and len(set(points)) == 5, points


def test_grid_top_up_while_slots_still_wait_adds_unused_points(url):
    """Resume (larger n_trials) before any slot ran: the new slots must be other grid points."""
    prepare_study(make_cfg(3, grid=True), url)
    prepare_study(make_cfg(5, grid=True), url)
    points = [point_of(t) for t in fresh(url).trials]
    assert len({key(p) for p in points}) == 5, f"a grid point enqueued twice: {points}"
    assert points == grid_points(make_cfg(5, grid=True))[:5]


def test_a_resume_with_a_smaller_budget_is_refused(url):
    prepare_study(make_cfg(5), url)
    with pytest.raises(ConfigError, match=r"study\.n_trials") as err:
        prepare_study(make_cfg(3), url)
    assert not isinstance(err.value, StudyMismatch)
    assert "5" in str(err.value) and "3" in str(err.value)
    study = fresh(url)
    assert len(study.trials) == 5 and study.user_attrs[names.STUDY_N_TRIALS] == 5


def test_retried_trials_do_not_count_towards_the_budget(url):
    _, study = prepare_study(make_cfg(4), url)
    storage = study._storage
    lost = run_trial(study, storage, TrialState.FAIL)
    retry = retry_trial(study, study.trials[lost], max_retries=3)
    assert retry == 4
    prepare_study(make_cfg(4), url)  # same budget: nothing to add
    assert len(fresh(url).trials) == 5
    prepare_study(make_cfg(6), url)
    study = fresh(url)
    counts = counts_of(study)
    assert len(study.trials) == 7
    assert counts["RETRIED"] == 1 and counts["WAITING"] == 6
    assert sum(v for k, v in counts.items() if k != "RETRIED") == 6 == study.user_attrs[names.STUDY_N_TRIALS]


def test_a_changed_config_is_refused_unless_a_new_study_is_asked_for(url):
    prepare_study(make_cfg(4), url)
    changed = cfg_data(4)
    changed["search_space"]["eta"]["high"] = 5.0
    with pytest.raises(StudyMismatch, match="search space") as err:
        prepare_study(parse_config(changed), url)
    assert isinstance(err.value, ConfigError)
    assert len(fresh(url).trials) == 4
    flipped = cfg_data(4, objective={"metric": "eval/accuracy", "direction": "minimize"})
    with pytest.raises(StudyMismatch, match="direction"):
        prepare_study(parse_config(flipped), url)

    name, study = prepare_study(parse_config(changed), url, new_study=True)
    assert name == "s-v2" and study.study_name == "s-v2"
    v2 = fresh(url, "s-v2")
    assert len(v2.trials) == 4 and v2.user_attrs[names.STUDY_FINGERPRINT] == parse_config(changed).fingerprint()
    original = fresh(url)
    assert len(original.trials) == 4 and original.user_attrs[names.STUDY_FINGERPRINT] == make_cfg(4).fingerprint()


def test_new_study_with_an_unchanged_config_resumes(url):
    prepare_study(make_cfg(4), url)
    name, _ = prepare_study(make_cfg(4), url, new_study=True)
    assert name == "s"
    assert len(fresh(url).trials) == 4


def _prepare(data: dict, url: str, barrier: Any, queue: Any) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = parse_config(data)
    barrier.wait(timeout=60)
    name, study = prepare_study(cfg, url)
    queue.put(name)


@pytest.mark.slow
def test_two_launchers_preparing_a_new_study_at_once_enqueue_one_budget(url):
    open_storage(url)  # the database exists (its tables); the study does not
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_prepare, args=(cfg_data(6), url, barrier, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    try:
        got = [queue.get(timeout=120) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=30)
    assert [p.exitcode for p in procs] == [0, 0]
    assert got == ["s", "s"]
    study = fresh(url)
    assert [s.study_name for s in optuna.get_all_study_summaries(url)] == ["s"]
    assert len(study.trials) == 6 and all(t.state == TrialState.WAITING for t in study.trials)
    assert study.user_attrs[names.STUDY_N_TRIALS] == 6


# -- counts_of ------------------------------------------------------------------------------------

def test_counts_of_counts_a_retried_fail_as_retried(url):
    _, study = prepare_study(make_cfg(6), url)
    storage = study._storage
    run_trial(study, storage, TrialState.COMPLETE)
    run_trial(study, storage, TrialState.PRUNED)
    lost = run_trial(study, storage, TrialState.FAIL)
    run_trial(study, storage, TrialState.FAIL)  # a real failure: not retried
    claim_trial(study, storage)  # left RUNNING
    retry_trial(study, fresh(url).trials[lost], max_retries=3)
    assert counts_of(fresh(url)) == {"COMPLETE": 1, "PRUNED": 1, "FAIL": 1, "RUNNING": 1,
                                     "WAITING": 2, "RETRIED": 1}  # 1 slot left + the retry


def test_a_study_of_the_per_trial_order_tells_how_to_resume_it(url):
    """A study created before batch_order existed (its fingerprint is the per_trial one) is refused under the new
    default (common) with a message that names the setting that resumes it."""
    old = cfg_data(4)
    old.setdefault("training", {})["batch_order"] = "per_trial"
    prepare_study(parse_config(old), url)
    with pytest.raises(StudyMismatch) as err:
        prepare_study(make_cfg(4), url)
    assert "training.batch_order: per_trial" in str(err.value) and "--new-study" in str(err.value)
    name, _ = prepare_study(parse_config(old), url)  # resumes in its old order
    assert name == "s"

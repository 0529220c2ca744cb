"""Claiming the study's enqueued slots (``sweeps.study.claims``): WAITING -> RUNNING once each, none created
beyond the budget, across processes too."""

from __future__ import annotations

import multiprocessing as mp
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState
from study_cases import CONFIG, fresh, make_cfg

from sweeps.study import space
from sweeps.study.budget import counts_of, load, open_study_storage, prepare_study
from sweeps.study.claims import claim_trial, claim_trials
from sweeps.study.lost import retry_trial
from sweeps.study.storage import open_storage

optuna.logging.set_verbosity(optuna.logging.WARNING)

# -- claim_trial ----------------------------------------------------------------------------------

def test_claim_takes_each_waiting_trial_once_and_creates_none(url):
    _, study = prepare_study(make_cfg(5), url)
    storage = study._storage
    claimed = []
    while (trial := claim_trial(study, storage)) is not None:
        assert isinstance(trial, optuna.Trial)
        claimed.append(trial.number)
    assert sorted(claimed) == [0, 1, 2, 3, 4]
    assert claim_trial(study, storage) is None
    trials = fresh(url).trials
    assert len(trials) == 5  # unlike study.ask(), nothing beyond the budget
    assert all(t.state == TrialState.RUNNING and t.datetime_start is not None for t in trials)
    # a claimed trial is an ordinary trial: it samples and is told
    for number in claimed:
        trial = optuna.Trial(study, storage.get_trial_id_from_study_id_trial_number(study._study_id, number))
        study.tell(trial, trial.suggest_float("eta", 0.01, 10.0, log=True))
    assert counts_of(fresh(url))["COMPLETE"] == 5


def test_claim_trials_takes_several_in_number_order_with_one_read_and_skips_taken_ones(url):
    _, study = prepare_study(make_cfg(6), url)
    storage = study._storage
    sid = study._study_id
    reads: list[int] = []
    real = storage.get_all_trials
    storage.get_all_trials = lambda *a, **k: (reads.append(1) if k.get("states") == (TrialState.WAITING,) else None,
                                              real(*a, **k))[1]  # reads of the WAITING list
    stale = real(sid, deepcopy=False, states=(TrialState.WAITING,))  # a read made before the others took some
    assert [t.number for t in claim_trials(study, storage, 2, sid)] == [0, 1]
    assert len(reads) == 1  # one read of the WAITING trials for both
    other = claim_trial(study, storage, sid)  # another worker takes trial 2
    reads.clear()
    got = claim_trials(study, storage, 3, sid, waiting=stale)  # 0, 1, 2 in the stale list are skipped
    assert [t.number for t in got] == [3, 4, 5] and reads == []  # the given read sufficed
    assert claim_trials(study, storage, 4, sid) == [] and other.number == 2
    trials = fresh(url).trials
    assert len(trials) == 6 and all(t.state == TrialState.RUNNING for t in trials)
    for trial in got:  # claimed trials are ordinary trials, visible to the study at once
        study.tell(trial, trial.suggest_float("eta", 0.01, 10.0, log=True))
    assert counts_of(fresh(url))["COMPLETE"] == 3


def test_claim_takes_retries_with_their_parameters(url):
    _, study = prepare_study(make_cfg(1), url)
    storage = study._storage
    trial = claim_trial(study, storage)
    eta = trial.suggest_float("eta", 0.01, 10.0, log=True)
    study.tell(trial, state=TrialState.FAIL)
    assert claim_trial(study, storage) is None
    retry_trial(study, fresh(url).trials[0], max_retries=2)
    again = claim_trial(study, storage)
    assert again is not None and again.number == 1
    assert again.suggest_float("eta", 0.01, 10.0, log=True) == eta
    assert claim_trial(study, storage) is None


@pytest.mark.parametrize("sampler", ["random", "tpe"])
@pytest.mark.parametrize("pass_study_id", [True, False], ids=["study-id", "no-study-id"])
def test_a_worker_s_claimed_trial_samples_and_is_told(url, sampler, pass_study_id):
    """As a worker does it: the study loaded afresh with the config's sampler, claimed through the
    storage the worker opened (not the study's own cached one), then sampled and told."""
    cfg = make_cfg(2, study={**CONFIG["study"], "n_trials": 2, "sampler": {"name": sampler}})
    prepare_study(cfg, url)
    storage = open_study_storage(cfg, url)
    study = load(cfg, storage, "s")
    study_id = storage.get_study_id_from_name("s") if pass_study_id else None
    trial = claim_trial(study, storage, study_id)
    assert trial is not None
    settings = space.suggest(trial, cfg)
    study.tell(trial, 0.25)
    stored = fresh(url).trials[trial.number]
    assert stored.state == TrialState.COMPLETE and stored.value == 0.25
    assert stored.params == {"eta": settings["eta"], "batch_size": settings["batch_size"]}


def _claim_until_none(url: str, barrier: Any, queue: Any) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(url, heartbeat=False)
    study = optuna.load_study(study_name="s", storage=storage)
    barrier.wait(timeout=60)
    got = []
    while (trial := claim_trial(study, storage)) is not None:
        got.append(trial.number)
    queue.put(got)


@pytest.mark.slow
def test_processes_racing_to_claim_get_each_slot_once(url):
    prepare_study(make_cfg(30), url)
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(3), ctx.Queue()
    procs = [ctx.Process(target=_claim_until_none, args=(url, barrier, queue)) for _ in range(3)]
    for p in procs:
        p.start()
    try:
        results = [queue.get(timeout=120) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=30)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    claimed = [n for got in results for n in got]
    assert sorted(claimed) == list(range(30)), results  # all 30, none twice
    trials = fresh(url).trials
    assert len(trials) == 30 and all(t.state == TrialState.RUNNING for t in trials)

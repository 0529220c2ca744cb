"""The Optuna study of a sweep: created or resumed, its fingerprint checked, its budget enqueued.

The budget is a set of **slots**: ``n_trials`` trials enqueued as WAITING when the study is
created (``study.enqueue_trial``; a grid sweep enqueues its points, each once; other samplers an
empty slot, whose parameters the sampler draws when a worker takes it). Workers only take WAITING
trials (:func:`claim_trial`); Optuna's storages hand each WAITING trial to exactly one of them
(PostgreSQL ``SELECT ... FOR UPDATE``, SQLite with ``BEGIN IMMEDIATE``, the journal's lock), so a
study ends with exactly ``n_trials`` trials whatever the number of workers and launchers. A trial
lost to an infrastructure fault is retried by enqueueing a copy (:mod:`sweeps.study.lost`); the lost
trial then no longer counts.

Only the launcher that creates the study (Optuna's unique study name decides, atomically)
enqueues its slots; it marks the study ``sweeps.n_trials = "preparing"`` meanwhile, and other
launchers wait for the number. Resuming with a larger ``n_trials`` enqueues the missing slots;
two launchers that raise ``n_trials`` of one study at the same instant can both do it (not
guarded: raise it from one place). A smaller ``n_trials`` than the study's is refused.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from sweeps import names
from sweeps.config import ConfigError, SweepConfig, parse_config
from sweeps.redaction import redact_url
from sweeps.study.samplers import build_pruner, build_sampler, grid_points
from sweeps.study.storage import open_storage

#: How long a launcher waits for the launcher that creates a study to enqueue its slots.
PREPARING_WAIT_S = 120.0
#: How long a study without ``sweeps.n_trials`` may be that new before it is adopted (created by
#: another tool, or by a launcher that died before it wrote the attribute).
FOREIGN_WAIT_S = 2.0


class StudyMismatch(ConfigError):
    """Resuming a study whose search space, objective or direction differ from the config."""


def open_study_storage(cfg: SweepConfig, url: str, *, role: str = "client", schema_checked: bool = False) -> Any:
    """The storage with the config's heartbeat settings and the retry of heartbeat-stale trials; ``role`` names the
    process to the database (``worker``, ``launcher``: :func:`sweeps.study.storage.application_name`);
    ``schema_checked``: a worker, whose launcher checked Optuna's tables (:func:`sweeps.study.storage.open_storage`)."""
    from sweeps.study.lost import RetryLostTrial

    return open_storage(url, heartbeat_interval=cfg.study.heartbeat_interval, heartbeat_grace=cfg.study.heartbeat_grace,
                        stale_trial_callback=RetryLostTrial(cfg.study.max_retries), role=role,
                        schema_checked=schema_checked)


def load(cfg: SweepConfig, storage: Any, name: str) -> optuna.Study:
    """Load study ``name`` with the config's sampler and pruner."""
    return optuna.load_study(study_name=name, storage=storage, sampler=build_sampler(cfg), pruner=build_pruner(cfg))


def _study_names(storage: Any) -> set[str]:
    return {s.study_name for s in optuna.study.get_all_study_summaries(storage, include_best_trial=False)}


def _free_name(storage: Any, base: str) -> str:
    taken = _study_names(storage)
    k = 2
    while f"{base}-v{k}" in taken:
        k += 1
    return f"{base}-v{k}"


def prepare_study(cfg: SweepConfig, storage_url: str, *, new_study: bool = False,
                  storage: Any = None) -> tuple[str, optuna.Study]:
    """Create or resume the study; refuse a changed fingerprint unless ``new_study``; see the budget.

    ``storage``: the storage of ``storage_url`` the caller opened already (:func:`open_study_storage`; a launcher
    keeps one storage, and so one database connection, for everything it does); None: one is opened."""
    build_sampler(cfg)
    build_pruner(cfg)
    storage = storage if storage is not None else open_study_storage(cfg, storage_url)
    name = cfg.name
    if name in _study_names(storage):
        existing = optuna.load_study(study_name=name, storage=storage)
        stored = existing.user_attrs.get(names.STUDY_FINGERPRINT)
        direction = existing.direction.name.lower()
        if (stored is not None and stored != cfg.fingerprint()) or direction != cfg.objective.direction:
            if not new_study:
                if direction == cfg.objective.direction and stored == _per_trial_fingerprint(cfg):
                    raise StudyMismatch(
                        f"study {name!r} in {redact_url(storage_url)} was created with each trial's own batch order "
                        f"(before training.batch_order existed, or with training.batch_order: per_trial); this "
                        f"config uses training.batch_order: {cfg.training.batch_order} (one batch order for every "
                        f"trial, drawn from the seed), so resuming would mix incomparable trials. Set "
                        f"'training.batch_order: per_trial' in the config to resume it in its old order (then "
                        f"study.population must be 1), or use --new-study to start a new study.")
                what = "direction" if direction != cfg.objective.direction else \
                    "search space, objective or fixed settings"
                raise StudyMismatch(
                    f"study {name!r} in {redact_url(storage_url)} was created with a different {what} than {cfg.name!r} now "
                    f"has (stored direction: {direction}); resuming would mix incomparable trials. Use --new-study "
                    f"to start a new study, or change 'name'.")
            name = _free_name(storage, name)
    try:
        study = optuna.create_study(study_name=name, storage=storage, direction=cfg.objective.direction,
                                    sampler=build_sampler(cfg), pruner=build_pruner(cfg))
    except optuna.exceptions.DuplicatedStudyError:
        study = load(cfg, storage, name)
        if study.metric_names is None:  # a study created before its objective was named
            name_objective(cfg, study)
        ensure_budget(cfg, study)
        return name, study
    study.set_user_attr(names.STUDY_N_TRIALS, names.PREPARING)
    name_objective(cfg, study)
    study.set_user_attr(names.STUDY_FINGERPRINT, cfg.fingerprint())
    budget = _enqueue_slots(cfg, study, [], cfg.study.n_trials)
    study.set_user_attr(names.STUDY_N_TRIALS, budget)
    return name, study


def _per_trial_fingerprint(cfg: SweepConfig) -> str | None:
    """The fingerprint the config would have with ``training.batch_order: per_trial`` (None if it has it)."""
    if cfg.training.batch_order == "per_trial":
        return None
    data = cfg.model_dump()
    data["training"]["batch_order"] = "per_trial"
    data["study"]["population"] = 1
    return parse_config(data, source="batch order check").fingerprint()


def name_objective(cfg: SweepConfig, study: optuna.Study) -> None:
    """Name the study's objective after its metric (``study.metric_names``: optuna-dashboard's label)."""
    with warnings.catch_warnings():  # set_metric_names is "experimental" in Optuna (since 3.2)
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([cfg.objective.metric])


def _wait_for_budget(study: optuna.Study) -> Any:
    """The stored budget; waits while another launcher enqueues the slots of a new study."""
    deadline_foreign = time.monotonic() + FOREIGN_WAIT_S
    deadline = time.monotonic() + PREPARING_WAIT_S
    while True:
        value = study.user_attrs.get(names.STUDY_N_TRIALS)
        if isinstance(value, int):
            return value
        now = time.monotonic()
        if value is None and now > deadline_foreign:
            return None  # not created by a sweeps launcher, or its creator died: adopt it
        if now > deadline:
            return None
        time.sleep(0.2)


def ensure_budget(cfg: SweepConfig, study: optuna.Study) -> int:
    """Make the study's budget ``cfg.study.n_trials`` slots (enqueue what is missing); return it."""
    stored = _wait_for_budget(study)
    want = cfg.study.n_trials
    if cfg.study.sampler.name == "grid":
        want = min(want, len(grid_points(cfg)))  # a grid's budget is at most its points
    trials = study.get_trials(deepcopy=False)
    counted = [t for t in trials if not is_retried(t, trials)]
    if stored is not None and want < stored:
        raise ConfigError(f"study.n_trials: study {study.study_name!r} already has a budget of {stored} trials; "
                          f"n_trials can be raised on resume, not lowered; got {want}")
    if stored is not None and want == stored:
        return stored
    budget = _enqueue_slots(cfg, study, counted, want - len(counted)) + len(counted) if want > len(counted) \
        else len(counted)
    study.set_user_attr(names.STUDY_N_TRIALS, budget)
    return budget


def _enqueue_slots(cfg: SweepConfig, study: optuna.Study, existing: list[FrozenTrial], n: int) -> int:
    """Enqueue ``n`` slots (grid: the next unused grid points); return how many were enqueued."""
    if n <= 0:
        return 0
    if cfg.study.sampler.name == "grid":
        used = [dict(t.params or t.system_attrs.get(names.SYS_FIXED_PARAMS, {})) for t in existing]
        points = [p for p in grid_points(cfg) if p not in used][:n]
        for p in points:
            study.enqueue_trial(p)
        return len(points)
    for _ in range(n):
        study.enqueue_trial({})
    return n


# -- reading a study ---------------------------------------------------------------------------

def retried_numbers(trials: list[FrozenTrial]) -> set[int]:
    """Numbers of trials that were retried (each appears in a later trial's ``retry_history``)."""
    out: set[int] = set()
    for t in trials:
        out.update(t.system_attrs.get(names.SYS_RETRY_HISTORY, ()))
    return out


def is_retried(trial: FrozenTrial, trials: list[FrozenTrial]) -> bool:
    return trial.number in retried_numbers(trials)


def counts_of(study: optuna.Study) -> dict[str, int]:
    """Trials by state; FAIL trials that were retried are counted as ``RETRIED``, not ``FAIL``."""
    out = dict.fromkeys((names.STATE_COMPLETE, names.STATE_PRUNED, names.STATE_FAIL, names.STATE_RUNNING,
                         names.STATE_WAITING, names.COUNT_RETRIED), 0)
    trials = study.get_trials(deepcopy=False)
    retried = retried_numbers(trials)
    for t in trials:
        key = names.COUNT_RETRIED if t.number in retried and t.state == TrialState.FAIL else t.state.name
        out[key] = out.get(key, 0) + 1
    return out


def budget_of(study: optuna.Study) -> int | None:
    value = study.user_attrs.get(names.STUDY_N_TRIALS)
    return value if isinstance(value, int) else None


@dataclass
class StudyResult:
    """What a finished sweep holds: counts by state, the budget, the best trial."""

    counts: dict[str, int]
    budget: int | None
    best_value: float | None = None
    best_params: dict[str, Any] | None = None
    best_trial: int | None = None


def study_result(study: optuna.Study) -> StudyResult:
    """The study's counts by state (:func:`counts_of`), its budget and its best trial (if any)."""
    out = StudyResult(counts_of(study), budget_of(study))
    try:
        best = study.best_trial
        out.best_value, out.best_params, out.best_trial = best.value, dict(best.params), best.number
    except ValueError:
        pass
    return out

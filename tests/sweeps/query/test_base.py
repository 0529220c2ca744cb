"""sweeps.query.base: the one interface of the history backends."""

from __future__ import annotations

import inspect

import pytest

pytest.importorskip("mlflow")

from sweeps import query  # noqa: E402
from sweeps.query import base, client, database, rest  # noqa: E402


@pytest.mark.parametrize("module", [database, rest, client])
def test_every_backend_has_the_same_read_history(module):
    want = list(inspect.signature(base.HistoryReader.__call__).parameters)[1:]
    assert list(inspect.signature(module.read_history).parameters) == want
    assert query.READERS[{database: "sql", rest: "http", client: "api"}[module]] is module.read_history


def test_helpers():
    assert base.as_int(" 7 ") == 7 and base.as_int("x") is None and base.as_int(None) is None
    assert base.trial_or_missing(None) == -1 and base.trial_or_missing(3) == 3
    assert issubclass(base.Unsupported, RuntimeError) and query.Unsupported is base.Unsupported


def test_the_trial_filter_selects_the_trial_runs_and_nothing_else():
    """MLflow's own filter evaluator, over runs tagged as the tracker tags them: the study's parent run, trial
    runs (with the other tags they carry), a run of someone else's without the tag."""
    from mlflow.entities import Run, RunData, RunInfo, RunTag
    from mlflow.utils.search_utils import SearchUtils

    from sweeps import names

    def run(run_id: str, tags: dict[str, str]) -> Run:
        info = RunInfo(run_id=run_id, experiment_id="1", user_id="u", status="FINISHED", start_time=0, end_time=1,
                       lifecycle_stage="active")
        return Run(info, RunData(tags=[RunTag(k, v) for k, v in tags.items()]))

    runs = [run("parent", {names.TAG_ROLE: names.ROLE_STUDY, names.TAG_STUDY: "s"}),
            run("t0", {names.TAG_ROLE: names.ROLE_TRIAL, names.TAG_STUDY: "s", names.TAG_TRIAL_NUMBER: "0"}),
            run("other", {"mlflow.runName": "trial"}),
            run("t1", {names.TAG_ROLE: names.ROLE_TRIAL, names.TAG_STUDY: "s", names.TAG_TRIAL_NUMBER: "1"})]
    assert [r.info.run_id for r in SearchUtils.filter(runs, base.TRIAL_FILTER)] == ["t0", "t1"]

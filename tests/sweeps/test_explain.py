"""``sweeps explain``, ``query.findings`` and the parent run's study diagnosis, on one real sweep.

The sweep (module fixture, a real ``sweeps run`` in a subprocess) is a grid over lambda x batch
size x n_train on digits. Oracles: each run's own ``sweeps.finding.*`` tags and ``diagnosis.json``
(written by the worker at the end of the trial), recomputed by ``explain``; the scaling analysis
recomputed with ``nncore.lambda_scaling`` from the trials' params and values.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sweeps.cli import main

pytestmark = pytest.mark.slow

GRID = {
    "name": "explained",
    "data": {"n_train": 300, "n_eval": 100},
    "training": {"epochs": 4, "eta": 0.5},
    "search_space": {"__replace__": True,
                     "lmbda": {"type": "categorical", "choices": [0.3, 3.0]},
                     "batch_size": {"type": "categorical", "choices": [10, 50]},
                     "n_train": {"type": "categorical", "choices": [150, 300]}},
    "study": {"n_trials": 8, "sampler": {"__replace__": True, "name": "grid"},
              "pruner": {"__replace__": True, "name": "none"}, "workers": 2},
}


@pytest.fixture(scope="module")
def swept(tmp_path_factory, sw) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("explain")
    cfg = sw.write_config(root, GRID)
    proc = sw.run_cli(["run", str(cfg), "-q"], root, env=sw.clean_env())
    assert proc.returncode == 0, sw.describe(proc)
    tracking = f"sqlite:///{root / 'mlflow.db'}"
    return {"root": root, "tracking": tracking, "runs": sw.experiment_runs(root, "sweeps/explained")}


def _cli(swept: dict[str, Any], *args: str) -> Any:
    return CliRunner().invoke(main, ["explain", "explained", "--tracking-uri", swept["tracking"], *args],
                              catch_exceptions=False)


def test_every_trial_run_carries_its_findings_and_explain_recomputes_them(swept, sw) -> None:
    from sweeps import diagnostics as dg

    [parent], children = sw.split_runs(swept["runs"])
    exp = dg.explain_study("explained", tracking_uri=swept["tracking"])
    assert len(exp.trials) == 8 and len(children) == 8 and not exp.skipped
    by_run = {t.run_id: t for t in exp.trials}
    client = sw.mlflow_client(swept["root"])
    for run in children:
        tags = {k: v for k, v in run.data.tags.items() if k.startswith("sweeps.finding.")}
        t = by_run[run.info.run_id]
        assert tags == dg.finding_tags(t.findings) and tags, run.info.run_id
        doc = json.loads(Path(client.download_artifacts(run.info.run_id, "diagnosis.json")).read_text())
        assert [f["message"] for f in doc["findings"]] == [f.message for f in t.findings]
        assert t.epochs == 4 and t.facts.n_train == int(run.data.params["n_train"])


def test_the_parent_run_holds_the_study_analysis(swept, sw) -> None:
    from nncore.lambda_scaling import lambda_scaling
    from sweeps import diagnostics as dg

    [parent], children = sw.split_runs(swept["runs"])
    exp = dg.explain_study("explained", tracking_uri=swept["tracking"])
    done = [t for t in exp.trials if t.state == "COMPLETE"]
    expected = lambda_scaling([t.facts.lmbda for t in done], "dataset", [t.facts.batch_size for t in done],
                              [t.facts.n_train for t in done], [t.value for t in done], maximize=True)
    assert exp.scaling == expected and len(expected.groups) <= 4
    client = sw.mlflow_client(swept["root"])
    files = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"diagnosis.md", "lambda_scaling.png"} <= files
    md = Path(client.download_artifacts(parent.info.run_id, "diagnosis.md")).read_text()
    assert md == dg.study_markdown(exp)
    assert parent.data.tags["sweeps.lambda_scaling.steadiest"] == ",".join(expected.steadiest)


def test_explain_prints_the_study_and_a_trial(swept) -> None:
    res = _cli(swept)
    assert res.exit_code == 0, res.output
    assert "Study explained: 8 finished trials" in res.output and "Lambda scaling" in res.output
    assert "lambda_conventions" in res.output and "The best trial" in res.output
    res = _cli(swept, "--trial", "3")
    assert res.exit_code == 0 and res.output.startswith("Trial 3 (run ")
    assert "lambda_conventions" in res.output


def test_explain_json_and_by_run_id_agree(swept) -> None:
    study = json.loads(_cli(swept, "--json").output)
    assert len(study["trials"]) == 8 and study["lambda_scaling"]["steadiest"]
    one = study["trials"][5]
    by_run = json.loads(_cli(swept, "--run", one["run_id"], "--json").output)
    by_trial = json.loads(_cli(swept, "--trial", str(one["trial"]), "--json").output)
    assert by_run == by_trial == one


def test_explain_refuses_bad_requests_with_exit_2(swept) -> None:
    res = _cli(swept, "--trial", "99")
    assert res.exit_code == 2 and "study 'explained' has no trial 99" in res.output
    res = _cli(swept, "--trial", "1", "--run", "abc")
    assert res.exit_code == 2 and "give --trial or --run, not both" in res.output
    res = CliRunner().invoke(main, ["explain", "nosuchstudy", "--tracking-uri", swept["tracking"]])
    assert res.exit_code == 2 and "no MLflow experiment 'sweeps/nosuchstudy'" in res.output


def test_query_findings_has_one_row_per_finding(swept) -> None:
    from sweeps import diagnostics as dg
    from sweeps import query

    df = query.findings("explained", tracking_uri=swept["tracking"])
    exp = dg.explain_study("explained", tracking_uri=swept["tracking"])
    assert list(df.columns) == query.FINDING_COLUMNS
    assert len(df) == sum(len(t.findings) for t in exp.trials)
    assert df["trial"].is_monotonic_increasing and str(df["layer"].dtype) == "Int64"
    layered = df[df["code"] == "norm_equilibrium"]
    assert set(layered["layer"]) == {1, 2}
    assert all(isinstance(json.loads(e), dict) for e in df["evidence"])

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

from sweeps.cli.commands import main

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
    from sweeps.analysis import diagnosis as dg
    from sweeps.query import explanations as ex

    [parent], children = sw.split_runs(swept["runs"])
    exp = ex.explain_study("explained", tracking_uri=swept["tracking"])
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
    from sweeps.analysis import diagnosis as dg
    from sweeps.query import explanations as ex

    [parent], children = sw.split_runs(swept["runs"])
    exp = ex.explain_study("explained", tracking_uri=swept["tracking"])
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
    from sweeps import query
    from sweeps.query import explanations as ex

    df = query.findings("explained", tracking_uri=swept["tracking"])
    exp = ex.explain_study("explained", tracking_uri=swept["tracking"])
    assert list(df.columns) == query.FINDING_COLUMNS
    assert len(df) == sum(len(t.findings) for t in exp.trials)
    assert df["trial"].is_monotonic_increasing and str(df["layer"].dtype) == "Int64"
    layered = df[df["code"] == "norm_equilibrium"]
    assert set(layered["layer"]) == {1, 2}
    assert all(isinstance(json.loads(e), dict) for e in df["evidence"])


# -- the three examples of the README's "Answering the classic questions", shrunk to run in seconds ----

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def _run_example(sw, tmp_path: Path, name: str, changes: dict[str, Any]) -> str:
    import yaml

    cfg = sw.merge(yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text()), changes)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = sw.run_cli(["run", str(path), "-q"], tmp_path, env=sw.clean_env())
    assert proc.returncode == 0, sw.describe(proc)
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_quadratic_cost_example_is_explained_by_the_denominator_trap(sw, tmp_path) -> None:
    from sweeps.query import explanations as ex

    tracking = _run_example(sw, tmp_path, "quadratic-cost-growth", {"training": {"epochs": 12}})
    exp = ex.explain_study("quadratic-cost-growth", tracking_uri=tracking)
    best = max((t for t in exp.trials if t.state == "COMPLETE"), key=lambda t: t.value)
    [trap] = [f for f in best.findings if f.code == "denominator_trap"]
    assert trap.evidence["factor"] == pytest.approx(1500 / 297)
    assert "network2.py" in trap.message and "5.05x" in trap.message
    collapsed = [t for t in exp.trials if t.facts.lmbda == 10.0]
    assert [f.code for f in collapsed[0].findings if f.severity == "warning"] == ["decay_dominates"]


def test_init_scale_example_shows_layer1_shrinking_from_large_weights(sw, tmp_path, mnist_t10k_dir) -> None:
    from sweeps.query import explanations as ex

    tracking = _run_example(sw, tmp_path, "init-scale-mnist", {
        "data": {"path": str(mnist_t10k_dir), "n_train": 1000, "n_eval": 500},
        "training": {"epochs": 6}})
    exp = ex.explain_study("init-scale-mnist", tracking_uri=tracking)
    by_init = {}
    for t in exp.trials:
        rms = {f.layer: f.evidence for f in t.findings if f.code == "norm_equilibrium"}
        by_init[t.trial] = rms
    large, default = by_init[0], by_init[1]  # the grid's order: large, then default
    assert large[1]["rms_start"] == pytest.approx(1.0, abs=0.01)  # N(0, 1) at epoch 0
    assert default[1]["rms_start"] == pytest.approx(1 / 784 ** 0.5, rel=0.05)  # N(0, 1/n_in)
    assert large[1]["rms_end"] < large[1]["rms_start"] and default[1]["rms_end"] > default[1]["rms_start"]


def test_lambda_scaling_example_names_a_convention(sw, tmp_path) -> None:
    from sweeps.query import explanations as ex

    tracking = _run_example(sw, tmp_path, "lambda-scaling", {
        "training": {"epochs": 4},
        "search_space": {"lmbda": {"choices": [0.1, 1.0, 10.0]}, "batch_size": {"choices": [10, 40]}},
        "study": {"n_trials": 12}})
    exp = ex.explain_study("lambda-scaling", tracking_uri=tracking)
    s = exp.scaling
    assert s is not None and s.varies == ("batch_size", "n_train") and len(s.groups) == 4
    assert all(g.n_trials == 3 for g in s.groups) and set(s.steadiest) <= {"dataset", "per_batch", "decoupled"}
    assert min(s.spread.values()) == pytest.approx(s.spread[s.steadiest[0]])

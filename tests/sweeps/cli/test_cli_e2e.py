"""End to end through the ``sweeps`` CLI on the tiny digits sweep, checked against Optuna and MLflow.

Module layout (each CLI call is a subprocess in a temporary directory):

* ``swept``: two fresh directories, A (artifacts on) and B (``--no-artifacts``), each running
  ``sweeps run cfg.yaml --n-trials 4 -q`` at the same time; snapshots of both stores are
  taken right after (A is resumed later);
* ``resumed``: A again with ``--n-trials 6``;
* the other tests use their own directories.

Every test starts ``sweeps`` subprocesses (and they spawn workers): the whole module is ``slow``.
The CLI's in-process behaviour (validate, bad input, status, best, gradcheck) is in ``test_commands.py``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from nncore.records import EPOCH_CHANGE_FIELDS, metric_names

pytestmark = pytest.mark.slow

N_LAYERS = 2  # hidden [10]: input->hidden, hidden->output
KEYS = metric_names(N_LAYERS)
#: Keys absent at epoch 0 (undefined before the first step).
CHANGE_KEYS = {"train/decay_factor"} | {k for k in KEYS if k.split("/")[-1] in EPOCH_CHANGE_FIELDS}
RUN_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
TRIAL_ARTIFACTS = {"network.npz", "network2.json", "loss_decomposition.png", "layer_norms.png"}
REQUIRED_PARAMS = {"eta", "lmbda", "batch_size", "convention", "n_train", "seed", "trial_number", "version.numpy"}


def snapshot(sw, directory: Path, name: str = "tiny") -> dict[str, Any]:
    """Everything the tests compare: Optuna trials, the parent run, child runs and their histories."""
    study = sw.load_study(directory, name)
    client = sw.mlflow_client(directory)
    parents, children = sw.split_runs(sw.experiment_runs(directory, f"sweeps/{name}"))
    histories = {}
    for run in children:
        rid = run.info.run_id
        histories[rid] = {key: [(m.step, m.value) for m in sorted(client.get_metric_history(rid, key),
                                                                  key=lambda m: (m.step, m.timestamp))]
                          for key in run.data.metrics}
    return {"study_id": study._study_id, "trials": study.trials, "direction": study.direction, "parents": parents,
            "children": children, "histories": histories}


def child_of(snap: dict[str, Any], trial: Any) -> Any:
    rid = trial.user_attrs["mlflow_run_id"]
    [run] = [r for r in snap["children"] if r.info.run_id == rid]
    return run


@pytest.fixture(scope="module")
def swept(sw, tmp_path_factory) -> dict[str, Any]:
    a, b = tmp_path_factory.mktemp("sweep_a"), tmp_path_factory.mktemp("sweep_b")
    sw.write_config(a)
    sw.write_config(b)
    procs = [subprocess.Popen(sw.sweeps_cmd("run", "cfg.yaml", "--n-trials", "4", "-q", *extra), cwd=d,
                              env=sw.clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for d, extra in ((a, ()), (b, ("--no-artifacts",)))]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, f"exit {p.returncode}\n{out}\n{err}"
    return {"a": a, "b": b, "a_out": outs[0][0], "snap_a": snapshot(sw, a), "snap_b": snapshot(sw, b)}


@pytest.fixture(scope="module")
def resumed(sw, swept) -> dict[str, Any]:
    a = swept["a"]
    r = sw.run_cli(["run", "cfg.yaml", "--n-trials", "6", "-q"], a)
    assert r.returncode == 0, sw.describe(r)
    return {"dir": a, "snap": snapshot(sw, a)}


# -- the first sweep ---------------------------------------------------------------------------

def test_run_creates_stores_in_cwd_and_prints_summary(swept) -> None:
    a = swept["a"]
    assert {"optuna.db", "mlflow.db", "mlruns"} <= set(os.listdir(a))
    assert swept["a_out"].startswith("study 'tiny': ")


def test_four_trials_finished_none_running(swept) -> None:
    trials = swept["snap_a"]["trials"]
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert all(t.state.name in RUN_STATUS for t in trials)
    assert not [r for r in swept["snap_a"]["children"] + swept["snap_a"]["parents"] if r.info.status == "RUNNING"]


def test_one_parent_run(sw, swept) -> None:
    snap = swept["snap_a"]
    [parent] = snap["parents"]
    assert parent.data.tags["sweeps.role"] == "study"
    assert parent.info.status == "FINISHED"
    study = sw.load_study(swept["a"])
    assert study.user_attrs["sweeps.mlflow_parent_run_id"] == parent.info.run_id
    completed = [t for t in snap["trials"] if t.state.name == "COMPLETE"]
    best = max(t.value for t in completed)
    assert parent.data.metrics["best_value"] == best
    plots = [a.path for a in sw.mlflow_client(swept["a"]).list_artifacts(parent.info.run_id, "study_plots")]
    assert plots and all(p.startswith("study_plots/") and p.endswith(".png") for p in plots), plots


def test_one_child_run_per_trial(swept) -> None:
    snap = swept["snap_a"]
    [parent] = snap["parents"]
    assert len(snap["children"]) == len(snap["trials"]) == 4
    run_ids = {t.user_attrs["mlflow_run_id"] for t in snap["trials"]}
    assert run_ids == {r.info.run_id for r in snap["children"]}
    for t in snap["trials"]:
        run = child_of(snap, t)
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["sweeps.trial_number"] == str(t.number)


def test_every_metric_at_every_epoch(swept) -> None:
    snap = swept["snap_a"]
    for t in snap["trials"]:
        run = child_of(snap, t)
        hist = snap["histories"][run.info.run_id]
        n_epochs = len(t.intermediate_values)
        assert n_epochs >= 1
        assert set(hist) == set(KEYS), set(KEYS) ^ set(hist)
        for key in KEYS:  # epoch 0 (the initial weights) lacks only the keys that describe an epoch's change
            first = 1 if key in CHANGE_KEYS else 0
            assert [s for s, _ in hist[key]] == list(range(first, n_epochs + 1)), (t.number, key, hist[key])
        if t.state.name == "COMPLETE":
            assert n_epochs == 3


def test_logged_objective_equals_optuna_intermediate_values(swept) -> None:
    snap = swept["snap_a"]
    for t in snap["trials"]:
        logged = dict(snap["histories"][child_of(snap, t).info.run_id]["eval/accuracy"])
        assert 0 in logged  # the initial network, at MLflow step 0, never reported to Optuna
        logged = {e: v for e, v in logged.items() if e >= 1}
        assert logged == t.intermediate_values, t.number
        if t.state.name == "COMPLETE":
            assert t.value == logged[max(logged)]


def test_child_params(swept) -> None:
    snap = swept["snap_a"]
    for t in snap["trials"]:
        params = child_of(snap, t).data.params
        assert REQUIRED_PARAMS <= set(params), REQUIRED_PARAMS - set(params)
        assert float(params["eta"]) == t.params["eta"]
        assert float(params["lmbda"]) == t.params["lmbda"]
        assert int(params["batch_size"]) == t.params["batch_size"]
        assert int(params["trial_number"]) == t.number
        assert params["n_train"] == "300" and params["seed"] == "0" and params["convention"] == "dataset"


def _ranked_complete(snap: dict[str, Any]) -> list[Any]:
    """COMPLETE trials, best first (ties: lower number first): the order ``sweeps.report.trial_plots`` ranks them in."""
    import optuna

    sign = -1.0 if snap["direction"] == optuna.study.StudyDirection.MAXIMIZE else 1.0
    done = [t for t in snap["trials"] if t.state == optuna.trial.TrialState.COMPLETE]
    return sorted(done, key=lambda t: (sign * t.value, t.number))


def test_child_artifacts(sw, swept) -> None:
    """Default ``trial_artifacts: best``: network files and diagnosis.json for every trial with a network;
    the two PNGs only for the study's best trial, drawn by the launcher at the end."""
    client = sw.mlflow_client(swept["a"])
    best = _ranked_complete(swept["snap_a"])[0]
    seen = set()
    for run in swept["snap_a"]["children"]:
        names = {a.path for a in client.list_artifacts(run.info.run_id)}
        state = run.data.tags["sweeps.state"]
        seen.add(state)
        assert {"network.npz", "network2.json", "diagnosis.json"} <= names, names
        if run.info.run_id == best.user_attrs["mlflow_run_id"]:
            assert TRIAL_ARTIFACTS <= names, (run.info.run_id, names)
        else:
            assert not any(n.endswith(".png") for n in names), names
    assert "COMPLETE" in seen
    # B ran with --no-artifacts
    client_b = sw.mlflow_client(swept["b"])
    for run in swept["snap_b"]["children"] + swept["snap_b"]["parents"]:
        assert client_b.list_artifacts(run.info.run_id) == []


def test_plots_command_draws_any_trial_on_demand(sw, swept, tmp_path) -> None:
    """``sweeps plots``: PNGs of chosen trials from their MLflow metrics, to a folder and/or their runs."""
    import matplotlib.image

    d = tmp_path / "copy"
    shutil.copytree(swept["a"], d)
    ranked = _ranked_complete(swept["snap_a"])
    other = next(t for t in swept["snap_a"]["trials"] if t.number != ranked[0].number)
    r = sw.run_cli(["plots", "tiny", "--trial", str(other.number), "--out", "figs", "--no-log"], d)
    assert r.returncode == 0, sw.describe(r)
    for name in ("loss_decomposition.png", "layer_norms.png"):
        image = matplotlib.image.imread(d / "figs" / f"trial-{other.number:04d}-{name}")
        assert image.shape[0] > 200 and image.shape[1] > 200
    client = sw.mlflow_client(d)
    run_id = other.user_attrs["mlflow_run_id"]
    assert not any(a.path.endswith(".png") for a in client.list_artifacts(run_id))  # --no-log
    r = sw.run_cli(["plots", "tiny", "--trial", str(other.number)], d)
    assert r.returncode == 0, sw.describe(r)
    assert {"loss_decomposition.png", "layer_norms.png"} <= {a.path for a in client.list_artifacts(run_id)}
    r = sw.run_cli(["plots", "tiny", "--trial", "999"], d)
    assert r.returncode == 2 and "999" in r.stderr, sw.describe(r)


def test_mlflow_status_matches_optuna_state(swept) -> None:
    snap = swept["snap_a"]
    states = set()
    for t in snap["trials"]:
        run = child_of(snap, t)
        states.add(t.state.name)
        assert run.info.status == RUN_STATUS[t.state.name], (t.number, t.state.name, run.info.status)
        assert run.data.tags["sweeps.state"] == t.state.name
        if t.state.name == "PRUNED":
            assert t.user_attrs["reason"].startswith("pruned at epoch")
            assert run.data.tags["sweeps.reason"] == t.user_attrs["reason"]
    assert "COMPLETE" in states
    assert "PRUNED" in states, "the median pruner (1 startup trial, no warm-up) pruned nothing"


def test_same_config_and_seed_reproduce(swept) -> None:
    a, b = swept["snap_a"], swept["snap_b"]
    assert len(a["trials"]) == len(b["trials"]) == 4
    for ta, tb in zip(a["trials"], b["trials"]):
        assert ta.params == tb.params
        assert ta.state == tb.state and ta.value == tb.value
        assert ta.intermediate_values == tb.intermediate_values
        ha, hb = a["histories"][child_of(a, ta).info.run_id], b["histories"][child_of(b, tb).info.run_id]
        assert set(ha) == set(hb)
        for key in ha:
            if key != "train/epoch_time":
                assert ha[key] == hb[key] or _nan_equal(ha[key], hb[key]), (ta.number, key)


def _nan_equal(x: list, y: list) -> bool:
    return len(x) == len(y) and all(s1 == s2 and (v1 == v2 or (math.isnan(v1) and math.isnan(v2)))
                                    for (s1, v1), (s2, v2) in zip(x, y))


# -- resuming ----------------------------------------------------------------------------------

def test_resume_continues_the_same_study(swept, resumed) -> None:
    before, after = swept["snap_a"], resumed["snap"]
    assert after["study_id"] == before["study_id"]
    assert [t.number for t in after["trials"]] == list(range(6))
    for t0, t1 in zip(before["trials"], after["trials"]):
        assert (t1.state, t1.params, t1.intermediate_values, t1.user_attrs["mlflow_run_id"]) == \
            (t0.state, t0.params, t0.intermediate_values, t0.user_attrs["mlflow_run_id"])
    assert [p.info.run_id for p in after["parents"]] == [p.info.run_id for p in before["parents"]]
    assert after["parents"][0].info.status == "FINISHED"
    assert len(after["children"]) == 6
    assert {t.user_attrs["mlflow_run_id"] for t in after["trials"]} == {r.info.run_id for r in after["children"]}
    assert all(r.data.tags["mlflow.parentRunId"] == before["parents"][0].info.run_id for r in after["children"])
    import optuna

    assert optuna.get_all_study_names(f"sqlite:///{resumed['dir'] / 'optuna.db'}") == ["tiny"]


def test_status_best_trials_history_exports(sw, resumed) -> None:
    d = resumed["dir"]
    trials = resumed["snap"]["trials"]
    counts = {s: sum(t.state.name == s for t in trials) for s in ("COMPLETE", "PRUNED", "FAIL")}
    completed = [t for t in trials if t.state.name == "COMPLETE"]
    best = max(completed, key=lambda t: t.value)

    r = sw.run_cli(["status"], d)
    assert r.returncode == 0, sw.describe(r)
    [row] = [line.split() for line in r.stdout.splitlines() if line.startswith("tiny ")]
    assert row[1:6] == ["maximize", str(counts["COMPLETE"]), str(counts["PRUNED"]), str(counts["FAIL"]), "0"], row

    r = sw.run_cli(["best", "tiny", "--json"], d)
    assert r.returncode == 0, sw.describe(r)
    got = json.loads(r.stdout)
    assert got["trial"] == best.number and got["value"] == best.value and got["params"] == best.params
    assert got["mlflow_run_id"] == best.user_attrs["mlflow_run_id"]

    for name in ("t.csv", "t.parquet"):
        r = sw.run_cli(["trials", "tiny", "-o", name], d)
        assert r.returncode == 0, sw.describe(r)
        df = pd.read_csv(d / name) if name.endswith(".csv") else pd.read_parquet(d / name)
        assert len(df) == len(trials) == 6
        assert "mlflow_run_id" in df.columns
        by_trial = df.set_index("trial")
        for t in trials:
            assert by_trial.loc[t.number, "mlflow_run_id"] == t.user_attrs["mlflow_run_id"]
            assert by_trial.loc[t.number, "state"] == t.state.name

    r = sw.run_cli(["history", "tiny", "--wide", "-o", "h.csv"], d)
    assert r.returncode == 0, sw.describe(r)
    h = pd.read_csv(d / "h.csv")
    assert len(h) == sum(len(t.intermediate_values) + 1 for t in trials)  # + epoch 0
    for t in trials:
        rows = h[(h["trial"] == t.number) & (h["epoch"] >= 1)].sort_values("epoch")
        assert rows["epoch"].tolist() == sorted(t.intermediate_values)
        assert rows["eval/accuracy"].tolist() == [t.intermediate_values[e] for e in sorted(t.intermediate_values)]


def test_changed_search_space_needs_new_study(sw, resumed, tmp_path: Path) -> None:
    d = tmp_path / "copy"
    shutil.copytree(resumed["dir"], d)
    sw.write_config(d, {"search_space": {"batch_size": {"choices": [10, 20]}}}, filename="cfg2.yaml")
    n_runs = len(sw.experiment_runs(d, "sweeps/tiny"))
    r = sw.run_cli(["run", "cfg2.yaml", "-q", "--no-artifacts"], d)
    assert r.returncode == 2, sw.describe(r)
    assert "--new-study" in r.stderr
    import optuna

    url = f"sqlite:///{d / 'optuna.db'}"
    assert optuna.get_all_study_names(url) == ["tiny"]
    assert len(sw.load_study(d).trials) == 6
    assert len(sw.experiment_runs(d, "sweeps/tiny")) == n_runs

    r = sw.run_cli(["run", "cfg2.yaml", "--new-study", "--n-trials", "2", "-q", "--no-artifacts"], d)
    assert r.returncode in (0, 1), sw.describe(r)
    assert "'tiny-v2'" in r.stdout
    assert sorted(optuna.get_all_study_names(url)) == ["tiny", "tiny-v2"]
    v2 = sw.load_study(d, "tiny-v2")
    assert len(v2.trials) == 2 and all(t.params["batch_size"] in (10, 20) for t in v2.trials)
    assert len(sw.load_study(d).trials) == 6
    parents, children = sw.split_runs(sw.experiment_runs(d, "sweeps/tiny-v2"))
    assert len(parents) == 1 and len(children) == 2


# -- other directories -------------------------------------------------------------------------

def test_two_workers_exact_trial_budget(sw, tmp_path: Path) -> None:
    # trials long enough (~0.6 s each, no pruning) that one worker cannot finish all five before the other starts
    sw.write_config(tmp_path, {"training": {"epochs": 150},
                               "study": {"pruner": {"__replace__": True, "name": "none"}}})
    r = sw.run_cli(["run", "cfg.yaml", "--workers", "2", "--n-trials", "5", "-q", "--no-artifacts"], tmp_path)
    assert r.returncode == 0, sw.describe(r)
    study = sw.load_study(tmp_path)
    assert len(study.trials) == 5
    assert all(t.state.name in RUN_STATUS for t in study.trials)
    assert len({t.user_attrs["worker"] for t in study.trials}) == 2, "both workers should have run trials"
    parents, children = sw.split_runs(sw.experiment_runs(tmp_path, "sweeps/tiny"))
    assert len(parents) == 1 and len(children) == 5
    assert {t.user_attrs["mlflow_run_id"] for t in study.trials} == {r.info.run_id for r in children}
    for t in study.trials:
        [run] = [c for c in children if c.info.run_id == t.user_attrs["mlflow_run_id"]]
        assert run.info.status == RUN_STATUS[t.state.name]


def test_train_one_run(sw, tmp_path: Path) -> None:
    sw.write_config(tmp_path)
    r = sw.run_cli(["train", "cfg.yaml", "--eta", "0.5", "--lmbda", "1", "--epochs", "2"], tmp_path)
    assert r.returncode == 0, sw.describe(r)
    assert "COMPLETE" in r.stdout
    assert "optuna.db" not in os.listdir(tmp_path)
    runs = sw.experiment_runs(tmp_path, "sweeps/tiny-train")
    assert len(runs) == 1
    [run] = runs
    assert run.info.status == "FINISHED"
    assert float(run.data.params["eta"]) == 0.5 and float(run.data.params["lmbda"]) == 1.0
    assert run.data.params["epochs"] == "2"
    hist = sw.mlflow_client(tmp_path).get_metric_history(run.info.run_id, "eval/accuracy")
    assert sorted(m.step for m in hist) == [0, 1, 2]
    assert set(run.data.metrics) == set(KEYS)


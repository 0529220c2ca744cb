"""The ``sweeps`` command line in process (click's ``CliRunner``): what needs no worker process.

``test_cli_e2e.py`` runs the CLI as subprocesses end to end (sweeps, resume, exports, the UI).
Oracles: the YAML files written here (read back with PyYAML, not the config loader), Optuna
studies built here with known trials, the layer-size arithmetic of the gradient check, the
installed package's version, and the directory listing (a refused command creates nothing).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import yaml
from cli_cases import describe
from optuna.trial import TrialState, create_trial

from sweeps import names
from sweeps.cli.commands import main

optuna.logging.set_verbosity(optuna.logging.WARNING)

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))




# -- validate -----------------------------------------------------------------------------------

def test_validate_prints_the_parsed_study(sw, cli, tmp_path: Path) -> None:
    path = sw.write_config(tmp_path)
    raw = yaml.safe_load(path.read_text())
    r = cli("validate", str(path))
    assert r.exit_code == 0, describe(r)
    lines = r.stdout.splitlines()
    assert lines[0] == ("ok: study 'tiny': 4 trials, sampler random, pruner median, objective maximize "
                        "eval/accuracy")
    assert [line.split(":")[0].strip() for line in lines[1:-1]] == list(raw["search_space"])
    assert "'choices': [10, 25, 50]" in lines[3] and "'log': True" in lines[1]
    assert re.fullmatch(r"  fingerprint [0-9a-f]{16}", lines[-1])
    assert r.stderr == ""
    assert os.listdir(tmp_path) == ["cfg.yaml"]


def test_validate_fingerprint_changes_with_the_search_space(sw, cli, tmp_path: Path) -> None:
    a = cli("validate", str(sw.write_config(tmp_path, filename="a.yaml"))).stdout.splitlines()[-1]
    same = cli("validate", str(sw.write_config(tmp_path, {"study": {"n_trials": 9}}, filename="b.yaml")))
    other = cli("validate", str(sw.write_config(tmp_path, {"search_space": {"batch_size": {"choices": [10, 20]}}},
                                               filename="c.yaml")))
    assert same.stdout.splitlines()[-1] == a  # the budget does not make trials incomparable
    assert other.stdout.splitlines()[-1] != a


@pytest.mark.parametrize("changes, field", [
    ({"training": {"etaa": 0.1}}, "training.etaa"),
    ({"training": {"eta": -1.0}}, "training.eta"),
    ({"data": {"n_train": "many"}}, "data.n_train"),
    ({"study": {"sampler": {"name": "annealing"}}}, "study.sampler.name"),
    ({"study": {"sampler": {"options": {"n_startup": 3}}}}, "study.sampler.options"),  # found building the sampler
    ({"study": {"pruner": {"options": {"bogus": 1}}}}, "study.pruner.options"),  # ... the pruner
], ids=["unknown-key", "negative-eta", "wrong-type", "sampler-name", "sampler-option", "pruner-option"])
def test_validate_bad_input_exits_2_naming_the_field(sw, cli, tmp_path: Path, changes: dict, field: str) -> None:
    r = cli("validate", str(sw.write_config(tmp_path, changes)))
    assert r.exit_code == 2, describe(r)
    assert r.stderr.startswith("error: ") and field in r.stderr, r.stderr
    assert r.stdout == ""
    assert os.listdir(tmp_path) == ["cfg.yaml"]


def test_validate_a_missing_file_is_a_usage_error(cli, tmp_path: Path) -> None:
    r = cli("validate", str(tmp_path / "nope.yaml"))
    assert r.exit_code == 2
    assert "nope.yaml" in r.stderr and "does not exist" in r.stderr


def test_validate_a_duplicate_key_names_it_and_its_line(cli, tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("name: a\nseed: 1\nname: b\n")
    r = cli("validate", str(path))
    assert r.exit_code == 2 and "duplicate key 'name' at line 3" in r.stderr, describe(r)


def test_the_examples_are_the_ones_the_readme_presents() -> None:
    """The parametrized test below validates every file in examples/; the README names them: an example
    added without a word there, or one the README names that is gone, fails here."""
    named = set(re.findall(r"examples/([\w.-]+\.yaml)", (REPO / "README.md").read_text(encoding="utf-8")))
    assert named == {p.name for p in EXAMPLES}
    studies = [yaml.safe_load(p.read_text())["name"] for p in EXAMPLES]
    assert len(set(studies)) == len(studies), f"two examples share a study name: {studies}"


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_validate_accepts_the_examples(cli, tmp_path: Path, example: Path) -> None:
    r = cli("validate", str(example))
    assert r.exit_code == 0, describe(r)
    assert r.stdout.startswith(f"ok: study {yaml.safe_load(example.read_text())['name']!r}"), r.stdout
    assert os.listdir(tmp_path) == []


# -- run: input refused before anything is created ------------------------------------------------------

@pytest.mark.parametrize("changes, needle", [
    ({"study": {"bogus": 1}}, "study.bogus"),
    ({"study": {"pruner": {"options": {"bogus": 1}}}}, "study.pruner.options"),
    ({"study": {"sampler": {"options": {"n_startup": 3}}}}, "study.sampler.options"),
], ids=["unknown-key", "pruner-option", "sampler-option"])
def test_run_with_a_bad_config_exits_2_and_creates_nothing(sw, cli, tmp_path: Path, changes: dict,
                                                          needle: str) -> None:
    sw.write_config(tmp_path, changes)
    r = cli("run", "cfg.yaml", "--n-trials", "2", "-q")
    assert r.exit_code == 2, describe(r)
    assert needle in r.stderr, r.stderr
    assert sorted(os.listdir(tmp_path)) == ["cfg.yaml"], "a rejected config must not create stores"


@pytest.mark.parametrize("args, option", [(["--workers", "0"], "--workers"), (["--n-trials", "0"], "--n-trials"),
                                          (["--artifacts", "some"], "--artifacts")])
def test_run_with_a_bad_option_is_a_usage_error_naming_it(sw, cli, tmp_path: Path, args: list[str],
                                                          option: str) -> None:
    sw.write_config(tmp_path)
    r = cli("run", "cfg.yaml", *args)
    assert r.exit_code == 2 and option in r.stderr, describe(r)
    assert sorted(os.listdir(tmp_path)) == ["cfg.yaml"]


def test_run_with_unreadable_data_exits_3_and_creates_nothing(sw, cli, tmp_path: Path) -> None:
    missing = tmp_path / "no-mnist-here"
    sw.write_config(tmp_path, {"data": {"source": "mnist", "path": str(missing), "n_train": 100, "n_eval": 10}})
    r = cli("run", "cfg.yaml", "-q")
    assert r.exit_code == 3, describe(r)
    assert r.stderr.startswith("error: ") and str(missing) in r.stderr
    assert sorted(os.listdir(tmp_path)) == ["cfg.yaml"]


# -- status and best on stores built here ------------------------------------------------------------

@pytest.fixture(scope="module")
def ram_dir(tmp_path_factory) -> Iterator[Path]:
    """A directory in RAM when there is one (an SQLite study on disk costs ~0.5 s to create here)."""
    from servicekit import ram_directory

    with ram_directory(tmp_path_factory.mktemp("stores"), "sweeps-cli-") as path:
        yield path

def _store(directory: Path, name: str) -> str:
    url = f"sqlite:///{directory / name}"
    optuna.storages.RDBStorage(url)  # an empty store (tables, no study)
    return url


@pytest.fixture(scope="module")
def filled(ram_dir: Path) -> str:
    """A store with study ``a`` (maximize): values 0.5 and 0.9 complete, one pruned, one failed and
    retried, the retry waiting; and study ``b`` (minimize): one failed trial. Only read by the tests."""
    url = _store(ram_dir, "filled.db")
    a = optuna.create_study(study_name="a", storage=url, direction="maximize")
    for value in (0.5, 0.9):
        a.add_trial(create_trial(value=value, params={"x": value},
                                 distributions={"x": optuna.distributions.FloatDistribution(0, 1)},
                                 user_attrs={names.TRIAL_RUN: f"run-{value}"}))
    a.add_trial(create_trial(state=TrialState.PRUNED, intermediate_values={1: 0.1}))
    a.add_trial(create_trial(state=TrialState.FAIL))  # trial 3
    a.add_trial(create_trial(state=TrialState.WAITING,
                             system_attrs={names.SYS_FAILED_TRIAL: 3, names.SYS_RETRY_HISTORY: [3]}))
    b = optuna.create_study(study_name="b", storage=url, direction="minimize")
    b.add_trial(create_trial(state=TrialState.FAIL))
    return url


def test_status_on_an_empty_store(cli, ram_dir: Path) -> None:
    url = _store(ram_dir, "empty.db")
    r = cli("status", "--storage", url)
    assert r.exit_code == 0, describe(r)
    assert r.stdout.strip() == f"no studies in {url}"


def test_status_counts_trials_by_state_with_the_best_value(cli, filled: str) -> None:
    r = cli("status", "--storage", filled)
    assert r.exit_code == 0, describe(r)
    header, *rows = r.stdout.splitlines()
    assert header.split() == ["study", "direction", "complete", "pruned", "failed", "running", "waiting", "retried",
                              "best"]
    table = {row.split()[0]: row.split(None, 8)[1:] for row in rows}
    assert table == {"a": ["maximize", "2", "1", "0", "0", "1", "1", "0.9 (trial 1)"],
                     "b": ["minimize", "0", "0", "1", "0", "0", "0", "-"]}
    one = cli("status", "b", "--storage", filled)
    assert one.exit_code == 0 and [row.split()[0] for row in one.stdout.splitlines()[1:]] == ["b"]


@pytest.mark.parametrize("command", [["status"], ["status", "a"], ["best", "a"], ["trials", "a"]])
def test_a_mistyped_sqlite_path_is_refused_and_not_created(cli, tmp_path: Path, command: list[str]) -> None:
    missing = tmp_path / "optuan.db"
    r = cli(*command, "--storage", f"sqlite:///{missing}")
    assert r.exit_code == 3, describe(r)  # a missing store, like a missing MLflow database or data file
    assert f"no Optuna study database at sqlite:///{missing}" in r.stderr, describe(r)
    assert not missing.exists()


def test_status_of_an_unknown_study_exits_2(cli, filled: str) -> None:
    r = cli("status", "zz", "--storage", filled)
    assert r.exit_code == 2 and f"study 'zz' not found in {filled}" in r.stderr, describe(r)


def test_best_prints_the_best_trial(cli, filled: str) -> None:
    r = cli("best", "a", "--storage", filled, "--json")
    assert r.exit_code == 0, describe(r)
    assert json.loads(r.stdout) == {"study": "a", "trial": 1, "value": 0.9, "params": {"x": 0.9},
                                    "mlflow_run_id": "run-0.9"}
    text = cli("best", "a", "--storage", filled)
    assert text.stdout.splitlines() == ["trial 1: value 0.9", "  x = 0.9", "  mlflow run: run-0.9"]


def test_best_without_a_complete_trial_exits_1_and_of_an_unknown_study_2(cli, filled: str) -> None:
    r = cli("best", "b", "--storage", filled)
    assert r.exit_code == 1 and "study 'b' has no completed trial yet" in r.stderr, describe(r)
    r = cli("best", "zz", "--storage", filled)
    assert r.exit_code == 2 and "study 'zz' not found" in r.stderr and "studies there: a, b" in r.stderr, describe(r)


# -- history --------------------------------------------------------------------------------------

@pytest.mark.slow  # builds an MLflow store of its own (1-2.5 s): out of the fast lane
def test_history_params_adds_the_searched_parameters(cli, tmp_path: Path) -> None:
    """A store in the tracker's layout: the parent run logs the search space, each trial run every setting."""
    import csv
    import io

    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("sweeps/tiny")
    parent = client.create_run(exp, tags={names.TAG_ROLE: "study"})
    client.log_batch(parent.info.run_id, params=[Param("search_space", json.dumps({"lmbda": {"type": "float"}}))])
    for n, lmbda in enumerate((0.25, 4.0)):
        run = client.create_run(exp, tags={names.TAG_ROLE: "trial", names.TAG_TRIAL_NUMBER: str(n)})
        client.log_batch(run.info.run_id, params=[Param("lmbda", str(lmbda)), Param("eta", "0.5")],
                         metrics=[Metric("eval/accuracy", 0.5, 0, e) for e in (0, 1)])
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # absolute: MLflow caches its stores by URI within a process
    r = cli("history", "tiny", "--params", "--tracking-uri", uri)
    assert r.exit_code == 0, describe(r)
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert list(rows[0]) == ["run_id", "trial", "epoch", "metric", "value", "lmbda"]
    assert [(row["trial"], row["epoch"], row["lmbda"]) for row in rows] == [
        ("0", "0", "0.25"), ("0", "1", "0.25"), ("1", "0", "4.0"), ("1", "1", "4.0")]
    r = cli("history", "tiny", "--wide", "--tracking-uri", uri)
    assert r.stdout.splitlines()[0] == "run_id,trial,epoch,eval/accuracy"


# -- the rest ----------------------------------------------------------------------------------

def test_ui_on_a_tracking_server_starts_nothing_and_a_dead_one_is_one_line(cli) -> None:
    r = cli("ui", "--tracking-uri", "http://user:UiCanary99@127.0.0.1:9")
    assert r.exit_code == 3, describe(r)  # the links are all it does: a dead server fails it, at once
    assert r.stdout.strip() == "the tracking URI is a server already: open http://user:***@127.0.0.1:9"
    assert r.stderr.startswith("error: the MLflow tracking server http://user:***@127.0.0.1:9 does not answer")
    assert len(r.stderr.strip().splitlines()) == 1 and "UiCanary99" not in r.stdout + r.stderr


def _mlflow_ui_bundle() -> list[Path]:
    import mlflow

    return sorted((Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js").glob("*.js"))


def test_runs_table_url_is_a_route_of_the_installed_mlflow_ui() -> None:
    """Oracle: the route table compiled into the installed MLflow's UI (a hash router)."""
    from sweeps.cli.ui import runs_table_url

    assert runs_table_url("http://127.0.0.1:5000/", "17") == "http://127.0.0.1:5000/#/experiments/17/runs"
    bundle = _mlflow_ui_bundle()
    if not bundle:
        pytest.skip("this MLflow has no UI bundle")
    text = "".join(f.read_text(errors="replace") for f in bundle if "main." in f.name) or \
        "".join(f.read_text(errors="replace") for f in bundle)
    assert '"/experiments/:experimentId/runs"' in text and "createHashRouter" in text


@pytest.fixture
def ui_store(tmp_path: Path) -> dict[str, str]:
    """``tmp_path/mlflow.db`` with two sweeps experiments, a deleted one and a foreign one; name -> id."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    ids = {name: client.create_experiment(name) for name in ("sweeps/tiny", "sweeps/big", "sweeps/gone", "other")}
    client.delete_experiment(ids.pop("sweeps/gone"))
    return ids


@pytest.mark.slow  # builds an MLflow store of its own (1-2.5 s): out of the fast lane
def test_study_experiments_lists_the_sweeps_experiments(ui_store: dict[str, str], tmp_path: Path) -> None:
    from sweeps.cli.ui import study_experiments

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert study_experiments(uri, "sweeps/") == [("sweeps/big", ui_store["sweeps/big"]),
                                                 ("sweeps/tiny", ui_store["sweeps/tiny"])]
    assert study_experiments(uri, "sweeps/", "tiny") == [("sweeps/tiny", ui_store["sweeps/tiny"])]
    assert study_experiments(uri, "sweeps/", "gone") == [] and study_experiments(uri, "sweeps/", "nope") == []
    assert study_experiments(f"sqlite:///{tmp_path / 'absent.db'}", "sweeps/") == []
    assert not (tmp_path / "absent.db").exists()


class _ExitedServer:
    """Stands in for the ``mlflow server`` process: it has already exited with 0."""

    pid, returncode = 999_999_999, 0

    def __init__(self, cmd: list[str], **_: object) -> None:
        self.cmd = cmd

    def poll(self) -> int:
        return 0


@pytest.mark.slow  # builds an MLflow store of its own (1-2.5 s): out of the fast lane
def test_ui_prints_the_runs_table_link_of_the_study(cli, ui_store: dict[str, str], monkeypatch,
                                                   tmp_path: Path) -> None:
    import signal
    import subprocess

    monkeypatch.setattr(subprocess, "Popen", _ExitedServer)
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # keep pytest's own handlers
    # absolute: MLflow caches its stores by URI within a process
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    r = cli("ui", "tiny", "--port", "5077")
    assert r.exit_code == 0, describe(r)
    tiny = ui_store["sweeps/tiny"]
    assert r.stdout.splitlines()[1:] == [f"  sweeps/tiny: http://127.0.0.1:5077/#/experiments/{tiny}/runs"]
    r = cli("ui", "--port", "5077", "--host", "0.0.0.0")  # every sweeps experiment; a wildcard bind: loopback
    assert r.stdout.splitlines()[1:] == [f"  {name}: http://127.0.0.1:5077/#/experiments/{ui_store[name]}/runs"
                                         for name in ("sweeps/big", "sweeps/tiny")], describe(r)
    r = cli("ui", "nope", "--port", "5077")
    assert len(r.stdout.splitlines()) == 1 and "no experiment sweeps/nope" in r.stderr, describe(r)


def test_version_is_the_installed_package_version(cli) -> None:
    r = cli("--version")
    assert r.exit_code == 0
    assert r.stdout.strip().endswith(f"version {importlib.metadata.version('nnsweeps')}")


def test_every_command_is_listed_in_the_help(cli) -> None:
    r = cli("--help")
    listed = set(re.findall(r"^  (\w+)\s", r.stdout.split("Commands:")[1], flags=re.M))
    assert listed == {"validate", "run", "prepare", "status", "best", "trials", "history", "explain", "plots", "train", "gradcheck", "ui"}


def test_run_population_flag_is_validated_before_anything_is_created(sw, cli, tmp_path: Path) -> None:
    sw.write_config(tmp_path, {"training": {"batch_order": "per_trial"}})
    r = cli("run", "cfg.yaml", "--population", "4", "-q")
    assert r.exit_code == 2, describe(r)
    assert "study.population 4 needs training.batch_order 'common'" in r.stderr, describe(r)
    r = cli("run", "cfg.yaml", "--population", "0", "-q")
    assert r.exit_code == 2 and "--population" in r.stderr, describe(r)
    assert not (tmp_path / "optuna.db").exists() and not (tmp_path / "mlflow.db").exists()


def test_every_choice_is_the_tuple_that_defines_its_values() -> None:
    """A click.Choice lists what the code accepts: the tuple the values are defined by, never a copy."""
    import click

    from nncore.activations import ACTIVATIONS
    from nncore.costs import COSTS
    from nncore.regularizers import CONVENTIONS, PENALTIES
    from sweeps import query
    from sweeps.cli import commands
    from sweeps.stores import TRIAL_ARTIFACTS

    defined_by = {("run", "artifacts"): TRIAL_ARTIFACTS,
                  ("trials", "fmt"): commands.FORMATS, ("history", "fmt"): commands.FORMATS,
                  ("history", "method"): query.METHODS, ("explain", "method"): query.METHODS,
                  ("plots", "method"): query.METHODS,
                  ("gradcheck", "cost"): COSTS, ("gradcheck", "activation"): ACTIVATIONS,
                  ("gradcheck", "penalty"): PENALTIES, ("gradcheck", "convention"): CONVENTIONS}
    choices = {(name, p.name): tuple(p.type.choices) for name, command in main.commands.items()
               for p in command.params if isinstance(p.type, click.Choice)}
    assert choices == {key: tuple(values) for key, values in defined_by.items()}
    assert query.METHODS == ("auto", *query.READERS)  # "auto" and one per backend

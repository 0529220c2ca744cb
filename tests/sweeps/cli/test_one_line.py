"""Every command ends a failure with one line and an exit code of the table in docs/cli.md ("Exit codes"), never a
traceback, and the line names the thing: the store's URL (its password shown as ``***``), the study, the field or
the option (issue #16, item 4). A reading command never creates or modifies a store, and gives up on a store that
does not answer within a bound set by its configured ``request_timeout_s``.

The matrix, command x situation (ids ``<command>-<situation>``):

* the study's storage: a SQLite file that does not exist, a file that is not a database, a SQLite database without
  Optuna's tables, PostgreSQL on a closed port; PostgreSQL with no such database / without Optuna's tables
  (``services``);
* the tracking store: the same for MLflow, an ``http`` server on a closed port; PostgreSQL without MLflow's tables
  and a hung server (a :class:`~servicekit.StallingProxy` in front of a real ``mlflow server``) (``services``);
* a study that does not exist; a malformed sweep config or ``mlflow.yml``; bad options; ``--debug``;
* ``python -m nncore`` with bad input.

Oracles: the exit codes of ``sweeps.cli.options`` (the documented table), the URL given (masked by
:func:`sweeps.redaction.redact_url`), the names of the fields and options, the bytes of every file of the working
directory and of the shared stores before and after (a refused command changes nothing), the table list of a
PostgreSQL database, ``pg_database``, and the clock (``time.monotonic``).

The fast cases run ``sweeps`` in process (click's ``CliRunner``, the ``cli`` fixture) and may start no process (a
guard fails them); the cases that need PostgreSQL or a server, or start a process, are ``slow``.
"""

from __future__ import annotations

import hashlib
import io
import multiprocessing.process
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import optuna
import pytest
from cli_cases import describe
from optuna.trial import create_trial

from sweeps.cli.options import EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_NO_COMPLETE, EXIT_UNAVAILABLE
from sweeps.redaction import redact_url

optuna.logging.set_verbosity(optuna.logging.WARNING)

#: The password of every URL that can hold one: it must never be shown.
PASSWORD = "Canary7Pw"
#: A study that exists nowhere.
NO_STUDY = "zz-no-such-study"


# -- what a failure must look like -------------------------------------------------------------------------------

def one_line(r, code: int, *names: str) -> str:
    """Assert exit ``code``, exactly one ``error: `` line on standard error naming each of ``names``, no traceback
    and no password anywhere; return the line."""
    assert r.exit_code == code, describe(r)
    assert "Traceback" not in r.stdout + r.stderr, describe(r)
    assert PASSWORD not in r.stdout + r.stderr, describe(r)
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), describe(r)
    for name in names:
        assert name in lines[0], f"{name!r} not named\n{describe(r)}"
    return lines[0]


def usage_error(r, *names: str) -> str:
    """Click's own usage error (a bad option value, a missing file argument): exit 2, its last line ``Error: ...``
    naming each of ``names``, no traceback."""
    assert r.exit_code == EXIT_BAD_INPUT, describe(r)
    assert "Traceback" not in r.stdout + r.stderr, describe(r)
    last = r.stderr.splitlines()[-1]
    assert last.startswith("Error: "), describe(r)
    for name in names:
        assert name in last, f"{name!r} not named\n{describe(r)}"
    return last


def files(*directories: Path) -> dict[str, str]:
    """Every file below the directories, by path, with the SHA-256 of its bytes."""
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for d in directories for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture(autouse=True)
def no_process(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fast case starts no process: not a subprocess (``sweeps ui``'s server), not a worker."""
    if request.node.get_closest_marker("slow") is not None:
        return

    def refuse(*args, **kwargs):
        raise AssertionError(f"a fast case started a process: {args[:2]!r}")

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", refuse)


# -- the stores the cases read, built once (and checked unchanged by every case that is given them) ---------------

@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Iterator[dict[str, object]]:
    """A RAM directory with ``optuna.db`` (study ``a``: one complete trial; study ``empty``: none) and ``mlflow.db``
    (an MLflow store without experiments): their URLs, and the directory."""
    from mlflow import MlflowClient
    from servicekit import ram_directory

    with ram_directory(tmp_path_factory.mktemp("good"), "sweeps-one-line-") as d:
        storage, tracking = f"sqlite:///{d / 'optuna.db'}", f"sqlite:///{d / 'mlflow.db'}"
        study = optuna.create_study(study_name="a", storage=storage, direction="maximize")
        study.add_trial(create_trial(value=0.5, params={"x": 0.5},
                                     distributions={"x": optuna.distributions.FloatDistribution(0, 1)}))
        optuna.create_study(study_name="empty", storage=storage)
        MlflowClient(tracking_uri=tracking).search_experiments()  # creates the store's tables
        yield {"dir": d, "storage": storage, "tracking": tracking}


@pytest.fixture
def unchanged(tmp_path: Path, good: dict[str, object]) -> Iterator[None]:
    """The working directory and the shared stores are byte for byte what they were before the case."""
    before = files(tmp_path, good["dir"])
    yield
    assert files(tmp_path, good["dir"]) == before, "a refused command created or changed a file"


# -- situations: each builds what it needs in the working directory and returns the URL --------------------------

def missing_sqlite(d: Path) -> str:
    return f"sqlite:///{d / 'missing.db'}"


def not_a_database(d: Path) -> str:
    path = d / "notes.db"
    path.write_bytes(b"these are notes, not a database\n" * 64)
    return f"sqlite:///{path}"


def foreign_sqlite(d: Path) -> str:
    """A SQLite database of another program: neither Optuna's nor MLflow's tables."""
    path = d / "other.db"
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
        con.execute("INSERT INTO notes (text) VALUES ('keep me')")
    con.close()
    return f"sqlite:///{path}"


def pg_closed_port(d: Path) -> str:
    from servicekit import free_port

    return f"postgresql+psycopg2://postgres:{PASSWORD}@127.0.0.1:{free_port()}/sweeps"


def http_closed_port(d: Path) -> str:
    from servicekit import free_port

    return f"http://sweeps:{PASSWORD}@127.0.0.1:{free_port()}"


#: What the line of each situation says besides the URL.
STORAGE_SITUATIONS: dict[str, tuple[Callable[[Path], str], str]] = {
    "sqlite-missing": (missing_sqlite, "does not exist"),
    "not-a-database": (not_a_database, "file is not a database"),
    "sqlite-without-optuna-tables": (foreign_sqlite, "not an Optuna study database"),
    "postgresql-closed-port": (pg_closed_port, "Connection refused"),
}
TRACKING_SITUATIONS: dict[str, tuple[Callable[[Path], str], str]] = {
    "sqlite-missing": (missing_sqlite, "does not exist"),
    "not-a-database": (not_a_database, "file is not a database"),
    "sqlite-not-mlflow": (foreign_sqlite, "not an MLflow tracking database"),
    "http-closed-port": (http_closed_port, "does not answer"),
    "postgresql-closed-port": (pg_closed_port, "Connection refused"),
}


# -- commands: each takes the URL of the situation, the working directory and the good stores ---------------------

Args = Callable[[str, Path, dict], list[str]]

#: Commands that only read the study's storage (and must not create or change it).
STORAGE_READERS: dict[str, Args] = {
    "status": lambda url, d, g: ["status", "--storage", url],
    "status-study": lambda url, d, g: ["status", "a", "--storage", url],
    "best": lambda url, d, g: ["best", "a", "--storage", url],
    "trials": lambda url, d, g: ["trials", "a", "--storage", url, "--tracking-uri", g["tracking"]],
}
#: Commands that create the study (a missing SQLite file or an empty database is theirs to fill).
STORAGE_WRITERS: dict[str, Args] = {
    "run": lambda url, d, g: ["run", "cfg.yaml", "-q", "--storage", url, "--tracking-uri", f"sqlite:///{d / 'm.db'}"],
    "prepare": lambda url, d, g: ["prepare", "cfg.yaml", "--storage", url, "--tracking-uri", f"sqlite:///{d / 'm.db'}"],
}
TRACKING_READERS: dict[str, Args] = {
    "trials": lambda url, d, g: ["trials", "a", "--storage", g["storage"], "--tracking-uri", url],
    "history": lambda url, d, g: ["history", "a", "--tracking-uri", url],
    "history-api": lambda url, d, g: ["history", "a", "--method", "api", "--tracking-uri", url],
    "explain": lambda url, d, g: ["explain", "a", "--tracking-uri", url],
    "explain-trial": lambda url, d, g: ["explain", "a", "--trial", "0", "--tracking-uri", url],
    "plots": lambda url, d, g: ["plots", "a", "--tracking-uri", url],
    "plots-out": lambda url, d, g: ["plots", "a", "--out", "pngs", "--tracking-uri", url],
    "ui": lambda url, d, g: ["ui", "a", "--tracking-uri", url],
}
TRACKING_WRITERS: dict[str, Args] = {
    "run": lambda url, d, g: ["run", "cfg.yaml", "-q", "--storage", f"sqlite:///{d / 'o.db'}", "--tracking-uri", url],
    "prepare": lambda url, d, g: ["prepare", "cfg.yaml", "--storage", f"sqlite:///{d / 'o.db'}", "--tracking-uri",
                                  url],
}
#: Situations a writer meets as a store to create, not as a failure.
WRITER_CREATES = {"sqlite-missing", "sqlite-without-optuna-tables", "sqlite-not-mlflow"}


def matrix(commands: dict[str, Args], situations: dict, skip: set[str] = frozenset()) -> list:
    return [pytest.param(args, *situations[s], id=f"{c}-{s}") for c, args in commands.items() for s in situations
            if s not in skip]


@pytest.mark.parametrize("args, situation, says", matrix(STORAGE_READERS, STORAGE_SITUATIONS)
                         + matrix(STORAGE_WRITERS, STORAGE_SITUATIONS, WRITER_CREATES))
def test_a_storage_that_is_missing_unreachable_or_not_a_study_database(
        cli, sw, tmp_path: Path, good, monkeypatch, args: Args, situation, says: str) -> None:
    sw.write_config(tmp_path)
    url = situation(tmp_path)
    monkeypatch.setattr("sweeps.study.storage.STORAGE_RETRIES", 1)  # a writer's ~20 s of retries (tests/sweeps/study/test_storage.py)
    before = files(tmp_path, good["dir"])
    begin = time.monotonic()
    r = cli(*args(url, tmp_path, good))
    one_line(r, EXIT_UNAVAILABLE, redact_url(url), says)
    assert time.monotonic() - begin < 10
    assert files(tmp_path, good["dir"]) == before, "the store was created or changed"


@pytest.mark.parametrize("args, situation, says", matrix(TRACKING_READERS, TRACKING_SITUATIONS)
                         + matrix(TRACKING_WRITERS, TRACKING_SITUATIONS,
                                  WRITER_CREATES | {"postgresql-closed-port"}))
def test_a_tracking_store_that_is_missing_unreachable_or_not_mlflow_s(
        cli, sw, tmp_path: Path, good, args: Args, situation, says: str) -> None:
    sw.write_config(tmp_path)
    url = situation(tmp_path)
    before = files(tmp_path, good["dir"])
    begin = time.monotonic()
    r = cli(*args(url, tmp_path, good))
    one_line(r, EXIT_UNAVAILABLE, redact_url(url), says)
    assert time.monotonic() - begin < 10
    assert files(tmp_path, good["dir"]) == before, "the store was created or changed"


# -- a study that does not exist ----------------------------------------------------------------------------------

NO_STUDY_COMMANDS: dict[str, Callable[[dict], list[str]]] = {
    "status": lambda g: ["status", NO_STUDY, "--storage", g["storage"]],
    "best": lambda g: ["best", NO_STUDY, "--storage", g["storage"]],
    "trials": lambda g: ["trials", NO_STUDY, "--storage", g["storage"], "--tracking-uri", g["tracking"]],
    "history": lambda g: ["history", NO_STUDY, "--tracking-uri", g["tracking"]],
    "explain": lambda g: ["explain", NO_STUDY, "--tracking-uri", g["tracking"]],
    "explain-trial": lambda g: ["explain", NO_STUDY, "--trial", "0", "--tracking-uri", g["tracking"]],
    "plots": lambda g: ["plots", NO_STUDY, "--tracking-uri", g["tracking"]],
    "plots-out": lambda g: ["plots", NO_STUDY, "--out", "pngs", "--tracking-uri", g["tracking"]],
}


@pytest.mark.parametrize("command", NO_STUDY_COMMANDS)
def test_a_study_that_does_not_exist_is_bad_input(cli, good, unchanged, command: str) -> None:
    one_line(cli(*NO_STUDY_COMMANDS[command](good)), EXIT_BAD_INPUT, NO_STUDY)


def test_the_best_of_a_study_without_a_complete_trial_exits_1(cli, good, unchanged) -> None:
    one_line(cli("best", "empty", "--storage", good["storage"]), EXIT_NO_COMPLETE, "'empty'", "no completed trial")


# -- a malformed sweep config, mlflow.yml --------------------------------------------------------------------------

CONFIGS = {  # id: (the file's text, or changes to the base config; what the line names)
    "yaml-syntax": ("name: x\nstudy:\n  n_trials: [1\n  foo: 2\n", "line 4, column 6"),
    "unknown-key": ({"study": {"bogus": 1}}, "study.bogus"),
    "bad-value": ({"training": {"eta": -1}}, "training.eta"),
    "bad-choice": ({"study": {"sampler": {"name": "nope"}}}, "study.sampler.name"),
    "not-a-mapping": ("- 1\n- 2\n", "the top level must be a mapping"),
}


@pytest.mark.parametrize("command", ["run", "prepare", "validate", "train"])
@pytest.mark.parametrize("config", CONFIGS)
def test_a_malformed_config_is_one_line_naming_the_field(cli, sw, tmp_path: Path, command: str, config: str) -> None:
    content, field = CONFIGS[config]
    if isinstance(content, str):
        (tmp_path / "cfg.yaml").write_text(content)
    else:
        sw.write_config(tmp_path, content)
    r = cli(command, "cfg.yaml")
    one_line(r, EXIT_BAD_INPUT, "cfg.yaml", field)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg.yaml"], "a refused config created something"


MLFLOW_YMLS = {  # id: (the file's text, what the line names)
    "yaml-syntax": ("request_timeout_s: [1\n", "line 2, column 1"),
    "unknown-key": ("tracking_url: sqlite:///x.db\n", "tracking_url"),
    "bad-value": ("request_timeout_s: 0\n", "request_timeout_s"),
    "bad-choice": ("trial_artifacts: most\n", "'most'"),
}


@pytest.mark.parametrize("command", [["run", "cfg.yaml", "-q"], ["prepare", "cfg.yaml"], ["trials", "a"],
                                     ["history", "a"], ["explain", "a"], ["plots", "a"], ["ui"]],
                         ids=lambda c: c[0])
@pytest.mark.parametrize("yml", MLFLOW_YMLS)
def test_a_malformed_mlflow_yml_is_one_line_naming_the_key(cli, sw, tmp_path: Path, good, command: list[str],
                                                            yml: str) -> None:
    sw.write_config(tmp_path)
    text, key = MLFLOW_YMLS[yml]
    (tmp_path / "m.yml").write_text(text)
    before = files(tmp_path)
    storage = ["--storage", good["storage"]] if command[0] == "trials" else []
    r = cli(*command, *storage, "--mlflow-config", "m.yml")
    one_line(r, EXIT_BAD_INPUT, "m.yml", key)
    assert files(tmp_path) == before


# -- bad options ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("command, option", [
    (["run", "cfg.yaml", "--workers", "0"], "--workers"),
    (["run", "cfg.yaml", "--population", "0"], "--population"),
    (["run", "cfg.yaml", "--artifacts", "some"], "--artifacts"),
    (["history", "a", "--method", "nope"], "--method"),
    (["trials", "a", "--format", "xml"], "--format"),
    (["explain", "a", "--trial", "-1"], "--trial"),
    (["plots", "a", "--best", "0"], "--best"),
    (["ui", "--port", "x"], "--port"),
    (["status", "--bogus"], "--bogus"),
    (["validate", "no-such.yaml"], "no-such.yaml"),
    (["run", "no-such.yaml"], "no-such.yaml"),
    (["frobnicate"], "frobnicate"),
], ids=["run-workers-0", "run-population-0", "run-artifacts-some", "history-method-nope", "trials-format-xml",
        "explain-trial-negative", "plots-best-0", "ui-port-x", "status-unknown-option", "validate-missing-file",
        "run-missing-file", "unknown-command"])
def test_a_bad_option_value_is_click_s_usage_error_naming_it(cli, sw, tmp_path: Path, command: list[str],
                                                              option: str) -> None:
    sw.write_config(tmp_path)
    usage_error(cli(*command), option)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg.yaml"]


@pytest.mark.parametrize("command, names", [
    (["explain", "a", "--trial", "1", "--run", "x"], ["--trial 1", "--run x"]),
    (["plots", "a", "--no-log"], ["--no-log", "--out"]),
    (["plots", "a", "--trial", "1", "--best", "2"], ["--trial", "--best 2"]),
    (["history", "a", "--tracking-uri", f"foo://sweeps:{PASSWORD}@host/db"], ["foo://sweeps:***@host/db", "'foo'"]),
    (["run", "cfg.yaml", "--tracking-uri", f"foo://sweeps:{PASSWORD}@host/db"], ["foo://sweeps:***@host/db"]),
    (["status", "--storage", f"foo://sweeps:{PASSWORD}@host/db"], ["foo://sweeps:***@host/db"]),
    (["status", "--storage", "optuna.db"], ["'optuna.db'"]),
    (["gradcheck", "--sizes", "8,x,4"], ["--sizes", "'8,x,4'"]),
    (["train", "cfg.yaml", "--eta", "-1", "--no-tracking"], ["training.eta", "-1"]),
], ids=["explain-trial-and-run", "plots-no-log-without-out", "plots-trial-and-best", "history-unknown-scheme",
        "run-unknown-scheme", "status-unknown-storage-scheme", "status-storage-not-a-url", "gradcheck-sizes",
        "train-eta"])
def test_a_bad_combination_or_value_is_one_line_naming_the_options(cli, sw, tmp_path: Path, command: list[str],
                                                                   names: list[str]) -> None:
    sw.write_config(tmp_path)
    one_line(cli(*command), EXIT_BAD_INPUT, *names)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg.yaml"]


# -- --debug, a bug, an interrupt ----------------------------------------------------------------------------------

DEBUGGED = {  # id: command (URL of the situation, directory, good stores) -> args, situation
    "status-not-a-database": (STORAGE_READERS["status"], not_a_database),
    "trials-sqlite-not-mlflow": (TRACKING_READERS["trials"], foreign_sqlite),
    "history-http-closed-port": (TRACKING_READERS["history"], http_closed_port),
    "ui-http-closed-port": (TRACKING_READERS["ui"], http_closed_port),
    "prepare-not-a-database": (TRACKING_WRITERS["prepare"], not_a_database),
}


@pytest.mark.parametrize("how", ["--debug", "SWEEPS_DEBUG=1"])
@pytest.mark.parametrize("case", DEBUGGED)
def test_debug_prints_the_traceback_then_the_same_line_and_exit_code(cli, sw, tmp_path: Path, good, monkeypatch,
                                                                      case: str, how: str) -> None:
    sw.write_config(tmp_path)
    args, situation = DEBUGGED[case]
    command = args(situation(tmp_path), tmp_path, good)
    plain = cli(*command)
    line = one_line(plain, EXIT_UNAVAILABLE)
    if how == "--debug":
        debugged = cli("--debug", *command)
    else:
        monkeypatch.setenv("SWEEPS_DEBUG", "1")
        debugged = cli(*command)
    assert debugged.exit_code == plain.exit_code, describe(debugged)
    assert "Traceback (most recent call last):" in debugged.stderr, describe(debugged)
    assert debugged.stderr.splitlines()[-1] == line, describe(debugged)
    assert PASSWORD not in debugged.stdout + debugged.stderr  # the traceback is masked too


@pytest.mark.parametrize("raised, code, says", [
    (RuntimeError("boom"), EXIT_INTERNAL, "unexpected RuntimeError: boom (a bug of sweeps: rerun with 'sweeps --debug"),
    (KeyboardInterrupt(), EXIT_INTERRUPTED, "interrupted"),
], ids=["a-bug-exits-70", "an-interrupt-exits-130"])
def test_a_bug_and_an_interrupt_are_one_line_too(cli, good, unchanged, monkeypatch, raised, code: int,
                                                 says: str) -> None:
    def counts_of(study):
        raise raised

    monkeypatch.setattr("sweeps.study.budget.counts_of", counts_of)
    one_line(cli("status", "--storage", good["storage"]), code, says)


# -- python -m nncore ------------------------------------------------------------------------------------------------

NNCORE_BAD = {  # id: (arguments, what the line names)
    "sizes-not-integers": (["--sizes", "64,x,10"], "--sizes"),
    "sizes-not-the-data-s": (["--sizes", "10,5,3"], "--sizes 10,5,3"),
    "sizes-and-hidden": (["--hidden", "10", "--sizes", "64,10,10"], "--sizes"),
    "hidden-negative": (["--hidden", "-3"], "--hidden"),
    "mnist-missing-dir": (["--mnist", "/nonexistent/mnist"], "--mnist /nonexistent/mnist"),
    "mnist-dir-without-files": (["--mnist", "."], "--mnist ."),
    "eta-negative": (["--eta", "-1"], "'eta'"),
    "eta-not-a-number": (["--eta", "abc"], "--eta"),
    "lmbda-infinite": (["--lmbda", "inf"], "'lmbda'"),
    "epochs-zero": (["--epochs", "0"], "'epochs'"),
    "batch-size-too-large": (["--batch-size", "100000"], "'batch_size'"),
    "momentum-one": (["--momentum", "1"], "'momentum'"),
    "seed-negative": (["--seed", "-1"], "--seed"),
    "dtype-unknown": (["--dtype", "int8"], "--dtype"),
    "unknown-option": (["--bogus"], "--bogus"),
    "save-unwritable": (["--save", "/proc/no/such/net.npz"], "--save /proc/no/such/net.npz"),
}


@pytest.mark.parametrize("case", NNCORE_BAD)
def test_python_m_nncore_bad_input_is_one_line_and_exit_2(tmp_path: Path, monkeypatch, case: str) -> None:
    from nncore.cli import EXIT_BAD_INPUT as NNCORE_BAD_INPUT
    from nncore.cli import main

    args, name = NNCORE_BAD[case]
    monkeypatch.chdir(tmp_path)
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err), pytest.raises(SystemExit) as exited:
        main([*args, "--epochs", "1"] if "--epochs" not in args else args)
    lines = err.getvalue().splitlines()
    assert exited.value.code == NNCORE_BAD_INPUT == 2, err.getvalue()
    assert len(lines) == 1 and lines[0].startswith("python -m nncore: error: "), err.getvalue()
    assert name in lines[0] and "Traceback" not in err.getvalue()


def test_python_m_nncore_divergence_is_one_line_and_exit_1(capsys) -> None:
    from nncore.cli import main

    assert main(["--eta", "1e6", "--epochs", "2", "--json"]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("python -m nncore: error: training diverged at epoch")


def test_python_m_nncore_help_lists_its_exit_codes(capsys) -> None:
    from nncore.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "exit codes: 0 trained; 1 training diverged; 2 bad input" in text and "130 interrupted" in text


@pytest.mark.slow  # a subprocess: the real entry point
def test_python_m_nncore_in_a_subprocess_is_one_line(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "nncore", "--mnist", str(tmp_path / "none"), "--epochs", "1"],
                          check=False, capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[3])
    assert proc.returncode == 2 and proc.stdout == "" and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"python -m nncore: error: --mnist {tmp_path / 'none'}: "), lines


# -- slow: a writer's whole retry budget; PostgreSQL; a hung tracking server ---------------------------------------

def _pg_tables(url: str) -> list[str]:
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        return sorted(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def empty_pg() -> Iterator[str]:
    """An empty PostgreSQL database (no Optuna's, no MLflow's tables): the URL, with a password (trust auth
    ignores it) that must be masked."""
    from servicekit import pg_database

    with pg_database("sweeps_one_line") as url:
        yield url.replace("postgres@", f"postgres:{PASSWORD}@", 1)


@pytest.fixture
def absent_pg() -> str:
    """The URL of a PostgreSQL database that does not exist (the server does)."""
    from servicekit import pg_admin_query

    pg_admin_query("SELECT 1")  # skips (fails with SWEEPS_REQUIRE_SERVICES=1) without PostgreSQL
    return f"postgresql+psycopg2://postgres:{PASSWORD}@127.0.0.1:5432/sweeps_absent_{uuid.uuid4().hex[:8]}"


def _pg_exists(url: str) -> bool:
    from servicekit import database_name, pg_admin_query

    return bool(pg_admin_query("SELECT 1 FROM pg_database WHERE datname = %s", (database_name(url),)))


@pytest.mark.services
@pytest.mark.parametrize("args", [pytest.param(a, id=c) for c, a in {**STORAGE_READERS, **STORAGE_WRITERS}.items()])
def test_a_postgresql_study_database_that_does_not_exist(cli, sw, tmp_path: Path, good, absent_pg: str,
                                                          args: Args) -> None:
    sw.write_config(tmp_path)
    before = files(tmp_path, good["dir"])
    one_line(cli(*args(absent_pg, tmp_path, good)), EXIT_UNAVAILABLE, redact_url(absent_pg), "does not exist")
    assert not _pg_exists(absent_pg) and files(tmp_path, good["dir"]) == before


@pytest.mark.services
@pytest.mark.parametrize("args", [pytest.param(a, id=c) for c, a in STORAGE_READERS.items()])
def test_a_postgresql_database_without_optuna_s_tables_is_not_changed_by_a_reader(
        cli, tmp_path: Path, good, unchanged, empty_pg: str, args: Args) -> None:
    one_line(cli(*args(empty_pg, tmp_path, good)), EXIT_UNAVAILABLE, redact_url(empty_pg),
             "not an Optuna study database")
    assert _pg_tables(empty_pg) == []


@pytest.mark.services
@pytest.mark.parametrize("args", [pytest.param(a, id=c) for c, a in TRACKING_READERS.items()])
def test_a_postgresql_database_without_mlflow_s_tables_is_not_changed_by_a_reader(
        cli, tmp_path: Path, good, unchanged, empty_pg: str, args: Args) -> None:
    one_line(cli(*args(empty_pg, tmp_path, good)), EXIT_UNAVAILABLE, redact_url(empty_pg),
             "not an MLflow tracking database")
    assert _pg_tables(empty_pg) == []


@pytest.mark.services
@pytest.mark.parametrize("args", [pytest.param(a, id=c) for c, a in TRACKING_READERS.items()])
def test_a_postgresql_tracking_database_that_does_not_exist(cli, tmp_path: Path, good, unchanged, absent_pg: str,
                                                            args: Args) -> None:
    one_line(cli(*args(absent_pg, tmp_path, good)), EXIT_UNAVAILABLE, redact_url(absent_pg), "does not exist")
    assert not _pg_exists(absent_pg)


#: ``request_timeout_s`` of the hung-server cases, and the bound a reading command must give up within: MLflow's
#: client makes 1 + 2 tries (``sweeps.stores.MLFLOW_HTTP_DEFAULTS``) of at most the timeout each, with back-off
#: sleeps of 0 and 2 s plus up to 1 s of jitter each; the rest is slack for a loaded machine. Not a benchmark: a
#: bound that MLflow's defaults (120 s per try, 7 retries: minutes) would break.
HUNG_TIMEOUT_S = 1
HUNG_BOUND_S = 3 * HUNG_TIMEOUT_S + 4 + 8


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[object]:
    """A real ``mlflow server`` for the module (the hung cases put a stalling proxy in front of it)."""
    from servicekit import MlflowServer

    tmp = tmp_path_factory.mktemp("hung")
    with MlflowServer(f"sqlite:///{tmp / 'mlflow.db'}", tmp / "artifacts", tmp / "server.log") as srv:
        yield srv


@pytest.mark.services
@pytest.mark.parametrize("when", ["before-health-check", "after-health-check"])
@pytest.mark.parametrize("args", [pytest.param(a, id=c) for c, a in TRACKING_READERS.items()
                                  if c in ("history", "ui")])  # the reading route and the links; CI time
def test_a_hung_tracking_server_is_given_up_within_the_configured_timeout(
        cli, tmp_path: Path, good, unchanged, monkeypatch, server, args: Args, when: str) -> None:
    """The server stops answering (a proxy that forwards no byte) before the health check, or right after it: the
    reading command gives up within :data:`HUNG_BOUND_S` with one line naming the server."""
    from servicekit import StallingProxy

    import sweeps.stores

    (tmp_path / "m.yml").write_text(f"request_timeout_s: {HUNG_TIMEOUT_S}\n")
    with StallingProxy("127.0.0.1", server.port) as proxy:
        url = proxy.url.replace("http://", f"http://sweeps:{PASSWORD}@")
        if when == "before-health-check":
            proxy.stall()
        else:
            check = sweeps.stores.check_tracking_server

            def check_then_hang(*a, **kw):
                check(*a, **kw)
                proxy.stall()

            monkeypatch.setattr(sweeps.stores, "check_tracking_server", check_then_hang)
        begin = time.monotonic()
        r = cli(*args(url, tmp_path, good), "--mlflow-config", "m.yml")
        elapsed = time.monotonic() - begin
        proxy.resume()
    (tmp_path / "m.yml").unlink()  # the unchanged fixture compares the directory
    says = "does not answer" if when == "before-health-check" else "stopped answering"
    one_line(r, EXIT_UNAVAILABLE, redact_url(url), says, "timed out")
    assert elapsed < HUNG_BOUND_S, f"gave up after {elapsed:.1f} s, not within {HUNG_BOUND_S} s"

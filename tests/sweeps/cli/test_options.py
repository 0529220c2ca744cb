"""What every ``sweeps`` command shares (``sweeps.cli.options``): one ``error:`` line and its exit code, never a
traceback, for a bad config or a bad ``mlflow.yml``."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sweeps.cli.options import EXIT_BAD_INPUT, EXIT_UNAVAILABLE, _config, _fail, _locations


def test_a_failure_is_one_error_line_on_stderr_and_the_exit_code(capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        _fail("the tracking store is down", EXIT_UNAVAILABLE)
    assert exited.value.code == EXIT_UNAVAILABLE == 3
    out, err = capsys.readouterr()
    assert out == "" and err == "error: the tracking store is down\n"


def test_a_bad_config_exits_2_naming_the_field(tmp_path: Path, capsys) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "training": {"eta": -1}}))
    with pytest.raises(SystemExit) as exited:
        _config(str(path))
    assert exited.value.code == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "training.eta" in err and len(err.strip().splitlines()) >= 1


def test_a_bad_mlflow_yml_exits_2_naming_the_key(tmp_path: Path, capsys) -> None:
    yml = tmp_path / "mlflow.yml"
    yml.write_text("flush_interval_s: -1\n")
    with pytest.raises(SystemExit) as exited:
        _locations(None, None, str(yml))
    assert exited.value.code == EXIT_BAD_INPUT and "flush_interval_s" in capsys.readouterr().err


def test_every_failure_is_one_line_even_a_config_with_several_bad_fields(tmp_path: Path, capsys) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text("name: x\nstudy: {n_trials: -1, workers: 0}\n")
    with pytest.raises(SystemExit):
        _config(str(path))
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert "study.n_trials" in err and "; study.workers" in err  # every field still named


def test_a_yaml_syntax_error_is_one_line_with_its_place(tmp_path: Path, capsys) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text("name: x\nstudy:\n  n_trials: [1\n  foo: 2\n")
    with pytest.raises(SystemExit):
        _config(str(path))
    err = capsys.readouterr().err
    assert err == f"error: invalid YAML in {path}: expected ',' or ']', but got ':' at line 4, column 6 " \
                  f"(while parsing a flow sequence)\n"


@pytest.mark.parametrize("err, code, says", [
    (ValueError("bad value"), 2, "bad value"),
    (KeyError("study 'x' not found"), 2, "study 'x' not found"),
    (ConnectionRefusedError(111, "Connection refused"), 3, "Connection refused"),
    (RuntimeError("boom"), 70, "unexpected RuntimeError: boom (a bug of sweeps"),
])
def test_failure_of_classifies_what_a_command_raised(err, code, says) -> None:
    from sweeps.cli.options import failure_of

    got_code, line = failure_of(err)
    assert got_code == code and says in line and "\n" not in line


def test_a_library_error_of_a_store_is_unavailable_and_a_refusal_names_the_variable(monkeypatch) -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import UNAUTHENTICATED

    from sweeps.cli.options import EXIT_REFUSED, failure_of

    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
    assert failure_of(MlflowException("API request failed: 503"))[0] == EXIT_UNAVAILABLE
    refused = MlflowException("API request failed with error code 401", error_code=UNAUTHENTICATED)
    code, line = failure_of(refused, "http://127.0.0.1:5000")
    assert code == EXIT_REFUSED == 5 and "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" in line


def test_a_warning_is_one_line_on_stderr_without_pythons_source_line(cli) -> None:
    """Inside a command, a library's warning is ``warning: <message>``: no file name, no line of source."""
    import warnings

    import click

    from sweeps.cli.commands import main

    @main.command("warns-once")
    def warns_once() -> None:
        warnings.warn("method 'sql' cannot read postgresql://u:WarnCanary1@h/db: falling back", RuntimeWarning,
                      stacklevel=1)
        click.echo("done")

    try:
        r = cli("warns-once")
    finally:
        main.commands.pop("warns-once")
    assert r.exit_code == 0 and r.stdout == "done\n"
    assert r.stderr == "warning: method 'sql' cannot read postgresql://u:***@h/db: falling back\n"

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

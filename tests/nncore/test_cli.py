"""``python -m nncore`` in a subprocess, and nncore.cli in process."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from nncore import metric_names
from nncore.cli import build_parser, main, run
from nncore.records import EPOCH_CHANGE_FIELDS

REPO_ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nncore", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow  # a subprocess
def test_json_lines():
    proc = _cli("--epochs", "3", "--json")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 4  # epoch 0 (the initial network), then 1, 2, 3
    for epoch, line in enumerate(lines):
        rec = json.loads(line)
        assert rec["epoch"] == epoch
        # epoch 0 has no epoch-change values (train/decay_factor, layerN/update_ratio, ...): absent, not NaN
        absent = {"train/decay_factor", *(f"layer{i}/{k}" for i in (1, 2) for k in EPOCH_CHANGE_FIELDS)}
        assert set(rec) == {"epoch", *metric_names(2)} - (absent if epoch == 0 else set())
        for p in ("train", "eval"):
            assert rec[f"{p}/total_loss"] == rec[f"{p}/data_loss"] + rec[f"{p}/penalty"]
            assert rec[f"{p}/penalty"] > 0  # the default lmbda is not 0
        assert rec["train/eta"] == 0.5  # the step size in effect that epoch (no bare "eta" metric)
        assert 0.0 <= rec["eval/accuracy"] <= 1.0


@pytest.mark.slow  # a subprocess
def test_bad_eta_exits_nonzero_naming_eta():
    proc = _cli("--eta", "-1", "--epochs", "1")
    assert proc.returncode != 0
    assert "eta" in proc.stderr
    assert proc.stdout == ""


@pytest.mark.parametrize("args,name", [(["--batch-size", "0"], "batch_size"), (["--lmbda", "-2"], "lmbda"),
                                        (["--momentum", "1.0"], "momentum"), (["--epochs", "0"], "epochs"),
                                        (["--activation", "softsign"], "--activation"),
                                        (["--hidden", "0"], "hidden"), (["--batch-size", "100000"], "batch_size")])
def test_bad_arguments_name_the_argument(args, name, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*args, "--epochs", "1"] if "--epochs" not in args else args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert name in err


def test_table_output_in_process():
    out = io.StringIO()
    args = build_parser().parse_args(["--epochs", "2", "--hidden", "12", "8", "--lmbda", "0.5"])
    result = run(args, out=out)
    lines = out.getvalue().splitlines()
    rows = [line for line in lines if not line.startswith("#")]
    header, body = rows[0].split(), [r.split() for r in rows[1:]]
    assert header[:3] == ["epoch", "eta", "train_total"]
    assert header[-6:] == ["L1_fro", "L1_rms", "L2_fro", "L2_rms", "L3_fro", "L3_rms"]
    assert len(body) == 3 and all(len(r) == len(header) for r in body)
    assert [int(r[0]) for r in body] == [0, 1, 2]  # epoch 0: the initial network
    # aligned: every row has the width of the header
    assert len({len(r) for r in rows}) == 1
    final = result.final
    row = dict(zip(header, body[-1]))
    assert float(row["eval_acc"]) == pytest.approx(final.eval.accuracy, abs=1e-4)
    assert float(row["L3_fro"]) == pytest.approx(final.layers[2].weight_fro, abs=1e-4)
    assert float(row["train_total"]) == pytest.approx(float(row["train_data"]) + float(row["train_pen"]), abs=2e-5)
    first = dict(zip(header, body[0]))
    assert float(first["L1_fro"]) == pytest.approx(result.records[0].layers[0].weight_fro, abs=1e-4)
    assert float(first["eta"]) == 0.5
    assert result.network.sizes == [64, 12, 8, 10]


@pytest.mark.slow  # a subprocess
def test_save(tmp_path):
    nnio = pytest.importorskip("nncore.io")
    path = tmp_path / "net.npz"
    proc = _cli("--epochs", "1", "--json", "--save", str(path), "--hidden", "7")
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 2  # epochs 0 and 1: the JSON stream stays clean
    net = nnio.load(path)
    assert net.sizes == [64, 7, 10]


# -- --sizes means ALL layer sizes in both command lines (docs/vocabulary.md) -------------------


def test_sizes_are_all_layers_and_equal_hidden():
    out_a, out_b = io.StringIO(), io.StringIO()
    a = run(build_parser().parse_args(["--epochs", "1", "--sizes", "64,12,8,10", "--json"]), out=out_a)
    b = run(build_parser().parse_args(["--epochs", "1", "--hidden", "12", "8", "--json"]), out=out_b)
    assert a.network.sizes == b.network.sizes == [64, 12, 8, 10]
    lines_a, lines_b = out_a.getvalue().splitlines(), out_b.getvalue().splitlines()
    assert len(lines_a) == len(lines_b) == 2  # epochs 0 and 1
    for line_a, line_b in zip(lines_a, lines_b):  # same net, same seed
        rec_a = json.loads(line_a)
        assert rec_a == json.loads(line_b) | {"train/epoch_time": rec_a["train/epoch_time"]}
    spaced = run(build_parser().parse_args(["--epochs", "1", "--sizes", "64", "12", "10", "--json"]),
                 out=io.StringIO())
    assert spaced.network.sizes == [64, 12, 10]


@pytest.mark.parametrize("args", [["--sizes", "12,10"], ["--sizes", "64,12"], ["--sizes", "64"],
                                  ["--sizes", "64,x,10"], ["--sizes", "64,0,10"],
                                  ["--sizes", "64,12,10", "--hidden", "12"]])
def test_bad_sizes_exit_2_naming_sizes(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*args, "--epochs", "1"])
    assert exc.value.code == 2
    assert "--sizes" in capsys.readouterr().err


def test_sweeps_gradcheck_sizes_mean_the_same():
    """``sweeps gradcheck --sizes`` takes the same ALL-layers list (commas or spaces) and rejects what
    ``python -m nncore --sizes`` rejects."""
    click_testing = pytest.importorskip("click.testing")
    from nncore.cli import parse_sizes
    from sweeps.cli.commands import main as sweeps_main

    assert parse_sizes("8,6,4") == parse_sizes("8 6 4") == parse_sizes(["8", "6,4"]) == [8, 6, 4]
    runner = click_testing.CliRunner()
    ok = runner.invoke(sweeps_main, ["gradcheck", "--sizes", "5,4,3"])
    assert ok.exit_code == 0, ok.output
    assert ok.output.startswith("ok:")
    bad = runner.invoke(sweeps_main, ["gradcheck", "--sizes", "5"])
    assert bad.exit_code == 2 and "--sizes" in bad.output

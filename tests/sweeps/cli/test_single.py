"""``sweeps train`` (one training outside a study) and ``sweeps gradcheck`` (``sweeps.cli.single``), in process.

Oracles: the layer-size arithmetic of the gradient check, the per-epoch values the command prints, and the
directory listing (no store is created without tracking).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from cli_cases import describe

# -- gradcheck ---------------------------------------------------------------------------------

GRADCHECK_LINE = re.compile(r"(ok|FAIL): max relative error (\S+) over (\d+) parameters "
                            r"\(worst layer(\d+)/(weights|biases)\[(\d+)\]\)")


@pytest.mark.parametrize("sizes, n_params", [("8,6,4", 8 * 6 + 6 + 6 * 4 + 4), ("4,3,2", 4 * 3 + 3 + 3 * 2 + 2),
                                             ("5,2", 5 * 2 + 2)])
@pytest.mark.parametrize("cost", ["quadratic", "cross_entropy", "log_likelihood"])
def test_gradcheck_passes_and_checks_every_parameter(cli, sizes: str, n_params: int, cost: str) -> None:
    r = cli("gradcheck", "--sizes", sizes, "--cost", cost)
    assert r.exit_code == 0, describe(r)
    m = GRADCHECK_LINE.fullmatch(r.stdout.strip())
    assert m, r.stdout
    assert m.group(1) == "ok" and float(m.group(2)) <= 1e-6 and int(m.group(3)) == n_params
    assert 1 <= int(m.group(4)) <= len(sizes.split(",")) - 1


def test_gradcheck_above_the_tolerance_exits_1(cli) -> None:
    r = cli("gradcheck", "--tolerance", "0")
    assert r.exit_code == 1, describe(r)
    m = GRADCHECK_LINE.fullmatch(r.stdout.strip())
    assert m and m.group(1) == "FAIL" and float(m.group(2)) > 0


@pytest.mark.parametrize("sizes", ["8", "8,x,4", "8,0,4"])
def test_gradcheck_bad_sizes_exit_2_naming_the_option(cli, sizes: str) -> None:
    r = cli("gradcheck", "--sizes", sizes)
    assert r.exit_code == 2, describe(r)
    assert r.stderr.startswith("error: ") and "--sizes" in r.stderr


# -- train (one in-memory trial) ----------------------------------------------------------------

def test_train_without_tracking_prints_each_epoch_and_creates_no_store(sw, cli, tmp_path: Path) -> None:
    sw.write_config(tmp_path)
    r = cli("train", "cfg.yaml", "--epochs", "2", "--no-tracking")
    assert r.exit_code == 0, describe(r)
    first, last = r.stdout.splitlines()
    head, values = first.split(": ", 1)
    assert head == "state COMPLETE; eval/accuracy per epoch"
    per_epoch = [float(v) for v in values.split(", ")]
    assert len(per_epoch) == 2 and all(0 <= v <= 1 for v in per_epoch)
    final = float(re.fullmatch(r"COMPLETE: eval/accuracy=(\S+)", last).group(1))
    assert f"{final:.4g}" == f"{per_epoch[-1]:.4g}"  # the trial's value is its last epoch's
    assert sorted(os.listdir(tmp_path)) == ["cfg.yaml"]


def test_train_with_a_bad_override_exits_2_naming_the_field(sw, cli, tmp_path: Path) -> None:
    sw.write_config(tmp_path)
    r = cli("train", "cfg.yaml", "--eta", "-1", "--no-tracking")
    assert r.exit_code == 2 and "training.eta" in r.stderr, describe(r)

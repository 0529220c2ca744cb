"""32 workers on one PostgreSQL and one tracking server, as 4 machines of 8 would run them (the load benchmark's
fleet runner, ``benchmarks/bench_scale.py``, at a test's size).

Needs PostgreSQL on 127.0.0.1:5432 (``max_connections`` 100, PostgreSQL's default); about 8 GB of memory
for 36 processes. Timings are the benchmark's business: this test asserts only what must hold.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _bench_scale():
    spec = importlib.util.spec_from_file_location("bench_scale", REPO / "benchmarks" / "bench_scale.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.services
@pytest.mark.slow
def test_32_workers_share_one_study_within_the_connection_budget(tmp_path):
    """4 launchers x 8 workers, 96 short trials: every launcher exits 0, no connection error in any log, the
    sweep-end invariant holds, and PostgreSQL never sees more connections to the study database than the
    documented budget (docs/deployment.md, "Connection budget"): one per worker, one per launcher (two for a
    moment while it opens the storage)."""
    bench = _bench_scale()
    launchers, workers = 4, 8
    result = bench.run_fleet(launchers, workers, n_trials=96, epochs=3, sample_s=0.25, workdir=tmp_path)
    assert result.exit_codes == [0] * launchers, result.exit_codes
    assert result.errors == [], result.errors[:10]
    assert result.invariant == [], result.invariant
    assert result.logged_epochs == 96 * 4  # epochs 0..3 of every trial: each completed trial counted once
    assert result.peaks["study:worker"] <= launchers * workers, result.peaks  # a = 1: never two
    # b = 1, and a second one for a moment while a launcher opens the storage (Optuna's table check nests one),
    # before its workers start
    assert result.peaks["study:launcher"] <= 2 * launchers, result.peaks
    assert result.peaks["study"] <= launchers * workers + 2 * launchers, result.peaks
    assert result.peaks["study:worker"] >= workers  # the sampler saw the fleet at work (the test measures)

"""nncore.population_records: a stack's end-of-epoch measurement equals train()'s record of each member (every
field but the wall-clock time), bit for bit, whatever the measurement's blocking."""

from __future__ import annotations

import numpy as np
import pytest

from nncore import Network, TrainConfig, train
from nncore import population_records as records
from nncore.population_records import _Recorder
from nncore.population_step import _Stack
from nncore.train import check_data

SIZES = [6, 7, 4]
CONFIGS = [TrainConfig(eta=0.3, batch_size=5, epochs=1, lmbda=lm, penalty=pen, record_initial=True,
                       track_gradients=track)
           for pen, lm, track in (("l2", 2.0, True), ("l1", 0.5, True), ("none", 0.0, False), ("l2", 5.0, True))]


def _metrics(record):
    return {k: "nan" if v != v else v for k, v in record.to_metrics().items() if k != "train/epoch_time"}


@pytest.mark.parametrize("patch", [{}, {"MEASURE_CACHE_BYTES": 1, "MEASURE_FUSED_MEMBERS": 3},
                                   {"MEASURE_CACHE_BYTES": 1 << 30}])
def test_the_initial_records_of_a_stack_equal_trains_for_every_member(monkeypatch, patch):
    for name, value in patch.items():
        monkeypatch.setattr(records, name, value)
    rng = np.random.default_rng(5)
    nets = [Network(SIZES, rng=np.random.default_rng(100 + i)) for i in range(len(CONFIGS))]
    X, Y = check_data(nets[0], rng.random((53, SIZES[0])), rng.integers(0, SIZES[-1], 53), "training")
    Xe, Ye = check_data(nets[0], rng.random((11, SIZES[0])), rng.integers(0, SIZES[-1], 11), "evaluation")
    want = [train(net.copy(), X, Y, cfg, eval_data=(Xe, Ye), rng=0).records[0] for net, cfg in zip(nets, CONFIGS)]
    stack = _Stack(list(range(len(nets))), nets, CONFIGS, len(X), 5)
    got = _Recorder(X, Y, Xe, Ye, len(X), 5, nets[0].dtype)(
        stack, 0, [c.eta for c in CONFIGS], None, None, None, 0, [c.track_gradients for c in CONFIGS])
    assert len(got) == len(CONFIGS)
    for i, ((record, bad_layer), ref) in enumerate(zip(got, want)):
        assert bad_layer is None
        assert record.epoch == 0 and record.n_steps == ref.n_steps
        assert _metrics(record) == _metrics(ref), i

"""nncore.diagnostics: each finding against constructed histories (fires, and a near miss just on the
safe side of its threshold does not), its numbers against hand computations, and one real run."""

from __future__ import annotations

import numpy as np
import pytest
from diagnostics_cases import SIZES, by_code, facts, hist, one, run, tiny_run

from nncore import Network, TrainConfig, train
from nncore import diagnostics as dg
from nncore.diagnostics import RunFacts, diagnose, history_table


def test_diagnose_rejects_bad_input():
    with pytest.raises(ValueError, match="'facts' parameter of diagnose"):
        diagnose({"epoch": [0]}, {"n_train": 10})
    with pytest.raises(ValueError, match="'history' parameter of diagnose"):
        diagnose({"train/data_loss": [1.0]}, facts())
    with pytest.raises(ValueError, match="each epoch once"):
        diagnose({"epoch": [1, 1]}, facts())
    with pytest.raises(ValueError, match="2 values under 'train/data_loss'"):
        diagnose({"epoch": [1, 2], "train/data_loss": [1.0]}, facts())
    with pytest.raises(ValueError, match="'history' parameter of diagnose"):
        diagnose([1.0, 2.0], facts())


def test_unsorted_epochs_and_none_values_are_handled():
    h = hist([0.59, 0.7, 0.8, 1.0, 0.65, 0.6, 0.62], [0.58, 0.22, 0.2, 0.2, 0.28, 0.46, 0.36])
    h["epoch"] = [6, 2, 1, 0, 3, 5, 4]
    h["train/accuracy"] = [None] * 7
    ev = one(run(h), dg.PENALTY_DRIVEN_GROWTH).evidence["sets"]["train"]
    assert (ev["start_epoch"], ev["end_epoch"]) == (2, 6)


def test_records_mapping_and_frame_give_the_same_findings():
    records = tiny_run()
    f = RunFacts(n_train=40, batch_size=8, eta=0.5, lmbda=0.5, n_eval=15, sizes=SIZES)
    want = [x.to_dict() for x in diagnose(records, f)]
    assert [x.to_dict() for x in diagnose(history_table(records), f)] == want
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({k: list(v) for k, v in history_table(records).items()})
    assert [x.to_dict() for x in diagnose(frame, f)] == want


# -- a real run ---------------------------------------------------------------------------------------

DERIVED = ("penalty_share", "decay_pull", "grad_push", "decay_to_grad", "rms_vs_fan_in", "rms_vs_n_weights")


def test_real_run_eval_total_grows_from_the_penalty():
    """Digits, 30 training rows, quadratic cost, L2: the weights keep growing after epoch ~40, the eval
    data loss falls slowly and the penalty (same n_train for both sets) rises faster, so the eval total
    climbs ~10 % (2.5-10 % over seeds 0-2). Works whether or not train() records epoch 0."""
    from nncore.datasets import load_digits

    ds = load_digits(n_train=30, n_eval=200, seed=0)
    net = Network([64, 30, 10], cost="quadratic", rng=np.random.default_rng(0))
    cfg = TrainConfig(eta=3.0, epochs=100, batch_size=10, lmbda=0.15)
    records = train(net, ds.train.X, ds.train.Y, cfg, eval_data=(ds.eval.X, ds.eval.Y), rng=0).records
    f = RunFacts(n_train=30, batch_size=10, eta=3.0, lmbda=0.15, n_eval=200, sizes=[64, 30, 10], cost="quadratic")
    for history in (records, [r for r in records if r.epoch >= 1]):
        found = diagnose(history, f)
        growth = one(found, dg.PENALTY_DRIVEN_GROWTH)
        ev = growth.evidence["sets"]["eval"]
        assert ev["total_rise_fraction"] >= dg.GROWTH_MIN_RISE and ev["data_change"] < 0
        assert ev["penalty_change"] > ev["total_rise"] > 0 and ev["sq_norm_sum_ratio"] > 1
        # the penalty is (d/2) * sum ||W||^2 exactly
        assert ev["penalty_change"] == pytest.approx(ev["expected_penalty_change"], rel=1e-9)
        by_layer = by_code(found, dg.NORM_EQUILIBRIUM)
        assert [x.layer for x in by_layer] == [1, 2]
    # the derived keys, when recorded, agree with what diagnose() recomputes from the basic ones
    table = history_table(records)
    stripped = {k: v for k, v in table.items() if not k.endswith(DERIVED)}
    full = [x.to_dict() for x in diagnose(table, f)]
    bare = [x.to_dict() for x in diagnose(stripped, f)]
    assert [(x["code"], x["layer"]) for x in bare] == [(x["code"], x["layer"]) for x in full]
    for a, b in zip(full, bare):
        assert_close(b["evidence"], a["evidence"], a["code"])


def assert_close(got, want, where):
    """Recursive comparison: floats to rel 1e-6, everything else exactly."""
    if isinstance(want, dict):
        assert set(got) == set(want), where
        for key in want:
            assert_close(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want)):
            assert_close(g, w, f"{where}[{i}]")
    elif isinstance(want, float):
        assert got == pytest.approx(want, rel=1e-6, abs=1e-12), where
    else:
        assert got == want, where

"""nncore.run_history: RunFacts and Finding validation (each bad field named), and history_table's columns."""

from __future__ import annotations

import math

import numpy as np
import pytest
from diagnostics_cases import facts, tiny_run

from nncore import diagnostics as dg
from nncore.diagnostics import Finding, RunFacts, history_table

# -- RunFacts and input validation ------------------------------------------------------------------

@pytest.mark.parametrize("field,value", [
    ("n_train", 0), ("n_train", True), ("batch_size", 0), ("batch_size", 101), ("eta", 0.0), ("eta", math.nan),
    ("lmbda", -1.0), ("convention", "per_sample"), ("penalty", "l3"), ("momentum", 1.0), ("n_eval", 0),
    ("sizes", [5]), ("sizes", "4,3"), ("cost", "mse"),
])
def test_runfacts_rejects_bad_fields_naming_them(field, value):
    with pytest.raises(ValueError, match=f"'{field}' parameter of RunFacts"):
        facts(**{field: value})


def test_runfacts_canonical_types_and_decay_rate():
    f = RunFacts(n_train=np.int64(1500), batch_size=10, eta=np.float32(0.5), lmbda=5, sizes=[64, 30, 10],
                 convention="per_batch")
    assert type(f.n_train) is int and type(f.eta) is float and f.sizes == (64, 30, 10)
    assert f.decay_rate == pytest.approx(0.5)  # alpha / m
    assert RunFacts(n_train=10, batch_size=1, eta=1, lmbda=0).decay_rate == 0.0


def test_finding_rejects_unknown_code_and_severity():
    with pytest.raises(ValueError, match="'code'"):
        Finding("nope", "info", "x.")
    with pytest.raises(ValueError, match="'severity'"):
        Finding(dg.OVERFITTING, "error", "x.")
    f = Finding(dg.OVERFITTING, "notice", "x.", {"a": np.float64(np.nan), "b": (np.int64(2), np.bool_(True))})
    assert f.to_dict()["evidence"] == {"a": None, "b": [2, True]}
    hash(f)  # frozen and hashable despite the evidence dict


def test_history_table_aligns_every_key():
    records = tiny_run()
    table = history_table(records)
    assert table["epoch"].tolist() == [r.epoch for r in records]
    keys = {k for r in records for k in r.to_metrics()}
    assert set(table) == keys | {"epoch"}
    for key in keys:
        expected = [r.to_metrics().get(key, math.nan) for r in records]
        np.testing.assert_array_equal(table[key], np.array(expected, dtype=float))
    with pytest.raises(ValueError, match="'records' parameter of history_table"):
        history_table([{"epoch": 1}])

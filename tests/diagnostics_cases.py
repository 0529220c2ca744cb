"""Shared helpers of the diagnostics tests (tests/nncore/test_diagnostics.py, test_findings.py, test_run_history.py):
run facts, constructed histories, and a tiny real run."""

from __future__ import annotations

import json

import numpy as np

from nncore import Network, TrainConfig, train
from nncore import diagnostics as dg
from nncore.diagnostics import CODES, Finding, RunFacts, diagnose

FACTS = dict(n_train=100, batch_size=10, eta=0.5, lmbda=1.0)  # dataset convention: d = 1/100 = 0.01
SIZES = (4, 3, 2)  # layer1 12 weights (n_in 4), layer2 6 weights (n_in 3); N = 18; chance 1/2


def facts(**kw) -> RunFacts:
    return RunFacts(**{**FACTS, **kw})


def run(history, **kw) -> list[Finding]:
    """diagnose(), checking that every finding is valid JSON (no NaN) and well-formed."""
    found = diagnose(history, facts(**kw))
    for f in found:
        json.dumps(f.to_dict(), allow_nan=False)
        assert f.code in CODES and f.severity in dg.SEVERITIES
        assert f.message.endswith(".") and "\n" not in f.message
    return found


def by_code(found, code) -> list[Finding]:
    return [f for f in found if f.code == code]


def one(found, code) -> Finding:
    hits = by_code(found, code)
    assert len(hits) == 1, [f.code for f in found]
    return hits[0]


def hist(data, pen, *, split="train", **extra) -> dict:
    """A history with ``split`` losses (total = data + penalty), epochs 0..len-1."""
    data, pen = np.asarray(data, float), np.asarray(pen, float)
    h = {"epoch": list(range(len(data))), f"{split}/data_loss": data.tolist(), f"{split}/penalty": pen.tolist(),
         f"{split}/total_loss": (data + pen).tolist()}
    h.update({k: list(v) for k, v in extra.items()})
    return h


def tiny_run(**config):
    rng = np.random.default_rng(0)
    X, labels = rng.random((40, 4)), rng.integers(0, 2, 40)
    Xe, le = rng.random((15, 4)), rng.integers(0, 2, 15)
    net = Network(list(SIZES), rng=np.random.default_rng(1))
    cfg = TrainConfig(eta=0.5, epochs=4, batch_size=8, lmbda=0.5, **config)
    return train(net, X, labels, cfg, eval_data=(Xe, le), rng=0).records

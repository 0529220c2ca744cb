"""A trial's files: what is written for which inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import nncore
from sweeps.tracking import files as trial_files

PARAMS = {"penalty": "l2", "lmbda": 5.0, "convention": "dataset", "n_train": 300, "batch_size": 10, "eta": 0.5}


def test_write_puts_each_file_where_it_applies(tmp_path: Path) -> None:
    net = nncore.Network([4, 3, 2], rng=np.random.default_rng(0))
    doc = {"trial": 3, "findings": []}
    written = trial_files.write(tmp_path, net, [], PARAMS, plots=False, diagnosis=doc)
    assert [p.name for p in written] == ["diagnosis.json", "network.npz", "network2.json"]
    assert json.loads((tmp_path / "diagnosis.json").read_text()) == doc
    loaded = nncore.io.load(tmp_path / "network.npz")
    assert all(np.array_equal(a, b) for a, b in zip(loaded.weights, net.weights))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert trial_files.write(empty, None, [], PARAMS, plots=False) == []  # no network, no diagnosis: nothing

"""sweeps.query.client: the ``"api"`` backend (MlflowClient per run and key) and the trial-run search."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("optuna")
pytest.importorskip("mlflow")

from test_reading import ALPHA_TRIALS, KEYS, alpha, assert_same_long, expected_long  # noqa: E402,F401

from sweeps.query import client, frames  # noqa: E402


def test_search_trial_runs_pages_through_the_experiment(alpha, monkeypatch):
    runs = client.search_trial_runs(alpha.uri, "sweeps/alpha")
    # active runs tagged sweeps.role=trial: not the parent, the deleted or the untagged run
    assert sorted(r.info.run_id for r in runs) == sorted(alpha.trial_of)
    monkeypatch.setattr(client, "_SEARCH_PAGE", 2)
    assert sorted(r.info.run_id for r in client.search_trial_runs(alpha.uri, "sweeps/alpha")) == sorted(
        alpha.trial_of)
    assert client.search_trial_runs(alpha.uri, "sweeps/none") is None


def test_final_metrics_one_row_per_run(alpha):
    finals = client.final_metrics(client.search_trial_runs(alpha.uri, "sweeps/alpha"))
    assert sorted(finals.columns) == sorted(["run_id", "trial", *KEYS])
    assert sorted(finals["trial"]) == list(range(len(ALPHA_TRIALS)))
    for row in finals.to_dict("records"):
        epochs = alpha.epochs_of[row["run_id"]]
        for key in KEYS:
            want = alpha.oracle[(row["run_id"], key, epochs)]
            assert (math.isnan(want) and math.isnan(row[key])) or row[key] == want
    empty = client.final_metrics([])
    assert empty.empty and list(empty.columns) == ["run_id", "trial"]


def test_runs_and_keys_selects_trials_and_keys(alpha):
    chosen = client.runs_and_keys(alpha.uri, "sweeps/alpha", ["train/eta", "nope"], [1, 3])
    assert sorted(n for _, n, _ in chosen) == [1, 3]
    assert all(keys == ["train/eta"] for _, _, keys in chosen)
    every = client.runs_and_keys(alpha.uri, "sweeps/alpha", None, None)
    assert all(keys == sorted(KEYS) for _, _, keys in every)


def test_read_history_is_the_logged_values(alpha):
    raw = client.read_history(alpha.uri, "sweeps/alpha", ["eval/accuracy"], [0, 2])
    assert list(raw.columns) == list(frames.RAW_COLUMNS)
    assert_same_long(frames.finish_long(raw), expected_long(alpha, keys=["eval/accuracy"], trials={0, 2}))
    assert client.read_history(alpha.uri, "sweeps/none", None, None).empty

"""sweeps.analysis.diagnosis: a trial's params to RunFacts, findings to MLflow tags and JSON, the study report.

Rendering them: test_render.py."""

from __future__ import annotations

import json
import math

import pytest

from nncore.diagnostics import Finding, RunFacts
from nncore.lambda_scaling import lambda_scaling
from sweeps.analysis import diagnosis as dg

PARAMS = {  # as MLflow stores a trial's params: strings
    "n_train": "1500", "n_eval": "297", "batch_size": "10", "eta": "3.0", "lmbda": "5.0", "convention": "dataset",
    "penalty": "l2", "momentum": "0.0", "sizes": "[64, 30, 10]", "cost": "quadratic",
    "objective.metric": "eval/accuracy", "objective.direction": "maximize",
}


def test_run_facts_from_mlflow_params():
    facts = dg.run_facts(PARAMS)
    assert facts == RunFacts(n_train=1500, batch_size=10, eta=3.0, lmbda=5.0, convention="dataset", penalty="l2",
                             momentum=0.0, n_eval=297, sizes=(64, 30, 10), cost="quadratic")
    no_eval = dg.run_facts({**PARAMS, "n_eval": "0", "sizes": "not a list"})
    assert no_eval.n_eval is None and no_eval.sizes is None


def test_run_facts_names_the_missing_parameter():
    with pytest.raises(ValueError, match="'batch_size' is missing"):
        dg.run_facts({k: v for k, v in PARAMS.items() if k != "batch_size"})


def test_rows_table_aligns_keys_and_fills_gaps_with_nan():
    table = dg.rows_table([{"train/total_loss": 1.0}, {"train/total_loss": 0.5, "train/decay_factor": 0.9}], [0, 1])
    assert table["epoch"].tolist() == [0, 1]
    assert table["train/total_loss"].tolist() == [1.0, 0.5]
    assert math.isnan(table["train/decay_factor"][0]) and table["train/decay_factor"][1] == 0.9


def findings():
    return [Finding("norm_equilibrium", "info", "layer 1 settled", {"epochs": [5, 6]}, layer=1),
            Finding("norm_equilibrium", "notice", "layer 2 still shrinking", {"epochs": [5, 6]}, layer=2),
            Finding("penalty_driven_growth", "warning", "the total rose by 0.1", {"rise": 0.1})]


def test_tags_carry_each_codes_worst_severity():
    assert dg.finding_tags(findings()) == {"sweeps.finding.norm_equilibrium": "notice",
                                           "sweeps.finding.penalty_driven_growth": "warning"}
    assert dg.finding_tags([]) == {}


def test_diagnosis_document_is_json_with_facts_and_every_finding():
    doc = json.loads(json.dumps(dg.diagnosis_document(3, dg.run_facts(PARAMS), findings())))
    assert doc["trial"] == 3 and doc["facts"]["sizes"] == [64, 30, 10] and doc["facts"]["n_train"] == 1500
    assert [(f["code"], f["layer"]) for f in doc["findings"]] == [("norm_equilibrium", 1), ("norm_equilibrium", 2),
                                                                  ("penalty_driven_growth", None)]


def explanation(trial, lmbda, batch, n_train, value, fs=()):
    facts = RunFacts(n_train=n_train, batch_size=batch, eta=0.5, lmbda=lmbda)
    return dg.TrialExplanation(trial, f"run{trial}", "COMPLETE", value, facts, tuple(fs), 10)


def test_study_scaling_uses_complete_trials_with_a_penalty():
    trials = [explanation(0, 1.0, 10, 500, 0.90), explanation(1, 4.0, 10, 500, 0.95),
              explanation(2, 1.0, 10, 2000, 0.97), explanation(3, 4.0, 10, 2000, 0.93)]
    failed = dg.TrialExplanation(4, "run4", "FAIL", 0.99, RunFacts(n_train=2000, batch_size=10, eta=0.5, lmbda=16.0),
                                 (), 3)
    out = dg.study_scaling([*trials, failed], maximize=True)
    expected = lambda_scaling([1.0, 4.0, 1.0, 4.0], "dataset", [10] * 4, [500, 500, 2000, 2000],
                              [0.90, 0.95, 0.97, 0.93], maximize=True)
    assert out == expected and [g.best["dataset"] for g in out.groups] == [4.0, 1.0]
    assert dg.study_scaling(trials[:2], maximize=True) is None  # one group


def test_study_markdown_shows_counts_the_best_trial_and_the_scaling_table():
    trials = (explanation(0, 1.0, 10, 500, 0.90, findings()[:1]), explanation(1, 4.0, 10, 500, 0.95, findings()),
              explanation(2, 1.0, 10, 2000, 0.97), explanation(3, 4.0, 10, 2000, 0.93))
    exp = dg.StudyExplanation("s", "eval/accuracy", "maximize", trials, dg.study_scaling(trials, maximize=True))
    assert exp.code_counts() == {"norm_equilibrium": 2, "penalty_driven_growth": 1}
    md = dg.study_markdown(exp)
    assert "| `norm_equilibrium` | 2 |" in md
    assert "## The best trial (2, eval/accuracy = 0.97)" in md and "- no findings" in md
    assert "| 10 | 500 | 2 | 0.95 | 4 | 0.08 | 0.008 |" in md  # per_batch 4*10/500, decoupled 4/500
    assert exp.scaling.message in md
    minimizing = dg.StudyExplanation("s", "eval/data_loss", "minimize", trials, None)
    assert "## The best trial (0, eval/data_loss = 0.9)" in dg.study_markdown(minimizing)
    assert "Not analysed" in dg.study_markdown(minimizing)


def test_diagnose_gives_none_instead_of_failing(caplog) -> None:
    assert dg.diagnose_trial(7, [{"train/total_loss": 1.0}], [1], {}) is None
    assert "trial 7: no diagnosis" in caplog.text

"""sweeps.analysis.render: a study's and a trial's explanations as text (rich) and as JSON (``sweeps explain``)."""

from __future__ import annotations

import json

import numpy as np

from nncore.diagnostics import Finding, RunFacts
from sweeps.analysis import diagnosis as dg


def findings():
    return [Finding("norm_equilibrium", "info", "layer 1 settled", {"epochs": [5, 6]}, layer=1),
            Finding("norm_equilibrium", "notice", "layer 2 still shrinking", {"epochs": [5, 6]}, layer=2),
            Finding("penalty_driven_growth", "warning", "the total rose by 0.1", {"rise": 0.1})]


def explanation(trial, lmbda, batch, n_train, value, fs=()):
    facts = RunFacts(n_train=n_train, batch_size=batch, eta=0.5, lmbda=lmbda)
    return dg.TrialExplanation(trial, f"run{trial}", "COMPLETE", value, facts, tuple(fs), 10)


def test_explanations_render_as_text_and_json():
    from io import StringIO

    from rich.console import Console

    from sweeps.analysis import render as explain

    trials = (explanation(0, 1.0, 10, 500, 0.90, findings()), explanation(1, 4.0, 10, 2000, float("nan")))
    exp = dg.StudyExplanation("s", "eval/accuracy", "maximize", trials, None)
    out = StringIO()
    explain.render_study(exp, Console(file=out, width=200, color_system=None))
    text = out.getvalue()
    assert "penalty_driven_growth, norm_equilibrium" in text  # most severe first
    assert "not analysed" in text
    out = StringIO()
    explain.render_trial(trials[0], Console(file=out, width=200, color_system=None))
    lines = out.getvalue().splitlines()
    assert lines[1].strip().startswith("warning penalty_driven_growth: the total rose by 0.1")
    assert [ln.split()[0] for ln in lines[1:]] == ["warning", "notice", "info"]
    doc = json.loads(explain.to_json(exp))
    assert doc["trials"][1]["value"] is None and doc["code_counts"]["norm_equilibrium"] == 1
    assert np.isnan(trials[1].value)

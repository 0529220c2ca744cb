"""Optuna's plots of a study: drawn where they can be, skipped with a warning where not, no global state left."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import matplotlib
import optuna
import pytest
from matplotlib.figure import Figure

from sweeps.plots.figures import save_figure
from sweeps.plots.study import PlotSkippedWarning, study_figures

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
STUDY_KEYS = {"optimization_history", "param_importances", "contour_eta_lmbda", "parallel_coordinate"}


def quadratic(trial: optuna.Trial) -> float:
    eta = trial.suggest_float("eta", 1e-3, 10.0, log=True)
    lmbda = trial.suggest_float("lmbda", 0.0, 5.0)
    return (math.log10(eta) + 0.5) ** 2 + (lmbda - 1.0) ** 2


def make_study(n_trials: int, objective=quadratic) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=n_trials)
    return study


def test_study_figures_all_keys(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    rc_before = dict(matplotlib.rcParams)
    open_before = set(plt.get_fignums())
    with warnings.catch_warnings():
        warnings.simplefilter("error", PlotSkippedWarning)
        warnings.simplefilter("error", optuna.exceptions.ExperimentalWarning)
        figs = study_figures(make_study(8))
    assert set(figs) == STUDY_KEYS
    assert all(isinstance(f, Figure) for f in figs.values())
    assert set(plt.get_fignums()) == open_before  # detached from pyplot
    assert dict(matplotlib.rcParams) == rc_before  # Optuna's ggplot style did not leak
    for name, fig in figs.items():
        assert save_figure(fig, tmp_path / f"{name}.png").read_bytes()[:8] == PNG_MAGIC


def test_study_figures_single_trial_skips_with_warning() -> None:
    study = make_study(1)
    with pytest.warns(PlotSkippedWarning) as record:
        figs = study_figures(study)
    assert set(figs) <= STUDY_KEYS
    assert "optimization_history" in figs
    assert {"param_importances", "contour_eta_lmbda"}.isdisjoint(figs)
    assert all(isinstance(f, Figure) for f in figs.values())
    skipped_text = " ".join(str(w.message) for w in record)
    assert "param_importances" in skipped_text and "contour_eta_lmbda" in skipped_text


def test_study_figures_without_lmbda_skips_contour() -> None:
    study = make_study(6, lambda t: (math.log10(t.suggest_float("eta", 1e-3, 10.0, log=True)) + 0.5) ** 2)
    with pytest.warns(PlotSkippedWarning, match="contour_eta_lmbda"):
        figs = study_figures(study)
    assert set(figs) == STUDY_KEYS - {"contour_eta_lmbda"}


def test_study_figures_failing_plot_is_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    import optuna.visualization.matplotlib as ovm

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(ovm, "plot_parallel_coordinate", boom)
    with pytest.warns(PlotSkippedWarning, match="parallel_coordinate.*boom"):
        figs = study_figures(make_study(4))
    assert set(figs) == STUDY_KEYS - {"parallel_coordinate"}


def test_study_figures_empty_study() -> None:
    with pytest.warns(PlotSkippedWarning):
        assert study_figures(optuna.create_study()) == {}

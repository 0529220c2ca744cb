"""Optuna's matplotlib plots of a study (optimization history, parameter importances, the eta x lambda
contour, parallel coordinates), for the study's parent run.

Each plot is skipped with a :class:`PlotSkippedWarning` (never an exception) when it cannot be drawn.
Optuna's plots are made through pyplot by Optuna and are detached from pyplot before they are
returned; save them with :func:`sweeps.plots.figures.save_figure`. A run's own figures: :mod:`sweeps.plots.figures`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

if TYPE_CHECKING:  # pragma: no cover
    import optuna

__all__ = ["PlotSkippedWarning", "study_figures"]


class PlotSkippedWarning(UserWarning):
    """A figure of :func:`study_figures` could not be drawn and was left out."""


def _complete_trials(study: "optuna.Study") -> list["optuna.trial.FrozenTrial"]:
    from optuna.trial import TrialState

    return list(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def _distinct(trials: Sequence["optuna.trial.FrozenTrial"], name: str) -> int:
    return len({repr(t.params[name]) for t in trials if name in t.params})


def _why_not(kind: str, trials: Sequence["optuna.trial.FrozenTrial"]) -> str | None:
    """Why plot ``kind`` cannot be drawn from the completed ``trials`` (``None``: it can)."""
    n = len(trials)
    if kind == "optimization_history":
        return None if n >= 1 else "the study has no completed trials"
    if kind in ("param_importances", "parallel_coordinate"):
        if n < 2:
            return f"needs at least 2 completed trials, the study has {n}"
        names = {p for t in trials for p in t.params}
        if not any(_distinct(trials, p) >= 2 for p in names):
            return "no parameter takes at least 2 distinct values in the completed trials"
        return None
    if kind == "contour_eta_lmbda":
        both = [t for t in trials if "eta" in t.params and "lmbda" in t.params]
        if not both:
            return "needs completed trials with both parameters 'eta' and 'lmbda'"
        if _distinct(both, "eta") < 2 or _distinct(both, "lmbda") < 2:
            return "'eta' and 'lmbda' must each take at least 2 distinct values in the completed trials"
        return None
    raise KeyError(kind)  # pragma: no cover


def _figure_of(result: Any) -> Figure:
    """The figure of what an Optuna matplotlib plot returned (Axes or an array of Axes)."""
    if isinstance(result, Axes):
        return result.figure  # type: ignore[return-value]
    first = np.asarray(result, dtype=object).flat[0]
    return first.figure


def study_figures(study: "optuna.Study") -> dict[str, Figure]:
    """Optuna's matplotlib plots of ``study``, by name.

    Keys (each present only when its plot could be drawn):

    ``"optimization_history"``  :func:`optuna.visualization.matplotlib.plot_optimization_history`
    ``"param_importances"``     ``plot_param_importances`` (>= 2 completed trials, a varying parameter)
    ``"contour_eta_lmbda"``     ``plot_contour(params=["eta", "lmbda"])`` (both parameters, each varying)
    ``"parallel_coordinate"``   ``plot_parallel_coordinate`` (>= 2 completed trials, a varying parameter)

    A plot that cannot be drawn -- its precondition above fails, or Optuna
    raises (e.g. a multi-objective study) -- is left out with a
    :class:`PlotSkippedWarning` instead of an exception. Optuna's
    ``ExperimentalWarning`` is silenced for these calls, and the global
    matplotlib style Optuna sets while plotting is restored afterwards. The
    returned figures are detached from pyplot (nothing accumulates in pyplot's
    figure registry); save them with :func:`sweeps.plots.figures.save_figure`.
    """
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as ovm
    from optuna.exceptions import ExperimentalWarning

    plots: dict[str, Callable[[], Any]] = {
        "optimization_history": lambda: ovm.plot_optimization_history(study),
        "param_importances": lambda: ovm.plot_param_importances(study),
        "contour_eta_lmbda": lambda: ovm.plot_contour(study, params=["eta", "lmbda"]),
        "parallel_coordinate": lambda: ovm.plot_parallel_coordinate(study),
    }
    trials = _complete_trials(study)
    figures: dict[str, Figure] = {}
    for name, make in plots.items():
        reason = _why_not(name, trials)
        if reason is not None:
            warnings.warn(f"study_figures: skipped {name!r}: {reason}", PlotSkippedWarning, stacklevel=2)
            continue
        before = set(plt.get_fignums())
        try:
            with warnings.catch_warnings(), matplotlib.rc_context():
                warnings.simplefilter("ignore", ExperimentalWarning)
                fig = _figure_of(make())
        except Exception as exc:  # noqa: BLE001 - a failing plot must never fail the caller
            for num in set(plt.get_fignums()) - before:
                plt.close(num)
            warnings.warn(f"study_figures: skipped {name!r}: {type(exc).__name__}: {exc}",
                          PlotSkippedWarning, stacklevel=2)
            continue
        plt.close(fig)  # detach from pyplot's registry; the Figure itself stays usable
        figures[name] = fig
    return figures

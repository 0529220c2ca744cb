"""Diagnostic figures for one training run and for one Optuna study.

Per-run figures take the run's *history*: a sequence of per-epoch metric
dicts as produced by :meth:`nncore.records.EpochRecord.to_metrics` (epochs
``1..E`` in order), so they work equally on live records and on metrics read
back from MLflow. Metric names are the stable ones of :mod:`nncore.records`.

* :func:`loss_decomposition_figure` -- total loss = data loss + penalty, on the
  training and the evaluation set, next to the accuracies. This answers "why
  does my total cost grow while the accuracy improves?": with a weight penalty
  the penalty term can grow (the weights grow) while the data loss falls.
* :func:`layer_norms_figure` -- per-layer weight norms, gradient norms and
  relative update sizes.
* :func:`study_figures` -- Optuna's matplotlib plots of a study, each one
  skipped with a warning (never an exception) when it cannot be drawn.
* :func:`save_figure` -- write a PNG and free the figure.

Figures of this module are built on :class:`matplotlib.figure.Figure` directly
(no pyplot global state); Optuna's plots are made through pyplot by Optuna and
are detached from pyplot before they are returned. Importing this module
changes no matplotlib setting: the pyplot-free figures draw on their own Agg
canvas whatever the backend, and pyplot keeps the caller's backend (matplotlib
picks Agg by itself where there is no display; sweep workers run with
``MPLBACKEND=Agg``).
"""

from __future__ import annotations

import math
import os
import re
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

if TYPE_CHECKING:  # pragma: no cover
    import optuna

__all__ = [
    "LOSS_PARTS",
    "LAYER_WEIGHT_STATS",
    "LAYER_STEP_STATS",
    "PlotSkippedWarning",
    "layer_norms_figure",
    "loss_decomposition_figure",
    "save_figure",
    "study_figures",
]

History = Sequence[Mapping[str, float]]

#: ``(metric suffix, label part, colour)`` of the loss decomposition panel.
LOSS_PARTS: tuple[tuple[str, str, str], ...] = (
    ("total_loss", "total", "C0"),
    ("data_loss", "data", "C1"),
    ("penalty", "penalty", "C2"),
)
#: Layer statistics of the first panel of :func:`layer_norms_figure` (solid, dashed).
LAYER_WEIGHT_STATS: tuple[str, ...] = ("weight_fro", "weight_rms")
#: Layer statistics of the second panel of :func:`layer_norms_figure` (solid, dashed).
LAYER_STEP_STATS: tuple[str, ...] = ("grad_norm", "update_ratio")

_SPLIT_STYLE = {"train": "-", "eval": "--"}
_STAT_STYLE = ("-", "--")
_LAYER_KEY = re.compile(r"^layer(\d+)/")


class PlotSkippedWarning(UserWarning):
    """A figure of :func:`study_figures` could not be drawn and was left out."""


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def _new_figure(ncols: int, *, width_per_panel: float = 5.0, height: float = 4.0) -> tuple[Figure, list[Axes]]:
    """A pyplot-free figure with ``ncols`` side-by-side panels and an Agg canvas.

    Fixed margins rather than a layout engine: constrained layout nearly doubles the time to
    render a figure (~0.12 s each), and these figures are drawn for every completed trial.
    """
    fig = Figure(figsize=(width_per_panel * ncols, height))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.12, top=0.88, wspace=0.22)
    return fig, list(axes)


def _check_history(history: History) -> list[Mapping[str, float]]:
    records = list(history)
    if not records:
        raise ValueError("history must hold at least one epoch's metrics, got none")
    for i, rec in enumerate(records):
        if not isinstance(rec, Mapping):
            raise ValueError(f"history[{i}] must be a mapping of metric name to value, got {type(rec).__name__}")
    return records


def _series(history: Sequence[Mapping[str, float]], key: str) -> np.ndarray | None:
    """Values of ``key`` per epoch (NaN where an epoch lacks it); ``None`` if no epoch has it."""
    if not any(key in rec for rec in history):
        return None
    return np.array([float(rec.get(key, math.nan)) for rec in history], dtype=np.float64)


def _epochs(history: Sequence[Mapping[str, float]]) -> np.ndarray:
    return np.arange(1, len(history) + 1)


def _finish_axes(ax: Axes, *, ylabel: str, title: str) -> None:
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[1]:
        ax.legend(fontsize="small")


def _log_if_positive(ax: Axes, arrays: Sequence[np.ndarray]) -> None:
    """Use a log y axis when every finite plotted value is > 0 (and there is one)."""
    finite = [a[np.isfinite(a)] for a in arrays]
    values = np.concatenate(finite) if finite else np.empty(0)
    if values.size and bool((values > 0).all()):
        ax.set_yscale("log")


def _layer_numbers(history: Sequence[Mapping[str, float]]) -> list[int]:
    found: set[int] = set()
    for rec in history:
        for key in rec:
            m = _LAYER_KEY.match(key)
            if m:
                found.add(int(m.group(1)))
    return sorted(found)


# ---------------------------------------------------------------------------
# per-run figures
# ---------------------------------------------------------------------------


def loss_decomposition_figure(history: History, *, title: str = "") -> Figure:
    """Loss decomposition and accuracy per epoch of one run.

    Two panels:

    1. ``total_loss``, ``data_loss`` and ``penalty`` vs epoch; training set
       solid, evaluation set dashed, one colour per part (total ``C0``, data
       ``C1``, penalty ``C2``). Lines are labelled ``"train total"``,
       ``"train data"``, ``"train penalty"``, ``"eval total"``, ...
    2. ``"train accuracy"`` (solid) and ``"eval accuracy"`` (dashed).

    Args:
        history: per-epoch metric dicts (:meth:`EpochRecord.to_metrics`), epoch 1 first;
            epoch ``i`` of the plot is ``history[i - 1]``. Metrics missing from every
            epoch (e.g. all ``eval/...`` of a run without an evaluation set) are
            simply not drawn; a metric missing from some epochs is NaN there.
        title: figure title (none when empty).

    Raises:
        ValueError: ``history`` is empty or holds a non-mapping.
    """
    records = _check_history(history)
    x = _epochs(records)
    fig, (ax_loss, ax_acc) = _new_figure(2)
    for split, style in _SPLIT_STYLE.items():
        for suffix, part, colour in LOSS_PARTS:
            y = _series(records, f"{split}/{suffix}")
            if y is not None:
                ax_loss.plot(x, y, linestyle=style, color=colour, marker=".", label=f"{split} {part}")
        y = _series(records, f"{split}/accuracy")
        if y is not None:
            ax_acc.plot(x, y, linestyle=style, color="C0", marker=".", label=f"{split} accuracy")
    _finish_axes(ax_loss, ylabel="loss", title="total loss = data loss + penalty")
    _finish_axes(ax_acc, ylabel="accuracy", title="accuracy")
    if title:
        fig.suptitle(title)
    return fig


def layer_norms_figure(history: History, *, title: str = "") -> Figure:
    """Per-layer weight and step statistics per epoch of one run.

    Two panels, one colour per layer (``layer1`` = ``C0``, ...):

    1. ``weight_fro`` (solid) and ``weight_rms`` (dashed) of every layer;
    2. ``grad_norm`` (solid) and ``update_ratio`` (dashed) of every layer.

    Each panel has one line per layer per statistic, labelled e.g.
    ``"layer1 weight_fro"`` (drawn even when the statistic is all NaN, as
    ``grad_norm`` is with gradient tracking off). A panel's y axis is
    logarithmic when every finite value on it is positive.

    Args:
        history: per-epoch metric dicts (:meth:`EpochRecord.to_metrics`), epoch 1 first.
        title: figure title (none when empty).

    Raises:
        ValueError: ``history`` is empty or holds a non-mapping.
    """
    records = _check_history(history)
    x = _epochs(records)
    layers = _layer_numbers(records)
    fig, axes = _new_figure(2)
    panels = ((axes[0], LAYER_WEIGHT_STATS, "weight norms", "norm"),
              (axes[1], LAYER_STEP_STATS, "gradient norm and update ratio", "value"))
    for ax, stats, panel_title, ylabel in panels:
        drawn: list[np.ndarray] = []
        for j, layer in enumerate(layers):
            colour = f"C{j % 10}"
            for stat, style in zip(stats, _STAT_STYLE):
                y = _series(records, f"layer{layer}/{stat}")
                if y is None:
                    continue
                ax.plot(x, y, linestyle=style, color=colour, marker=".", label=f"layer{layer} {stat}")
                drawn.append(y)
        _log_if_positive(ax, drawn)
        _finish_axes(ax, ylabel=ylabel, title=panel_title)
    if title:
        fig.suptitle(title)
    return fig


# ---------------------------------------------------------------------------
# study figures
# ---------------------------------------------------------------------------


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
    figure registry); save them with :func:`save_figure`.
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


# ---------------------------------------------------------------------------
# saving
# ---------------------------------------------------------------------------


def save_figure(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Write ``fig`` as a PNG (dpi 100) to ``path`` and free it; return the path.

    Missing parent directories are created. The file is PNG whatever the
    suffix of ``path``. Afterwards the figure is closed in pyplot (if it was
    registered there) and cleared, so it must not be reused.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=100)
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close(fig)
    fig.clear()
    return out

"""Diagnostic figures for one training run and for one Optuna study.

Per-run figures take the run's *history*: a sequence of per-epoch metric
dicts as produced by :meth:`nncore.records.EpochRecord.to_metrics`, in epoch
order, so they work equally on live records and on metrics read back from
MLflow. Metric names are the stable ones of :mod:`nncore.records`. The
history may start with the epoch-0 record (the initial network, MLflow step
0); see :func:`history_epochs` for how the epoch numbers are found.

* :func:`loss_decomposition_figure` -- total loss = data loss + penalty, on the
  training and the evaluation set, the penalty on its own axis with its share
  of the total, and the accuracies. This answers "why does my total cost grow
  while the accuracy improves?": with a weight penalty the penalty term can
  grow (the weights grow) while the data loss falls; and it shows a penalty of
  0.1% of the total, which on the total's axis hides under the data loss.
* :func:`layer_norms_figure` -- per-layer weight RMS against the reference
  scales 1/sqrt(n_in) and 1/sqrt(N), Frobenius norms, gradient norms and
  relative update sizes, and the decay-to-gradient ratio (1 = norm equilibrium).
* :func:`lambda_scaling_figure` -- a study's best lambda per (batch size, training-set size)
  group in the three conventions (Optuna's plots of a study: :mod:`sweeps.plots.study`).
* :func:`save_figure` -- write a PNG and free the figure.

Figures of this module are built on :class:`matplotlib.figure.Figure` directly
(no pyplot global state). Importing this module
changes no matplotlib setting: the pyplot-free figures draw on their own Agg
canvas whatever the backend, and pyplot keeps the caller's backend (matplotlib
picks Agg by itself where there is no display; sweep workers run with
``MPLBACKEND=Agg``).
"""

from __future__ import annotations

import ast
import math
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogFormatter, MaxNLocator, PercentFormatter, ScalarFormatter

__all__ = [
    "DECAY_TO_GRAD_LINEAR_MAX",
    "LOSS_LOG_RATIO",
    "LOSS_PARTS",
    "LAYER_WEIGHT_STATS",
    "LAYER_STEP_STATS",
    "history_epochs",
    "lambda_scaling_figure",
    "layer_norms_figure",
    "loss_decomposition_figure",
    "reference_scales",
    "save_figure",
]

History = Sequence[Mapping[str, float]]

#: ``(metric suffix, label part, colour)`` of the loss decomposition's first panel (per-sample loss).
LOSS_PARTS: tuple[tuple[str, str, str], ...] = (
    ("total_loss", "total", "C0"),
    ("data_loss", "data", "C1"),
)
#: The per-sample loss panel's y axis is logarithmic when its largest value is at least this
#: many times its smallest (all positive): an epoch-0 loss far above the trained one.
LOSS_LOG_RATIO = 3.0
#: Colour of the penalty (its own panel, and the band between data and total loss).
PENALTY_COLOUR = "C2"
#: Colour of the penalty share (right axis of the penalty panel).
SHARE_COLOUR = "C3"
#: Layer statistics of :func:`layer_norms_figure`'s weight panels: RMS (against the
#: reference scales) and Frobenius norm, one panel each, solid.
LAYER_WEIGHT_STATS: tuple[str, ...] = ("weight_rms", "weight_fro")
#: Layer statistics of the step panel of :func:`layer_norms_figure` (solid, dashed).
LAYER_STEP_STATS: tuple[str, ...] = ("grad_norm", "update_ratio")
#: Beyond this |decay_to_grad| the ratio panel's y axis is symlog (linear within [-2, 2]).
DECAY_TO_GRAD_LINEAR_MAX = 10.0
#: Colour of the network-wide reference line 1/sqrt(N) and of the equilibrium line at 1.
REFERENCE_COLOUR = "black"

_SPLIT_STYLE = {"train": "-", "eval": "--"}
_STAT_STYLE = ("-", "--")
_LAYER_KEY = re.compile(r"^layer(\d+)/")


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def _new_figure(nrows: int, ncols: int, *, panel_width: float = 5.0, panel_height: float = 4.0,
                wspace: float = 0.22, hspace: float = 0.35) -> tuple[Figure, list[Axes]]:
    """A pyplot-free figure with an ``nrows`` x ``ncols`` grid of panels and an Agg canvas.

    Fixed margins rather than a layout engine: constrained layout nearly doubles the time to
    render a figure (~0.12 s each), and these figures are drawn for every completed trial.
    Margins are given in inches and converted, so they look alike whatever the grid.
    """
    width, height = panel_width * ncols, panel_height * nrows
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    fig.subplots_adjust(left=0.85 / width, right=1.0 - 0.15 / width, bottom=0.5 / height,
                        top=1.0 - 0.5 / height, wspace=wspace, hspace=hspace)
    return fig, list(axes.flat)


def _suptitle(fig: Figure, title: str) -> None:
    """A figure title 0.1 inch below the top edge, the panels moved down to make room (nothing when empty)."""
    if not title:
        return
    height = fig.get_figheight()
    fig.suptitle(title, y=1.0 - 0.1 / height, va="top")
    fig.subplots_adjust(top=1.0 - 0.75 / height)


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


def _absent(rec: Mapping[str, float], key: str) -> bool:
    value = rec.get(key)
    return value is None or not math.isfinite(float(value))


def _is_initial_record(rec: Mapping[str, float]) -> bool:
    """Whether ``rec`` is an epoch-0 record: layer statistics, but no update ratio and no decay factor."""
    layer_keys = [k for k in rec if _LAYER_KEY.match(k)]
    return (bool(layer_keys) and _absent(rec, "train/decay_factor")
            and all(_absent(rec, k) for k in layer_keys if k.endswith("/update_ratio")))


def history_epochs(history: History, epochs: Sequence[int] | None = None) -> np.ndarray:
    """The epoch number of each row of ``history`` (the x values of every per-run figure).

    In order of precedence:

    1. ``epochs``, when given (e.g. the MLflow steps the rows were read from);
    2. the rows' own ``"epoch"`` values, when every row has one;
    3. consecutive numbers from 0 when the first row is an epoch-0 record -- it has
       ``layerN/...`` statistics but neither ``train/decay_factor`` nor any
       ``layerN/update_ratio`` (both undefined before the first step, hence absent
       or NaN) -- and from 1 otherwise.

    Raises:
        ValueError: ``history`` is empty or holds a non-mapping; ``epochs`` (or the
            rows' ``"epoch"`` values) are not integers >= 0, one per row, increasing.
    """
    records = _check_history(history)
    if epochs is None and all("epoch" in rec for rec in records):
        epochs = [rec["epoch"] for rec in records]  # type: ignore[misc]
    if epochs is None:
        first = 0 if _is_initial_record(records[0]) else 1
        return np.arange(first, first + len(records))
    values = list(epochs)
    if len(values) != len(records):
        raise ValueError(f"epochs must hold one epoch number per history row ({len(records)}), "
                         f"got {len(values)}")
    out = []
    for v in values:
        try:
            ok = not isinstance(v, bool) and float(v).is_integer() and float(v) >= 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"epochs must be integers >= 0, got {v!r}")
        out.append(int(float(v)))
    x = np.array(out, dtype=np.int64)
    if np.any(np.diff(x) <= 0):
        raise ValueError(f"epochs must be strictly increasing, got {out}")
    return x


def _finish_axes(ax: Axes, x: np.ndarray, *, ylabel: str, title: str, legend: bool = True) -> None:
    """Labels, integer epoch ticks, the same x range on every panel (the history's epochs), grid, legend."""
    pad = max(0.03 * float(x[-1] - x[0]), 0.5)
    ax.set_xlim(float(x[0]) - pad, float(x[-1]) + pad)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize="medium", y=1.0)  # a fixed y: no tight-bbox search per draw (~40% of the time)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)
    labels = ax.get_legend_handles_labels()[1]
    if legend and labels:
        ax.legend(fontsize="small", ncol=2 if len(labels) > 5 else 1, framealpha=0.7)


def _plain_numbers(ax: Axes) -> None:
    """Linear y axis ticks without an offset (``+1.2e-3``) and with scientific notation only when needed."""
    fmt = ScalarFormatter(useOffset=False)
    fmt.set_powerlimits((-3, 4))
    ax.yaxis.set_major_formatter(fmt)


def _plain(value: float, pos: int | None = None) -> str:
    return f"{value:g}"


class _PlainLogFormatter(LogFormatter):
    """Matplotlib's choice of which log ticks get a label, written as plain numbers (0.06, 0.2, 30)."""

    def __call__(self, x: float, pos: int | None = None) -> str:  # public Formatter API: keep its choice, not its text
        return _plain(x) if super().__call__(x, pos) else ""


def _set_log(ax: Axes) -> None:
    """Log y axis with plain tick labels (0.2, 1, 30 rather than 2x10^-1); minor ones labelled on short ranges."""
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(_plain))
    ax.yaxis.set_minor_formatter(_PlainLogFormatter(base=10.0, labelOnlyBase=False, minor_thresholds=(1.2, 0.5)))


def _finite(arrays: Sequence[np.ndarray]) -> np.ndarray:
    finite = [a[np.isfinite(a)] for a in arrays]
    return np.concatenate(finite) if finite else np.empty(0)


def _log_if_positive(ax: Axes, arrays: Sequence[np.ndarray], *, min_ratio: float = 1.0) -> bool:
    """Use a log y axis when every finite plotted value is > 0 (and there is one), and max/min >= ``min_ratio``."""
    values = _finite(arrays)
    if values.size and bool((values > 0).all()) and values.max() >= min_ratio * values.min():
        _set_log(ax)
        return True
    return False


def _layer_numbers(history: Sequence[Mapping[str, float]]) -> list[int]:
    found: set[int] = set()
    for rec in history:
        for key in rec:
            m = _LAYER_KEY.match(key)
            if m:
                found.add(int(m.group(1)))
    return sorted(found)


def _parse_sizes(sizes: Sequence[int] | str) -> list[int]:
    """``sizes`` as a list of ints; a string is the text MLflow logs for the ``sizes`` param (``"[64, 30, 10]"``)."""
    value: Any = sizes
    if isinstance(sizes, str):
        try:
            value = ast.literal_eval(sizes.strip())
        except (ValueError, SyntaxError):
            raise ValueError(f"sizes must be a list of layer sizes such as [64, 30, 10], got {sizes!r}") from None
    if (isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) < 2
            or not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1 for n in value)):
        raise ValueError(f"sizes must be a list of at least 2 layer sizes (ints >= 1) such as [64, 30, 10], "
                         f"got {sizes!r}")
    return [int(n) for n in value]


def reference_scales(sizes: Sequence[int] | str) -> tuple[list[float], float, int]:
    """The weight scales people compare a layer's weight RMS with.

    With ``sizes = [n_0, n_1, ..., n_L]`` and layer ``l`` (1-based) mapping ``n_(l-1)``
    inputs to ``n_l`` outputs:

    * per layer, ``1/sqrt(n_in) = 1/sqrt(n_(l-1))``: the RMS of the default
      N(0, 1/n_in) initialisation;
    * for the network, ``1/sqrt(N)`` with ``N = sum_l n_(l-1) * n_l`` the total number of
      weights, biases excluded (Nielsen's exercise: "L2 decay tails off when the weights
      are about 1/sqrt(n)").

    Returns ``([1/sqrt(n_in) of layer 1, ...], 1/sqrt(N), N)``. ``sizes`` may be the
    string MLflow logs for the ``sizes`` param.

    Raises:
        ValueError: ``sizes`` is not a list of >= 2 ints >= 1.
    """
    s = _parse_sizes(sizes)
    n_weights = sum(a * b for a, b in zip(s[:-1], s[1:]))
    return [1.0 / math.sqrt(n) for n in s[:-1]], 1.0 / math.sqrt(n_weights), n_weights


def _count_from_ratio(records: Sequence[Mapping[str, float]], layer: int, ratio_key: str) -> int | None:
    """``(layerN/<ratio_key> / layerN/weight_rms)^2`` rounded, from the first row where both are finite and > 0.

    ``rms_vs_fan_in = weight_rms * sqrt(n_in)`` and ``rms_vs_n_weights = weight_rms * sqrt(N)``
    (:mod:`nncore.records`), so the ratio squared is ``n_in`` or ``N``.
    """
    for rec in records:
        rms, ratio = rec.get(f"layer{layer}/weight_rms"), rec.get(f"layer{layer}/{ratio_key}")
        if rms is None or ratio is None:
            continue
        rms, ratio = float(rms), float(ratio)
        if math.isfinite(rms) and math.isfinite(ratio) and rms > 0 and ratio > 0:
            count = round((ratio / rms) ** 2)
            return count if count >= 1 else None
    return None


def _reference_counts(records: Sequence[Mapping[str, float]], layers: Sequence[int],
                      sizes: Sequence[int] | str | None) -> tuple[dict[int, int], int | None]:
    """``({layer: n_in}, N)`` for the reference lines: from ``sizes``, else from the history's
    ``layerN/rms_vs_fan_in`` and ``layerN/rms_vs_n_weights``; ``({}, None)`` when neither has them."""
    if sizes is not None:
        s = _parse_sizes(sizes)
        if layers and len(s) - 1 != max(layers):
            raise ValueError(f"sizes must describe the history's {max(layers)} weight layers "
                             f"({max(layers) + 1} sizes), got {sizes!r} ({len(s) - 1} weight layers)")
        return {l: s[l - 1] for l in range(1, len(s))}, reference_scales(s)[2]
    fan_in = {l: n for l in layers if (n := _count_from_ratio(records, l, "rms_vs_fan_in")) is not None}
    counts = [n for l in layers if (n := _count_from_ratio(records, l, "rms_vs_n_weights")) is not None]
    return fan_in, (counts[0] if counts else None)


# ---------------------------------------------------------------------------
# per-run figures
# ---------------------------------------------------------------------------


def _penalty_share(records: Sequence[Mapping[str, float]], split: str) -> np.ndarray | None:
    """``{split}/penalty_share`` where logged, else penalty / total (0.0 where total == 0)."""
    logged = _series(records, f"{split}/penalty_share")
    penalty, total = _series(records, f"{split}/penalty"), _series(records, f"{split}/total_loss")
    computed = None
    if penalty is not None and total is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            computed = np.where(total == 0, 0.0, penalty / total)
    if logged is None:
        return computed
    if computed is not None:
        logged = np.where(np.isnan(logged), computed, logged)
    return logged


def loss_decomposition_figure(history: History, *, title: str = "", epochs: Sequence[int] | None = None) -> Figure:
    """Loss decomposition and accuracy per epoch of one run.

    Three panels; training set solid, evaluation set dashed throughout:

    1. *Loss per sample*: ``total_loss`` (``C0``) and ``data_loss`` (``C1``), labelled
       ``"train total"``, ``"train data"``, ``"eval total"``, ``"eval data"``; the band
       between the training data loss and total (the penalty) is shaded in the
       penalty's colour. All values are per-sample (the data loss is the mean cost
       over the set, the penalty uses the training-set size). The y axis is
       logarithmic when the positive values span a factor :data:`LOSS_LOG_RATIO` or
       more (an epoch-0 loss far above the trained one).
    2. *Penalty*: ``"train penalty"`` (``C2``, left axis, same units as panel 1) --
       the penalty's own axis, so that a penalty of 0.1% of the total is as visible
       as one of 40% -- and ``"eval penalty"`` only where it differs from the
       training one (the penalty is the same for every set evaluated with the same
       weights). On a twin right axis in percent, ``"train penalty share"`` and
       ``"eval penalty share"`` (``C3``): ``{split}/penalty_share`` where logged,
       else penalty / total.
    3. ``"train accuracy"`` and ``"eval accuracy"``.

    Args:
        history: per-epoch metric dicts (:meth:`EpochRecord.to_metrics`) in epoch order,
            possibly starting with the epoch-0 record. Metrics missing from every epoch
            (e.g. all ``eval/...`` of a run without an evaluation set) are simply not
            drawn; a metric missing from some epochs (``train/decay_factor`` at epoch 0)
            is NaN there. Keys the figure does not draw are ignored.
        title: figure title (none when empty).
        epochs: epoch number of each row; default: see :func:`history_epochs`.

    Raises:
        ValueError: ``history`` is empty or holds a non-mapping; bad ``epochs``.
    """
    records = _check_history(history)
    x = history_epochs(records, epochs)
    fig, (ax_loss, ax_pen, ax_acc) = _new_figure(1, 3, panel_width=5.2, wspace=0.42)
    ax_share = ax_pen.twinx()

    loss_drawn: list[np.ndarray] = []
    for split, style in _SPLIT_STYLE.items():
        for suffix, part, colour in LOSS_PARTS:
            y = _series(records, f"{split}/{suffix}")
            if y is not None:
                ax_loss.plot(x, y, linestyle=style, color=colour, marker=".", label=f"{split} {part}")
                loss_drawn.append(y)
    data, total = _series(records, "train/data_loss"), _series(records, "train/total_loss")
    if data is not None and total is not None:
        ax_loss.fill_between(x, data, total, color=PENALTY_COLOUR, alpha=0.3, linewidth=0,
                             label="train penalty (band)")
    if not _log_if_positive(ax_loss, loss_drawn, min_ratio=LOSS_LOG_RATIO):
        _plain_numbers(ax_loss)
    _finish_axes(ax_loss, x, ylabel="loss per sample", title="loss per sample: total = data + penalty")

    train_pen = _series(records, "train/penalty")
    if train_pen is not None:
        ax_pen.plot(x, train_pen, linestyle="-", color=PENALTY_COLOUR, marker=".", label="train penalty")
    eval_pen = _series(records, "eval/penalty")
    if eval_pen is not None and not (train_pen is not None and np.allclose(eval_pen, train_pen, rtol=1e-12,
                                                                           atol=0.0, equal_nan=True)):
        ax_pen.plot(x, eval_pen, linestyle="--", color=PENALTY_COLOUR, marker=".", label="eval penalty")
    for split, style in _SPLIT_STYLE.items():
        share = _penalty_share(records, split)
        if share is not None:
            ax_share.plot(x, share, linestyle=style, color=SHARE_COLOUR, marker="x", markersize=4,
                          label=f"{split} penalty share")
    _plain_numbers(ax_pen)
    _finish_axes(ax_pen, x, ylabel="penalty (per-sample loss units)", title="penalty and its share of the total",
                 legend=False)
    ax_pen.yaxis.label.set_color(PENALTY_COLOUR)
    ax_pen.tick_params(axis="y", colors=PENALTY_COLOUR)
    ax_share.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=None))
    ax_share.set_ylabel("penalty / total", color=SHARE_COLOUR)
    ax_share.tick_params(axis="y", colors=SHARE_COLOUR)
    handles = ax_pen.get_legend_handles_labels()[0] + ax_share.get_legend_handles_labels()[0]
    if handles:
        ax_pen.legend(handles=handles, fontsize="small")

    for split, style in _SPLIT_STYLE.items():
        y = _series(records, f"{split}/accuracy")
        if y is not None:
            ax_acc.plot(x, y, linestyle=style, color="C0", marker=".", label=f"{split} accuracy")
    _finish_axes(ax_acc, x, ylabel="accuracy", title="accuracy")
    _suptitle(fig, title)
    return fig


def layer_norms_figure(history: History, *, title: str = "", sizes: Sequence[int] | str | None = None,
                       epochs: Sequence[int] | None = None) -> Figure:
    """Per-layer weight and step statistics per epoch of one run.

    Four panels (2 x 2), one colour per layer (``layer1`` = ``C0``, ...):

    1. ``weight_rms`` of every layer (solid, ``"layer1 weight_rms"``) against the
       reference scales of :func:`reference_scales`: per layer a dashed horizontal
       line at 1/sqrt(n_in) in the layer's colour (``"layer1 1/sqrt(n_in=64)"``), and
       one dotted black line at 1/sqrt(N) (``"1/sqrt(N), N=2220 weights"``). The
       counts come from ``sizes`` when given, else from the history's
       ``layerN/rms_vs_fan_in`` (= weight_rms * sqrt(n_in)) and
       ``layerN/rms_vs_n_weights`` (= weight_rms * sqrt(N)); without either there are
       no reference lines;
    2. ``weight_fro`` of every layer (solid);
    3. ``grad_norm`` (solid) and ``update_ratio`` (dashed) of every layer;
    4. ``decay_to_grad`` of every layer (solid) with a dashed black line at 1, the
       norm equilibrium (> 1 the decay wins and the norm shrinks, < 1 it grows;
       the y axis is symlog, linear within [-2, 2], once some |value| exceeds
       :data:`DECAY_TO_GRAD_LINEAR_MAX`, as it does when the gradient push is near 0);
       when no row has it (L1 penalty, or a history from before it was recorded)
       the panel is blank with a note.

    Each weight-statistic panel has one line per layer per statistic (drawn even when
    the statistic is all NaN, as ``grad_norm`` is with gradient tracking off); a panel's
    y axis is logarithmic when every finite value on it is positive.

    Args:
        history: per-epoch metric dicts (:meth:`EpochRecord.to_metrics`) in epoch order,
            possibly starting with the epoch-0 record (no ``update_ratio`` nor
            ``decay_to_grad`` there: NaN, not drawn). Other keys are ignored.
        title: figure title (none when empty).
        sizes: the network's layer sizes ``[n_0, ..., n_L]`` (the trial's ``sizes``
            param, also as the string MLflow logs); ``None``: taken from the history
            (see panel 1).
        epochs: epoch number of each row; default: see :func:`history_epochs`.

    Raises:
        ValueError: ``history`` is empty or holds a non-mapping; bad ``epochs``;
            ``sizes`` is not a list of >= 2 ints >= 1, or its number of weight layers
            is not the history's.
    """
    records = _check_history(history)
    x = history_epochs(records, epochs)
    layers = _layer_numbers(records)
    fan_in, n_weights = _reference_counts(records, layers, sizes)
    fig, (ax_rms, ax_fro, ax_step, ax_eq) = _new_figure(2, 2, panel_width=5.5, panel_height=3.8, wspace=0.25)

    def colour(j: int) -> str:
        return f"C{j % 10}"

    rms_stat, fro_stat = LAYER_WEIGHT_STATS
    panels = ((ax_rms, (rms_stat,), "weight RMS = sqrt(mean w^2)", "weight RMS"),
              (ax_fro, (fro_stat,), "Frobenius norm ||W||_F", "||W||_F"),
              (ax_step, LAYER_STEP_STATS, "gradient norm (solid), update ratio (dashed)", "value"))
    for ax, stats, panel_title, ylabel in panels:
        drawn: list[np.ndarray] = []
        for layer in layers:
            for stat, style in zip(stats, _STAT_STYLE):
                y = _series(records, f"layer{layer}/{stat}")
                if y is None:
                    continue
                ax.plot(x, y, linestyle=style, color=colour(layer - 1), marker=".", label=f"layer{layer} {stat}")
                drawn.append(y)
        if ax is ax_rms and (fan_in or n_weights):
            for layer, n_in in fan_in.items():
                ref = 1.0 / math.sqrt(n_in)
                ax.axhline(ref, linestyle="--", linewidth=1.2, color=colour(layer - 1),
                           label=f"layer{layer} 1/sqrt(n_in={n_in})")
                drawn.append(np.array([ref]))
            if n_weights is not None:
                ref = 1.0 / math.sqrt(n_weights)
                ax.axhline(ref, linestyle=":", linewidth=1.5, color=REFERENCE_COLOUR,
                           label=f"1/sqrt(N), N={n_weights} weights")
                drawn.append(np.array([ref]))
            panel_title = "weight RMS vs 1/sqrt(n_in) (dashed), 1/sqrt(N) (dotted)"
        _log_if_positive(ax, drawn)
        _finish_axes(ax, x, ylabel=ylabel, title=panel_title)

    ratios: list[np.ndarray] = []
    for layer in layers:
        y = _series(records, f"layer{layer}/decay_to_grad")
        if y is not None:
            ax_eq.plot(x, y, linestyle="-", color=colour(layer - 1), marker=".", label=f"layer{layer} decay_to_grad")
            ratios.append(y)
    if ratios:
        ax_eq.axhline(1.0, linestyle="--", linewidth=1.2, color=REFERENCE_COLOUR, label="equilibrium (1)")
        ax_eq.axhline(0.0, linestyle="-", linewidth=0.8, color="grey", alpha=0.6)
        values = _finite(ratios)
        if values.size and float(np.abs(values).max()) > DECAY_TO_GRAD_LINEAR_MAX:
            # a near-zero gradient push makes the ratio huge: keep [-2, 2] linear, compress beyond
            ax_eq.set_yscale("symlog", linthresh=2.0, linscale=2.0)
            ax_eq.yaxis.set_major_formatter(FuncFormatter(_plain))
        else:
            _plain_numbers(ax_eq)
        _finish_axes(ax_eq, x, ylabel="decay pull / gradient push",
                     title="decay_to_grad: > 1 norm shrinks, < 1 grows")
    else:
        ax_eq.set_axis_off()
        ax_eq.text(0.5, 0.5, "no layerN/decay_to_grad in this history\n(L1 penalty, or recorded before it existed)",
                   ha="center", va="center", transform=ax_eq.transAxes, fontsize="small", color="grey")
    _suptitle(fig, title)
    return fig


# ---------------------------------------------------------------------------
# a study's lambda scaling, and saving
# ---------------------------------------------------------------------------


def lambda_scaling_figure(analysis: Any, *, title: str = "") -> Figure:
    """The best lambda of each (batch_size, n_train) group, in the three conventions.

    ``analysis`` is a :class:`nncore.lambda_scaling.ScalingAnalysis`. Each convention's optima are
    drawn relative to their geometric mean over the groups (log y axis), so the steadiest convention
    is the flattest line at 1, whatever its units; the legend gives each spread (log10 range, in
    decades) and the labels the optimum's value in that convention.
    """
    groups = list(analysis.groups)
    if not groups:
        raise ValueError("lambda_scaling_figure: the analysis has no groups")
    fig, (ax,) = _new_figure(1, 1, panel_width=max(6.0, 1.3 * len(groups) + 2.5), panel_height=4.5)
    x = np.arange(len(groups))
    styles = {"dataset": ("tab:blue", "o"), "per_batch": ("tab:orange", "s"), "decoupled": ("tab:green", "^")}
    for conv, (colour, marker) in styles.items():
        best = np.array([g.best[conv] for g in groups])
        rel = best / math.exp(float(np.mean(np.log(best))))
        steady = " (steadiest)" if conv in analysis.steadiest else ""
        ax.plot(x, rel, marker=marker, color=colour, lw=2.5 if steady else 1.2,
                label=f"{conv}: spread {analysis.spread[conv]:.2f} decades{steady}")
        for xi, yi, b in zip(x, rel, best):
            ax.annotate(f"{b:.3g}", (xi, yi), textcoords="offset points", xytext=(6, 4), fontsize=7, color=colour)
    ax.axhline(1.0, color="0.5", lw=0.8, ls=":")
    _set_log(ax)
    ax.margins(x=0.08, y=0.12)
    ax.set_xticks(x, [f"m={g.batch_size}\nn={g.n_train}" for g in groups])
    ax.set_xlabel("group (batch size m, training-set size n)")
    ax.set_ylabel("best lambda / its geometric mean")
    ax.set_title("best lambda per group: a flat line keeps its value when m or n changes", fontsize=10, y=1.0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.subplots_adjust(bottom=0.95 / fig.get_figheight())
    _suptitle(fig, title)
    return fig


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


#: The file names of a trial's PNGs, in its run's artifacts (root folder).
PLOT_FILES = ("loss_decomposition.png", "layer_norms.png")


def trial_figures(history: Sequence[dict[str, float]], epochs: Sequence[int] | None, *, title: str = "") -> dict[str, Any]:
    """``{file name: Figure}`` of one trial's history (every logged record, epoch 0 included)."""
    return {PLOT_FILES[0]: loss_decomposition_figure(history, epochs=epochs, title=title),
            PLOT_FILES[1]: layer_norms_figure(history, title=title)}

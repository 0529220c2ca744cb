"""Tests of :mod:`sweeps.plots` on the history of a tiny real nncore run."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings
from pathlib import Path

import matplotlib
import numpy as np
import optuna
import pytest
from matplotlib.figure import Figure

from nncore import Network, TrainConfig, train
from nncore.datasets import load_digits
from sweeps.plots import (
    PlotSkippedWarning,
    layer_norms_figure,
    loss_decomposition_figure,
    save_figure,
    study_figures,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
STUDY_KEYS = {"optimization_history", "param_importances", "contour_eta_lmbda", "parallel_coordinate"}
SIZES = [64, 16, 12, 10]  # three weight layers
N_LAYERS = len(SIZES) - 1
EPOCHS = 3


@pytest.fixture(scope="module")
def history() -> list[dict[str, float]]:
    """Metrics of a 3-epoch digits run with an L2 penalty and an eval set."""
    ds = load_digits(n_train=300, n_eval=100)
    net = Network(SIZES, rng=np.random.default_rng(0))
    result = train(net, ds.train.X, ds.train.labels, TrainConfig(eta=0.5, epochs=EPOCHS, batch_size=10, lmbda=2.0),
                   eval_data=(ds.eval.X, ds.eval.labels), rng=0)
    hist = [rec.to_metrics() for rec in result.records]
    assert len(hist) == EPOCHS
    return hist


def lines_by_label(fig: Figure) -> dict[str, list]:
    out: dict[str, list] = {}
    for ax in fig.axes:
        for line in ax.get_lines():
            out.setdefault(line.get_label(), []).append(line)
    return out


def only_line(fig: Figure, label: str):
    found = lines_by_label(fig).get(label, [])
    assert len(found) == 1, f"expected one line labelled {label!r}, got {len(found)}"
    return found[0]


# ---------------------------------------------------------------------------
# loss decomposition
# ---------------------------------------------------------------------------


def test_loss_figure_lines_equal_logged_values(history: list[dict[str, float]]) -> None:
    fig = loss_decomposition_figure(history, title="digits")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2
    assert fig.get_suptitle() == "digits"
    loss_ax, acc_ax = fig.axes
    expected_loss = {f"{s} {p}" for s in ("train", "eval") for p in ("total", "data", "penalty")}
    assert {line.get_label() for line in loss_ax.get_lines()} == expected_loss
    assert {line.get_label() for line in acc_ax.get_lines()} == {"train accuracy", "eval accuracy"}

    for split in ("train", "eval"):
        for part, key in (("total", "total_loss"), ("data", "data_loss"), ("penalty", "penalty"),
                          ("accuracy", "accuracy")):
            line = only_line(fig, f"{split} {part}")
            assert np.array_equal(line.get_xdata(), [1, 2, 3])
            assert np.array_equal(line.get_ydata(), [h[f"{split}/{key}"] for h in history])

    # same colour per part, train solid / eval dashed
    for part in ("total", "data", "penalty"):
        train_line, eval_line = only_line(fig, f"train {part}"), only_line(fig, f"eval {part}")
        assert train_line.get_color() == eval_line.get_color()
        assert train_line.get_linestyle() == "-"
        assert eval_line.get_linestyle() == "--"
    colours = {only_line(fig, f"train {p}").get_color() for p in ("total", "data", "penalty")}
    assert len(colours) == 3
    # the decomposition is exact in the data being plotted
    total = only_line(fig, "train total").get_ydata()
    parts = only_line(fig, "train data").get_ydata() + only_line(fig, "train penalty").get_ydata()
    assert np.allclose(total, parts, rtol=1e-12, atol=0)


def test_loss_figure_without_eval_keys(history: list[dict[str, float]]) -> None:
    no_eval = [{k: v for k, v in h.items() if not k.startswith("eval/")} for h in history]
    fig = loss_decomposition_figure(no_eval)
    labels = set(lines_by_label(fig))
    assert not any(label.startswith("eval") for label in labels)
    assert {"train total", "train data", "train penalty", "train accuracy"} <= labels
    assert fig.get_suptitle() == ""


def test_loss_figure_key_missing_in_some_epochs_is_nan(history: list[dict[str, float]]) -> None:
    partial = [dict(h) for h in history]
    del partial[1]["eval/total_loss"]
    y = only_line(loss_decomposition_figure(partial), "eval total").get_ydata()
    assert math.isnan(y[1]) and y[0] == history[0]["eval/total_loss"] and y[2] == history[2]["eval/total_loss"]


def test_empty_history_raises() -> None:
    with pytest.raises(ValueError, match="at least one"):
        loss_decomposition_figure([])
    with pytest.raises(ValueError, match="at least one"):
        layer_norms_figure([])


def test_save_figure_writes_png(history: list[dict[str, float]], tmp_path: Path) -> None:
    fig = loss_decomposition_figure(history)
    target = tmp_path / "nested" / "dir" / "loss.png"
    out = save_figure(fig, target)
    assert out == target
    data = out.read_bytes()
    assert len(data) > len(PNG_MAGIC)
    assert data[:8] == PNG_MAGIC
    assert not fig.axes  # freed


# ---------------------------------------------------------------------------
# layer norms
# ---------------------------------------------------------------------------


def test_layer_figure_one_line_per_layer_per_stat(history: list[dict[str, float]], tmp_path: Path) -> None:
    fig = layer_norms_figure(history, title="layers")
    assert len(fig.axes) == 2
    weight_ax, step_ax = fig.axes
    assert len(weight_ax.get_lines()) == 2 * N_LAYERS
    assert len(step_ax.get_lines()) == 2 * N_LAYERS
    panel_of = {"weight_fro": weight_ax, "weight_rms": weight_ax, "grad_norm": step_ax, "update_ratio": step_ax}
    for stat, ax in panel_of.items():
        for i in range(1, N_LAYERS + 1):
            label = f"layer{i} {stat}"
            matches = [line for line in ax.get_lines() if line.get_label() == label]
            assert len(matches) == 1, label
            assert np.array_equal(matches[0].get_ydata(), [h[f"layer{i}/{stat}"] for h in history])
    # same colour for one layer's two statistics, distinct across layers
    colours = [only_line(fig, f"layer{i} weight_fro").get_color() for i in range(1, N_LAYERS + 1)]
    assert len(set(colours)) == N_LAYERS
    assert all(only_line(fig, f"layer{i} weight_rms").get_color() == colours[i - 1] for i in range(1, N_LAYERS + 1))
    assert weight_ax.get_yscale() == "log"  # all norms are positive
    assert step_ax.get_yscale() == "log"
    assert save_figure(fig, tmp_path / "layers.png").read_bytes()[:8] == PNG_MAGIC


def test_layer_figure_with_nan_grad_norm_and_nonpositive_values(history: list[dict[str, float]]) -> None:
    hist = [dict(h) for h in history]
    for h in hist:
        for i in range(1, N_LAYERS + 1):
            h[f"layer{i}/grad_norm"] = math.nan  # gradient tracking off
    hist[0]["layer1/update_ratio"] = 0.0
    fig = layer_norms_figure(hist)
    _, step_ax = fig.axes
    assert len(step_ax.get_lines()) == 2 * N_LAYERS
    assert step_ax.get_yscale() == "linear"  # a zero is plotted: no log axis


# ---------------------------------------------------------------------------
# study figures
# ---------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------
# backend
# ---------------------------------------------------------------------------


@pytest.mark.slow  # a fresh interpreter (subprocess): the import order is the point
def test_import_after_pyplot_keeps_open_figures() -> None:
    code = (
        "import matplotlib; matplotlib.use('Agg')\n"
        "import matplotlib.pyplot as plt\n"
        "fig = plt.figure()\n"
        "import sweeps.plots\n"
        "assert plt.fignum_exists(fig.number), 'importing sweeps.plots closed an open figure'\n"
        "sweeps.plots.save_figure(sweeps.plots.loss_decomposition_figure([{'train/total_loss': 1.0}]), "
        "'/dev/null')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr

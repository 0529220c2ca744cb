"""Tests of :mod:`sweeps.plots.figures` on the history of a tiny real nncore run (epoch 0 included)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

from nncore import Network, TrainConfig, train
from nncore.datasets import load_digits
from sweeps.plots.figures import (
    DECAY_TO_GRAD_LINEAR_MAX,
    history_epochs,
    layer_norms_figure,
    loss_decomposition_figure,
    reference_scales,
    save_figure,
)

REPO_ROOT = Path(__file__).resolve().parents[3]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SIZES = [64, 16, 12, 10]  # three weight layers
N_LAYERS = len(SIZES) - 1
N_WEIGHTS = 64 * 16 + 16 * 12 + 12 * 10  # 1336, biases excluded
EPOCHS = 3


@pytest.fixture(scope="module")
def run_records():
    """Records of a 3-epoch digits run with an L2 penalty and an eval set (epoch 0 first)."""
    ds = load_digits(n_train=300, n_eval=100)
    net = Network(SIZES, rng=np.random.default_rng(0))
    result = train(net, ds.train.X, ds.train.labels, TrainConfig(eta=0.5, epochs=EPOCHS, batch_size=10, lmbda=2.0),
                   eval_data=(ds.eval.X, ds.eval.labels), rng=0)
    return result.records


@pytest.fixture(scope="module")
def epochs(run_records) -> list[int]:
    return [rec.epoch for rec in run_records]


@pytest.fixture(scope="module")
def history(run_records) -> list[dict[str, float]]:
    hist = [rec.to_metrics() for rec in run_records]
    assert [rec.epoch for rec in run_records] == [0, 1, 2, 3]  # the initial record, then 3 epochs
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


def values(history: list[dict[str, float]], key: str) -> np.ndarray:
    return np.array([h.get(key, math.nan) for h in history], dtype=float)


def synthetic(n: int, *, data: np.ndarray, penalty: np.ndarray) -> list[dict[str, float]]:
    """A train-only history with the given per-epoch data loss and penalty (no layer keys)."""
    return [{"train/data_loss": float(d), "train/penalty": float(p), "train/total_loss": float(d + p),
             "train/accuracy": 0.5} for d, p in zip(data, penalty)][:n]


# ---------------------------------------------------------------------------
# epochs
# ---------------------------------------------------------------------------


def test_history_epochs_rules(history: list[dict[str, float]], epochs: list[int]) -> None:
    assert list(history_epochs(history)) == epochs  # epoch 0 recognised from the record itself
    assert list(history_epochs(history[1:])) == epochs[1:]  # a history without epoch 0 starts at 1
    assert list(history_epochs([{"train/total_loss": 1.0}] * 3)) == [1, 2, 3]  # no layer keys: not epoch 0
    assert list(history_epochs(history[1:], epochs=[2, 5, 9])) == [2, 5, 9]  # explicit numbers win
    rows = [dict(h, epoch=10 * i) for i, h in enumerate(history)]
    assert list(history_epochs(rows)) == [0, 10, 20, 30]
    # an epoch-0 row read back from MLflow through a wide frame: the undefined keys are NaN, not absent
    nan_first = [dict(h) for h in history[1:]]
    nan_first[0] = {k: (math.nan if k.endswith("update_ratio") or k == "train/decay_factor" else v)
                    for k, v in nan_first[0].items()}
    assert list(history_epochs(nan_first)) == [0, 1, 2]


@pytest.mark.parametrize("bad, match", [
    ([0, 1], "one epoch number per history row"),
    ([0, 1, 1, 2], "strictly increasing"),
    ([-1, 0, 1, 2], "integers >= 0"),
    ([0, 1.5, 2, 3], "integers >= 0"),
    ([False, True, 2, 3], "integers >= 0"),
    (["0", "one", 2, 3], "integers >= 0"),
])
def test_history_epochs_bad_input(history: list[dict[str, float]], bad: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        history_epochs(history, epochs=bad)
    with pytest.raises(ValueError, match=match):
        loss_decomposition_figure(history, epochs=bad)


# ---------------------------------------------------------------------------
# loss decomposition
# ---------------------------------------------------------------------------


def loss_axes(fig: Figure):
    """(loss, penalty, accuracy, penalty share) axes of a loss decomposition figure."""
    loss_ax, pen_ax, acc_ax, share_ax = fig.axes
    assert share_ax.bbox.bounds == pen_ax.bbox.bounds  # the share is the penalty panel's twin
    return loss_ax, pen_ax, acc_ax, share_ax


def test_loss_figure_lines_equal_logged_values(history: list[dict[str, float]], epochs: list[int]) -> None:
    fig = loss_decomposition_figure(history, title="digits")
    assert isinstance(fig, Figure)
    assert fig.get_suptitle() == "digits"
    loss_ax, pen_ax, acc_ax, share_ax = loss_axes(fig)
    assert {line.get_label() for line in loss_ax.get_lines()} == {
        f"{s} {p}" for s in ("train", "eval") for p in ("total", "data")}
    # train and eval penalty are equal (the penalty uses n_train whatever the set): drawn once
    assert np.array_equal(values(history, "train/penalty"), values(history, "eval/penalty"))
    assert [line.get_label() for line in pen_ax.get_lines()] == ["train penalty"]
    assert {line.get_label() for line in share_ax.get_lines()} == {"train penalty share", "eval penalty share"}
    assert {line.get_label() for line in acc_ax.get_lines()} == {"train accuracy", "eval accuracy"}

    for split in ("train", "eval"):
        for part, key in (("total", "total_loss"), ("data", "data_loss"), ("accuracy", "accuracy"),
                          ("penalty share", "penalty_share")):
            line = only_line(fig, f"{split} {part}")
            assert np.array_equal(line.get_xdata(), epochs)
            assert np.array_equal(line.get_ydata(), values(history, f"{split}/{key}"))
    penalty = only_line(fig, "train penalty")
    assert np.array_equal(penalty.get_xdata(), epochs)
    assert np.array_equal(penalty.get_ydata(), values(history, "train/penalty"))

    # same colour per part, train solid / eval dashed
    for part in ("total", "data", "penalty share"):
        train_line, eval_line = only_line(fig, f"train {part}"), only_line(fig, f"eval {part}")
        assert train_line.get_color() == eval_line.get_color()
        assert (train_line.get_linestyle(), eval_line.get_linestyle()) == ("-", "--")
    colours = {only_line(fig, label).get_color() for label in ("train total", "train data", "train penalty",
                                                               "train penalty share")}
    assert len(colours) == 4
    # the decomposition is exact in the data being plotted
    total = only_line(fig, "train total").get_ydata()
    parts = only_line(fig, "train data").get_ydata() + penalty.get_ydata()
    assert np.allclose(total, parts, rtol=1e-12, atol=0)
    # the band between data and total is the penalty: its outline runs along both curves
    (band,) = [c for c in loss_ax.collections if isinstance(c, PolyCollection)]
    assert band.get_label() == "train penalty (band)"
    ys = np.concatenate([p.vertices[:, 1] for p in band.get_paths()])
    for y in np.concatenate([values(history, "train/data_loss"), values(history, "train/total_loss")]):
        assert np.isclose(ys, y, rtol=1e-12, atol=0).any()
    assert ys.min() >= values(history, "train/data_loss").min() - 1e-12
    assert ys.max() <= values(history, "train/total_loss").max() + 1e-12


def test_loss_figure_epoch_axis_starts_at_zero_only_with_epoch_0(history: list[dict[str, float]]) -> None:
    for hist, first in ((history, 0), (history[1:], 1)):
        for ax in loss_decomposition_figure(hist).axes:
            left, right = ax.get_xlim()
            assert left < first < left + 1 and right > len(history) - 1, (first, ax.get_xlim())
            assert (left < 0) == (first == 0)  # no room for a non-existent epoch 0
            ticks = [t for t in ax.get_xticks() if left <= t <= right]
            assert ticks and all(float(t).is_integer() for t in ticks)
            assert (first in ticks) or first == 1


def test_penalty_visible_at_a_thousandth_and_at_forty_percent() -> None:
    epochs = np.arange(0, 11)
    data = 2.0 * np.exp(-0.3 * epochs) + 0.2
    for share in (1e-3, 0.4):
        penalty = share / (1 - share) * data * np.linspace(0.5, 1.5, epochs.size)  # penalty/total ~ share
        hist = synthetic(epochs.size, data=data, penalty=penalty)
        fig = loss_decomposition_figure(hist, epochs=epochs)
        _, pen_ax, _, share_ax = loss_axes(fig)
        line = only_line(fig, "train penalty")
        assert np.array_equal(line.get_ydata(), penalty)
        low, high = pen_ax.get_ylim()
        # the penalty fills most of its own axis whatever its share of the total
        assert (penalty.max() - penalty.min()) / (high - low) > 0.7
        assert low <= penalty.min() and high >= penalty.max()
        shown = only_line(fig, "train penalty share").get_ydata()
        assert np.allclose(shown, penalty / (data + penalty), rtol=1e-12)  # computed when not logged
        s_low, s_high = share_ax.get_ylim()
        assert (shown.max() - shown.min()) / (s_high - s_low) > 0.7
        assert share_ax.yaxis.get_major_formatter()(0.5, 0).rstrip("0").rstrip(".").endswith("%")


def test_loss_axis_log_only_when_values_span_a_decade() -> None:
    epochs = np.arange(0, 6)
    steep = synthetic(6, data=np.array([10.0, 1.0, 0.5, 0.3, 0.2, 0.1]), penalty=np.full(6, 0.01))
    flat = synthetic(6, data=np.array([0.5, 0.45, 0.4, 0.35, 0.3, 0.25]), penalty=np.full(6, 0.01))
    assert loss_decomposition_figure(steep, epochs=epochs).axes[0].get_yscale() == "log"
    assert loss_decomposition_figure(flat, epochs=epochs).axes[0].get_yscale() == "linear"


def test_penalty_share_zero_total_and_logged_values_win() -> None:
    hist = synthetic(3, data=np.array([0.0, 1.0, 2.0]), penalty=np.array([0.0, 1.0, 2.0]))
    assert np.array_equal(only_line(loss_decomposition_figure(hist), "train penalty share").get_ydata(),
                          [0.0, 0.5, 0.5])
    logged = [dict(h, **{"train/penalty_share": 0.25}) for h in hist]
    assert np.array_equal(only_line(loss_decomposition_figure(logged), "train penalty share").get_ydata(),
                          [0.25, 0.25, 0.25])


def test_eval_penalty_drawn_when_it_differs(history: list[dict[str, float]], epochs: list[int]) -> None:
    hist = [dict(h, **{"eval/penalty": 3.0 * h["eval/penalty"]}) for h in history]  # an old per-set denominator
    fig = loss_decomposition_figure(hist)
    line = only_line(fig, "eval penalty")
    assert line.get_linestyle() == "--" and line.get_color() == only_line(fig, "train penalty").get_color()
    assert np.array_equal(line.get_ydata(), values(hist, "eval/penalty"))


def test_loss_figure_without_eval_keys(history: list[dict[str, float]]) -> None:
    no_eval = [{k: v for k, v in h.items() if not k.startswith("eval/")} for h in history]
    fig = loss_decomposition_figure(no_eval)
    labels = set(lines_by_label(fig))
    assert not any(label.startswith("eval") for label in labels)
    assert labels == {"train total", "train data", "train penalty", "train penalty share", "train accuracy"}
    assert fig.get_suptitle() == ""


def test_loss_figure_key_missing_in_some_epochs_is_nan(history: list[dict[str, float]]) -> None:
    partial = [dict(h) for h in history]
    del partial[1]["eval/total_loss"]
    y = only_line(loss_decomposition_figure(partial), "eval total").get_ydata()
    assert math.isnan(y[1])
    assert np.array_equal(np.delete(y, 1), np.delete(values(history, "eval/total_loss"), 1))


def test_empty_history_raises() -> None:
    with pytest.raises(ValueError, match="at least one"):
        loss_decomposition_figure([])
    with pytest.raises(ValueError, match="at least one"):
        layer_norms_figure([])
    with pytest.raises(ValueError, match=r"history\[1\] must be a mapping"):
        layer_norms_figure([{}, 3.0])  # type: ignore[list-item]


def test_per_run_figures_leave_matplotlib_state_alone(history: list[dict[str, float]], tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    rc_before = dict(matplotlib.rcParams)
    open_before = set(plt.get_fignums())
    for fig in (loss_decomposition_figure(history), layer_norms_figure(history, sizes=SIZES)):
        save_figure(fig, tmp_path / "f.png")
    assert dict(matplotlib.rcParams) == rc_before
    assert set(plt.get_fignums()) == open_before


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


def test_reference_scales_by_hand() -> None:
    per_layer, net, n = reference_scales(SIZES)
    assert per_layer == [1 / 8, 1 / 4, 1 / math.sqrt(12)]
    assert n == N_WEIGHTS and net == 1 / math.sqrt(1336)
    assert reference_scales("[64, 16, 12, 10]") == (per_layer, net, n)  # the text MLflow logs for the param
    assert reference_scales([784, 30, 10]) == ([1 / 28, 1 / math.sqrt(30)], 1 / math.sqrt(23820), 23820)
    for bad in ([64], [64, 0, 10], [64, True, 10], "64 x 10", "['a', 'b']", 64):
        with pytest.raises(ValueError, match="sizes must be a list"):
            reference_scales(bad)  # type: ignore[arg-type]


def layer_axes(fig: Figure):
    """(weight RMS, Frobenius, step, decay_to_grad) axes of a layer-norms figure."""
    assert len(fig.axes) == 4
    return fig.axes


def assert_reference_lines(fig: Figure) -> None:
    rms_ax = layer_axes(fig)[0]
    hand = {1: 1 / math.sqrt(64), 2: 1 / math.sqrt(16), 3: 1 / math.sqrt(12)}
    for layer, n_in in zip((1, 2, 3), SIZES[:-1]):
        ref = only_line(fig, f"layer{layer} 1/sqrt(n_in={n_in})")
        assert ref.axes is rms_ax
        assert np.allclose(ref.get_ydata(), [hand[layer]] * 2, rtol=1e-15, atol=0)
        assert ref.get_linestyle() == "--"
        assert ref.get_color() == only_line(fig, f"layer{layer} weight_rms").get_color()
    net = only_line(fig, f"1/sqrt(N), N={N_WEIGHTS} weights")
    assert net.axes is rms_ax
    assert np.allclose(net.get_ydata(), [1 / math.sqrt(1336)] * 2, rtol=1e-15, atol=0)
    assert net.get_linestyle() == ":"
    assert net.get_color() not in {only_line(fig, f"layer{i} weight_rms").get_color() for i in (1, 2, 3)}
    low, high = rms_ax.get_ylim()
    assert low <= 1 / math.sqrt(1336) and high >= 1 / 8  # every reference line is inside the view


def test_layer_figure_lines_equal_logged_values(history: list[dict[str, float]], epochs: list[int],
                                                tmp_path: Path) -> None:
    fig = layer_norms_figure(history, title="layers", sizes=SIZES)
    assert fig.get_suptitle() == "layers"
    rms_ax, fro_ax, step_ax, eq_ax = layer_axes(fig)
    panel_of = {"weight_rms": rms_ax, "weight_fro": fro_ax, "grad_norm": step_ax, "update_ratio": step_ax,
                "decay_to_grad": eq_ax}
    for stat, ax in panel_of.items():
        for i in range(1, N_LAYERS + 1):
            line = only_line(fig, f"layer{i} {stat}")
            assert line.axes is ax
            assert np.array_equal(line.get_xdata(), epochs)
            assert np.array_equal(line.get_ydata(), values(history, f"layer{i}/{stat}"), equal_nan=True)
    # undefined at epoch 0 (no step yet): NaN there, so the line starts at epoch 1
    for stat in ("update_ratio", "decay_to_grad"):
        y = only_line(fig, f"layer1 {stat}").get_ydata()
        assert math.isnan(y[0]) and np.isfinite(y[1:]).all()
    # same colour for one layer's statistics, distinct across layers
    colours = [only_line(fig, f"layer{i} weight_rms").get_color() for i in range(1, N_LAYERS + 1)]
    assert len(set(colours)) == N_LAYERS
    for stat in ("weight_fro", "grad_norm", "update_ratio", "decay_to_grad"):
        assert [only_line(fig, f"layer{i} {stat}").get_color() for i in range(1, N_LAYERS + 1)] == colours
    assert rms_ax.get_yscale() == "log" and fro_ax.get_yscale() == "log"  # all positive
    assert step_ax.get_yscale() == "log"
    assert_reference_lines(fig)
    equilibrium = only_line(fig, "equilibrium (1)")
    assert equilibrium.axes is eq_ax and list(equilibrium.get_ydata()) == [1.0, 1.0]
    assert save_figure(fig, tmp_path / "layers.png").read_bytes()[:8] == PNG_MAGIC


def test_reference_lines_from_sizes_text_and_from_history(history: list[dict[str, float]]) -> None:
    assert_reference_lines(layer_norms_figure(history, sizes="[64, 16, 12, 10]"))
    # without sizes: n_in and N from rms_vs_fan_in = rms*sqrt(n_in), rms_vs_n_weights = rms*sqrt(N)
    hand = [dict(h) for h in history]
    for h in hand:
        for i, n_in in zip((1, 2, 3), SIZES[:-1]):
            h[f"layer{i}/rms_vs_fan_in"] = h[f"layer{i}/weight_rms"] * math.sqrt(n_in)
            h[f"layer{i}/rms_vs_n_weights"] = h[f"layer{i}/weight_rms"] * math.sqrt(N_WEIGHTS)
    assert_reference_lines(layer_norms_figure(hand))
    assert_reference_lines(layer_norms_figure(history))  # the values nncore records


def test_layer_figure_without_sizes_draws_no_reference(history: list[dict[str, float]]) -> None:
    bare = [{k: v for k, v in h.items() if "rms_vs" not in k} for h in history]
    fig = layer_norms_figure(bare)
    rms_ax = layer_axes(fig)[0]
    assert [line.get_label() for line in rms_ax.get_lines()] == [f"layer{i} weight_rms" for i in (1, 2, 3)]
    assert not any("sqrt" in label for label in lines_by_label(fig))
    save_figure(fig, "/dev/null")  # draws


def test_layer_figure_sizes_must_match_history(history: list[dict[str, float]]) -> None:
    with pytest.raises(ValueError, match=r"3 weight layers.*\[64, 30, 10\].*2 weight layers"):
        layer_norms_figure(history, sizes=[64, 30, 10])
    with pytest.raises(ValueError, match="sizes must be a list"):
        layer_norms_figure(history, sizes="64-16-12-10")


def test_layer_figure_old_history_without_new_keys(history: list[dict[str, float]]) -> None:
    """A history from before epoch 0 and the decay/gradient ratios: no ratio panel, no crash."""
    old_keys = ("decay_pull", "grad_push", "decay_to_grad", "rms_vs", "penalty_share")
    old = [{k: v for k, v in h.items() if not any(t in k for t in old_keys)} for h in history[1:]]
    fig = layer_norms_figure(old)
    eq_ax = layer_axes(fig)[3]
    assert not eq_ax.axison and not eq_ax.get_lines()
    assert "decay_to_grad" in " ".join(t.get_text() for t in eq_ax.texts)
    assert np.array_equal(only_line(fig, "layer2 weight_rms").get_xdata(), [1, 2, 3])
    save_figure(fig, "/dev/null")
    save_figure(loss_decomposition_figure(old), "/dev/null")


def test_decay_to_grad_outlier_uses_symlog(history: list[dict[str, float]]) -> None:
    tame = [dict(h) for h in history]
    for h in tame[1:]:
        for i in range(1, N_LAYERS + 1):
            h[f"layer{i}/decay_to_grad"] = 0.9 + 0.1 * i  # near equilibrium
    eq_ax = layer_axes(layer_norms_figure(tame))[3]
    assert eq_ax.get_yscale() == "linear"
    wild = [dict(h) for h in tame]
    wild[2]["layer2/decay_to_grad"] = -5 * DECAY_TO_GRAD_LINEAR_MAX  # gradient push near 0
    fig = layer_norms_figure(wild)
    assert layer_axes(fig)[3].get_yscale() == "symlog"
    assert only_line(fig, "layer2 decay_to_grad").get_ydata()[2] == -5 * DECAY_TO_GRAD_LINEAR_MAX
    save_figure(fig, "/dev/null")


def test_layer_figure_with_nan_grad_norm_and_nonpositive_values(history: list[dict[str, float]]) -> None:
    hist = [dict(h) for h in history]
    for h in hist:
        for i in range(1, N_LAYERS + 1):
            h[f"layer{i}/grad_norm"] = math.nan  # gradient tracking off
    hist[1]["layer1/update_ratio"] = 0.0
    fig = layer_norms_figure(hist)
    step_ax = layer_axes(fig)[2]
    assert len(step_ax.get_lines()) == 2 * N_LAYERS
    assert step_ax.get_yscale() == "linear"  # a zero is plotted: no log axis
    save_figure(fig, "/dev/null")


# ---------------------------------------------------------------------------
# backend
# ---------------------------------------------------------------------------


@pytest.mark.slow  # a fresh interpreter (subprocess): the import order is the point
def test_import_after_pyplot_keeps_open_figures() -> None:
    code = (
        "import matplotlib; matplotlib.use('Agg')\n"
        "import matplotlib.pyplot as plt\n"
        "fig = plt.figure()\n"
        "import sweeps.plots.figures\n"
        "assert plt.fignum_exists(fig.number), 'importing sweeps.plots.figures closed an open figure'\n"
        "sweeps.plots.figures.save_figure(sweeps.plots.figures.loss_decomposition_figure([{'train/total_loss': 1.0}]), "
        "'/dev/null')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_lambda_scaling_figure_draws_each_conventions_optima_relative_to_their_geometric_mean():
    import math

    from nncore.lambda_scaling import lambda_scaling

    lam = [1.0, 4.0, 1.0, 4.0, 2.0, 8.0]
    m, n = [10, 10, 10, 10, 40, 40], [500, 500, 2000, 2000, 2000, 2000]
    val = [0.9, 0.95, 0.97, 0.93, 0.91, 0.96]  # best: 4 (10, 500), 1 (10, 2000), 8 (40, 2000)
    analysis = lambda_scaling(lam, "dataset", m, n, val, maximize=True)
    from sweeps.plots import figures as plots

    fig = plots.lambda_scaling_figure(analysis, title="t")
    ax = fig.axes[0]
    lines = {ln.get_label().split(":")[0]: ln for ln in ax.get_lines() if ":" in ln.get_label()}
    assert set(lines) == {"dataset", "per_batch", "decoupled"}
    best = [4.0, 1.0, 8.0]
    gm = math.exp(sum(math.log(b) for b in best) / 3)
    assert list(lines["dataset"].get_ydata()) == pytest.approx([b / gm for b in best])
    per_batch = [4.0 * 10 / 500, 1.0 * 10 / 2000, 8.0 * 40 / 2000]
    gm = math.exp(sum(math.log(b) for b in per_batch) / 3)
    assert list(lines["per_batch"].get_ydata()) == pytest.approx([b / gm for b in per_batch])
    assert ax.get_yscale() == "log"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["m=10\nn=500", "m=10\nn=2000", "m=40\nn=2000"]
    assert "(steadiest)" in lines[analysis.steadiest[0]].get_label()

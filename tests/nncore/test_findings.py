"""nncore.findings: each finding against constructed histories (fires, and a near miss just on the safe side of
its threshold does not), its numbers against hand computations, and how findings are ordered and summarized."""

from __future__ import annotations

import math

import numpy as np
import pytest
from diagnostics_cases import SIZES, by_code, hist, one, run

from nncore import diagnostics as dg
from nncore.diagnostics import summarize

# -- penalty_driven_growth ------------------------------------------------------------------------

# sum ||W||^2 with both layers equal; penalty = (d/2) * S = 0.005 * S (d = lmbda/n = 0.01)
S = np.array([40, 40, 44, 56, 72, 92, 116], float)
DATA = [1.00, 0.80, 0.70, 0.65, 0.62, 0.60, 0.59]


def growth_history(**kw):
    fro = np.sqrt(S / 2).tolist()
    return hist(DATA, 0.005 * S, **{"layer1/weight_fro": fro, "layer2/weight_fro": fro}, **kw)


def test_penalty_driven_growth_numbers():
    # total = 1.2, 1.0, 0.92, 0.93, 0.98, 1.06, 1.17: lowest at epoch 2, +0.25 by epoch 6 while data fell 0.11
    f = one(run(growth_history()), dg.PENALTY_DRIVEN_GROWTH)
    ev = f.evidence["sets"]["train"]
    assert f.severity == "notice" and list(f.evidence["sets"]) == ["train"]
    assert (ev["start_epoch"], ev["end_epoch"]) == (2, 6)
    assert ev["total_rise"] == pytest.approx(0.25)
    assert ev["total_rise_fraction"] == pytest.approx(0.25 / 0.92)
    assert ev["data_change"] == pytest.approx(-0.11)
    assert ev["penalty_change"] == pytest.approx(0.36)
    assert ev["penalty_share_of_rise"] == pytest.approx(0.36 / 0.25)
    assert ev["sq_norm_sum_ratio"] == pytest.approx(116 / 44)
    assert ev["expected_penalty_change"] == pytest.approx(0.005 * (116 - 44))  # (d/2) * change of S
    for text in ("train total loss rose 27.2% from 0.92 at epoch 2 to 1.17 at epoch 6",
                 "data loss fell from 0.7 to 0.59", "penalty rose by 0.36 (144% of the rise)",
                 "sum ||W||^2 grew 2.64x (44 -> 116)"):
        assert text in f.message


def test_penalty_driven_growth_on_eval_too():
    h = growth_history()
    eval_data = [1.1, 0.9, 0.8, 0.79, 0.78, 0.77, 0.76]
    h.update({"eval/data_loss": eval_data, "eval/penalty": h["train/penalty"],
              "eval/total_loss": (np.array(eval_data) + 0.005 * S).tolist()})
    f = one(run(h), dg.PENALTY_DRIVEN_GROWTH)
    assert set(f.evidence["sets"]) == {"train", "eval"}
    assert f.evidence["sets"]["eval"]["start_epoch"] == 2  # eval total 1.02 at epoch 2 is its lowest
    assert "the eval total likewise rose" in f.message
    # eval only: the train total falls all along
    h["train/data_loss"] = (np.array(DATA) - 0.1 * np.arange(7)).tolist()
    h["train/total_loss"] = (np.array(h["train/data_loss"]) + 0.005 * S).tolist()
    f = one(run(h), dg.PENALTY_DRIVEN_GROWTH)
    assert list(f.evidence["sets"]) == ["eval"] and f.message.startswith("The eval total loss rose")


@pytest.mark.parametrize("end_total,fires", [(1.0099, False), (1.0101, True)])
def test_penalty_driven_growth_rise_threshold(end_total, fires):
    # lowest total 1.0 at epoch 1; the data loss falls 0.5 -> 0.4; the last total is end_total
    data = [0.6, 0.5, 0.45, 0.4]
    total = [1.2, 1.0, 1.002, end_total]
    h = hist(data, np.subtract(total, data))
    assert bool(by_code(run(h), dg.PENALTY_DRIVEN_GROWTH)) is fires


def test_penalty_driven_growth_near_misses():
    # data loss flat (not falling) while the total rises 10%
    h = hist([0.5, 0.5, 0.5, 0.5], [0.5, 0.5, 0.52, 0.6])
    assert not by_code(run(h), dg.PENALTY_DRIVEN_GROWTH)
    # rise over a single epoch only (GROWTH_MIN_EPOCHS = 2)
    h = hist([0.9, 0.8, 0.7, 0.6], [0.3, 0.3, 0.2, 0.5])
    assert not by_code(run(h), dg.PENALTY_DRIVEN_GROWTH)


# -- denominator_trap -----------------------------------------------------------------------------

def trap_history(acc):
    # eval data falls, the penalty grows; the proper eval total is data + penalty
    data, pen = [1.0, 0.6, 0.5, 0.45, 0.4], [0.1, 0.12, 0.2, 0.25, 0.3]
    return hist(data, pen, split="eval", **{"train/penalty": pen, "eval/accuracy": acc})


def test_denominator_trap_value_and_rise():
    k = 1500 / 297
    found = run(trap_history([0.5, 0.8, 0.85, 0.9, 0.92]), n_train=1500, n_eval=297, lmbda=5.0)
    f = one(found, dg.DENOMINATOR_TRAP)
    ev = f.evidence
    assert ev["factor"] == pytest.approx(k)
    assert ev["trap_total_last"] == pytest.approx(0.4 + 0.3 * k)  # 1.915
    assert ev["eval_total_last"] == pytest.approx(0.7)
    assert ev["trap_total"] == pytest.approx([1.0 + 0.1 * k, 0.6 + 0.12 * k, 0.5 + 0.2 * k, 0.45 + 0.25 * k,
                                              0.4 + 0.3 * k])
    # lowest trap total at epoch 1 (1.206), then up to 1.915 while accuracy 0.8 -> 0.92
    assert ev["trap_min_epoch"] == 1 and ev["rises_while_accuracy_improves"] is True
    assert ev["trap_rise_fraction"] == pytest.approx((0.4 + 0.3 * k) / (0.6 + 0.12 * k) - 1)
    assert f.severity == "notice"
    for text in ("297 evaluated rows instead of the 1500 training rows", "5.05x (n_train/n_eval)",
                 "epoch 4 would read 1.915 instead of 0.7", "from epoch 1 (1.206)", "from 0.8 to 0.92"):
        assert text in f.message


def test_denominator_trap_without_accuracy_gain_is_info():
    f = one(run(trap_history([0.9, 0.9, 0.9, 0.9, 0.9]), n_train=1500, n_eval=297), dg.DENOMINATOR_TRAP)
    assert f.severity == "info" and f.evidence["rises_while_accuracy_improves"] is False
    assert "would not rise while accuracy improves" in f.message


@pytest.mark.parametrize("n_train,n_eval,fires", [
    (1000, 953, False), (1000, 952, True),    # n_train/n_eval = 1.0493 / 1.0504
    (1000, 1049, False), (1000, 1050, True),  # n_eval/n_train = 1.049 / 1.05
])
def test_denominator_trap_factor_threshold(n_train, n_eval, fires):
    h = trap_history([0.5, 0.8, 0.85, 0.9, 0.92])
    assert bool(by_code(run(h, n_train=n_train, n_eval=n_eval), dg.DENOMINATOR_TRAP)) is fires


def test_denominator_trap_needs_a_penalty_and_n_eval():
    h = trap_history([0.5, 0.8, 0.85, 0.9, 0.92])
    assert not by_code(run(h, n_train=1500, n_eval=None), dg.DENOMINATOR_TRAP)
    assert not by_code(run(h, n_train=1500, n_eval=297, lmbda=0.0), dg.DENOMINATOR_TRAP)
    assert not by_code(run(h, n_train=1500, n_eval=297, penalty="none"), dg.DENOMINATOR_TRAP)


# -- norm_equilibrium -----------------------------------------------------------------------------

def equilibrium_history(ratio2=2 / 3, epochs=8):
    """decay pull 0.1 per epoch (f = e^-0.1); layer1 norm constant (push 0.1: ratio 1); layer2 norm
    moving so that pull/push = ratio2 every epoch. Epoch 0 has no decay factor."""
    pull = 0.1
    push2 = pull / ratio2
    e = np.arange(epochs)
    fro1 = np.full(epochs, 2.0)
    fro2 = 1.5 * np.exp((push2 - pull) * e)  # ln r = push - pull
    f = [None] + [math.exp(-pull)] * (epochs - 1)
    return {"epoch": e.tolist(), "train/decay_factor": f, "layer1/weight_fro": fro1.tolist(),
            "layer2/weight_fro": fro2.tolist(), "layer1/weight_rms": (fro1 / math.sqrt(12)).tolist(),
            "layer2/weight_rms": (fro2 / math.sqrt(6)).tolist()}


def test_norm_equilibrium_settled_and_growing_layers():
    found = by_code(run(equilibrium_history(), sizes=SIZES), dg.NORM_EQUILIBRIUM)
    assert [f.layer for f in found] == [1, 2] and all(f.severity == "info" for f in found)
    l1, l2 = (f.evidence for f in found)
    assert l1["settled"] is True and l1["window_ratio"] == pytest.approx(1.0)
    assert l1["window_epochs"] == [3, 4, 5, 6, 7] and l1["direction"] == "stayed about the same"
    assert l1["decay_pull"] == pytest.approx([0.1] * 5) and l1["grad_push"] == pytest.approx([0.1] * 5)
    assert l2["settled"] is False and l2["window_ratio"] == pytest.approx(2 / 3)
    assert l2["decay_to_grad"] == pytest.approx([2 / 3] * 5)
    assert l2["direction"] == "grew" and l2["rms_ratio"] == pytest.approx(math.exp(0.05 * 7))
    # reference scales: rms * sqrt(n_in) and rms * sqrt(N), N = 4*3 + 3*2 = 18
    rms1 = 2 / math.sqrt(12)
    assert l1["rms_vs_fan_in"] == pytest.approx(rms1 * 2)
    assert l1["rms_vs_n_weights"] == pytest.approx(rms1 * math.sqrt(18))
    assert l1["n_weights_total"] == 18 and l2["n_in"] == 3
    assert "layer1 is at norm equilibrium: over epochs 3-7 decay pull / gradient push = 1 " in found[0].message
    assert "1.15x 1/sqrt(n_in=4) and 2.45x 1/sqrt(N=18)" in found[0].message
    assert "layer2 is not at norm equilibrium" in found[1].message
    assert "the gradient still pushes the norm up" in found[1].message
    assert "grew (1.42x) from epoch 0 to 7" in found[1].message


@pytest.mark.parametrize("ratio,settled", [(1.19, True), (1.21, False), (1 / 1.19, True), (0.79, False)])
def test_norm_equilibrium_tolerance(ratio, settled):
    f = by_code(run(equilibrium_history(ratio2=ratio), sizes=SIZES), dg.NORM_EQUILIBRIUM)[1]
    assert f.evidence["window_ratio"] == pytest.approx(ratio)
    assert f.evidence["settled"] is settled
    if not settled and ratio > 1:
        assert "the decay still pulls the norm down" in f.message


def test_norm_equilibrium_prefers_recorded_keys_and_needs_enough_epochs():
    h = equilibrium_history()
    # recorded pull/push (as nncore.train writes them) win over the recomputation
    h["layer2/decay_pull"] = [None] + [0.2] * 7
    h["layer2/grad_push"] = [None] + [0.25] * 7
    f = by_code(run(h, sizes=SIZES), dg.NORM_EQUILIBRIUM)[1]
    assert f.evidence["window_ratio"] == pytest.approx(0.8)
    # three epochs give two pull/push pairs: too few (EQUILIBRIUM_MIN_EPOCHS = 3)
    short = {k: v[:3] for k, v in equilibrium_history().items()}
    f = by_code(run(short, sizes=SIZES), dg.NORM_EQUILIBRIUM)[0]
    assert f.evidence["settled"] is None and "too few epochs (2 < 3)" in f.message


def test_norm_equilibrium_without_sizes_or_decay():
    h = equilibrium_history()
    h["layer1/rms_vs_fan_in"] = [1.0] * 8
    found = by_code(run(h), dg.NORM_EQUILIBRIUM)  # layers found from the keys; no sizes
    assert [f.layer for f in found] == [1, 2]
    assert "ending at 1x 1/sqrt(n_in)" in found[0].message and "sqrt(N" not in found[1].message
    f = by_code(run(h, lmbda=0.0), dg.NORM_EQUILIBRIUM)[0]
    assert f.evidence["settled"] is None and "no weight decay to balance" in f.message
    f = by_code(run(h, penalty="l1"), dg.NORM_EQUILIBRIUM)[0]
    assert "L1 penalty" in f.message


# -- decay_dominates / decay_negligible --------------------------------------------------------------

def collapse_history(fall, acc, first_epoch=0):
    e = list(range(first_epoch, first_epoch + 4))
    rms1 = 0.5 * np.array([1, 1 / 3, 1 / 6, 1 / fall])
    return {"epoch": e, "layer1/weight_rms": rms1.tolist(), "layer2/weight_rms": [0.6] * 4,
            "eval/accuracy": [0.3, 0.4, 0.5, acc], "train/decay_factor": [None, 0.01, 0.01, 0.01]}


@pytest.mark.parametrize("fall,acc,fires", [
    (10.0, 0.55, True), (9.9, 0.55, False),  # RMS fell 10x vs 9.9x (COLLAPSE_FACTOR)
    (20.0, 0.5501, False),                   # accuracy just above chance 1/2 + 0.05
])
def test_decay_dominates_thresholds(fall, acc, fires):
    found = by_code(run(collapse_history(fall, acc), sizes=SIZES, lmbda=50.0), dg.DECAY_DOMINATES)
    assert bool(found) is fires
    if fires:
        f = found[0]
        assert f.severity == "warning" and f.evidence["collapsed_layers"] == [1]
        assert f.evidence["layers"][0]["fall_factor"] == pytest.approx(fall)
        assert f.evidence["chance"] == 0.5 and f.evidence["step_factor"] == pytest.approx(1 - 0.5 * 0.5)
        for text in ("layer1 weight RMS fell 10x (from 0.5 at epoch 0 to 0.05 at epoch 3)",
                     "eval accuracy is 0.55, near chance 1/2 = 0.5", "multiplies the weights by 0.75",
                     "the decay alone by 0.01 per epoch"):
            assert text in f.message


def test_decay_dominates_needs_sizes_and_decay_and_uses_init_scale_without_epoch_0():
    h = collapse_history(20.0, 0.5)
    assert not by_code(run(h, lmbda=50.0), dg.DECAY_DOMINATES)  # no sizes: chance unknown
    assert not by_code(run(h, sizes=SIZES, lmbda=0.0), dg.DECAY_DOMINATES)
    # no epoch 0, already collapsed at epoch 1: 1/sqrt(n_in) = 0.5 stands in for the start
    h = collapse_history(20.0, 0.5, first_epoch=1)
    h["layer1/weight_rms"] = [0.05, 0.045, 0.04, 0.025]
    f = one(run(h, sizes=SIZES, lmbda=50.0), dg.DECAY_DOMINATES)
    assert f.evidence["layers"][0]["fall_factor"] == pytest.approx(20.0)
    assert "the default init scale 1/sqrt(n_in)" in f.message


@pytest.mark.parametrize("top_share,fires", [(0.00099, True), (0.001, False)])
def test_decay_negligible_threshold(top_share, fires):
    total = np.array([2.0, 1.0, 0.5, 0.4])
    share = np.array([0.0001, 0.0002, top_share, 0.0005])
    h = hist(total * (1 - share), total * share)
    found = by_code(run(h), dg.DECAY_NEGLIGIBLE)
    assert bool(found) is fires
    if fires:
        ev = found[0].evidence
        assert ev["max_share"] == pytest.approx(top_share) and ev["max_share_epoch"] == 2
        assert "at most 0.099%, at epoch 2" in found[0].message and found[0].severity == "notice"
    assert not by_code(run(h, lmbda=0.0), dg.DECAY_NEGLIGIBLE)


def test_decay_negligible_uses_recorded_share():
    h = hist([1.0, 0.5], [0.5, 0.5], **{"train/penalty_share": [0.0, 0.0005]})
    assert by_code(run(h), dg.DECAY_NEGLIGIBLE)


# -- lambda_conventions ---------------------------------------------------------------------------

def test_lambda_conventions_values():
    f = one(run({"epoch": []}, n_train=1500, batch_size=10, eta=0.5, lmbda=5.0), dg.LAMBDA_CONVENTIONS)
    ev = f.evidence
    d = 5 / 1500
    assert ev["values"] == pytest.approx({"dataset": 5.0, "per_batch": 5 * 10 / 1500, "decoupled": d})
    assert ev["step_factor"] == pytest.approx(1 - 0.5 * d)
    assert ev["epoch_factor"] == pytest.approx((1 - 0.5 * d) ** 150)
    n10, m4 = ev["scenarios"]
    assert (n10["n_train"], n10["lmbda_needed"]) == (15000, pytest.approx(50.0))
    assert (m4["batch_size"], m4["lmbda_needed"]) == (40, pytest.approx(5.0))  # lmbda/n does not involve m
    assert m4["epoch_factor_same_lmbda"] == pytest.approx((1 - 0.5 * d) ** 38)  # ceil(1500/40) steps
    assert ev["per_batch_exact"] is True and f.severity == "info"
    assert f.message.startswith("lmbda=5 (dataset) is alpha=0.03333 (per_batch) and wd=0.003333 (decoupled)")
    assert "needs lmbda=50 at n_train=15000 and lmbda=5 at batch_size=40" in f.message


def test_lambda_conventions_per_batch_with_partial_batch():
    # alpha = 0.2 per batch of 10; n = 1497: 149 full batches and one of 7 rows decaying by alpha/7
    f = one(run({"epoch": []}, n_train=1497, batch_size=10, eta=0.5, lmbda=0.2, convention="per_batch"),
            dg.LAMBDA_CONVENTIONS)
    ev = f.evidence
    assert ev["values"]["dataset"] == pytest.approx(0.2 * 1497 / 10)
    assert ev["per_batch_exact"] is False and ev["last_batch_rows"] == 7
    assert ev["last_batch_decay_rate_per_batch"] == pytest.approx(0.2 / 7)
    assert ev["epoch_factor"] == pytest.approx((1 - 0.5 * 0.02) ** 149 * (1 - 0.5 * 0.2 / 7))
    assert ev["scenarios"][1]["lmbda_needed"] == pytest.approx(0.8)  # alpha scales with m
    assert "the last batch of 7 rows decays by alpha/7 = 0.02857 instead of 0.02" in f.message


def test_lambda_conventions_small_decay_momentum_and_absent():
    f = one(run({"epoch": []}, n_train=100, batch_size=40, lmbda=0.001, momentum=0.9), dg.LAMBDA_CONVENTIONS)
    assert "factor 1 - 5e-06 per step" in f.message and "momentum 0.9" in f.message
    assert f.evidence["epoch_factor"] == pytest.approx((1 - 0.5 * 1e-5 / 0.1) ** 3)
    assert [s["label"] for s in f.evidence["scenarios"]] == ["n_train x10"]  # 4 * 40 > 100
    assert not by_code(run({"epoch": []}, lmbda=0.0), dg.LAMBDA_CONVENTIONS)
    assert not by_code(run({"epoch": []}, penalty="none"), dg.LAMBDA_CONVENTIONS)


# -- overfitting ----------------------------------------------------------------------------------

def overfit_history(eval_acc_end, eval_data_end=0.505):
    # train data 0.40 -> 0.39 from the best eval epoch (2) on; eval data lowest at epoch 2 (0.50)
    return {"epoch": list(range(7)),
            "train/data_loss": [1.0, 0.6, 0.40, 0.398, 0.395, 0.392, 0.39],
            "eval/data_loss": [1.0, 0.7, 0.50, 0.501, 0.502, 0.503, eval_data_end],
            "train/accuracy": [0.1, 0.7, 0.80, 0.81, 0.82, 0.83, 0.85],
            "eval/accuracy": [0.1, 0.6, 0.75, 0.75, 0.76, 0.77, eval_acc_end]}


@pytest.mark.parametrize("eval_acc_end,fires", [(0.781, False), (0.779, True)])
def test_overfitting_accuracy_gap_threshold(eval_acc_end, fires):
    # gap 0.05 at epoch 2 -> 0.85 - eval_acc_end at epoch 6 (widening 0.019 / 0.021); the data-loss gap
    # widens by (0.505 - 0.39) - (0.5 - 0.4) = 0.015 = 3% of 0.5, below 10%
    found = by_code(run(overfit_history(eval_acc_end)), dg.OVERFITTING)
    assert bool(found) is fires
    if fires:
        ev = found[0].evidence
        assert ev["start_epoch"] == 2 and ev["end_epoch"] == 6 and ev["by_accuracy"] and not ev["by_loss"]
        assert ev["accuracy_gap_widening"] == pytest.approx(0.021)
        assert ev["loss_gap_widening_fraction"] == pytest.approx(0.03)
        assert "From epoch 2 (best eval data loss 0.5) to epoch 6 the train data loss fell from 0.4 to 0.39" \
            in found[0].message
        assert "the accuracy gap (train - eval) went from 0.05 to 0.071" in found[0].message


@pytest.mark.parametrize("eval_data_end,fires", [(0.539, False), (0.541, True)])
def test_overfitting_loss_gap_threshold(eval_data_end, fires):
    # data-loss gap widening (eval_data_end - 0.39) - 0.1 = 0.049 / 0.051 against 10% of 0.5
    h = overfit_history(0.79, eval_data_end)
    h.pop("train/accuracy")
    assert bool(by_code(run(h), dg.OVERFITTING)) is fires


def test_overfitting_near_misses():
    h = overfit_history(0.70)
    h["train/data_loss"][-1] = 0.40  # the train data loss did not fall
    assert not by_code(run(h), dg.OVERFITTING)
    h = overfit_history(0.70)
    h["eval/data_loss"][4] = 0.49  # best eval epoch 4: only 2 epochs before the end
    assert not by_code(run(h), dg.OVERFITTING)
    h = {k: v for k, v in overfit_history(0.70).items() if not k.startswith("eval/")}
    assert not by_code(run(h), dg.OVERFITTING)


# -- step_too_large -------------------------------------------------------------------------------

def steps_history(signs, step=0.15, start=1.0):
    return {"epoch": list(range(len(signs) + 1)),
            "train/data_loss": (start + step * np.concatenate([[0], np.cumsum(signs)])).tolist()}


@pytest.mark.parametrize("signs,fires", [
    ([1, 1, -1, -1, 1, 1, -1, -1, 1], True),   # 4 of 8 changes reverse: 0.5
    ([1, 1, 1, -1, -1, 1, 1, 1, -1], False),   # 3 of 8: 0.375
])
def test_step_too_large_reversal_threshold(signs, fires):
    found = by_code(run(steps_history(signs)), dg.STEP_TOO_LARGE)
    assert bool(found) is fires
    if fires:
        ev = found[0].evidence
        assert ev["kind"] == "oscillating" and ev["reversals"] == 4 and ev["changes"] == 8
        assert ev["relative_amplitude"] == pytest.approx(0.15 / ev["median_level"])
        assert "4 of 8 consecutive changes reversed direction" in found[0].message


@pytest.mark.parametrize("low,fires", [(0.905, False), (0.9, True)])
def test_step_too_large_amplitude_threshold(low, fires):
    # alternating 1.0 / low: median |change| / median level = (1 - low) / ((1 + low) / 2): 0.0997 / 0.105
    h = {"epoch": list(range(8)), "train/data_loss": [1.0, low] * 4}
    found = by_code(run(h), dg.STEP_TOO_LARGE)
    assert bool(found) is fires
    if fires:
        assert found[0].evidence["relative_amplitude"] == pytest.approx(0.1 / 0.95)
        assert found[0].severity == "warning"


@pytest.mark.parametrize("last,fires", [(0.99, False), (1.0, True)])
def test_step_too_large_divergence_threshold(last, fires):
    h = {"epoch": list(range(5)), "train/data_loss": [2.0, 0.5, 0.6, 0.8, last]}
    found = by_code(run(h), dg.STEP_TOO_LARGE)
    assert bool(found) is fires
    if fires:
        ev = found[0].evidence
        assert ev["kind"] == "diverging" and ev["factor"] == pytest.approx(2.0) and ev["min_epoch"] == 1
        assert "rose 2x from its lowest value 0.5 at epoch 1 to 1 at epoch 4" in found[0].message


def test_step_too_large_infinite_loss_is_divergence():
    h = {"epoch": [1, 2, 3], "train/data_loss": [0.5, 0.4, math.inf]}
    f = one(run(h), dg.STEP_TOO_LARGE)
    assert f.evidence["kind"] == "diverging" and f.evidence["factor"] is None  # inf -> None in JSON


# -- ordering, rendering, tables ------------------------------------------------------------------

def test_findings_sorted_by_severity_then_code_and_summarized():
    h = growth_history(**{"train/accuracy": [0.5] * 7})
    h.update(steps_history([1, -1] * 3))  # oscillating data loss: overrides the train data/epochs
    h["train/total_loss"] = (np.array(h["train/data_loss"]) + 0.005 * S).tolist()
    found = run(h, sizes=SIZES, n_eval=50)
    ranks = [(dg.SEVERITIES.index(f.severity), f.code, f.layer or 0) for f in found]
    assert ranks == sorted(ranks)
    assert found[0].code == dg.STEP_TOO_LARGE
    text = summarize(found)
    assert text.splitlines()[0].startswith("[warning] step_too_large: The train data loss oscillated")
    assert "[info] norm_equilibrium (layer2): layer2" in text
    assert len(text.splitlines()) == len(found)
    assert summarize([]) == "No findings."


def test_a_collapsed_net_is_not_called_overfitting():
    """decay_dominates (accuracy at chance) silences overfitting, which the same history shows alone."""
    h = overfit_history(0.60)
    h["layer1/weight_rms"] = [0.5, 0.3, 0.2, 0.1, 0.05, 0.03, 0.02]  # fell 25x
    h["layer2/weight_rms"] = [0.6] * 7
    h["train/decay_factor"] = [None] + [0.01] * 6
    h["eval/accuracy"] = [0.1, 0.3, 0.62, 0.6, 0.58, 0.56, 0.54]  # chance 1/2 + 0.05 = 0.55 at SIZES
    found = run(h, sizes=SIZES, lmbda=50.0)
    assert by_code(found, dg.DECAY_DOMINATES) and not by_code(found, dg.OVERFITTING)
    alone = run(h, sizes=SIZES, lmbda=0.0)  # no decay: nothing dominates, the gap is overfitting
    assert not by_code(alone, dg.DECAY_DOMINATES) and by_code(alone, dg.OVERFITTING)

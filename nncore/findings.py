"""The eight findings of :mod:`nncore.diagnostics`: one check function each, its thresholds and its sentences.

Each check takes the run's history view (:class:`nncore.run_history._History`) and returns its
:class:`~nncore.run_history.Finding` objects; :data:`CHECKS` lists them in the order
:func:`nncore.diagnostics.diagnose` runs them. The thresholds are the constants below.

Imports only NumPy, the standard library and nncore modules.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from nncore.regularizers import CONVENTIONS, convert_lambda, decay_rate

from nncore.run_history import (
    DECAY_DOMINATES, DECAY_NEGLIGIBLE, DENOMINATOR_TRAP, LAMBDA_CONVENTIONS, NORM_EQUILIBRIUM, OVERFITTING,
    PENALTY_DRIVEN_GROWTH, STEP_TOO_LARGE, Finding, RunFacts, _History,
)

#: What each convention calls its strength (used in messages).
STRENGTH_NAMES = {"dataset": "lmbda", "per_batch": "alpha", "decoupled": "wd"}

# -- thresholds ---------------------------------------------------------------------------

#: penalty_driven_growth / denominator_trap: a total "rose" when it ended at least this
#: fraction above its lowest value (0.01: 1 %).
GROWTH_MIN_RISE = 0.01
#: penalty_driven_growth / denominator_trap: at least this many epochs between the lowest
#: total and the last epoch (a one-epoch bump is noise, not growth).
GROWTH_MIN_EPOCHS = 2

#: denominator_trap: fires when n_train / n_eval (or its inverse) is at least this (a
#: penalty rescaled by less than 5 % is not worth a finding).
TRAP_MIN_FACTOR = 1.05

#: norm_equilibrium: the decay pull / gradient push ratio is summed over the last this
#: many epochs where both are defined.
EQUILIBRIUM_WINDOW = 5
#: norm_equilibrium: at least this many epochs with both defined to judge equilibrium.
EQUILIBRIUM_MIN_EPOCHS = 3
#: norm_equilibrium: "settled" when |sum(decay pull) / sum(gradient push) - 1| <= this
#: over the window (0.2: the norm moves by at most 20 % of what the decay alone would do).
EQUILIBRIUM_TOLERANCE = 0.2
#: norm_equilibrium: RMS end/start within 1 +/- this is "about unchanged".
DIRECTION_TOLERANCE = 0.05

#: decay_dominates: a layer's weight RMS fell by at least this factor (end <= start / 10).
COLLAPSE_FACTOR = 10.0
#: decay_dominates: accuracy "near chance" when <= 1/n_classes + this (absolute).
CHANCE_MARGIN = 0.05

#: decay_negligible: the penalty's share of the train total stays below this in every
#: epoch (0.001: 0.1 %).
NEGLIGIBLE_SHARE = 1e-3

#: lambda_conventions: (label, n_train multiplier, batch_size multiplier) scenarios for
#: "the same per-step decay at another n_train or batch size".
LAMBDA_SCENARIOS = (("n_train x10", 10, 1), ("batch_size x4", 1, 4))

#: overfitting: at least this many epochs after the best eval epoch.
OVERFIT_MIN_EPOCHS = 3
#: overfitting: the accuracy gap (train - eval) widened by at least this (absolute).
OVERFIT_MIN_ACC_WIDENING = 0.02
#: overfitting: or the data-loss gap (eval - train) widened by at least this fraction of
#: the eval data loss at the best eval epoch.
OVERFIT_MIN_LOSS_WIDENING = 0.10

#: step_too_large: the oscillation test looks at the last this many epochs.
OSCILLATION_WINDOW = 10
#: step_too_large: and needs at least this many epochs (so >= 4 differences).
OSCILLATION_MIN_EPOCHS = 5
#: step_too_large: oscillating when at least this fraction of consecutive epoch-to-epoch
#: changes of the train data loss reverse direction ...
OSCILLATION_MIN_REVERSALS = 0.5
#: ... and the median |change| is at least this fraction of the median data loss.
OSCILLATION_MIN_AMPLITUDE = 0.10
#: step_too_large: diverging when the last train data loss is at least this many times its
#: lowest value.
DIVERGENCE_FACTOR = 2.0



def _g(x: float, digits: int = 4) -> str:
    """``x`` with ``digits`` significant digits (``nan`` for a missing value)."""
    if x is None or not math.isfinite(x):
        return "nan"
    return f"{x:.{digits}g}"


def _factor(x: float) -> str:
    """A multiplicative factor; one within 1e-4 of 1 is written ``1 - 5e-07`` so it does not print as 1."""
    if x is None or not math.isfinite(x):
        return "nan"
    if x != 1 and abs(1 - x) < 1e-4:
        return f"1 - {_g(1 - x, 3)}" if x < 1 else f"1 + {_g(x - 1, 3)}"
    return _g(x, 4)


def _pct(x: float) -> str:
    return f"{100 * x:.3g}%"




def _finite(*arrays: np.ndarray) -> np.ndarray:
    """Indices where every array is finite."""
    ok = np.ones(len(arrays[0]), dtype=bool)
    for a in arrays:
        ok &= np.isfinite(a)
    return np.flatnonzero(ok)


# -- the findings ---------------------------------------------------------------------------------

def _growth(h: _History, split: str) -> dict | None:
    """Window a = the epoch of the lowest total, b = the last epoch. Fires when b - a >= GROWTH_MIN_EPOCHS,
    total_b >= (1 + GROWTH_MIN_RISE) * total_a and data_b < data_a. The penalty's change is
    total change - data change (> the whole rise); with L2 it should equal (d/2) * change of sum ||W||^2."""
    total, data, pen = h.loss(split)
    idx = _finite(total, data)
    if len(idx) < GROWTH_MIN_EPOCHS + 1:
        return None
    a = idx[int(np.argmin(total[idx]))]
    b = idx[-1]
    if h.epochs[b] - h.epochs[a] < GROWTH_MIN_EPOCHS:
        return None
    rise = total[b] - total[a]
    rel = rise / abs(total[a]) if total[a] != 0 else (math.inf if rise > 0 else 0.0)
    if not (rel >= GROWTH_MIN_RISE and data[b] < data[a]):
        return None
    d_pen = pen[b] - pen[a] if np.isfinite(pen[a]) and np.isfinite(pen[b]) else rise - (data[b] - data[a])
    sq = h.sq_norm_sum()
    ev = {"start_epoch": h.epochs[a], "end_epoch": h.epochs[b], "total_start": total[a], "total_end": total[b],
          "total_rise": rise, "total_rise_fraction": rel, "data_start": data[a], "data_end": data[b],
          "data_change": data[b] - data[a], "penalty_start": pen[a], "penalty_end": pen[b],
          "penalty_change": d_pen, "penalty_share_of_rise": d_pen / rise if rise else None,
          "sq_norm_sum_start": sq[a], "sq_norm_sum_end": sq[b],
          "sq_norm_sum_ratio": sq[b] / sq[a] if np.isfinite(sq[a]) and sq[a] > 0 else None}
    if h.facts.penalty == "l2" and h.facts.active and np.isfinite(sq[a]) and np.isfinite(sq[b]):
        ev["expected_penalty_change"] = 0.5 * h.facts.decay_rate * (sq[b] - sq[a])
    return ev


def _penalty_driven_growth(h: _History) -> list[Finding]:
    sets = {s: ev for s in ("train", "eval") if (ev := _growth(h, s)) is not None}
    if not sets:
        return []
    first, ev = next(iter(sets.items()))
    norms = ""
    if ev["sq_norm_sum_ratio"] is not None:
        norms = (f" as sum ||W||^2 grew {_g(ev['sq_norm_sum_ratio'], 3)}x ({_g(ev['sq_norm_sum_start'])} -> "
                 f"{_g(ev['sq_norm_sum_end'])})")
    msg = (f"The {first} total loss rose {_pct(ev['total_rise_fraction'])} from {_g(ev['total_start'])} at epoch "
           f"{ev['start_epoch']} to {_g(ev['total_end'])} at epoch {ev['end_epoch']} while its data loss fell from "
           f"{_g(ev['data_start'])} to {_g(ev['data_end'])}: the penalty rose by {_g(ev['penalty_change'])} "
           f"({_pct(ev['penalty_share_of_rise'])} of the rise){norms}")
    if "eval" in sets and first == "train":
        e = sets["eval"]
        msg += (f"; the eval total likewise rose {_pct(e['total_rise_fraction'])} from epoch {e['start_epoch']} to "
                f"{e['end_epoch']} while its data loss fell")
    return [Finding(PENALTY_DRIVEN_GROWTH, "notice", msg + ".", {"sets": sets})]


def _denominator_trap(h: _History) -> list[Finding]:
    """trap_total_e = data_eval_e + penalty_e * n_train / n_eval: the eval total with the penalty divided by
    the evaluated set's size (network2.py's ``total_cost``, the seed code's ``evaluate``). "Rises while
    accuracy improves": from its lowest epoch a to the last epoch b (b - a >= GROWTH_MIN_EPOCHS) it grew by
    >= GROWTH_MIN_RISE and eval accuracy_b > accuracy_a."""
    f = h.facts
    if not f.active or f.n_eval is None:
        return []
    k = f.n_train / f.n_eval
    if max(k, 1 / k) < TRAP_MIN_FACTOR:
        return []
    total, data, pen = h.loss("eval")
    idx = _finite(data, pen)
    if len(idx) == 0:
        return []
    trap = data + pen * k
    acc = h.get("eval/accuracy")
    b = idx[-1]
    ev: dict[str, Any] = {
        "factor": k, "n_train": f.n_train, "n_eval": f.n_eval, "epochs": h.epochs[idx].tolist(),
        "eval_total": total[idx].tolist(), "trap_total": trap[idx].tolist(), "last_epoch": h.epochs[b],
        "eval_total_last": total[b], "trap_total_last": trap[b], "rises_while_accuracy_improves": False,
    }
    a = idx[int(np.argmin(trap[idx]))]
    rel = (trap[b] - trap[a]) / abs(trap[a]) if trap[a] != 0 else 0.0
    rises = bool(h.epochs[b] - h.epochs[a] >= GROWTH_MIN_EPOCHS and rel >= GROWTH_MIN_RISE
                 and np.isfinite(acc[a]) and np.isfinite(acc[b]) and acc[b] > acc[a])
    ev.update(trap_min_epoch=h.epochs[a], trap_total_min=trap[a], trap_rise_fraction=rel,
              eval_total_at_trap_min=total[a], accuracy_at_trap_min=acc[a], accuracy_last=acc[b],
              rises_while_accuracy_improves=rises)
    msg = (f"Divided by the {f.n_eval} evaluated rows instead of the {f.n_train} training rows (network2.py's "
           f"total_cost), the penalty would be {_g(k, 3)}x (n_train/n_eval) its value and the eval total at epoch "
           f"{h.epochs[b]} would read {_g(trap[b])} instead of {_g(total[b])}")
    if rises:
        msg += (f", rising {_pct(rel)} from epoch {h.epochs[a]} ({_g(trap[a])}) while eval accuracy improves from "
                f"{_g(acc[a], 3)} to {_g(acc[b], 3)}.")
    else:
        msg += "; that total would not rise while accuracy improves."
    return [Finding(DENOMINATOR_TRAP, "notice" if rises else "info", msg, ev)]


def _pull_push(h: _History, layer: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-epoch ``(decay_pull, grad_push, decay_to_grad)`` of ``layer``: the recorded keys where
    present, else recomputed: pull = -ln f, push = ln(r/f), r = ||W_e||/||W_(e-1)|| (L2 only)."""
    p = f"layer{layer}/"
    pull, push, ratio = h.get(p + "decay_pull"), h.get(p + "grad_push"), h.get(p + "decay_to_grad")
    if h.facts.penalty == "l2":
        f = h.get("train/decay_factor")
        fro = h.fro(layer)
        with np.errstate(divide="ignore", invalid="ignore"):
            c_pull = np.where(f > 0, -np.log(f), np.nan)
            prev = np.concatenate([[np.nan], fro[:-1]])
            consecutive = np.concatenate([[False], np.diff(h.epochs) == 1])
            r = np.where(consecutive & (prev > 0), fro / prev, np.nan)
            c_push = np.where(r > 0, np.log(r), np.nan) - np.where(f > 0, np.log(f), np.nan)
        pull = np.where(np.isfinite(pull), pull, c_pull)
        push = np.where(np.isfinite(push), push, c_push)
    with np.errstate(divide="ignore", invalid="ignore"):
        computed = np.where(push != 0, pull / push, np.nan)
    ratio = np.where(np.isfinite(ratio), ratio, computed)
    return pull, push, ratio


def _norm_equilibrium(h: _History) -> list[Finding]:
    """Per layer: window ratio = sum(decay_pull) / sum(grad_push) over the last EQUILIBRIUM_WINDOW epochs
    where both are defined (L2 only); settled when |ratio - 1| <= EQUILIBRIUM_TOLERANCE. Direction: weight
    RMS at the last epoch / at the first recorded one (epoch 0 when present). Scales: RMS * sqrt(n_in) and
    RMS * sqrt(N), N = all weights of the network (the rms_vs_* keys when recorded)."""
    f = h.facts
    out = []
    for layer in range(1, h.n_layers + 1):
        rms = h.rms(layer)
        idx = _finite(rms)
        if len(idx) < 2:
            continue
        a, b = idx[0], idx[-1]
        change = rms[b] / rms[a] if rms[a] > 0 else math.inf
        direction = ("grew" if change > 1 + DIRECTION_TOLERANCE else "shrank" if change < 1 - DIRECTION_TOLERANCE
                     else "stayed about the same")
        ev: dict[str, Any] = {"start_epoch": h.epochs[a], "end_epoch": h.epochs[b], "rms_start": rms[a],
                              "rms_end": rms[b], "rms_ratio": change, "direction": direction}
        # reference scales
        sizes = f.sizes
        vs_fan_in, vs_n = h.get(f"layer{layer}/rms_vs_fan_in")[b], h.get(f"layer{layer}/rms_vs_n_weights")[b]
        if sizes is not None:
            n_in, n_total = sizes[layer - 1], sum(i * o for i, o in zip(sizes[:-1], sizes[1:]))
            if not np.isfinite(vs_fan_in):
                vs_fan_in = rms[b] * math.sqrt(n_in)
            if not np.isfinite(vs_n):
                vs_n = rms[b] * math.sqrt(n_total)
            ev.update(n_in=n_in, n_weights_total=n_total, fan_in_scale=1 / math.sqrt(n_in),
                      n_weights_scale=1 / math.sqrt(n_total))
        ev.update(rms_vs_fan_in=vs_fan_in, rms_vs_n_weights=vs_n)
        # decay pull against gradient push
        settled: bool | None = None
        if f.active and f.penalty == "l2":
            pull, push, ratio = _pull_push(h, layer)
            both = _finite(pull, push)[-EQUILIBRIUM_WINDOW:]
            if len(both) >= EQUILIBRIUM_MIN_EPOCHS:
                s_pull, s_push = float(pull[both].sum()), float(push[both].sum())
                window_ratio = s_pull / s_push if s_push != 0 else math.inf
                settled = abs(window_ratio - 1) <= EQUILIBRIUM_TOLERANCE
                ev.update(window_epochs=h.epochs[both].tolist(), decay_pull=pull[both].tolist(),
                          grad_push=push[both].tolist(), decay_to_grad=ratio[both].tolist(),
                          window_ratio=window_ratio, tolerance=EQUILIBRIUM_TOLERANCE)
                span = f"over epochs {h.epochs[both[0]]}-{h.epochs[both[-1]]}"
                if settled:
                    head = (f"layer{layer} is at norm equilibrium: {span} decay pull / gradient push = "
                            f"{_g(window_ratio, 3)} (within {EQUILIBRIUM_TOLERANCE:g} of 1)")
                else:
                    why = ("the decay still pulls the norm down" if window_ratio > 1 else
                           "the gradient steps shrink the norm too" if window_ratio < 0 else
                           "the gradient still pushes the norm up")
                    head = (f"layer{layer} is not at norm equilibrium: {span} decay pull / gradient push = "
                            f"{_g(window_ratio, 3)} ({why})")
            else:
                head = (f"layer{layer}: too few epochs ({len(both)} < {EQUILIBRIUM_MIN_EPOCHS}) with decay pull and "
                        "gradient push to judge norm equilibrium")
        elif f.active:
            head = f"layer{layer} has no multiplicative decay to balance (L1 penalty)"
        else:
            head = f"layer{layer} has no weight decay to balance (no penalty)"
        ev["settled"] = settled
        ratio_txt = f"{_g(change, 3)}x" if direction != "stayed about the same" else f"x{_g(change, 3)}"
        msg = (f"{head}; its weight RMS {direction} ({ratio_txt}) from epoch {h.epochs[a]} to {h.epochs[b]} "
               f"({_g(rms[a], 3)} -> {_g(rms[b], 3)})")
        if np.isfinite(vs_fan_in) or np.isfinite(vs_n):
            parts = []
            if np.isfinite(vs_fan_in):
                parts.append(f"{_g(vs_fan_in, 3)}x 1/sqrt(n_in" + (f"={n_in})" if sizes is not None else ")"))
            if np.isfinite(vs_n):
                parts.append(f"{_g(vs_n, 3)}x 1/sqrt(N" + (f"={n_total})" if sizes is not None else ")"))
            msg += ", ending at " + " and ".join(parts)
        out.append(Finding(NORM_EQUILIBRIUM, "info", msg + ".", ev, layer=layer))
    return out


def _decay_dominates(h: _History) -> list[Finding]:
    """A penalty, sizes known, final accuracy (eval, else train) <= 1/sizes[-1] + CHANCE_MARGIN and some
    layer's RMS start / end >= COLLAPSE_FACTOR (start: the first recorded epoch; without epoch 0, the
    default init scale 1/sqrt(n_in) when larger, since the collapse may be over within epoch 1)."""
    f = h.facts
    if not f.active or f.sizes is None:
        return []
    which, acc = h.accuracy()
    idx_acc = _finite(acc)
    if len(idx_acc) == 0:
        return []
    n_classes = f.sizes[-1]
    chance = 1.0 / n_classes
    last_acc = float(acc[idx_acc[-1]])
    if last_acc > chance + CHANCE_MARGIN:
        return []
    falls = []
    for layer in range(1, h.n_layers + 1):
        rms = h.rms(layer)
        idx = _finite(rms)
        if len(idx) == 0:
            continue
        a, b = idx[0], idx[-1]
        start, reference = rms[a], f"epoch {h.epochs[a]}"
        if h.epochs[a] > 0:  # no epoch 0: the default init scale 1/sqrt(n_in) stands in if larger
            init = 1 / math.sqrt(f.sizes[layer - 1])
            if init > start:
                start, reference = init, "the default init scale 1/sqrt(n_in)"
        fall = start / rms[b] if rms[b] > 0 else math.inf
        falls.append({"layer": layer, "start": start, "reference": reference, "start_epoch": h.epochs[a],
                      "end": rms[b], "end_epoch": h.epochs[b], "fall_factor": fall})
    collapsed = [x for x in falls if x["fall_factor"] >= COLLAPSE_FACTOR]
    if not collapsed:
        return []
    worst = max(collapsed, key=lambda x: x["fall_factor"])
    dfac = h.get("train/decay_factor")
    min_f = float(np.nanmin(dfac)) if np.any(np.isfinite(dfac)) else math.nan
    ev = {"layers": falls, "collapsed_layers": [x["layer"] for x in collapsed], "accuracy_set": which,
          "accuracy": last_acc, "accuracy_epoch": h.epochs[idx_acc[-1]], "n_classes": n_classes,
          "chance": chance, "min_decay_factor": min_f, "decay_rate": f.decay_rate,
          "step_factor": 1 - f.eta * f.decay_rate}
    msg = (f"Weight decay dominates: layer{worst['layer']} weight RMS fell {_g(worst['fall_factor'], 3)}x "
           f"(from {_g(worst['start'], 3)} at {worst['reference']} to {_g(worst['end'], 3)} at epoch "
           f"{worst['end_epoch']}) and {which} accuracy is {_g(last_acc, 3)}, near chance 1/{n_classes} = "
           f"{_g(chance, 3)} (n_classes = sizes[-1]); each step multiplies the weights by "
           f"{_factor(1 - f.eta * f.decay_rate)} (eta={_g(f.eta)}, {STRENGTH_NAMES[f.convention]}={_g(f.lmbda)} "
           f"({f.convention}))")
    if np.isfinite(min_f):
        msg += f", the decay alone by {_g(min_f, 3)} per epoch"
    return [Finding(DECAY_DOMINATES, "warning", msg + ".", ev)]


def _decay_negligible(h: _History) -> list[Finding]:
    """A penalty whose share of the train total (train/penalty_share, else penalty / total) stays below
    NEGLIGIBLE_SHARE in every recorded epoch."""
    f = h.facts
    if not f.active:
        return []
    share = h.penalty_share("train")
    idx = _finite(share)
    if len(idx) == 0 or np.max(share[idx]) >= NEGLIGIBLE_SHARE:
        return []
    top = idx[int(np.argmax(share[idx]))]
    ev = {"epochs": h.epochs[idx].tolist(), "penalty_share": share[idx].tolist(), "max_share": share[top],
          "max_share_epoch": h.epochs[top], "threshold": NEGLIGIBLE_SHARE}
    msg = (f"The {f.penalty.upper()} penalty stayed below {_pct(NEGLIGIBLE_SHARE)} of the train total in every "
           f"epoch (at most {_pct(share[top])}, at epoch {h.epochs[top]}): with "
           f"{STRENGTH_NAMES[f.convention]}={_g(f.lmbda)} ({f.convention}) "
           "the decay barely affects training.")
    return [Finding(DECAY_NEGLIGIBLE, "notice", msg, ev)]


def _epoch_factor(f: RunFacts, n: int, m: int, lmbda: float) -> float | None:
    """Per-epoch L2 decay factor prod(1 - eta*d_step/(1-mu)) at (n, m) for ``lmbda`` in the run's
    convention, the last partial batch included (alpha/m' under per_batch); None for L1."""
    if f.penalty != "l2":
        return None
    d = decay_rate(lmbda, f.convention, n_train=n, batch_size=m)
    scale = f.eta / (1 - f.momentum)
    full, rest = divmod(n, m)
    factor = (1 - scale * d) ** full
    if rest:
        d_last = lmbda / rest if f.convention == "per_batch" else d
        factor *= 1 - scale * d_last
    return factor


def _lambda_conventions(h: _History) -> list[Finding]:
    """The run's strength in all three conventions (same per-step decay d, :func:`convert_lambda`); for
    each LAMBDA_SCENARIOS entry, the value in the run's convention giving the same d at the scaled
    n_train / batch_size. per_batch is exact only when n % m == 0 (the last batch of m' = n % m rows
    decays by alpha/m')."""
    f = h.facts
    if not f.active:
        return []
    n, m = f.n_train, f.batch_size
    values = {c: convert_lambda(f.lmbda, from_convention=f.convention, to_convention=c, n_train=n, batch_size=m)
              for c in CONVENTIONS}
    d = f.decay_rate
    steps = math.ceil(n / m)
    ev: dict[str, Any] = {"convention": f.convention, "lmbda": f.lmbda, "values": values, "decay_rate": d,
                          "step_factor": 1 - f.eta * d if f.penalty == "l2" else None,
                          "steps_per_epoch": steps, "epoch_factor": _epoch_factor(f, n, m, f.lmbda),
                          "momentum": f.momentum}
    scen = []
    for label, nf, mf in LAMBDA_SCENARIOS:
        n2, m2 = n * nf, m * mf
        if m2 > n2:
            continue
        needed = convert_lambda(d, from_convention="decoupled", to_convention=f.convention, n_train=n2,
                                batch_size=m2)
        scen.append({"label": label, "n_train": n2, "batch_size": m2, "lmbda_needed": needed,
                     "epoch_factor_needed": _epoch_factor(f, n2, m2, needed),
                     "epoch_factor_same_lmbda": _epoch_factor(f, n2, m2, f.lmbda)})
    ev["scenarios"] = scen
    rest = n % m
    ev["per_batch_exact"] = rest == 0
    if rest:
        ev["last_batch_rows"] = rest
        ev["last_batch_decay_rate_per_batch"] = values["per_batch"] / rest
    name = STRENGTH_NAMES[f.convention]
    others = [c for c in CONVENTIONS if c != f.convention]
    msg = (f"{name}={_g(f.lmbda)} ({f.convention}) is "
           + " and ".join(f"{STRENGTH_NAMES[c]}={_g(values[c])} ({c})" for c in others)
           + f", a per-step decay rate of {_g(d)}")
    if f.penalty == "l2":
        msg += (f" (factor {_factor(1 - f.eta * d)} per step, {_factor(ev['epoch_factor'])} per epoch of "
                f"{steps} steps)")
    if scen:
        msg += "; the same per-step decay needs " + " and ".join(
            f"{name}={_g(s['lmbda_needed'])} at "
            + (f"n_train={s['n_train']}" if s["n_train"] != n else f"batch_size={s['batch_size']}") for s in scen)
    if rest:
        msg += (f"; per_batch matches the others only on full batches here: n_train % batch_size = {rest}, so "
                f"under per_batch the last batch of {rest} rows decays by alpha/{rest} = "
                f"{_g(values['per_batch'] / rest)} instead of {_g(d)}")
    if f.momentum > 0:
        msg += f" (momentum {_g(f.momentum)}: per-epoch factors use eta*d/(1-mu), an approximation)"
    return [Finding(LAMBDA_CONVENTIONS, "info", msg + ".", ev)]


def _overfitting(h: _History) -> list[Finding]:
    """Window a = the epoch of the lowest eval data loss (else the highest eval accuracy), b = the last
    epoch. Fires when b - a >= OVERFIT_MIN_EPOCHS, the train data loss fell, and the accuracy gap
    (train - eval) widened by >= OVERFIT_MIN_ACC_WIDENING or the data-loss gap (eval - train) by
    >= OVERFIT_MIN_LOSS_WIDENING * eval data loss at a."""
    _, tr_data, _ = h.loss("train")
    _, ev_data, _ = h.loss("eval")
    tr_acc, ev_acc = h.get("train/accuracy"), h.get("eval/accuracy")
    idx = _finite(tr_data, ev_data)
    by = "eval data loss"
    if len(idx) >= 2:
        a = idx[int(np.argmin(ev_data[idx]))]
    else:
        idx = _finite(tr_data, ev_acc)
        if len(idx) < 2:
            return []
        a, by = idx[int(np.argmax(ev_acc[idx]))], "eval accuracy"
    b = idx[-1]
    if h.epochs[b] - h.epochs[a] < OVERFIT_MIN_EPOCHS or not tr_data[b] < tr_data[a]:
        return []
    acc_gap_a, acc_gap_b = tr_acc[a] - ev_acc[a], tr_acc[b] - ev_acc[b]
    loss_gap_a, loss_gap_b = ev_data[a] - tr_data[a], ev_data[b] - tr_data[b]
    acc_wid = acc_gap_b - acc_gap_a
    loss_wid = (loss_gap_b - loss_gap_a) / abs(ev_data[a]) if np.isfinite(ev_data[a]) and ev_data[a] != 0 else math.nan
    by_acc = bool(np.isfinite(acc_wid) and acc_wid >= OVERFIT_MIN_ACC_WIDENING)
    by_loss = bool(np.isfinite(loss_wid) and loss_wid >= OVERFIT_MIN_LOSS_WIDENING)
    if not (by_acc or by_loss):
        return []
    ev = {"start_epoch": h.epochs[a], "end_epoch": h.epochs[b], "start_chosen_by": by,
          "train_data_start": tr_data[a], "train_data_end": tr_data[b], "eval_data_start": ev_data[a],
          "eval_data_end": ev_data[b], "accuracy_gap_start": acc_gap_a, "accuracy_gap_end": acc_gap_b,
          "accuracy_gap_widening": acc_wid, "loss_gap_start": loss_gap_a, "loss_gap_end": loss_gap_b,
          "loss_gap_widening_fraction": loss_wid, "by_accuracy": by_acc, "by_loss": by_loss}
    best = f"best {by} {_g(ev_data[a] if by == 'eval data loss' else ev_acc[a])}"
    msg = (f"From epoch {h.epochs[a]} ({best}) to epoch {h.epochs[b]} the train data loss fell from "
           f"{_g(tr_data[a])} to {_g(tr_data[b])}")
    if np.isfinite(ev_data[a]) and np.isfinite(ev_data[b]):
        msg += f" while the eval data loss went from {_g(ev_data[a])} to {_g(ev_data[b])}"
    clauses = []
    if np.isfinite(acc_wid):
        clauses.append(f"the accuracy gap (train - eval) went from {_g(acc_gap_a, 3)} to {_g(acc_gap_b, 3)}")
    if np.isfinite(loss_wid):
        clauses.append(f"the data-loss gap (eval - train) from {_g(loss_gap_a)} to {_g(loss_gap_b)}")
    msg += "; " + " and ".join(clauses) + ": the model is overfitting."
    return [Finding(OVERFITTING, "notice", msg, ev)]


def _step_too_large(h: _History) -> list[Finding]:
    """Diverging: the last train data loss >= DIVERGENCE_FACTOR * its lowest earlier value (inf counts).
    Oscillating: over the last OSCILLATION_WINDOW epochs (>= OSCILLATION_MIN_EPOCHS), the fraction of
    consecutive non-zero changes that reverse sign >= OSCILLATION_MIN_REVERSALS and median |change| /
    median level >= OSCILLATION_MIN_AMPLITUDE."""
    _, data, _ = h.loss("train")
    idx = np.flatnonzero(~np.isnan(data))
    if len(idx) < 2:
        return []
    f = h.facts
    vals = data[idx]
    # diverging: the last value far above the lowest one
    lo = int(np.argmin(np.where(np.isfinite(vals), vals, np.inf)))
    last = vals[-1]
    if np.isfinite(vals[lo]) and vals[lo] > 0 and lo < len(vals) - 1 and last / vals[lo] >= DIVERGENCE_FACTOR:
        factor = last / vals[lo]
        ev = {"kind": "diverging", "min_epoch": h.epochs[idx[lo]], "min_data_loss": vals[lo],
              "last_epoch": h.epochs[idx[-1]], "last_data_loss": last, "factor": factor,
              "threshold": DIVERGENCE_FACTOR, "eta": f.eta}
        msg = (f"The train data loss rose {_g(factor, 3)}x from its lowest value {_g(vals[lo])} at epoch "
               f"{h.epochs[idx[lo]]} to {_g(last)} at epoch {h.epochs[idx[-1]]}: the step size eta={_g(f.eta)} "
               "is probably too large.")
        return [Finding(STEP_TOO_LARGE, "warning", msg, ev)]
    # oscillating: frequent reversals with a large amplitude over the last epochs
    w = idx[-OSCILLATION_WINDOW:]
    v = data[w]
    if len(w) < OSCILLATION_MIN_EPOCHS or not np.all(np.isfinite(v)):
        return []
    diffs = np.diff(v)
    signs = np.sign(diffs[diffs != 0])
    if len(signs) < 2:
        return []
    reversals = int(np.sum(signs[1:] != signs[:-1]))
    frac = reversals / (len(signs) - 1)
    level = float(np.median(v))
    amp = float(np.median(np.abs(diffs))) / level if level > 0 else math.inf
    if frac >= OSCILLATION_MIN_REVERSALS and amp >= OSCILLATION_MIN_AMPLITUDE:
        ev = {"kind": "oscillating", "epochs": h.epochs[w].tolist(), "data_loss": v.tolist(),
              "reversals": reversals, "changes": len(signs) - 1, "reversal_fraction": frac,
              "median_abs_change": float(np.median(np.abs(diffs))), "median_level": level,
              "relative_amplitude": amp, "eta": f.eta}
        msg = (f"The train data loss oscillated over epochs {h.epochs[w[0]]}-{h.epochs[w[-1]]}: {reversals} of "
               f"{len(signs) - 1} consecutive changes reversed direction, with a median change of {_pct(amp)} "
               f"of its level ({_g(level)}): the step size eta={_g(f.eta)} is probably too large.")
        return [Finding(STEP_TOO_LARGE, "warning", msg, ev)]
    return []


#: The checks, in the order :func:`nncore.diagnostics.diagnose` runs them.
CHECKS = (_step_too_large, _decay_dominates, _penalty_driven_growth, _overfitting, _decay_negligible,
          _denominator_trap, _norm_equilibrium, _lambda_conventions)

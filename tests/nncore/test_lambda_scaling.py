"""nncore.lambda_scaling: synthetic studies whose true optimum is constant in a known convention."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nncore.lambda_scaling import TIE_DECADES, lambda_scaling

GRID = np.logspace(-3, 3, 121)  # 20 lambdas per decade: quantization 0.05 decades


def study(optimum: float, true_convention: str, sampled_convention: str, groups: list[tuple[int, int]]):
    """Every group tries GRID in ``sampled_convention``; the value peaks where the decay rate equals
    the rate of ``optimum`` in ``true_convention`` (a smooth bowl in log space)."""
    lam, m, n, val = [], [], [], []
    for batch, n_train in groups:
        target = {"dataset": optimum / n_train, "per_batch": optimum / batch, "decoupled": optimum}[true_convention]
        for x in GRID:
            rate = {"dataset": x / n_train, "per_batch": x / batch, "decoupled": x}[sampled_convention]
            lam.append(x), m.append(batch), n.append(n_train)
            val.append(0.95 - 0.1 * (math.log10(rate) - math.log10(target)) ** 2)
    return lam, m, n, val


def test_optimum_constant_in_the_dataset_convention_is_named():
    groups = [(10, 500), (10, 2000), (40, 500), (40, 2000), (100, 8000)]
    lam, m, n, val = study(5.0, "dataset", "per_batch", groups)
    out = lambda_scaling(lam, "per_batch", m, n, val, maximize=True)
    assert out is not None and out.steadiest == ("dataset",)
    assert out.varies == ("batch_size", "n_train")
    assert out.spread["dataset"] <= 0.05 + 1e-9
    # per_batch optimum = 5*m/n: log10 range over the groups, by hand
    expected = max(math.log10(5 * b / t) for b, t in groups) - min(math.log10(5 * b / t) for b, t in groups)
    assert out.spread["per_batch"] == pytest.approx(expected, abs=0.06)
    for g in out.groups:
        assert g.best["dataset"] == pytest.approx(5.0, rel=0.13)  # within one grid step
        assert g.best["per_batch"] == pytest.approx(g.best["dataset"] * g.batch_size / g.n_train)
        assert g.best["decoupled"] == pytest.approx(g.best["dataset"] / g.n_train)
        assert g.n_trials == len(GRID)
    assert "dataset" in out.message and "keep dataset lambda fixed" in out.message


def test_optimum_constant_per_batch_when_only_the_batch_size_varies():
    lam, m, n, val = study(0.02, "per_batch", "dataset", [(10, 1000), (50, 1000), (200, 1000)])
    out = lambda_scaling(lam, "dataset", m, n, val, maximize=True)
    assert out.varies == ("batch_size",) and out.steadiest == ("per_batch",)
    # dataset and decoupled move together by the factor 200/10 between the extreme groups
    assert out.spread["dataset"] == pytest.approx(math.log10(20), abs=0.06)
    assert out.spread["decoupled"] == pytest.approx(out.spread["dataset"], abs=1e-9)


def test_per_batch_and_decoupled_tie_when_only_n_train_varies():
    lam, m, n, val = study(1e-3, "decoupled", "decoupled", [(10, 500), (10, 1000), (10, 4000)])
    out = lambda_scaling(lam, "decoupled", m, n, val, maximize=True)
    assert out.varies == ("n_train",) and out.steadiest == ("per_batch", "decoupled")
    assert out.spread["dataset"] == pytest.approx(math.log10(8), abs=0.06)
    assert out.spread["dataset"] > TIE_DECADES


def test_minimizing_a_loss_picks_the_lowest_value():
    lam, m, n, val = study(5.0, "dataset", "dataset", [(10, 500), (40, 1000)])
    out = lambda_scaling(lam, "dataset", m, n, [-v for v in val], maximize=False)
    assert out.steadiest == ("dataset",)
    flipped = lambda_scaling(lam, "dataset", m, n, [-v for v in val], maximize=True)  # the worst lambdas
    assert {g.best["dataset"] for g in flipped.groups} != {g.best["dataset"] for g in out.groups}


def test_non_finite_values_are_ignored_and_lambda_zero_groups_are_noted():
    lam = [0.0, 1.0, 2.0, 0.0, 1.0, 4.0, 8.0]
    m = [10, 10, 10, 20, 20, 20, 20]
    n = [100, 100, 100, 100, 100, 200, 200]
    val = [0.9, 0.5, float("nan"), 0.8, 0.1, 0.7, 0.6]
    out = lambda_scaling(lam, "dataset", m, n, val, maximize=True)
    assert out is None  # (10, 100) and (20, 100) are won by lambda 0: one group left
    val[3] = 0.0
    out = lambda_scaling(lam, "dataset", m, n, val, maximize=True)
    assert [(g.batch_size, g.n_train, g.best["dataset"]) for g in out.groups] == [(20, 100, 1.0), (20, 200, 4.0)]
    assert "batch_size=10, n_train=100: the best trial had lambda 0 (left out)" == out.notes[0]
    assert [g.at_edge for g in out.groups] == ["highest", "lowest"] and len(out.notes) == 3
    assert out.spread["dataset"] == pytest.approx(math.log10(4))


def test_mixed_conventions_are_compared_on_the_decay_rate():
    # the same decay rate 0.01 written in two conventions: one group each
    out = lambda_scaling([5.0, 0.1], ["dataset", "per_batch"], [10, 10], [500, 500], [1.0, 1.0], maximize=True)
    assert out is None  # one group only
    out = lambda_scaling([5.0, 0.1], ["dataset", "per_batch"], [10, 10], [500, 1000], [1.0, 1.0], maximize=True)
    assert [g.decay_rate for g in out.groups] == pytest.approx([0.01, 0.01])  # 5/500 and 0.1/10
    assert out.spread["decoupled"] == pytest.approx(0.0) and out.spread["dataset"] == pytest.approx(math.log10(2))


@pytest.mark.parametrize("kwargs, match", [
    (dict(batch_size=[10, 600]), "batch_size must be <= n_train, got batch_size=600 for n_train=500"),
    (dict(lmbda=[1.0, -1.0]), "lmbda must be finite and >= 0, got -1.0"),
    (dict(convention="l2"), "convention"),
    (dict(value=[1.0]), "value must have one entry per trial"),
    (dict(n_train=[0, 500]), "batch_size and n_train must be >= 1"),
])
def test_bad_input_is_refused_with_the_field_named(kwargs, match):
    args = dict(lmbda=[1.0, 2.0], convention="dataset", batch_size=[10, 10], n_train=[500, 500], value=[0.1, 0.2])
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        lambda_scaling(**args, maximize=True)


def test_to_dict_is_json_ready():
    import json

    lam, m, n, val = study(5.0, "dataset", "dataset", [(10, 500), (40, 1000)])
    out = lambda_scaling(lam, "dataset", m, n, val, maximize=True)
    again = json.loads(json.dumps(out.to_dict()))
    assert again["steadiest"] == ["dataset"] and len(again["groups"]) == 2 and "best_per_batch" in again["groups"][0]


def test_an_optimum_at_the_edge_of_the_lambdas_tried_is_noted():
    lam = [1.0, 2.0, 4.0, 1.0, 2.0, 4.0, 1.0, 2.0, 4.0]
    m = [10] * 9
    n = [100] * 3 + [200] * 3 + [400] * 3
    val = [0.9, 0.5, 0.1, 0.5, 0.9, 0.1, 0.1, 0.5, 0.9]  # best: lowest, middle, highest
    out = lambda_scaling(lam, "dataset", m, n, val, maximize=True)
    assert [g.at_edge for g in out.groups] == ["lowest", None, "highest"]
    assert out.notes == ("batch_size=10, n_train=100: the best lambda is the lowest tried (the optimum may lie below "
                         "the range)", "batch_size=10, n_train=400: the best lambda is the highest tried (the optimum "
                         "may lie above the range)")

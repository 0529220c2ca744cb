"""nncore.population_step: the stacked SGD step against train()'s SGD, member by member, bit for bit; where one
fused product may replace K per-member ones; a stack of one is train()'s SGD itself."""

from __future__ import annotations

import numpy as np
import pytest

from nncore import Network, TrainConfig
from nncore.population_step import _group_key, _Stack, fusable
from nncore.train import SGD, check_data

SIZES = [6, 7, 4]


def _setup(configs, n=53, seed=5):
    rng = np.random.default_rng(seed)
    nets = [Network(SIZES, rng=np.random.default_rng(100 + i)) for i in range(len(configs))]
    X, Y = check_data(nets[0], rng.random((n, SIZES[0])), rng.integers(0, SIZES[-1], n), "training")
    return nets, X, Y


CONFIGS = [TrainConfig(eta=0.3, batch_size=5, lmbda=2.0, penalty=pen, convention=conv, momentum=mu)
           for pen in ("none", "l2", "l1") for conv in ("dataset", "decoupled") for mu in (0.0, 0.6)]


def test_a_stacked_epoch_equals_each_members_own_sgd_epoch_bit_for_bit():
    nets, X, Y = _setup(CONFIGS)
    n, m = len(X), CONFIGS[0].batch_size
    alone = [net.copy() for net in nets]
    order = np.random.default_rng(3).permutation(n)
    members = sorted(range(len(nets)), key=lambda k: _group_key(CONFIGS[k]))  # as train_population orders them
    stack = _Stack(members, nets, CONFIGS, n, m)
    eta = np.array([CONFIGS[k].eta for k in members])
    xbuf, ybuf = np.empty((m, SIZES[0])), np.empty((m, SIZES[-1]))
    factors = stack.epoch(X, Y, eta, order, xbuf, ybuf)
    stack.write_back()
    for p, k in enumerate(members):
        cfg = CONFIGS[k]
        want = SGD(alone[k], m, cfg.regularizer, cfg.momentum).epoch(X, Y, cfg.eta, order)
        assert factors[p] == want, k  # the decay factor, multiplied step by step as SGD does
        for a, b in zip(nets[k].weights + nets[k].biases, alone[k].weights + alone[k].biases):
            assert np.array_equal(a, b), k


def test_a_stack_of_one_is_trains_own_sgd_on_the_networks_arrays():
    nets, X, Y = _setup(CONFIGS[:1])
    stack = _Stack([0], nets, CONFIGS[:1], len(X), 5)
    assert isinstance(stack.single, SGD)
    assert all(np.shares_memory(w, net_w) for w, net_w in zip(stack.W, nets[0].weights))


def test_keeping_members_drops_the_others_and_keeps_their_weights():
    nets, X, Y = _setup(CONFIGS[:4])
    stack = _Stack([0, 1, 2, 3], nets, CONFIGS[:4], len(X), 5)
    stack.keep([1, 3])
    assert stack.members == [1, 3] and stack.size == 2
    for p, k in enumerate(stack.members):
        assert np.array_equal(stack.W[0][p], nets[k].weights[0])


@pytest.mark.parametrize("shape", [(4, 30, 64, 10), (4, 30, 64, 100), (8, 30, 784, 100), (3, 7, 6, 5)])
def test_fusable_forward_says_whether_the_fused_product_rounds_like_the_per_member_ones(shape):
    k, rows, n_in, cols = shape
    rng = np.random.default_rng(7)  # other values than the probe's: kernels are chosen by shape, not values
    W, x = rng.standard_normal((k, rows, n_in)), rng.standard_normal((cols, n_in))
    same = np.array_equal(np.matmul(W, x.T).reshape(k * rows, cols), W.reshape(k * rows, n_in) @ x.T)
    assert fusable("forward", k, rows, n_in, cols, np.dtype("float64"), timed=False) == same


def test_fusable_never_fuses_the_gradient_or_a_single_member():
    assert not fusable("gradient", 4, 30, 64, 10, np.dtype("float64"))
    assert not fusable("forward", 1, 30, 64, 100, np.dtype("float64"), timed=False)

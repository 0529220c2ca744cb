"""Trial-epochs per second: one population of K vs K separate train() calls (one BLAS thread).

The same K configurations (eta and lambda spread over a stable range, full records: eval set,
gradient norms, epoch 0) are trained both ways, side by side in one process: each repeat times
every member's ``train()`` call and then ``train_population`` for every K, alternating, and the
medians over the repeats are compared. ``train()`` times are per member, so "K separate calls" is
the sum over the first K members (the members of the K-population). Cases (issue 8, "Core"):

* ``digits``: scikit-learn's 8x8 digits (1,500 train / 297 eval), [64, 30, 10], batch 10;
* ``mnist-b10``/``mnist-b100``: MNIST-8k (the t10k file: first 8,000 train, last 2,000 eval),
  [784, 30, 10], batch 10 / 100 (data from ``../shared/data/mnist-t10k`` or ``$NNCORE_MNIST_T10K``).

    python benchmarks/bench_population.py [--quick] [--cases digits mnist-b10 mnist-b100]
        [--ks 1 4 16 32 64] [--epochs N] [--repeats R] [--dtype float64|float32] [--check] [--no-gradients]

``--quick``: K in {1, 4, 32}, fewer epochs and repeats (a few minutes on one core).
``--check``: also assert that every member's records equal train()'s, bit for bit.
``--no-gradients``: ``track_gradients=False`` (not the issue's setting: shows what the full-set
gradient pass of every epoch costs). The K=1 row adds paired, alternating runs (``--pair-repeats``).
Targets (issue 8): digits >= 6x at K=32; MNIST-8k >= 1.5x (batch 10) and >= 2.5x (batch 100);
a population of 1 within 5% of train().
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
             "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nncore import Network, TrainConfig, train  # noqa: E402
from nncore.population import train_population  # noqa: E402

MNIST_DIR = Path(os.environ.get("NNCORE_MNIST_T10K", ROOT.parent / "shared/data/mnist-t10k"))

#: case -> (data set, sizes, batch size, target ratio at the target K, target K)
CASES = {
    "digits": ("digits", [64, 30, 10], 10, 6.0, 32),
    "mnist-b10": ("mnist", [784, 30, 10], 10, 1.5, None),
    "mnist-b100": ("mnist", [784, 30, 10], 100, 2.5, None),
}


def load(name: str, dtype: str):
    from nncore import datasets

    if name == "digits":
        d = datasets.load_digits(dtype=dtype)
    else:
        d = datasets.load_mnist(MNIST_DIR, n_train=8000, n_eval=2000, dtype=dtype)
    return d.train.X, d.train.Y, d.eval.X, d.eval.Y


def member_configs(k_max: int, m: int, epochs: int, track_gradients: bool = True) -> list[TrainConfig]:
    g = np.random.default_rng(42)
    return [TrainConfig(eta=float(g.uniform(0.1, 1.0)), lmbda=float(g.uniform(0.5, 10.0)), batch_size=m,
                        epochs=epochs, track_gradients=track_gradients) for _ in range(k_max)]


def networks(k: int, sizes: list[int], dtype: str) -> list[Network]:
    return [Network(sizes, dtype=dtype, rng=np.random.default_rng(1000 + i)) for i in range(k)]


def run_case(case: str, ks: list[int], epochs: int, repeats: int, dtype: str, check: bool,
             track_gradients: bool = True, pair_repeats: int = 7) -> list[dict]:
    data_name, sizes, m, _, _ = CASES[case]
    X, Y, Xe, Ye = load(data_name, dtype)
    k_max = max(ks)
    cfgs = member_configs(k_max, m, epochs, track_gradients)
    t_train: list[list[float]] = [[] for _ in range(k_max)]  # per member, per repeat
    t_pop: dict[int, list[float]] = {k: [] for k in ks}
    for rep in range(repeats):
        for i, (net, cfg) in enumerate(zip(networks(k_max, sizes, dtype), cfgs)):
            t0 = time.perf_counter()
            train(net, X, Y, cfg, eval_data=(Xe, Ye), rng=rep)
            t_train[i].append(time.perf_counter() - t0)
        for k in (ks if rep % 2 == 0 else ks[::-1]):
            nets = networks(k, sizes, dtype)
            t0 = time.perf_counter()
            out = train_population(nets, X, Y, cfgs[:k], eval_data=(Xe, Ye), rng=rep)
            t_pop[k].append(time.perf_counter() - t0)
            if check and rep == 0:
                for i, res in enumerate(out):
                    ref = train(networks(i + 1, sizes, dtype)[i], X, Y, cfgs[i], eval_data=(Xe, Ye), rng=rep)
                    strip = [{key: v for key, v in r.to_metrics().items() if key != "train/epoch_time"}
                             for r in ref.records]
                    got = [{key: v for key, v in r.to_metrics().items() if key != "train/epoch_time"}
                           for r in res.records]  # type: ignore[union-attr]
                    assert strip == got, f"{case}: member {i} of K={k} differs from train()"
        print(f"  {case}: repeat {rep + 1}/{repeats} done", file=sys.stderr, flush=True)
    # a population of one against train() on the same member: paired runs, alternating (a 5% claim needs more
    # repeats than the others on a noisy machine)
    one_train, one_pop = [], []
    if 1 in ks:
        for rep in range(pair_repeats):
            for which in ((0, 1) if rep % 2 == 0 else (1, 0)):
                net = networks(1, sizes, dtype)[0]
                t0 = time.perf_counter()
                if which == 0:
                    train(net, X, Y, cfgs[0], eval_data=(Xe, Ye), rng=rep)
                    one_train.append(time.perf_counter() - t0)
                else:
                    train_population([net], X, Y, cfgs[:1], eval_data=(Xe, Ye), rng=rep)
                    one_pop.append(time.perf_counter() - t0)
    rows = []
    med_train = [statistics.median(t) for t in t_train]
    for k in ks:
        sep = sum(med_train[:k])
        pop = statistics.median(t_pop[k])
        if k == 1:
            sep, pop = statistics.median(t_train[0] + one_train), statistics.median(t_pop[1] + one_pop)
        rows.append({"case": case, "K": k, "epochs": epochs, "train_s": sep, "pop_s": pop,
                     "train_te_s": k * epochs / sep, "pop_te_s": k * epochs / pop, "ratio": sep / pop})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="K in {1, 4, 32}, fewer epochs and repeats")
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    p.add_argument("--ks", nargs="+", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None, help="epochs per member (default: digits 5, MNIST 2; "
                   "--quick: 3 and 1)")
    p.add_argument("--repeats", type=int, default=None, help="default 3 (--quick: 2)")
    p.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    p.add_argument("--check", action="store_true", help="also check the records against train(), bit for bit")
    p.add_argument("--no-gradients", action="store_true",
                   help="track_gradients=False (records without the full-set gradient norms: not the issue's setting)")
    p.add_argument("--pair-repeats", type=int, default=None, help="extra paired K=1 runs (default 7, --quick 4)")
    a = p.parse_args(argv)
    ks = a.ks or ([1, 4, 32] if a.quick else [1, 4, 16, 32, 64])
    repeats = a.repeats or (2 if a.quick else 3)
    records = "records without gradient norms" if a.no_gradients else "full records"
    print(f"numpy {np.__version__}, one BLAS thread, {a.dtype}, {records}, K in {ks}, {repeats} repeats (medians)")
    print(f"{'case':<11} {'K':>3} {'epochs':>6} {'train() te/s':>13} {'population te/s':>16} {'ratio':>6}")
    all_rows = []
    for case in a.cases:
        epochs = a.epochs or ((3 if a.quick else 5) if case == "digits" else (1 if a.quick else 2))
        rows = run_case(case, ks, epochs, repeats, a.dtype, a.check, track_gradients=not a.no_gradients,
                        pair_repeats=a.pair_repeats or (4 if a.quick else 7))
        all_rows += rows
        for r in rows:
            print(f"{r['case']:<11} {r['K']:>3} {r['epochs']:>6} {r['train_te_s']:>13.1f} {r['pop_te_s']:>16.1f} "
                  f"{r['ratio']:>5.2f}x", flush=True)
    print("\ntargets (issue 8):")
    for case in a.cases:
        _, _, _, target, k_target = CASES[case]
        rows = [r for r in all_rows if r["case"] == case]
        best = max(rows, key=lambda r: r["ratio"]) if k_target is None else next(
            (r for r in rows if r["K"] == k_target), None)
        if best is not None:
            met = "met" if best["ratio"] >= target else "NOT met"
            print(f"  {case}: >= {target}x{'' if k_target is None else f' at K={k_target}'}: "
                  f"{best['ratio']:.2f}x at K={best['K']} -> {met}")
        one = next((r for r in rows if r["K"] == 1), None)
        if one is not None:
            met = "met" if one["ratio"] >= 1 / 1.05 else "NOT met"
            print(f"  {case}: population of 1 within 5% of train(): {one['ratio']:.3f}x -> {met}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

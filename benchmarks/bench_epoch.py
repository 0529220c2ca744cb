"""Time one training epoch: nncore vs scikit-learn's MLPClassifier (one BLAS thread).

50,000 MNIST-shaped samples (the 10k MNIST test file tiled 5x, or random
uint8 images when the file is absent), [784, 30, 10] sigmoid, cross-entropy,
lmbda=5 (dataset convention, converted to scikit-learn's alpha = lmbda*m/n),
eta=0.5. The implementations alternate inside one process; medians and the
ratio sklearn/nncore are printed.

    python benchmarks/bench_epoch.py [--repeats 5] [--batch-sizes 10 100 1000]

Columns:
* ``sgd`` -- the SGD pass of one epoch (``nncore.train.SGD.epoch``: shuffle,
  gather, forward, backward, update): the same work as scikit-learn's epoch,
  which computes its running loss from the forward passes it does anyway.
* ``epoch`` -- a whole ``train(..., epochs=1)``: input validation, the SGD pass, and
  the exact epoch record (training loss and accuracy over all 50k rows with the
  final weights, weight statistics), without the full-set gradient norms.
* ``+grads`` -- as ``epoch`` with ``track_gradients=True`` (the default).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from nncore import Network, TrainConfig, convert_lambda, train  # noqa: E402

MNIST_DIR = Path(os.environ.get("NNCORE_MNIST_T10K", Path(__file__).resolve().parents[1].parent / "shared/data/mnist-t10k"))


def load_data(n: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        from nncore.datasets import load_mnist_idx

        images, labels = load_mnist_idx(MNIST_DIR / "t10k-images-idx3-ubyte.gz", MNIST_DIR / "t10k-labels-idx1-ubyte.gz")
        source = "MNIST t10k tiled"
    except (OSError, ValueError, ImportError):
        rng = np.random.default_rng(0)
        images, labels = rng.integers(0, 256, (10_000, 784), dtype=np.uint8), rng.integers(0, 10, 10_000)
        source = "random uint8 images"
    reps = -(-n // len(images))
    X = np.tile(images, (reps, 1))[:n] / 255.0
    y = np.tile(labels, reps)[:n]
    print(f"data: {source}, {n} x {X.shape[1]}")
    return X, y


def time_nncore(X, y, m: int, dtype, track_gradients: bool, seed: int) -> float:
    net = Network([784, 30, 10], cost="cross_entropy", dtype=dtype, rng=np.random.default_rng(seed))
    cfg = TrainConfig(eta=0.5, epochs=1, batch_size=m, lmbda=5.0, track_gradients=track_gradients,
                      record_initial=False)  # one epoch as before: the epoch-0 measurement is not an epoch
    t0 = time.perf_counter()
    train(net, X, y, cfg, rng=seed)
    return time.perf_counter() - t0


def time_nncore_sgd(X, y, m: int, dtype, seed: int) -> float:
    from nncore.train import SGD, as_targets

    net = Network([784, 30, 10], cost="cross_entropy", dtype=dtype, rng=np.random.default_rng(seed))
    Y = as_targets(y, 10, net.dtype)
    sgd = SGD(net, m, TrainConfig(lmbda=5.0).regularizer)
    order = np.random.default_rng(seed).permutation(len(X))
    t0 = time.perf_counter()
    sgd.epoch(X, Y, 0.5, order)
    return time.perf_counter() - t0


def time_sklearn(X, y, m: int, dtype, seed: int) -> float:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    alpha = convert_lambda(5.0, from_convention="dataset", to_convention="per_batch", n_train=len(X), batch_size=m)
    clf = MLPClassifier(solver="sgd", activation="logistic", hidden_layer_sizes=(30,), momentum=0,
                        nesterovs_momentum=False, alpha=alpha, max_iter=1, batch_size=m, learning_rate_init=0.5,
                        random_state=seed)
    Xd = X.astype(dtype)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(Xd, y)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--no-sklearn", action="store_true")
    args = parser.parse_args()
    try:
        from threadpoolctl import threadpool_info
        print("BLAS:", ", ".join(f"{i['internal_api']} {i.get('version')} threads={i['num_threads']}" for i in threadpool_info()))
    except ImportError:
        pass
    X, y = load_data(args.n)
    X32 = X.astype(np.float32)
    rows = []
    for m in args.batch_sizes:
        t = {k: [] for k in ("sgd64", "sgd32", "nn64", "nn64g", "nn32", "sk64", "sk32")}
        for r in range(args.repeats):
            t["sgd64"].append(time_nncore_sgd(X, y, m, np.float64, r))
            t["sgd32"].append(time_nncore_sgd(X32, y, m, np.float32, r))
            t["nn64"].append(time_nncore(X, y, m, np.float64, False, r))
            if not args.no_sklearn:
                t["sk64"].append(time_sklearn(X, y, m, np.float64, r))
            t["nn32"].append(time_nncore(X32, y, m, np.float32, False, r))
            if not args.no_sklearn:
                t["sk32"].append(time_sklearn(X, y, m, np.float32, r))
            t["nn64g"].append(time_nncore(X, y, m, np.float64, True, r))
        med = {k: statistics.median(v) if v else float("nan") for k, v in t.items()}
        rows.append((m, med))
    print()
    print("float64 (medians of", args.repeats, "alternating runs; ratio = sklearn time / nncore time)")
    print("| batch | sklearn | nncore sgd | ratio | nncore epoch | ratio | nncore epoch +grads |")
    print("|---|---|---|---|---|---|---|")
    for m, d in rows:
        print(f"| {m} | {d['sk64']:.3f} s | {d['sgd64']:.3f} s | {d['sk64'] / d['sgd64']:.2f}x | {d['nn64']:.3f} s | "
              f"{d['sk64'] / d['nn64']:.2f}x | {d['nn64g']:.3f} s |")
    print()
    print("float32 (ratio f64/f32 of nncore)")
    print("| batch | sklearn | nncore sgd | f64/f32 sgd | nncore epoch | f64/f32 epoch |")
    print("|---|---|---|---|---|---|")
    for m, d in rows:
        print(f"| {m} | {d['sk32']:.3f} s | {d['sgd32']:.3f} s | {d['sgd64'] / d['sgd32']:.2f}x | {d['nn32']:.3f} s | "
              f"{d['nn64'] / d['nn32']:.2f}x |")


if __name__ == "__main__":
    main()

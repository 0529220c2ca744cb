"""``python -m nncore``: train a network on digits (or MNIST IDX files) and print one line per epoch.

Examples::

    python -m nncore                                   # digits, [64, 30, 10], 30 epochs (a few seconds)
    python -m nncore --hidden 100 30 --lmbda 0.5 --momentum 0.9
    python -m nncore --sizes 64,100,30,10              # the same net by ALL its layer sizes (as sweeps gradcheck)
    python -m nncore --mnist ~/data/mnist --lmbda 5    # first 8,000 train / last 2,000 eval of the IDX files
    python -m nncore --epochs 3 --json                 # one JSON object (record.to_metrics()) per line

The default output is an aligned table with, per epoch: the learning rate, the
training loss split as ``total = data + penalty``, the evaluation total, data
loss, penalty and accuracy, and ``||W||_F`` and ``rms(W)`` of every weight layer.
The first row, epoch 0, is the initial network before any step (so ``--epochs 3``
prints epochs 0 to 3; with ``--json`` its line lacks the keys that describe an
epoch's change, such as ``train/decay_factor``).

Uses argparse and the standard library only (plus NumPy through nncore).

Exit codes: 0 trained; 1 training diverged (the line names the epoch, the layer and the values); 2 bad
input: an invalid option or value, a ``--mnist`` directory without the IDX files, a ``--save`` path that
cannot be written; 130 interrupted (Ctrl-C). Every failure is one line on standard error,
``python -m nncore: error: ...``, naming the option and the value it got (no usage text, no traceback).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
from typing import IO, NoReturn, Sequence

import numpy as np

from nncore.activations import ACTIVATIONS
from nncore.costs import COSTS
from nncore.initializers import INITIALIZERS
from nncore.network import DTYPES, Network
from nncore.records import EpochRecord
from nncore.regularizers import CONVENTIONS, PENALTIES
from nncore.train import DivergenceError, TrainConfig, TrainResult, train

#: Split of scikit-learn's 1,797 digits and of the 10,000-image MNIST file.
DIGITS_SPLIT = (1500, 297)
MNIST_SPLIT = (8000, 2000)

DEFAULT_HIDDEN = (30,)
DEFAULT_ETA = 0.5
#: lmbda = 1 (dataset convention: decay rate 1/1500 per step) reaches ~97% on digits in 30 epochs.
DEFAULT_LMBDA = 1.0
DEFAULT_BATCH_SIZE = 10
DEFAULT_EPOCHS = 30


#: The exit codes (module docstring).
EXIT_DIVERGED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 1, 2, 130


class _OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (argparse's own prints the whole usage first)."""

    def error(self, message: str) -> NoReturn:
        error_line(self.prog, message)
        raise SystemExit(EXIT_BAD_INPUT)


def error_line(prog: str, message: str) -> None:
    """Print ``PROG: error: MESSAGE`` on one line to standard error."""
    print(f"{prog}: error: {' '.join(str(message).split())}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    p = _OneLineParser(
        prog="python -m nncore",
        description="Train a Nielsen-style feed-forward network with mini-batch SGD and print per-epoch records.",
        epilog="exit codes: 0 trained; 1 training diverged; 2 bad input (an option or its value, a --mnist "
        "directory without the IDX files, a --save path that cannot be written); 130 interrupted. A failure is one "
        "'error:' line on standard error.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    layers = p.add_mutually_exclusive_group()
    layers.add_argument("--hidden", type=int, nargs="*", default=list(DEFAULT_HIDDEN), metavar="N",
                        help="hidden layer sizes, e.g. --hidden 100 30 (none: no hidden layer); "
                        "input and output sizes come from the data")
    layers.add_argument("--sizes", type=str, nargs="+", default=None, metavar="N",
                        help="ALL layer sizes, input to output, as in `sweeps gradcheck --sizes`: e.g. "
                        "--sizes 64,30,10 (or 64 30 10); the first must be the data's inputs and the last its "
                        "classes; instead of --hidden")
    p.add_argument("--eta", type=float, default=DEFAULT_ETA, help="learning rate")
    p.add_argument("--lmbda", type=float, default=DEFAULT_LMBDA, help="regularization strength (see --convention)")
    p.add_argument("--convention", choices=CONVENTIONS, default="dataset",
                   help="what lmbda means: dataset (decay lmbda/n, network2.py), per_batch (lmbda/m, "
                   "scikit-learn alpha), decoupled (lmbda, PyTorch weight_decay)")
    p.add_argument("--penalty", choices=PENALTIES, default="l2", help="weight penalty")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="mini-batch size")
    p.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, help="number of epochs")
    p.add_argument("--cost", choices=COSTS, default="cross_entropy", help="cost function")
    p.add_argument("--activation", choices=ACTIVATIONS, default="sigmoid", help="hidden-layer activation")
    p.add_argument("--init", choices=INITIALIZERS, default="default", help="weight initializer")
    p.add_argument("--dtype", choices=DTYPES, default="float64", help="floating type of weights and data")
    p.add_argument("--seed", type=int, default=0, help="seed of the weight initialization and shuffling")
    p.add_argument("--momentum", type=float, default=0.0, help="momentum coefficient mu in [0, 1)")
    p.add_argument("--mnist", metavar="DIR", default=None,
                   help=f"train on the MNIST t10k IDX files in DIR (first {MNIST_SPLIT[0]} rows train, "
                   f"next {MNIST_SPLIT[1]} eval) instead of scikit-learn's digits "
                   f"({DIGITS_SPLIT[0]} train / {DIGITS_SPLIT[1]} eval)")
    p.add_argument("--json", action="store_true", help="print each epoch's metrics as one JSON object per line")
    p.add_argument("--save", metavar="PATH", default=None, help="save the trained network (nncore.io .npz format)")
    return p


def parse_sizes(text: str | Sequence[str], what: str = "--sizes") -> list[int]:
    """Layer sizes written ``8,6,4`` or ``8 6 4`` (or a list of such pieces): ALL layers, input
    to output, at least two, each a positive integer. ``ValueError`` names ``what``.

    The one meaning of ``--sizes`` in both command lines (``python -m nncore`` and
    ``sweeps gradcheck``); ``--hidden`` is the hidden layers only (docs/vocabulary.md).
    """
    pieces = [text] if isinstance(text, str) else list(text)
    tokens = [t for piece in pieces for t in piece.replace(",", " ").split()]
    try:
        sizes = [int(t) for t in tokens]
    except ValueError:
        sizes = []
    if len(sizes) < 2 or any(n < 1 for n in sizes):
        raise ValueError(f"{what} must list all layer sizes, input to output (at least two positive integers, "
                         f"e.g. 64,30,10), got {' '.join(pieces)!r}")
    return sizes


def _config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(eta=args.eta, epochs=args.epochs, batch_size=args.batch_size, lmbda=args.lmbda,
                       penalty=args.penalty, convention=args.convention, momentum=args.momentum)


def _load(args: argparse.Namespace):
    from nncore import datasets

    if args.mnist is not None:
        return datasets.load_mnist(args.mnist, n_train=MNIST_SPLIT[0], n_eval=MNIST_SPLIT[1], dtype=args.dtype)
    return datasets.load_digits(n_train=DIGITS_SPLIT[0], n_eval=DIGITS_SPLIT[1], dtype=args.dtype)


class _Table:
    """Aligned per-epoch table: one header, then one row per record."""

    def __init__(self, n_layers: int, out: IO[str]) -> None:
        self.out = out
        self.columns: list[tuple[str, str, int]] = [("epoch", "d", 5), ("eta", ".4g", 9)]
        self.columns += [(name, ".5f", 10) for name in
                         ("train_total", "train_data", "train_pen", "eval_total", "eval_data", "eval_pen")]
        self.columns += [("eval_acc", ".4f", 8)]
        for i in range(1, n_layers + 1):
            self.columns += [(f"L{i}_fro", ".4f", 9), (f"L{i}_rms", ".5f", 9)]
        self.widths = [max(width, len(name)) for name, _, width in self.columns]
        self.started = False

    def header(self) -> None:
        self.started = True
        print("  ".join(name.rjust(w) for (name, _, _), w in zip(self.columns, self.widths)), file=self.out)

    def row(self, rec: EpochRecord) -> None:
        ev = rec.eval
        values: list[float] = [rec.epoch, rec.eta, rec.train.total, rec.train.data, rec.train.penalty]
        values += [ev.total, ev.data, ev.penalty, ev.accuracy] if ev is not None else [math.nan] * 4
        for layer in rec.layers:
            values += [layer.weight_fro, layer.weight_rms]
        cells = [format(v, fmt).rjust(w) for v, (_, fmt, _), w in zip(values, self.columns, self.widths)]
        print("  ".join(cells), file=self.out, flush=True)


def run(args: argparse.Namespace, out: IO[str] | None = None) -> TrainResult:
    """Train as ``args`` say, printing to ``out`` (stdout); return the result.

    Raises ``ValueError`` for invalid settings and :class:`DivergenceError` on divergence.
    """
    out = sys.stdout if out is None else out
    config = _config(args)  # validates eta, lmbda, batch size, epochs, momentum before loading data
    if args.seed < 0:
        raise ValueError(f"--seed must be a non-negative integer, got {args.seed}")
    all_sizes = parse_sizes(args.sizes) if getattr(args, "sizes", None) is not None else None
    hidden = all_sizes[1:-1] if all_sizes is not None else args.hidden
    if any(h < 1 for h in hidden):
        raise ValueError(f"--hidden sizes must be positive integers, got {hidden}")
    if args.save is not None and importlib.util.find_spec("nncore.io") is None:
        raise ValueError("--save needs nncore.io, which is not available")
    try:
        data = _load(args)
    except (ValueError, OSError) as exc:  # DatasetError is a ValueError
        if args.mnist is None:
            raise
        raise ValueError(f"--mnist {args.mnist}: {exc}") from exc
    if data.eval is None:  # pragma: no cover - both loaders above make an eval split
        raise ValueError("the data set has no evaluation split")
    rng = np.random.default_rng(args.seed)
    sizes = [data.n_features, *hidden, data.n_classes]
    if all_sizes is not None and all_sizes != sizes:
        raise ValueError(f"--sizes {','.join(map(str, all_sizes))}: the first size must be the data's "
                         f"{data.n_features} inputs and the last its {data.n_classes} classes "
                         f"(e.g. --sizes {','.join(map(str, sizes))})")
    net = Network(sizes, activation=args.activation, cost=args.cost, init=args.init, dtype=args.dtype, rng=rng)

    if args.json:
        def show(rec: EpochRecord) -> None:
            print(json.dumps({"epoch": rec.epoch, **rec.to_metrics()}), file=out, flush=True)
    else:
        table = _Table(net.n_layers, out)
        print(f"# {data.name}: {data.train.n} train / {data.eval.n} eval; sizes {sizes}, {args.activation}, "
              f"{args.cost}, init {args.init}, {args.dtype}; eta {config.eta:g}, batch {config.batch_size}, "
              f"{config.penalty} lmbda {config.lmbda:g} ({config.convention}), momentum {config.momentum:g}, "
              f"seed {args.seed}", file=out)

        def show(rec: EpochRecord) -> None:
            if not table.started:  # printed once training has validated its inputs
                table.header()
            table.row(rec)

    result = train(net, data.train.X, data.train.Y, config, eval_data=(data.eval.X, data.eval.Y), rng=rng,
                   callbacks=[show])
    if not args.json:
        final = result.final
        print(f"# stopped: {result.stop_reason} after {final.epoch} epochs; eval accuracy "
              f"{final.eval.accuracy:.4f}" if final.eval is not None else "", file=out)
    if args.save is not None:
        from nncore import io as nnio

        try:
            path = nnio.save(net, args.save, extra={
                "regularizer": config.regularizer.to_dict(), "n_train": data.train.n, "batch_size": config.batch_size,
                "epoch": result.final.epoch, "eta": config.eta, "momentum": config.momentum, "seed": args.seed,
                "data": data.name,
            })
        except OSError as exc:
            raise OSError(f"--save {args.save}: cannot write the network ({exc.strerror or exc})") from exc
        print(f"# saved to {path}", file=sys.stderr if args.json else out)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # a usage error: one line, exit 2 (_OneLineParser)
    try:
        run(args)
    except BrokenPipeError:  # e.g. piped into `head`: stop quietly
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keep the interpreter from failing at exit
        return 1
    except DivergenceError as exc:
        error_line(parser.prog, str(exc))
        return EXIT_DIVERGED
    except KeyboardInterrupt:
        error_line(parser.prog, "interrupted")
        return EXIT_INTERRUPTED
    except (ValueError, ImportError, OSError) as exc:  # DatasetError is a ValueError
        parser.error(str(exc))  # exits with status 2
    return 0

"""Sweep-level benchmarks: tracking overhead and parallel speed-up.

    python benchmarks/bench_sweep.py [--repeats 2] [--trials 12] [--skip-mnist]

1. Tracking overhead, in both modes (population 1 and --population K): the same seeded trials
   with MLflow tracking off (--no-tracking), on (metrics of every epoch + params + tags,
   --artifacts none) and on with the default artifacts (trial_artifacts: best: network files and
   diagnosis.json for every trial, the best trial's PNGs drawn at the end), alternating, each in a
   fresh temporary directory with the embedded stores, 1 worker. The sweeps are
   examples/digits-quick.yaml (TPE + median pruner, --trials-digits trials x 30 epochs) and the
   book's MNIST recipe (examples/mnist-book.yaml: 8,000 / 2,000, [784,30,10], 30 epochs, batch 10,
   --trials-mnist trials, no pruner; population min(K, trials)) when the MNIST file exists.
2. Parallelism: a digits sweep (--trials trials x 30 epochs, random sampler, no pruner, tracking
   and default artifacts on) with 1 worker vs 2 workers: trials per minute.
3. Populations (--populations): examples/digits-quick.yaml with --population-trials trials x 30
   epochs (TPE + median pruner, eta x lambda x batch size, tracking and default artifacts on,
   2 workers) at population 1 vs --population K; the same sweep with one batch size (10, eta x
   lambda searched); then the book's MNIST recipe (16 trials) the same way; wall time and the best
   value found, over --seeds seeds.

Times are whole ``run_sweep`` calls (study creation, worker start-up, trials, closing).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from sweeps.config import parse_config
from sweeps.engine.runner import run_sweep
from sweeps.stores import Locations

REPO = Path(__file__).resolve().parents[1]
MNIST = Path(os.environ.get("NNCORE_MNIST_T10K", REPO.parent / "shared/data/mnist-t10k"))


def digits_cfg(trials: int, epochs: int = 15) -> dict:
    return {
        "name": "bench-digits", "seed": 0,
        "data": {"source": "digits", "n_train": 1500, "n_eval": 297},
        "network": {"hidden": [30]},
        "training": {"epochs": epochs, "eta": 0.5, "batch_size": 10, "lmbda": 1.0},
        "search_space": {"eta": {"type": "float", "low": 0.1, "high": 2.0, "log": True},
                         "lmbda": {"type": "float", "low": 0.01, "high": 10.0, "log": True}},
        "study": {"n_trials": trials, "sampler": {"name": "random"}, "pruner": {"name": "none"}, "workers": 1},
    }


def example_cfg(name: str, trials: int, **changes: dict) -> dict:
    import yaml

    cfg = yaml.safe_load((REPO / "examples" / name).read_text())
    cfg["study"].update(n_trials=trials, workers=1)
    for section, values in changes.items():
        cfg[section].update(values)
    return cfg


#: An MLflow store created once (``--existing-store``): copied into each timed sweep's directory, so the
#: sweeps do not pay MLflow's schema creation (~1-2 s of migrations), as a second sweep in a project does not.
STORE_TEMPLATE: Path | None = None


def make_store_template(directory: str) -> Path:
    from mlflow.tracking import MlflowClient

    path = Path(directory) / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


def timed(cfg_data: dict, *, workers: int = 1, tracking: bool = True, artifacts: str | None = None,
          best: list | None = None) -> float:
    """Wall time of one whole ``run_sweep`` in a fresh directory (``artifacts=None``: the default, ``best``)."""
    import shutil

    cfg = parse_config(cfg_data)
    with tempfile.TemporaryDirectory() as tmp:
        if STORE_TEMPLATE is not None:
            shutil.copy(STORE_TEMPLATE, Path(tmp) / "mlflow.db")
        loc = Locations(storage=f"sqlite:///{tmp}/optuna.db", tracking_uri=f"sqlite:///{tmp}/mlflow.db",
                        artifact_location=f"{tmp}/mlruns")
        t0 = time.perf_counter()
        summary = run_sweep(cfg, loc, workers=workers, tracking=tracking, artifacts=artifacts)
        elapsed = time.perf_counter() - t0
        assert sum(summary.counts.values()) == cfg.study.n_trials, summary.counts
        if best is not None:
            best.append(summary.best_value)
    return elapsed


def overhead(label: str, cfg: dict, repeats: int, population: int) -> None:
    cfg = {**cfg, "study": {**cfg["study"], "population": population}}
    t = {"off": [], "metrics": [], "full": []}
    for _ in range(repeats):
        t["off"].append(timed(cfg, tracking=False))
        t["metrics"].append(timed(cfg, tracking=True, artifacts="none"))
        t["full"].append(timed(cfg, tracking=True))
    med = {k: statistics.median(v) for k, v in t.items()}
    print(f"| {label} | {population} | {med['off']:.2f} s | {med['metrics']:.2f} s "
          f"({100 * (med['metrics'] / med['off'] - 1):+.1f}%) | {med['full']:.2f} s "
          f"({100 * (med['full'] / med['metrics'] - 1):+.1f}% over metrics, "
          f"{100 * (med['full'] / med['off'] - 1):+.1f}% over off) |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--trials", type=int, default=40, help="trials of the parallelism sweep")
    parser.add_argument("--trials-digits", type=int, default=48, help="trials of the digits-quick overhead sweep")
    parser.add_argument("--trials-mnist", type=int, default=4, help="trials of the MNIST overhead sweep")
    parser.add_argument("--skip-mnist", action="store_true")
    parser.add_argument("--skip-overhead", action="store_true")
    parser.add_argument("--skip-parallelism", action="store_true")
    parser.add_argument("--populations", action="store_true", help="run part 3 (population K vs 1)")
    parser.add_argument("--population", type=int, default=16)
    parser.add_argument("--population-trials", type=int, default=96)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--population-cases", nargs="+", choices=POPULATION_CASES, default=list(POPULATION_CASES),
                        help="which population sweeps (default: all)")
    parser.add_argument("--existing-store", action="store_true",
                        help="each sweep starts from an existing (empty) MLflow store instead of creating one")
    args = parser.parse_args()
    global STORE_TEMPLATE
    template_dir = tempfile.TemporaryDirectory()
    if args.existing_store:
        STORE_TEMPLATE = make_store_template(template_dir.name)
    print(f"MLflow store: {'existing (copied from a template)' if args.existing_store else 'created by each sweep'}")
    print(f"cores: {os.cpu_count()}")
    if not args.skip_overhead:
        tracking_overhead(args)
    if not args.skip_parallelism:
        parallelism(args)
    if args.populations:
        populations(args)


def tracking_overhead(args: argparse.Namespace) -> None:
    print("\nTracking overhead (1 worker; median of", args.repeats, "alternating runs)")
    print("| sweep | population | tracking off | metrics + params | + default artifacts |")
    print("|---|---|---|---|---|")
    digits = example_cfg("digits-quick.yaml", args.trials_digits, training={"epochs": 30})
    for pop in (1, args.population):
        overhead(f"digits-quick.yaml, {args.trials_digits} trials x 30 epochs", digits, args.repeats, pop)
    if not args.skip_mnist and (MNIST / "t10k-images-idx3-ubyte.gz").exists():
        mnist = example_cfg("mnist-book.yaml", args.trials_mnist, data={"path": str(MNIST)},
                            study={"pruner": {"name": "none"}})
        for pop in (1, min(args.population, args.trials_mnist)):
            overhead(f"mnist-book.yaml (the book's recipe), {args.trials_mnist} trials x 30 epochs", mnist,
                     args.repeats, pop)


def parallelism(args: argparse.Namespace) -> None:
    print(f"\nParallelism (digits, {args.trials} trials x 30 epochs, tracking and default artifacts on)")
    t1, t2 = [], []
    for _ in range(args.repeats):
        t1.append(timed(digits_cfg(args.trials, epochs=30), workers=1))
        t2.append(timed(digits_cfg(args.trials, epochs=30), workers=2))
    m1, m2 = statistics.median(t1), statistics.median(t2)
    print("| workers | time | trials/min |")
    print("|---|---|---|")
    print(f"| 1 | {m1:.2f} s | {60 * args.trials / m1:.1f} |")
    print(f"| 2 | {m2:.2f} s | {60 * args.trials / m2:.1f} |")
    print(f"speed-up 2 vs 1 workers: {m1 / m2:.2f}x")


#: The population sweeps of part 3 (--population-cases).
POPULATION_CASES = ("digits", "digits-one-batch-size", "mnist")


def populations(args: argparse.Namespace) -> None:
    k = args.population
    cases = []
    if "digits" in args.population_cases:
        cases.append((f"digits-quick.yaml, {args.population_trials} trials x 30 epochs, 2 workers",
                      example_cfg("digits-quick.yaml", args.population_trials, training={"epochs": 30})))
    if "digits-one-batch-size" in args.population_cases:
        one_size = example_cfg("digits-quick.yaml", args.population_trials, training={"epochs": 30, "batch_size": 10})
        one_size["search_space"] = {name: v for name, v in one_size["search_space"].items() if name != "batch_size"}
        cases.append((f"digits-quick.yaml with batch size 10 only (eta x lambda), {args.population_trials} trials, "
                      "2 workers", one_size))
    if "mnist" in args.population_cases and (MNIST / "t10k-images-idx3-ubyte.gz").exists():
        cases.append(("mnist-book.yaml, 16 trials, 2 workers", example_cfg("mnist-book.yaml", 16,
                                                                             data={"path": str(MNIST)})))
    print(f"\nPopulations (population 1 vs {k}; tracking and default artifacts on; {args.seeds} seed(s))")
    print(f"| sweep | population 1 | population {k} | speed-up | best value (1 / {k}) |")
    print("|---|---|---|---|---|")
    for label, base in cases:
        times: dict[int, list[float]] = {1: [], k: []}
        bests: dict[int, list[float]] = {1: [], k: []}
        for seed in range(args.seeds):
            for pop in (1, k):
                cfg = {**base, "seed": seed, "study": {**base["study"], "workers": 2, "population": pop}}
                times[pop].append(timed(cfg, workers=2, best=bests[pop]))
        m1, mk = statistics.median(times[1]), statistics.median(times[k])
        b1 = ", ".join(f"{b:.4f}" for b in bests[1])
        bk = ", ".join(f"{b:.4f}" for b in bests[k])
        print(f"| {label} | {m1:.2f} s | {mk:.2f} s | {m1 / mk:.2f}x | {b1} / {bk} |", flush=True)


if __name__ == "__main__":
    main()

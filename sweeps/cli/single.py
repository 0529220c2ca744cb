"""One training outside a study (``sweeps train``) and a gradient check (``sweeps gradcheck``)."""

from __future__ import annotations

import sys

import click

from nncore.activations import ACTIVATIONS
from nncore.costs import COSTS
from nncore.regularizers import CONVENTIONS, PENALTIES
from sweeps import names
from sweeps.cli.options import EXIT_NO_COMPLETE, _config, _fail, _locations, mlflow_yml_option, tracking_option
from sweeps.config import ConfigError


@click.command()
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@click.option("--eta", type=float, default=None, help="Learning rate (default: training.eta).")
@click.option("--lmbda", type=float, default=None, help="Regularization strength (default: training.lmbda).")
@click.option("--batch-size", type=int, default=None, help="Mini-batch size (default: training.batch_size).")
@click.option("--epochs", type=int, default=None, help="Epochs (default: training.epochs).")
@tracking_option
@mlflow_yml_option
@click.option("--no-tracking", is_flag=True, help="Only print the per-epoch records.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the final line.")
def train(config: str, eta: float | None, lmbda: float | None, batch_size: int | None, epochs: int | None,
          tracking_uri: str | None, mlflow_yml: str | None, no_tracking: bool, quiet: bool) -> None:
    """One tracked training run with the config's fixed settings (overridden by the options).

    It is logged as a run of the experiment '<prefix><name>-train' with the same metrics as a trial.
    """
    import optuna

    from sweeps.config import parse_config
    from sweeps.engine.data import load_data
    from sweeps.engine.objective import Objective
    from sweeps.tracking.tracker import Tracker

    cfg = _config(config)
    data = cfg.model_dump(mode="json")
    for key, value in (("eta", eta), ("lmbda", lmbda), ("batch_size", batch_size), ("epochs", epochs)):
        if value is not None:
            data["training"][key] = value
    data["search_space"] = {}
    data["name"] = f"{cfg.name}-train"
    try:
        cfg = parse_config(data, source="command line")
    except ConfigError as err:
        _fail(str(err))
    loc = _locations(None, tracking_uri, mlflow_yml, cfg, tracking=not no_tracking, writer=True)
    dataset = load_data(cfg.data, cfg.seed)
    tracker = None if no_tracking else Tracker(loc.tracking_uri, loc.experiment_name(cfg.name), loc.artifact_location)
    objective = Objective(cfg, dataset, tracker, parent_run_id=None)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction=cfg.objective.direction)  # in memory: a single fixed trial
    study.optimize(objective, n_trials=1, catch=(Exception,))
    t = study.trials[0]
    if not quiet:
        click.echo(f"state {t.state.name}; {cfg.objective.metric} per epoch: "
                   + ", ".join(f"{v:.4g}" for _, v in sorted(t.intermediate_values.items())))
    run_id = t.user_attrs.get(names.TRIAL_RUN)
    final = f"{cfg.objective.metric}={t.value:.6g}" if t.value is not None else t.user_attrs.get(names.TRIAL_REASON, "")
    click.echo(f"{t.state.name}: {final}" + (f" (mlflow run {run_id})" if run_id else ""))
    if t.state.name != names.STATE_COMPLETE:
        sys.exit(EXIT_NO_COMPLETE)


@click.command()
@click.option("--sizes", default="8,6,4", show_default=True,
              help="ALL layer sizes, input to output, comma-separated (as `python -m nncore --sizes`; "
                   "its --hidden gives the hidden layers only).")
@click.option("--cost", type=click.Choice(COSTS), default="cross_entropy", show_default=True)
@click.option("--activation", type=click.Choice(ACTIVATIONS), default="sigmoid", show_default=True)
@click.option("--penalty", type=click.Choice(PENALTIES), default="l2", show_default=True)
@click.option("--lmbda", type=float, default=1.0, show_default=True)
@click.option("--convention", type=click.Choice(CONVENTIONS), default="dataset", show_default=True)
@click.option("--samples", type=int, default=5, show_default=True, help="Rows in the checked batch.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--tolerance", type=float, default=1e-6, show_default=True, help="Exit 1 above this error.")
def gradcheck(sizes: str, cost: str, activation: str, penalty: str, lmbda: float, convention: str, samples: int,
              seed: int, tolerance: float) -> None:
    """Compare backprop with finite differences (penalty included) on a random net and batch."""
    import numpy as np

    from nncore import Network, Regularizer, gradient_check
    from nncore.cli import parse_sizes

    try:
        layer_sizes = parse_sizes(sizes)
        net = Network(layer_sizes, activation=activation, cost=cost, rng=np.random.default_rng(seed))
        reg = Regularizer(penalty, lmbda, convention)
    except ValueError as err:
        _fail(str(err))
        return
    rng = np.random.default_rng(seed + 1)
    X = rng.random((samples, layer_sizes[0]))
    y = rng.integers(0, layer_sizes[-1], samples)
    result = gradient_check(net, X, y, reg, n_train=10 * samples, batch_size=samples)
    ok = result.max_rel_error <= tolerance
    click.echo(f"{'ok' if ok else 'FAIL'}: max relative error {result.max_rel_error:.3g} over {result.n_checked} "
               f"parameters (worst {result.worst_parameter})")
    if not ok:
        sys.exit(EXIT_NO_COMPLETE)

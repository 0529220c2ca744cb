"""The ``sweeps`` command line.

Exit codes: 0 success; 1 a sweep ran but no trial completed; 2 bad input (usage,
config, option, a study that does not exist, mismatched study); 3 a required store, service or file is
missing, unreachable or not what it should be (before the sweep, or a store that stayed down during it:
its lost trials were failed and retried, rerun to finish); 4 a worker died abnormally (killed, crashed:
its trial was failed and retried, and a replacement worker finished the budget); 5 the tracking server
refused the credentials (HTTP 401/403: set MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD); 70 an
unexpected error (a bug: ``sweeps --debug`` prints its traceback); 130 interrupted by SIGINT/SIGTERM/SIGHUP
(finished trials are kept, nothing is left RUNNING). Every failure is one ``error:`` line on standard
error (:mod:`sweeps.cli.options`), never a traceback, and never a password (:mod:`sweeps.redaction`).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from sweeps import names
from sweeps.cli.options import (EXIT_INTERRUPTED, EXIT_NO_COMPLETE, EXIT_REFUSED,
                                EXIT_UNAVAILABLE, EXIT_WORKER_DIED, FORMATS, OneLineGroup, _config, _fail, _locations,
                                mlflow_yml_option, reading, storage_option, tracking_option)
from sweeps.cli.single import gradcheck, train
from sweeps.config import ConfigError
from sweeps.redaction import redact_url
from sweeps.stores import HISTORY_METHODS, TRIAL_ARTIFACTS, require_tracking_store

@click.group(cls=OneLineGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="nnsweeps")
@click.option("--debug", is_flag=True, envvar="SWEEPS_DEBUG",
              help="On a failure, print the traceback before the one error line (also SWEEPS_DEBUG=1).")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Hyperparameter sweeps over eta, lambda and batch size for NumPy networks.

    Studies live in an Optuna storage, every epoch of every trial in MLflow.
    Start with:  sweeps run examples/digits-quick.yaml  then  sweeps ui
    """
    import logging

    ctx.meta["sweeps.debug"] = debug
    # MLflow's telemetry (usage reports to Databricks) stays off in sweeps' own processes, the workers included,
    # unless the user says otherwise: on a machine without internet its thread gives up and changes os.environ
    # under the threads that are sending runs (seen: a request failing with KeyError '_MLFLOW_TELEMETRY_SESSION_ID').
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    for name in ("mlflow", "alembic"):  # the CLI's own process: MLflow's INFO lines are noise here
        logging.getLogger(name).setLevel(logging.WARNING)


@main.command()
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
def validate(config: str) -> None:
    """Check a sweep YAML file and print the parsed study (nothing is created)."""
    cfg = _config(config)
    from sweeps.study.samplers import build_pruner, build_sampler

    try:
        build_sampler(cfg)
        build_pruner(cfg)
    except ConfigError as err:
        _fail(str(err))
    click.echo(f"ok: study {cfg.name!r}: {cfg.study.n_trials} trials, sampler {cfg.study.sampler.name}, "
               f"pruner {cfg.study.pruner.name}, objective {cfg.objective.direction} {cfg.objective.metric}")
    for key, spec in cfg.search_space.items():
        click.echo(f"  {key}: {spec.model_dump(exclude_none=True)}")
    click.echo(f"  fingerprint {cfg.fingerprint()[:16]}")


@main.command()
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes (each one BLAS thread). Default: the config's study.workers.")
@click.option("--n-trials", type=click.IntRange(min=1), default=None,
              help="Total trials the study should have (finished ones count). Default: study.n_trials.")
@click.option("--population", type=click.IntRange(min=1, max=1024), default=None,
              help="Trials each worker takes and trains at once, in one vectorized pass per structure (needs "
                   "training.batch_order: common). Default: the config's study.population (1).")
@storage_option
@tracking_option
@mlflow_yml_option
@click.option("--new-study", is_flag=True,
              help="If a study of this name exists with another search space/objective, start '<name>-vN'.")
@click.option("--no-tracking", is_flag=True, help="Do not log to MLflow (Optuna only).")
@click.option("--artifacts", type=click.Choice(TRIAL_ARTIFACTS), default=None,
              help="Per-trial artifacts: network files and diagnosis.json for every trial, and the loss/layer-norm "
                   "PNGs of the best trial drawn at the end (best; 'sweeps plots' draws more), of every completed "
                   "trial (complete) or of every trial (all); or nothing (none). "
                   "Default: trial_artifacts in mlflow.yml, else best.")
@click.option("--no-artifacts", is_flag=True, help="Same as --artifacts none (the study plots are skipped too).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar; print only the final summary line.")
def run(config: str, workers: int | None, n_trials: int | None, population: int | None, storage: str | None,
        tracking_uri: str | None,
        mlflow_yml: str | None, new_study: bool, no_tracking: bool, artifacts: str | None, no_artifacts: bool,
        quiet: bool) -> None:
    """Run (or resume) the sweep described by CONFIG until it has n_trials finished trials."""
    cfg = _config(config)
    if population is not None:
        try:
            cfg = cfg.with_overrides(population=population)
        except ConfigError as err:
            _fail(str(err).replace("invalid sweep config (command line)", "invalid --population"))
            return
    loc = _locations(storage, tracking_uri, mlflow_yml, cfg, tracking=not no_tracking, writer=True)
    import optuna

    from sweeps.engine.runner import run_sweep

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    progress = None
    bar = None
    if not quiet:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                       transient=False)
        task = bar.add_task(cfg.name, total=n_trials or cfg.study.n_trials, detail="starting")

        def progress(counts: dict[str, int], best: float | None, total: int) -> None:
            ok, pruned, failed, running = (counts[k] for k in (names.STATE_COMPLETE, names.STATE_PRUNED,
                                                                names.STATE_FAIL, names.STATE_RUNNING))
            done = ok + pruned + failed  # retried (lost) trials not counted
            best_txt = f"best {best:.5g}" if best is not None else "best -"
            bar.update(task, completed=done, total=total,
                       detail=f"ok {ok} pruned {pruned} failed {failed} running {running} {best_txt}")

        bar.start()
        click.echo(f"study {cfg.name!r}: optuna {redact_url(loc.storage)}  "
                   f"mlflow {redact_url(loc.tracking_uri) if not no_tracking else 'off'}")
    try:  # a failure: one line and its exit code (sweeps.cli.options.failure_of), after the bar has stopped
        summary = run_sweep(cfg, loc, workers=workers, n_trials=n_trials, new_study=new_study,
                            tracking=not no_tracking, artifacts="none" if no_artifacts else artifacts,
                            progress=progress)
    finally:
        if bar:
            bar.stop()  # before any message: a live progress bar would overdraw it
    c = summary.counts
    ok, pruned, failed, retried, waiting = (c.get(k, 0) for k in (names.STATE_COMPLETE, names.STATE_PRUNED,
                                                                  names.STATE_FAIL, names.COUNT_RETRIED,
                                                                  names.STATE_WAITING))
    line = f"study {summary.study_name!r}: {ok} complete, {pruned} pruned, {failed} failed"
    if retried:
        line += f" ({retried} lost and retried)"
    if waiting:
        line += f", {waiting} waiting"
    if summary.best_value is not None:
        line += f"; best trial {summary.best_trial}: {cfg.objective.metric}={summary.best_value:.6g} " \
                f"{json.dumps(summary.best_params)}"
    click.echo(line)
    if summary.tracking_refused:
        click.echo(f"error: {summary.tracking_refused}; the trials it stopped were put back: run the same command "
                   f"again with the credentials", err=True)
        sys.exit(EXIT_REFUSED)
    if summary.interrupted:
        click.echo("interrupted: running trials were marked failed, finished trials are kept", err=True)
        sys.exit(EXIT_INTERRUPTED)
    if summary.storage_unavailable or summary.tracking_unavailable:
        which = " and ".join(w for w, down in (("the study's storage", summary.storage_unavailable),
                                                ("the tracking store", summary.tracking_unavailable)) if down)
        click.echo(f"error: {which} stayed unreachable; lost trials were failed and retried, finished ones are "
                   f"kept: run the same command again once it is back", err=True)
        sys.exit(EXIT_UNAVAILABLE)
    if summary.worker_deaths:
        click.echo(f"error: {'; '.join(summary.worker_deaths)}; its trial was failed and retried", err=True)
        sys.exit(EXIT_WORKER_DIED)
    if ok == 0:
        sys.exit(EXIT_NO_COMPLETE)
    if not quiet and not no_tracking:
        click.echo(f"browse: sweeps ui {summary.study_name}"
                   f"{' --tracking-uri ' + redact_url(tracking_uri) if tracking_uri else ''}")


@main.command()
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@storage_option
@tracking_option
@mlflow_yml_option
@click.option("--new-study", is_flag=True, help="As for 'run'.")
def prepare(config: str, storage: str | None, tracking_uri: str | None, mlflow_yml: str | None,
            new_study: bool) -> None:
    """Create the study, the MLflow store and the study's parent run, and run no trial.

    For deployments where several launchers (machines, containers) share one study: run this once
    first so they do not race to create the study and its parent run.
    """
    cfg = _config(config)
    loc = _locations(storage, tracking_uri, mlflow_yml, cfg, writer=True)
    import optuna

    from sweeps.engine.runner import prepare as prepare_sweep

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    prep = prepare_sweep(cfg, loc, new_study=new_study)  # a failure: one line (sweeps.cli.options.failure_of)
    click.echo(f"study {prep.name!r} ready in {redact_url(loc.storage)}; parent run {prep.parent_run_id} in "
               f"{redact_url(loc.tracking_uri)}")


def _existing_storage(url: str) -> None:
    """Refuse a SQLite study database that does not exist: reading it would create an empty one."""
    from sweeps.stores import require_sqlite_file, sqlite_path

    try:
        require_sqlite_file(url)
    except FileNotFoundError:
        _fail(f"no Optuna study database at {url} (the file {sqlite_path(url) or ':memory:'} does not exist); "
              f"give --storage or SWEEPS_STORAGE, or run from the directory where 'sweeps run' created it",
              EXIT_UNAVAILABLE)


def _load_study(name: str, loc: Any) -> Any:
    import optuna

    from sweeps.study.storage import open_storage

    _existing_storage(loc.storage)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(loc.storage, heartbeat=False, reader=True)
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        there = [s.study_name for s in optuna.study.get_all_study_summaries(storage, include_best_trial=False)]
        _fail(f"study {name!r} not found in {loc.storage}; studies there: {', '.join(there) or 'none'}")


@main.command()
@click.argument("study", required=False)
@storage_option
def status(study: str | None, storage: str | None) -> None:
    """Studies with their trial counts by state and best value (or one STUDY)."""
    import optuna

    from sweeps.study.budget import counts_of
    from sweeps.study.storage import open_storage

    loc = _locations(storage, None, None, tracking=False)
    _existing_storage(loc.storage)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    st = open_storage(loc.storage, heartbeat=False, reader=True)
    summaries = optuna.study.get_all_study_summaries(st, include_best_trial=True)
    if study:
        summaries = [s for s in summaries if s.study_name == study]
        if not summaries:
            _fail(f"study {study!r} not found in {loc.storage}")
    if not summaries:
        click.echo(f"no studies in {redact_url(loc.storage)}")
        return
    columns = ((names.STATE_COMPLETE, "complete", 8), (names.STATE_PRUNED, "pruned", 7),
               (names.STATE_FAIL, "failed", 7), (names.STATE_RUNNING, "running", 8),
               (names.STATE_WAITING, "waiting", 8), (names.COUNT_RETRIED, "retried", 8))  # key, header, width
    click.echo(f"{'study':30} {'direction':9} " + " ".join(f"{h:>{w}}" for _, h, w in columns) + "  best")
    for s in summaries:
        counts = counts_of(optuna.load_study(study_name=s.study_name, storage=st))
        best = f"{s.best_trial.value:.6g} (trial {s.best_trial.number})" if s.best_trial else "-"
        click.echo(f"{s.study_name:30} {s.direction.name.lower():9} "
                   + " ".join(f"{counts[k]:>{w}}" for k, _, w in columns) + f"  {best}")


@main.command()
@click.argument("study")
@storage_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def best(study: str, storage: str | None, as_json: bool) -> None:
    """The best trial of STUDY: value, params, MLflow run id."""
    loc = _locations(storage, None, None, tracking=False)
    s = _load_study(study, loc)
    try:
        t = s.best_trial
    except ValueError:
        _fail(f"study {study!r} has no completed trial yet", EXIT_NO_COMPLETE)
        return
    out = {"study": study, "trial": t.number, "value": t.value, "params": t.params,
           "mlflow_run_id": t.user_attrs.get(names.TRIAL_RUN)}
    if as_json:
        click.echo(json.dumps(out))
    else:
        click.echo(f"trial {t.number}: value {t.value:.6g}")
        for k, v in t.params.items():
            click.echo(f"  {k} = {v}")
        click.echo(f"  mlflow run: {out['mlflow_run_id']}")


def _write_frame(df: Any, output: str | None, fmt: str | None) -> None:
    if output is None:
        if fmt == "json":
            click.echo(df.to_json(orient="records", lines=True, date_format="iso"))
        else:
            click.echo(df.to_csv(index=False))
        return
    fmt = fmt or Path(output).suffix.lstrip(".").lower() or "csv"
    if fmt == "csv":
        df.to_csv(output, index=False)
    elif fmt == "parquet":
        df.to_parquet(output, index=False)
    elif fmt == "json":
        df.to_json(output, orient="records", lines=True, date_format="iso")
    else:
        _fail(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    click.echo(f"wrote {len(df)} rows to {output}", err=True)


def _require_experiment(loc: Any, study: str) -> None:
    """Fail (exit 2) when the tracking store has no experiment for ``study``: a mistyped study name."""
    from sweeps.query import client as api

    name = loc.experiment_name(study)
    if api.make_client(loc.tracking_uri).get_experiment_by_name(name) is None:
        _fail(f"no MLflow experiment {name!r} at {redact_url(loc.tracking_uri)}: study {study!r} was not tracked there")


format_option = click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
                             help="Output format (default: from the file extension, else csv).")
output_option = click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
                             help="Write to this file instead of standard output.")


@main.command()
@click.argument("study")
@storage_option
@tracking_option
@mlflow_yml_option
@output_option
@format_option
def trials(study: str, storage: str | None, tracking_uri: str | None, mlflow_yml: str | None, output: str | None,
           fmt: str | None) -> None:
    """Export one row per trial of STUDY: params, state, value, final metrics, MLflow run id."""
    from sweeps import query

    loc = _locations(storage, tracking_uri, mlflow_yml)
    _load_study(study, loc)
    with reading(loc):
        df = query.trials(study, storage=loc.storage, tracking_uri=loc.tracking_uri,
                          experiment_name=loc.experiment_name(study))
    _write_frame(df, output, fmt)


@main.command()
@click.argument("study")
@tracking_option
@mlflow_yml_option
@click.option("-m", "--metric", "metrics", multiple=True, help="Metric key to export (repeatable; default all).")
@click.option("--wide", is_flag=True, help="One row per (trial, epoch), one column per metric.")
@click.option("--method", type=click.Choice(HISTORY_METHODS), default="auto",
              help="How to read histories: the database (sql), the server's bulk route (http), or per run (api).")
@click.option("--params", "with_params", is_flag=True,
              help="Add the trial's searched parameters as columns (eta, lmbda, ...; from the runs' MLflow params).")
@output_option
@format_option
def history(study: str, tracking_uri: str | None, mlflow_yml: str | None, metrics: tuple[str, ...], wide: bool,
            method: str, with_params: bool, output: str | None, fmt: str | None) -> None:
    """Export the per-epoch metrics of every trial of STUDY (long form: run_id, trial, epoch, metric, value).

    Epoch 0 is the initial network, before any training step.
    """
    from sweeps import query

    loc = _locations(None, tracking_uri, mlflow_yml)
    with reading(loc):
        df = query.history(study, tracking_uri=loc.tracking_uri, metrics=list(metrics) or None, wide=wide,
                           experiment_name=loc.experiment_name(study), method=method, params=with_params)
        if df.empty:
            _require_experiment(loc, study)
    _write_frame(df, output, fmt)


@main.command()
@click.argument("study")
@tracking_option
@mlflow_yml_option
@click.option("--trial", type=click.IntRange(min=0), default=None, help="Explain this trial (its number).")
@click.option("--run", "run_id", metavar="RUN_ID", default=None, help="Explain this MLflow run of the study.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@click.option("--method", type=click.Choice(HISTORY_METHODS), default="auto",
              help="How to read the history (as for 'history').")
def explain(study: str, tracking_uri: str | None, mlflow_yml: str | None, trial: int | None, run_id: str | None,
            as_json: bool, method: str) -> None:
    """Say what regularization is doing in STUDY, in plain words with its own numbers.

    Without --trial/--run: every finished trial's finding codes, the best trial's findings, and,
    when the study tried lambda at several batch sizes or training-set sizes, which lambda
    convention keeps the best value fixed. With --trial N or --run RUN_ID: that trial's findings.
    """
    from rich.console import Console

    from sweeps.analysis import render as view
    from sweeps.query import explanations as dg

    if trial is not None and run_id is not None:
        _fail(f"give --trial or --run, not both (got --trial {trial} and --run {run_id})")
    loc = _locations(None, tracking_uri, mlflow_yml)
    with reading(loc):  # an unknown study, trial or run (LookupError): one line, exit 2 (OneLineGroup)
        if trial is None and run_id is None:
            exp: Any = dg.explain_study(study, tracking_uri=loc.tracking_uri,
                                        experiment_name=loc.experiment_name(study), method=method)
        else:
            exp = dg.explain_trial(study, tracking_uri=loc.tracking_uri, experiment_name=loc.experiment_name(study),
                                   trial=trial, run_id=run_id, method=method)
    if as_json:
        click.echo(view.to_json(exp))
        return
    console = Console(highlight=False, soft_wrap=False)
    (view.render_trial if isinstance(exp, dg.TrialExplanation) else view.render_study)(exp, console)


@main.command()
@click.argument("study")
@tracking_option
@mlflow_yml_option
@click.option("--trial", "trials", type=click.IntRange(min=0), multiple=True,
              help="Draw this trial's plots (its number; repeatable).")
@click.option("--best", type=click.IntRange(min=1), default=None,
              help="Draw the plots of the study's BEST best completed trials (default 5 without --trial).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Also write the PNGs to this folder (trial-NNNN-<name>.png).")
@click.option("--no-log", is_flag=True, help="Do not add the PNGs to the trials' MLflow runs (needs --out).")
@click.option("--method", type=click.Choice(HISTORY_METHODS), default="auto",
              help="How to read the history (as for 'history').")
def plots(study: str, tracking_uri: str | None, mlflow_yml: str | None, trials: tuple[int, ...], best: int | None,
          out_dir: str | None, no_log: bool, method: str) -> None:
    """Draw the loss-decomposition and layer-norm PNGs of trials of STUDY from their MLflow metrics.

    A sweep draws them only for its best trial (trial_artifacts: best); this draws them for any trial,
    adds them to the trial's MLflow run (as a sweep would) and, with --out, writes them to a folder.
    """
    from sweeps.report.trial_plots import draw_trial_plots

    if trials and best is not None:
        _fail(f"give --trial or --best, not both (got --trial {list(trials)} and --best {best})")
    if no_log and out_dir is None:
        _fail("--no-log needs --out (otherwise the plots would go nowhere)")
    loc = _locations(None, tracking_uri, mlflow_yml)
    log = None
    with reading(loc):  # an unknown study or trial (LookupError): one line, exit 2 (OneLineGroup)
        if not no_log:  # MLflow's client opens (and would create) its store: only once reading() checked it
            from mlflow.tracking import MlflowClient

            client = MlflowClient(tracking_uri=loc.tracking_uri)

            def log(run_id: str, path: Any) -> None:
                client.log_artifact(run_id, str(path))
        drawn = draw_trial_plots(study, tracking_uri=loc.tracking_uri, experiment_name=loc.experiment_name(study),
                                 trials=list(trials) or None, best=best if trials or best else 5, out_dir=out_dir,
                                 log=log, method=method)
    if not drawn:
        _fail(f"study {study!r} has no completed trial to plot in MLflow at {redact_url(loc.tracking_uri)}",
              EXIT_NO_COMPLETE)
    for number, paths in drawn.items():
        where = ", ".join(str(p) for p in paths) if out_dir is not None else "its MLflow run"
        click.echo(f"trial {number}: {', '.join(p.name.split('-', 2)[-1] for p in paths)} -> {where}")


@main.command()
@click.argument("study", required=False)
@tracking_option
@mlflow_yml_option
@click.option("--port", type=int, default=5000, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind (loopback by default).")
def ui(study: str | None, tracking_uri: str | None, mlflow_yml: str | None, port: int, host: str) -> None:
    """Start the MLflow UI on the configured store (Ctrl-C stops it).

    Prints the link to the runs table of STUDY's experiment (without STUDY: of every sweeps
    experiment); MLflow 3 otherwise opens an experiment on an empty GenAI overview.

    The server runs in its own process group. SIGINT, SIGTERM or SIGHUP sends SIGTERM to that whole
    group (the server and its workers), waits up to 10 s for it to go, then SIGKILLs whatever is
    left, and exits 130. If the server exits by itself, its exit code is returned.
    """
    from sweeps.cli.ui import echo_links, serve_in_own_group, server_command

    loc = _locations(None, tracking_uri, mlflow_yml)
    if loc.tracking_uri.startswith(("http://", "https://")):
        shown = redact_url(loc.tracking_uri)
        click.echo(f"the tracking URI is a server already: open {shown}")
        with reading(loc, tracking=False):  # echo_links checks the server; a server that stops answering: one line
            echo_links(shown, loc.tracking_uri, loc.experiment_prefix, study, loc.request_timeout_s, strict=True)
        return
    require_tracking_store(loc.tracking_uri)  # the server would create a missing store, or its tables in a foreign one
    try:
        cmd, env, base_url = server_command(loc, host, port)
    except FileNotFoundError as err:
        _fail(str(err), EXIT_UNAVAILABLE)
        return
    click.echo(f"MLflow UI on {base_url}  (store {redact_url(loc.tracking_uri)})")
    echo_links(base_url, loc.tracking_uri, loc.experiment_prefix, study, loc.request_timeout_s)
    sys.exit(serve_in_own_group(cmd, env, interrupted_code=EXIT_INTERRUPTED))


main.add_command(train)
main.add_command(gradcheck)


if __name__ == "__main__":  # pragma: no cover
    main()

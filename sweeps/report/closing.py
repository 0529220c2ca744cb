"""The study's closing report, logged to its parent run once every worker has ended: the counts and the best
trial, Optuna's study plots, the best trial's PNGs (:mod:`sweeps.report.trial_plots`) and the study's
diagnosis (``diagnosis.md``, the lambda-scaling figure and tag), all read back from the stores.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path

import optuna

from sweeps import names
from sweeps.study.budget import StudyResult
from sweeps.tracking.tracker import Tracker

_log = logging.getLogger("sweeps.closing")


def close_parent(study: optuna.Study, tracker: Tracker, run_id: str, result: StudyResult, *, interrupted: bool,
                 artifacts: str) -> bool:
    """Log the closing report to the study's parent run ``run_id`` and end it (FINISHED, or KILLED when
    ``interrupted``); False when the tracking store did not take the counts within its outage limit."""
    metrics = {names.trials_metric(k): float(v) for k, v in result.counts.items()}
    if result.best_value is not None:
        metrics[names.METRIC_BEST_VALUE] = float(result.best_value)
        tracker.set_tags(run_id, {names.TAG_BEST_TRIAL: result.best_trial,
                                  **{names.best_param_tag(k): v for k, v in (result.best_params or {}).items()}})
    tracker.log_epoch(run_id, metrics, step=sum(result.counts.values()), flush=True)
    if tracker.drain(min(tracker.outage_s, 30.0)):
        return False
    if artifacts != "none" and result.best_value is not None:
        from sweeps.plots import figures as plots
        from sweeps.plots.study import study_figures

        with warnings.catch_warnings(), tempfile.TemporaryDirectory() as tmp:
            warnings.simplefilter("ignore")
            for key, fig in study_figures(study).items():
                path = plots.save_figure(fig, Path(tmp) / f"{key}.png")
                tracker.log_artifact(run_id, path, "study_plots")
    if artifacts == "best" and result.best_value is not None:
        _log_best_trial_plots(study, tracker)
    if artifacts != "none":
        _log_study_diagnosis(study, tracker, run_id)
    state, status = names.parent_state(interrupted)
    tracker.finish(run_id, state, status=status, should_stop=lambda: True)  # one try: the launcher is ending
    return True


def _log_best_trial_plots(study: optuna.Study, tracker: Tracker) -> None:
    """The PNGs of the study's best trial(s) to their runs (:mod:`sweeps.report.trial_plots`); logged, never raised."""
    from sweeps.report.trial_plots import draw_trial_plots

    try:
        draw_trial_plots(study.study_name, tracking_uri=tracker.tracking_uri, experiment_name=tracker.experiment_name,
                         log=tracker.log_artifact)
    except Exception as err:  # noqa: BLE001 - the plots read the sweep; they must not fail it
        _log.warning("study %s: best trial plots not drawn (%s: %s)", study.study_name, type(err).__name__, err)


def _log_study_diagnosis(study: optuna.Study, tracker: Tracker, run_id: str) -> None:
    """The study's analysis to its parent run: ``diagnosis.md``, ``lambda_scaling.png`` when it applies,
    and the tag ``sweeps.lambda_scaling.steadiest``. A failure here is logged, never raised."""
    from sweeps.analysis import diagnosis as dg
    from sweeps.query.explanations import explain_study

    try:
        exp = explain_study(study.study_name, tracking_uri=tracker.tracking_uri,
                               experiment_name=tracker.experiment_name)
        with warnings.catch_warnings(), tempfile.TemporaryDirectory() as tmp:
            warnings.simplefilter("ignore")
            report = Path(tmp) / dg.STUDY_REPORT
            report.write_text(dg.study_markdown(exp))
            tracker.log_artifact(run_id, report)
            if exp.scaling is not None:
                from sweeps.plots import figures as plots

                path = plots.save_figure(plots.lambda_scaling_figure(exp.scaling, title=study.study_name),
                                         Path(tmp) / dg.SCALING_PLOT)
                tracker.log_artifact(run_id, path)
                tracker.set_tags(run_id, {names.TAG_STEADIEST: ",".join(exp.scaling.steadiest)})
    except Exception as err:  # noqa: BLE001 - the analysis reads the sweep; it must not fail it
        _log.warning("study %s: no diagnosis logged (%s: %s)", study.study_name, type(err).__name__, err)

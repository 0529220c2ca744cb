"""A trial's two PNGs (``loss_decomposition.png``, ``layer_norms.png``), drawn where they pay.

matplotlib needs ~0.3-0.4 s for each of these figures, more than a digits trial's training, and
drawing them for every completed trial in the workers doubled a digits sweep's time (+111%
measured on 2026-11-30). So by default (``trial_artifacts: best``) no worker draws them: the
launcher draws them at the end of the sweep for the study's :data:`DEFAULT_BEST` best trials, from
the metrics MLflow holds (every epoch of every trial is there anyway), and ``sweeps plots STUDY``
draws them on demand for any trials (``--trial N``, ``--best K``). ``trial_artifacts: complete``
(or ``all``) keeps drawing them in the workers for every completed (or every) trial.

"Best" reads MLflow only: the trial runs whose ``sweeps.state`` is ``COMPLETE``, ranked by the last
epoch's objective metric (the params ``objective.metric`` and ``objective.direction``), which is the
value the trial told Optuna. Ties keep the lower trial number first.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sweeps import names
from sweeps.plots.figures import PLOT_FILES, trial_figures
from sweeps.redaction import redact_url

__all__ = ["DEFAULT_BEST", "PLOT_FILES", "best_runs", "draw_trial_plots", "history_rows"]

#: How many of the study's best trials the launcher draws at the end of a sweep (``trial_artifacts: best``).
DEFAULT_BEST = 1


def history_rows(wide: Any) -> tuple[list[dict[str, float]], list[int]]:
    """One trial's rows of ``sweeps.query.history(..., wide=True)`` as ``(records, epochs)``, epoch order;
    a metric a record lacks (NaN in the wide frame) is left out of that record, as it was when logged."""
    wide = wide.sort_values("epoch")
    keys = [c for c in wide.columns if c not in ("run_id", "trial", "epoch")]
    records = [{k: float(v) for k, v in zip(keys, row) if not (isinstance(v, float) and math.isnan(v))}
               for row in wide[keys].itertuples(index=False, name=None)]
    return records, [int(e) for e in wide["epoch"]]


def _objective_value(run: Any) -> float | None:
    metric = run.data.params.get("objective.metric")
    value = run.data.metrics.get(metric) if metric else None
    return None if value is None or math.isnan(value) else float(value)


def best_runs(runs: Sequence[Any], count: int) -> list[Any]:
    """The ``count`` best COMPLETE trial runs of ``runs`` (see the module docstring), best first."""
    scored = []
    for run in runs:
        if run.data.tags.get(names.TAG_STATE) != names.STATE_COMPLETE:
            continue
        value = _objective_value(run)
        number = run.data.tags.get(names.TAG_TRIAL_NUMBER, "")
        if value is None or not number.isdigit():
            continue
        sign = -1.0 if run.data.params.get("objective.direction", "minimize") == "maximize" else 1.0
        scored.append((sign * value, int(number), run))
    return [run for _, _, run in sorted(scored, key=lambda s: s[:2])[:count]]


def draw_trial_plots(study_name: str, *, tracking_uri: str, experiment_name: str | None = None,
                     trials: Sequence[int] | None = None, best: int | None = None, out_dir: str | Path | None = None,
                     log: Callable[[str, Path], None] | None = None, method: str = "auto") -> dict[int, list[Path]]:
    """Draw the PNGs of some trials of ``study_name`` from their MLflow metrics.

    Trials: the numbers in ``trials``, else the ``best`` best (default :data:`DEFAULT_BEST`).
    ``log(run_id, path)``: where each PNG goes (e.g. ``MlflowClient.log_artifact``); ``out_dir``:
    also keep the files there as ``trial-<number>-<file>``. Returns ``{trial number: [paths]}``
    (paths under ``out_dir``, or temporary ones already removed when there is none).
    Raises ``LookupError`` naming a trial number the study's MLflow runs do not have.
    """
    import warnings

    from sweeps import query
    from sweeps.analysis.diagnosis import trial_number_of
    from sweeps.plots import figures as plots
    from sweeps.query.explanations import study_trial_runs

    runs = study_trial_runs(study_name, tracking_uri, experiment_name)
    if trials is not None:
        by_number = {}
        for run in runs:  # the latest run of a number (a trial's run retried by the repair pass)
            n = trial_number_of(run)
            if n is not None and (n not in by_number or run.info.start_time > by_number[n].info.start_time):
                by_number[n] = run
        missing = [n for n in trials if n not in by_number]
        if missing:
            raise LookupError(f"study {study_name!r} has no MLflow run for trial(s) {missing} at {redact_url(tracking_uri)}")
        chosen = [by_number[n] for n in dict.fromkeys(trials)]
    else:
        chosen = best_runs(runs, DEFAULT_BEST if best is None else best)
    if not chosen:
        return {}
    wide = query.history(study_name, tracking_uri=tracking_uri, experiment_name=experiment_name, wide=True,
                         method=method, trials=[trial_number_of(r) for r in chosen])
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    drawn: dict[int, list[Path]] = {}
    with warnings.catch_warnings(), tempfile.TemporaryDirectory() as tmp:
        warnings.simplefilter("ignore")
        for run in chosen:
            number = trial_number_of(run)
            rows = wide[wide["run_id"] == run.info.run_id]
            if rows.empty:
                continue
            records, epochs = history_rows(rows)
            folder = Path(tmp) / run.info.run_id
            folder.mkdir()
            paths = []
            for file_name, fig in trial_figures(records, epochs).items():
                path = plots.save_figure(fig, folder / file_name)
                if log is not None:
                    log(run.info.run_id, path)
                if out is not None:
                    kept = out / f"trial-{number:04d}-{file_name}"
                    kept.write_bytes(path.read_bytes())
                    path = kept
                paths.append(path)
            drawn[number] = paths
    return drawn

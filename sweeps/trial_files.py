"""The files of a trial's MLflow run: ``diagnosis.json``, ``network.npz``, ``network2.json`` and, where the
workers draw them (``trial_artifacts: complete`` / ``all``), its two PNGs (:mod:`sweeps.trial_plots`).

:func:`diagnose` reads the trial's findings from what it logged; :func:`write` puts the files in a folder,
which the objective sends to the run in one ``log_artifacts`` call.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

_log = logging.getLogger("sweeps.trial_files")

__all__ = ["diagnose", "write"]


def diagnose(number: int, history: list[dict[str, float]], epochs: list[int] | None,
             params: dict[str, Any]) -> tuple[dict[str, Any], list[Any]] | None:
    """The trial's findings (:mod:`sweeps.diagnostics`): ``(diagnosis.json content, findings)``.

    ``history``: every logged record (epoch 0 included), ``epochs`` their epoch numbers (default 1, 2, ...).
    Never fails the trial: a diagnosis that cannot be made is logged as a warning and skipped (None).
    """
    from sweeps import diagnostics as dg

    try:
        facts = dg.run_facts(params)
        findings = dg.diagnose(dg.rows_table(history, epochs if epochs is not None else
                                             range(1, len(history) + 1)), facts)
        return dg.diagnosis_document(number, facts, findings), findings
    except Exception as exc:  # noqa: BLE001 - a diagnosis is a reading of the trial, not part of it
        _log.warning("trial %d: no diagnosis (%s: %s)", number, type(exc).__name__, exc)
        return None


def write(folder: Path, net: Any, history: list[dict[str, float]], params: dict[str, Any], *, plots: bool,
          epochs: list[int] | None = None, diagnosis: dict[str, Any] | None = None) -> list[Path]:
    """Write the trial's files into ``folder``: ``diagnosis.json`` (with a ``diagnosis``), ``network.npz`` and
    ``network2.json`` (with a ``net``; the latter only where network2.py can represent it), and with ``plots`` its
    two PNGs. Returns the files written."""
    if diagnosis is not None:
        from sweeps.diagnostics import DIAGNOSIS_ARTIFACT

        (folder / DIAGNOSIS_ARTIFACT).write_text(json.dumps(diagnosis, indent=2, allow_nan=False))
    if net is not None:
        from nncore import io as nnio

        extra = {k: params[k] for k in ("penalty", "lmbda", "convention", "n_train", "batch_size", "eta")}
        nnio.save(net, folder / "network.npz", extra=extra)
        try:
            nnio.export_network2(net, folder / "network2.json")
        except ValueError:
            pass  # network2.py cannot represent this net (softmax or non-sigmoid hidden layers)
    if plots:  # matplotlib needs ~0.3 s a figure: see sweeps.trial_plots
        from sweeps import plots as figs
        from sweeps.trial_plots import trial_figures

        for file_name, fig in trial_figures(history, epochs).items():
            figs.save_figure(fig, folder / file_name)
    return sorted(folder.iterdir())

"""The files of a trial's MLflow run: ``diagnosis.json``, ``network.npz``, ``network2.json`` and, where the
workers draw them (``trial_artifacts: complete`` / ``all``), its two PNGs (:mod:`sweeps.plots.figures`).

The trial's findings come from :func:`sweeps.analysis.diagnosis.diagnose_trial`; :func:`write` puts the files in a folder,
which the objective sends to the run in one ``log_artifacts`` call.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

_log = logging.getLogger("sweeps.trial_files")

__all__ = ["write"]


def write(folder: Path, net: Any, history: list[dict[str, float]], params: dict[str, Any], *, plots: bool,
          epochs: list[int] | None = None, diagnosis: dict[str, Any] | None = None) -> list[Path]:
    """Write the trial's files into ``folder``: ``diagnosis.json`` (with a ``diagnosis``), ``network.npz`` and
    ``network2.json`` (with a ``net``; the latter only where network2.py can represent it), and with ``plots`` its
    two PNGs. Returns the files written."""
    if diagnosis is not None:
        from sweeps.analysis.diagnosis import DIAGNOSIS_ARTIFACT

        (folder / DIAGNOSIS_ARTIFACT).write_text(json.dumps(diagnosis, indent=2, allow_nan=False))
    if net is not None:
        from nncore import io as nnio

        extra = {k: params[k] for k in ("penalty", "lmbda", "convention", "n_train", "batch_size", "eta")}
        nnio.save(net, folder / "network.npz", extra=extra)
        try:
            nnio.export_network2(net, folder / "network2.json")
        except ValueError:
            pass  # network2.py cannot represent this net (softmax or non-sigmoid hidden layers)
    if plots:  # matplotlib needs ~0.3 s a figure: see sweeps.report.trial_plots
        from sweeps.plots import figures as figs
        from sweeps.plots.figures import trial_figures

        for file_name, fig in trial_figures(history, epochs).items():
            figs.save_figure(fig, folder / file_name)
    return sorted(folder.iterdir())

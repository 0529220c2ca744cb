"""``sweeps explain``: a study's or a trial's findings, printed for people (rich) or for scripts (JSON).

The explanations come from :mod:`sweeps.analysis.diagnosis`; this module only renders them. A trial is
shown as its findings, most severe first, each one sentence with the run's own numbers; a study
as one line per finished trial (its codes), the findings of its best trial, and the lambda-scaling
analysis when the study varied lambda with the batch size or the training-set size.
"""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table

from nncore.diagnostics import SEVERITIES
from sweeps import names
from sweeps.analysis.diagnosis import StudyExplanation, TrialExplanation, worst

#: How each severity is shown.
STYLE = {"warning": "bold red", "notice": "yellow", "info": "cyan"}


def _sev(severity: str) -> str:
    return f"[{STYLE.get(severity, '')}]{severity}[/]"


def render_trial(exp: TrialExplanation, console: Console) -> None:
    f = exp.facts
    value = f", value {exp.value:.4g}" if exp.value is not None else ""
    console.print(f"[bold]Trial {exp.trial}[/] (run {exp.run_id}, {exp.state}{value}, {exp.epochs} epochs): "
                  f"eta={f.eta:g}, lambda={f.lmbda:g} ({f.convention}, {f.penalty}), batch_size={f.batch_size}, "
                  f"n_train={f.n_train}" + (f", n_eval={f.n_eval}" if f.n_eval else ""))
    if not exp.findings:
        console.print("  no findings")
    ordered = sorted(exp.findings, key=lambda x: (SEVERITIES.index(x.severity), x.code, x.layer or 0))
    for finding in ordered:
        layer = f" layer {finding.layer}" if finding.layer else ""
        console.print(f"  {_sev(finding.severity)} [bold]{finding.code}[/]{layer}: {finding.message}",
                      highlight=False)


def render_study(exp: StudyExplanation, console: Console) -> None:
    console.print(f"[bold]Study {exp.study}[/]: {len(exp.trials)} finished trials"
                  + (f", objective {exp.objective} ({exp.direction})" if exp.objective else ""))
    if exp.trials:
        table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
        for col in ("trial", "state", "value", "lambda", "batch", "n_train", "findings"):
            table.add_column(col, justify="right" if col in ("trial", "value", "lambda", "batch", "n_train") else "left")
        for t in exp.trials:
            codes = worst(t.findings)
            text = ", ".join(f"[{STYLE[s]}]{c}[/]" for c, s in sorted(codes.items(), key=lambda kv: (
                SEVERITIES.index(kv[1]), kv[0])))
            table.add_row(str(t.trial), t.state, f"{t.value:.4g}" if t.value is not None else "-",
                          f"{t.facts.lmbda:g}", str(t.facts.batch_size), str(t.facts.n_train), text or "-")
        console.print(table)
    complete = [t for t in exp.trials if t.state == names.STATE_COMPLETE and t.value is not None]
    if complete:
        best = (max if exp.direction != "minimize" else min)(complete, key=lambda t: t.value)
        console.print()
        console.print("[bold]The best trial[/]")
        render_trial(best, console)
    console.print()
    console.print("[bold]Lambda scaling[/]")
    if exp.scaling is None:
        console.print("  not analysed: lambda was not tried at two or more batch sizes or training-set sizes")
    else:
        s = exp.scaling
        table = Table(box=None, header_style="bold", pad_edge=False)
        for col in ("batch_size", "n_train", "trials", "best value", "dataset", "per_batch", "decoupled"):
            table.add_column(col, justify="right")
        for g in s.groups:
            table.add_row(str(g.batch_size), str(g.n_train), str(g.n_trials), f"{g.best_value:.4g}",
                          *(f"{g.best[c]:.4g}" for c in ("dataset", "per_batch", "decoupled")))
        table.add_row("spread", "(decades)", "", "", *(f"{s.spread[c]:.2f}" for c in ("dataset", "per_batch",
                                                                                      "decoupled")))
        console.print(table)
        console.print(f"  {s.message}", highlight=False)
        for note in s.notes:
            console.print(f"  note: {note}", highlight=False)
    for line in exp.skipped:
        console.print(f"  skipped {line}", style="dim", highlight=False)


def to_json(exp: StudyExplanation | TrialExplanation) -> str:
    """The explanation as JSON (floats that are not finite become null)."""
    return json.dumps(_finite(exp.to_dict()), indent=2)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj

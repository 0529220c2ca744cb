"""How a trial ended: one value, :class:`TrialEnd`, made by one pure function, :func:`end_of`.

Every trial a worker takes ends in exactly one of these ways (Optuna state told / MLflow run status /
``reason``; the worker's next step):

============  ===================  ===========  ============================================  ====================
kind          told to the study    run status   reason starts with                            the worker then
============  ===================  ===========  ============================================  ====================
complete      COMPLETE, its value  FINISHED     ``completed: N epochs (<stop reason>)``        takes the next trial
pruned        PRUNED               KILLED       ``pruned at epoch k`` or ``diverged:``         takes the next trial
failed        FAIL                 FAILED       ``<ExceptionType>: message``                   takes the next trial
interrupted   FAIL                 KILLED       ``interrupted``                                retries it, stops (130)
tracking      FAIL                 (queued)     ``lost: tracking unavailable``                 retries it, stops (76)
refused       FAIL                 (queued)     ``lost: tracking refused the credentials``     retries it, stops (77)
abandoned     nothing              KILLED       ``abandoned:`` (on the run only)               takes the next trial
============  ===================  ===========  ============================================  ====================

A diverged training (NaN/inf) is PRUNED, not FAIL, so that the samplers (TPE) learn that the region is
bad (they ignore failed trials). ``abandoned``: the trial was failed elsewhere (its heartbeat went stale
while this process was stopped) and already retried by others; nothing is told. ``tracking``: the trial's
MLflow run could not be created or delivered within ``tracking_outage_s``; the trial is failed with the
reason and retried with its parameters (it does not count), and the worker stops. ``refused``: the tracking
server refused the worker's credentials (HTTP 401 or 403: a password changed, a permission revoked); no wait
can cure that, so the trial is put back at once as for ``tracking`` and the worker stops with one line naming
the variable to set (:func:`sweeps.stores.refused_message`). ``interrupted``: the worker
got SIGTERM (a scheduler's stop: Kubernetes, SLURM, ``docker compose stop``) or SIGINT (Ctrl-C); the trial
stops at once while nncore computes, else after its epoch's I/O, its run ends KILLED with the reason, and
its point is put back: a copy with the same parameters is enqueued for another worker (or the resumed
sweep), and the interrupted trial no longer counts towards ``n_trials`` (:func:`TrialEnd.retried`; at
most ``study.max_retries`` times per point, like a lost trial).

The objective (:mod:`sweeps.engine.objective`) turns what its training produced (a ``TrainResult`` or the
exception that ended it) into a :class:`TrialEnd` with :func:`end_of`, records the reason and ends the run;
the worker (:mod:`sweeps.engine.worker`) tells the study :attr:`TrialEnd.state` and acts on
:attr:`TrialEnd.kind`. :meth:`TrialEnd.for_optuna` gives the same end to ``study.optimize`` (a value, or the
exception Optuna expects).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from sweeps import names
from sweeps.redaction import redact
from sweeps.stores import refused_credentials, refused_message


class Interrupted(KeyboardInterrupt):
    """Raised inside a running trial when the worker receives SIGINT or SIGTERM."""


class TrialAbandoned(Exception):
    """The trial was failed elsewhere (stale heartbeat) while this process ran it: drop it, tell nothing."""


class TrackingLost(Exception):
    """The trial's MLflow run could not be created or delivered within the outage limit."""


class Kind(str, enum.Enum):
    """The ways a trial ends (module docstring)."""

    COMPLETE = "complete"
    PRUNED = "pruned"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    TRACKING = "tracking"
    REFUSED = "refused"
    ABANDONED = "abandoned"


#: Optuna state told for each kind (None: nothing is told).
STATE = {Kind.COMPLETE: names.STATE_COMPLETE, Kind.PRUNED: names.STATE_PRUNED, Kind.FAILED: names.STATE_FAIL,
         Kind.INTERRUPTED: names.STATE_FAIL, Kind.TRACKING: names.STATE_FAIL, Kind.REFUSED: names.STATE_FAIL,
         Kind.ABANDONED: None}


@dataclass(frozen=True)
class TrialEnd:
    """How one trial ended: its kind, its reason, its value (``complete`` only) and the exception behind it.

    The reason is shown and stored (Optuna's ``reason`` attribute, MLflow's ``sweeps.reason`` tag): it is
    made with every secret masked (:func:`sweeps.redaction.redact`), whatever the exception's text held.
    """

    kind: Kind
    reason: str
    value: float | None = None
    error: BaseException | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "reason", redact(self.reason))

    @property
    def state(self) -> str | None:
        """The Optuna state told (``COMPLETE`` / ``PRUNED`` / ``FAIL``); None for ``abandoned``."""
        return STATE[self.kind]

    @property
    def run_status(self) -> str:
        """The MLflow status its run ends with (:func:`sweeps.names.run_status`)."""
        if self.kind == Kind.ABANDONED:
            return names.run_status(names.STATE_FAIL, names.REASON_ABANDONED)
        return names.run_status(self.state or names.STATE_FAIL, self.reason)

    @property
    def retried(self) -> bool:
        """Whether the trial's point is put back (a copy enqueued with its parameters): a trial stopped by a signal
        or cut off from the tracking store never evaluated its point through a fault of its own."""
        return self.kind in (Kind.INTERRUPTED, Kind.TRACKING, Kind.REFUSED)

    @property
    def keeps_network(self) -> bool:
        """Whether the trial's network files are worth keeping (a complete or pruned, not diverged, training)."""
        return self.kind in (Kind.COMPLETE, Kind.PRUNED) and not self.reason.startswith("diverged")

    def for_optuna(self) -> float:
        """This end as ``study.optimize`` expects it: the value, or the exception that tells the state."""
        import optuna

        if self.kind == Kind.COMPLETE:
            assert self.value is not None
            return self.value
        if self.kind == Kind.PRUNED:
            pruned = optuna.TrialPruned(self.reason)
            pruned.__cause__ = self.error
            raise pruned
        if self.kind == Kind.INTERRUPTED:
            raise self.error if isinstance(self.error, KeyboardInterrupt) else Interrupted(self.reason)
        if self.kind == Kind.ABANDONED:
            raise TrialAbandoned(self.reason)
        if self.kind in (Kind.TRACKING, Kind.REFUSED):
            raise TrackingLost(self.reason)
        raise self.error if self.error is not None else RuntimeError(self.reason)


def reason_of(exc: BaseException) -> str:
    """``<ExceptionType>: message`` (the type alone when the message is empty)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def final_value(history: Sequence[Mapping[str, float]], metric: str) -> float:
    """The objective value of a finished training: ``metric`` at the last epoch (epoch 0 never counts).

    ``history`` holds epochs 1, 2, ...; ValueError when it is empty or its last epoch lacks ``metric``.
    """
    if not history:
        raise ValueError(f"no epoch was trained, so there is no value of {metric!r}")
    if metric not in history[-1]:
        raise ValueError(f"the last epoch's record has no value of {metric!r} (undefined for this run)")
    return history[-1][metric]


def abandoned(number: int) -> TrialEnd:
    """The end of a trial that was failed elsewhere while this worker was not heard from."""
    return TrialEnd(Kind.ABANDONED, f"{names.REASON_ABANDONED}: trial {number} was failed while this worker was not "
                                    f"heard from (no heartbeat for longer than the grace period, e.g. a stopped "
                                    f"process); the study retried it")


def tracking_lost(detail: str, error: BaseException | None = None) -> TrialEnd:
    """The end of a trial whose run the tracking store did not take: ``lost: tracking unavailable: <detail>``."""
    return TrialEnd(Kind.TRACKING, f"{names.REASON_LOST_TRACKING}: {detail}", error=error)


def refused(tracking_uri: str, error: BaseException | None = None) -> TrialEnd:
    """The end of a trial whose run the tracking server refused (HTTP 401/403): ``refused: <the one line>``."""
    return TrialEnd(Kind.REFUSED, f"{names.REASON_REFUSED}: {refused_message(tracking_uri, error)}", error=error)


def end_of(result: Any, history: Sequence[Mapping[str, float]], metric: str, *, number: int = -1,
           tracking_uri: str = "") -> TrialEnd:
    """The trial's end from what its training produced: a ``TrainResult`` (``stop_reason``) or the exception.

    ``history``: the epochs 1, 2, ... it reported (``metric`` at the last one is the value); ``number``: the
    trial's number (for the abandoned reason); ``tracking_uri``: named in a ``refused`` reason. Pure: it records
    nothing, it only classifies.
    """
    import optuna

    import nncore

    if not isinstance(result, BaseException):
        try:
            value = final_value(history, metric)
        except ValueError as exc:
            return TrialEnd(Kind.FAILED, reason_of(exc), error=exc)
        return TrialEnd(Kind.COMPLETE, f"completed: {len(history)} epochs ({result.stop_reason})", value=value)
    if isinstance(result, (optuna.exceptions.UpdateFinishedTrialError, TrialAbandoned)):
        return abandoned(number)
    if isinstance(result, TrackingLost):
        return TrialEnd(Kind.TRACKING, str(result), error=result)
    if refused_credentials(result):
        return refused(tracking_uri, result)
    if isinstance(result, optuna.TrialPruned):
        return TrialEnd(Kind.PRUNED, str(result), error=result)
    if isinstance(result, nncore.DivergenceError):
        return TrialEnd(Kind.PRUNED, f"diverged: {result}", error=result)
    if isinstance(result, KeyboardInterrupt):
        return TrialEnd(Kind.INTERRUPTED, f"{names.REASON_INTERRUPTED} ({result})" if str(result)
                        else names.REASON_INTERRUPTED, error=result)
    return TrialEnd(Kind.FAILED, reason_of(result), error=result)

"""A worker's MLflow writes in a process of their own, where a core is free.

MLflow's store does its work in Python (SQLAlchemy, ~12 SQLite commits per trial): ~50 ms a
trial with :mod:`sweeps.metric_writer`, which a worker's training waits for when the
:class:`~sweeps.tracking.Tracker` lives in its process (a thread would not help: that work
holds the GIL). :class:`TrackingRelay` runs the worker's ``Tracker`` in a child process and
forwards the calls over a pipe:

* ``log_epoch`` and ``queue_tags`` are sent without waiting (the child queues and flushes them
  on the tracker's own schedule, ``flush_interval_s``), so epochs never wait for MLflow;
* every other call (``start_trial``, ``finish``, ``log_artifacts``, ``drain``, ...) waits for the
  child's answer, and the pipe keeps the order: when ``finish`` returns, every epoch logged before
  it has been delivered (or ``TrackingUnavailable`` is raised, as in-process). So a trial is still
  told to Optuna only after its run holds all its data: nothing changes in what a study guarantees;
* a ``should_stop`` callable (a signal reached the worker) is watched while waiting and passed on to
  the child through a shared event, so a signal still cuts an outage wait short;
* the child ignores SIGINT and SIGTERM (the worker handles them and ends its trials); when the
  worker's end of the pipe closes (the worker exited, or was killed) the child delivers what is
  still queued (up to ``outage_s``) and exits: a killed worker's last epochs are not lost.

When (``tracking_process`` in ``mlflow.yml``): ``auto`` (default) uses a relay when each worker
can have a core of its own for it (``2 x workers <= usable cores``); ``on`` always; ``off`` never.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
from typing import Any, Callable

__all__ = ["TRACKING_PROCESS", "TrackingRelay", "use_relay"]

#: Values of ``tracking_process`` in ``mlflow.yml``.
TRACKING_PROCESS = ("auto", "on", "off")
#: Calls sent without waiting for an answer.
ASYNC_CALLS = frozenset({"log_epoch", "queue_tags"})
#: Calls the relay forwards (the part of ``Tracker`` a worker uses).
CALLS = frozenset({"start_trial", "log_epoch", "queue_tags", "finish", "log_artifacts", "log_artifact", "flush",
                   "retry_pending", "drain", "pending_runs"})


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def use_relay(setting: str, workers: int, cores: int | None = None) -> bool:
    """Whether workers log through a :class:`TrackingRelay` (see the module docstring)."""
    if setting not in TRACKING_PROCESS:
        raise ValueError(f"tracking_process must be one of {list(TRACKING_PROCESS)}, got {setting!r}")
    if setting != "auto":
        return setting == "on"
    return 2 * workers <= (usable_cores() if cores is None else cores)


class RelayError(RuntimeError):
    """The relay process is gone or answered with an error that could not be sent back as itself."""


class TrackingRelay:
    """A :class:`~sweeps.tracking.Tracker` in a child process; the same calls, see the module docstring."""

    def __init__(self, tracking_uri: str, experiment_name: str, artifact_location: str | None = None, *,
                 ready: Any = None, **tracker_kwargs: Any) -> None:
        """Start the child at once; it builds its ``Tracker`` once ``ready`` (an event, optional) is set, while
        the worker does its own start-up. :meth:`started` waits for that (and raises what the build raised)."""
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._stop = ctx.Event()
        self._proc = ctx.Process(target=_serve, name="sweeps-tracking-relay", daemon=False,
                                 args=(child, self._stop, ready, tracking_uri, experiment_name, artifact_location,
                                       tracker_kwargs))
        self._proc.start()
        child.close()
        self.tracking_uri, self.experiment_name = tracking_uri, experiment_name
        self._info: dict[str, Any] | None = None

    def started(self) -> "TrackingRelay":
        """Wait until the child's ``Tracker`` exists (raises ``TrackingUnavailable`` as ``Tracker()`` would)."""
        if self._info is None:
            self._info = self._answer(lambda: False)
        return self

    @property
    def experiment_id(self) -> str:
        return self.started()._info["experiment_id"]  # type: ignore[index]

    @property
    def outage_s(self) -> float:
        return self.started()._info["outage_s"]  # type: ignore[index]

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name not in CALLS:
            raise AttributeError(f"{type(self).__name__} has no attribute {name!r} (relayed calls: {sorted(CALLS)})")

        def call(*args: Any, should_stop: Callable[[], bool] | None = None, **kwargs: Any) -> Any:
            return self._call(name, args, kwargs, should_stop)

        return call

    def _call(self, name: str, args: tuple, kwargs: dict, should_stop: Callable[[], bool] | None) -> Any:
        self.started()
        try:
            self._conn.send((name, args, kwargs, should_stop is not None))
        except (OSError, EOFError) as err:
            raise RelayError(f"the tracking relay process (pid {self.pid}) is gone: {err}") from err
        if name in ASYNC_CALLS:
            return None
        return self._answer(should_stop or (lambda: False))

    def _answer(self, should_stop: Callable[[], bool]) -> Any:
        while True:
            try:
                if self._conn.poll(0.1):
                    ok, value = self._conn.recv()
                    break
            except (OSError, EOFError) as err:
                raise RelayError(f"the tracking relay process (pid {self.pid}) is gone "
                                 f"(exit code {self._proc.exitcode})") from err
            if should_stop():
                self._stop.set()
            if not self._proc.is_alive() and not self._conn.poll(0):
                raise RelayError(f"the tracking relay process (pid {self.pid}) exited "
                                 f"(code {self._proc.exitcode})")
        self._stop.clear()
        if ok:
            return value
        raise value

    def close(self, timeout: float | None = None) -> None:
        """Let the child deliver what is queued and exit (it drains for up to ``outage_s``; a child still
        running ``timeout`` s after that, default ``outage_s + 30``, is terminated)."""
        if timeout is None:
            timeout = (self._info or {}).get("outage_s", 300.0) + 30.0
        try:
            self._conn.close()
        finally:
            self._proc.join(timeout)
            if self._proc.is_alive():  # pragma: no cover - a child stuck past its drain
                self._proc.terminate()
                self._proc.join(5)


def _serve(conn: Any, stop: Any, ready: Any, tracking_uri: str, experiment_name: str, artifact_location: str | None,
           kwargs: dict[str, Any]) -> None:
    """The child: build the Tracker, then run the calls in order until the pipe closes; then drain."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker handles signals and ends its trials
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from sweeps.tracking import Tracker

    while ready is not None and not ready.wait(0.2):
        if conn.poll(0):  # nothing is sent before the first answer: the worker is gone
            return

    try:
        tracker = Tracker(tracking_uri, experiment_name, artifact_location, **kwargs)
    except BaseException as err:  # noqa: BLE001 - raised in the worker instead
        _send(conn, False, err)
        return
    _send(conn, True, {"experiment_id": tracker.experiment_id, "outage_s": tracker.outage_s})
    while True:
        try:
            name, args, call_kwargs, stoppable = conn.recv()
        except (EOFError, OSError):
            break
        if stoppable:
            call_kwargs["should_stop"] = stop.is_set
        try:
            result = getattr(tracker, name)(*args, **call_kwargs)
        except Exception as err:  # noqa: BLE001 - the worker's call raises it
            if name in ASYNC_CALLS:
                import logging

                logging.getLogger("sweeps.tracking").warning("%s failed in the tracking relay: %s", name, err)
                continue
            _send(conn, False, err)
            continue
        if name not in ASYNC_CALLS:
            _send(conn, True, result)
    left = tracker.drain(tracker.outage_s)  # the worker is gone: deliver what it queued
    if left:
        import logging

        logging.getLogger("sweeps.tracking").error(
            "%d MLflow run(s) could not be delivered by the tracking relay; the launcher's repair closes them",
            len(left))


def _send(conn: Any, ok: bool, value: Any) -> None:
    import pickle

    try:
        pickle.loads(pickle.dumps(value))
    except Exception:  # noqa: BLE001 - an exception that does not pickle goes back as its text
        value = RelayError(f"{type(value).__name__}: {value}")
    try:
        conn.send((ok, value))
    except (OSError, EOFError):
        pass  # the worker is gone

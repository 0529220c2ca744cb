"""The worker's heartbeat thread (``sweeps.worker.Heartbeat``)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from sqlalchemy import exc as sa_exc

from servicekit import wait_until
from sweeps.storage import StorageUnavailable
from sweeps.worker import Heartbeat

INTERVAL = 0.05


class FakeStorage:
    """Counts ``record_heartbeat`` calls; the calls numbered in ``fail_on`` (1-based) raise."""

    def __init__(self, interval: Any = 1, fail_on: set[int] = frozenset()) -> None:
        self.interval = interval
        self.fail_on = set(fail_on)
        self.attempts: list[tuple[int, float]] = []  # (trial id, monotonic time)
        self.recorded = 0
        self.lock = threading.Lock()

    def get_heartbeat_interval(self) -> Any:
        return self.interval

    def record_heartbeat(self, trial_id: int) -> None:
        with self.lock:
            self.attempts.append((trial_id, time.monotonic()))
            if len(self.attempts) in self.fail_on:
                raise StorageUnavailable("the study's storage failed 10 times in a row (record_heartbeat)") \
                    if len(self.attempts) % 2 else sa_exc.OperationalError("UPDATE", {}, Exception("closed"))
            self.recorded += 1


def heartbeat_threads(trial_id: int) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"heartbeat-{trial_id}"]


def test_beats_on_entry_then_every_interval_until_the_block_ends():
    storage = FakeStorage()
    entered = time.monotonic()
    with Heartbeat(storage, 17, INTERVAL) as hb:
        assert storage.recorded == 1 and hb.beats >= 1  # the first beat is recorded before the block runs
        assert storage.attempts[0][1] >= entered
        wait_until(lambda: storage.recorded >= 6, timeout=10, what="6 heartbeats")
        assert len(heartbeat_threads(17)) == 1
    after = len(storage.attempts)
    assert heartbeat_threads(17) == []  # the only thread that beats has ended: no beat can follow
    assert len(storage.attempts) == after and hb.beats == storage.recorded
    assert {tid for tid, _ in storage.attempts} == {17}
    gaps = [b - a for (_, a), (_, b) in zip(storage.attempts, storage.attempts[1:])]
    assert min(gaps) >= INTERVAL * 0.9  # every interval, not in a busy loop


def test_a_failing_storage_call_does_not_stop_the_beats():
    storage = FakeStorage(fail_on={2, 3, 4})
    with Heartbeat(storage, 5, INTERVAL) as hb:
        wait_until(lambda: storage.recorded >= 4, timeout=10, what="heartbeats after three failed ones")
        assert len(storage.attempts) >= 7
        assert heartbeat_threads(5)
    assert hb.beats == storage.recorded  # only the beats that were recorded count
    assert heartbeat_threads(5) == []


def test_a_failing_first_beat_neither_raises_nor_stops_the_thread():
    storage = FakeStorage(fail_on={1})
    with Heartbeat(storage, 9, INTERVAL) as hb:
        assert storage.recorded == 0 and hb.beats == 0
        wait_until(lambda: storage.recorded >= 2, timeout=10, what="heartbeats after a failed first one")
    assert heartbeat_threads(9) == []


def test_the_block_s_exception_propagates_and_the_thread_stops():
    storage = FakeStorage()
    with pytest.raises(RuntimeError, match="trial failed"):
        with Heartbeat(storage, 3, INTERVAL):
            raise RuntimeError("trial failed")
    assert heartbeat_threads(3) == []


def test_a_long_interval_does_not_delay_the_end_of_the_block():
    storage = FakeStorage()
    start = time.monotonic()
    with Heartbeat(storage, 4, interval=3600):
        pass
    assert time.monotonic() - start < 5  # the thread is woken, not waited out
    assert storage.recorded == 1 and heartbeat_threads(4) == []


class NoHeartbeatStorage:
    """A journal storage: no ``get_heartbeat_interval`` at all."""

    def __init__(self) -> None:
        self.calls = 0

    def record_heartbeat(self, trial_id: int) -> None:  # pragma: no cover - must not be called
        self.calls += 1


@pytest.mark.parametrize("storage", [NoHeartbeatStorage(), FakeStorage(interval=None)],
                         ids=["no-heartbeat-api", "heartbeat-disabled"])
def test_a_storage_without_heartbeats_gets_none(storage):
    with Heartbeat(storage, 1, INTERVAL) as hb:
        assert heartbeat_threads(1) == []
    assert hb.beats == 0
    assert getattr(storage, "calls", 0) == 0 and not getattr(storage, "attempts", [])

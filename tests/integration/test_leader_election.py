"""Leader election on a real API server: one holder at a time, and how long a failover takes.

The electors use the operator's own timings (a 15 s Lease, renewed every 2 s, given up after
10 s without renewal). The measured times are printed (``-s``) and bounded here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from infercycle.kube.api import load_config
from infercycle.kube.lease import LEASE_DURATION_S, RETRY_S, LeaseElector
from tests.fixtures.cluster import Cluster

pytestmark = pytest.mark.integration


@pytest.fixture
def electors(cluster: Cluster, namespace: str) -> tuple[LeaseElector, LeaseElector]:
    client = load_config(str(cluster.kubeconfig))
    return (
        LeaseElector(client, namespace, "infercycle-operator-leader", "replica-a"),
        LeaseElector(client, namespace, "infercycle-operator-leader", "replica-b"),
    )


class Rounds:
    """Runs one elector's rounds in a thread, as the operator's task does, until stopped."""

    def __init__(self, elector: LeaseElector) -> None:
        self.elector = elector
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            self.elector.try_once()
            self.stop.wait(self.elector.retry_s)

    def __enter__(self) -> Rounds:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


def _until(predicate: Callable[[], bool], timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout}s")


def test_one_holder_at_a_time_and_failover_after_a_crash(
    electors: tuple[LeaseElector, LeaseElector],
) -> None:
    a, b = electors
    both: list[float] = []
    with Rounds(a) as rounds_a, Rounds(b) as rounds_b:
        _until(lambda: a.is_leader() or b.is_leader(), 10)
        leader, standby, rounds = (a, b, rounds_a) if a.is_leader() else (b, a, rounds_b)
        deadline = time.monotonic() + 3 * RETRY_S
        while time.monotonic() < deadline:  # both keep trying: never both leaders
            if a.is_leader() and b.is_leader():
                both.append(time.monotonic())
            time.sleep(0.05)
        assert not both
        assert not standby.is_leader()
        # The leader "crashes": its rounds stop and nothing is released.
        rounds.stop.set()
        rounds.thread.join(timeout=10)
        crashed = time.monotonic()
        stepped_down = _until(lambda: not leader.is_leader(), 20)
        failover = stepped_down + _until(standby.is_leader, 30)
        print(f"\nfailover after a crash: {time.monotonic() - crashed:.1f}s")
        assert stepped_down < leader.renew_deadline_s + 0.5  # it stopped acting first
        assert LEASE_DURATION_S - RETRY_S <= failover <= LEASE_DURATION_S + 2 * RETRY_S + 1
        assert standby.transitions >= 1


def test_a_released_lease_is_taken_within_one_round(
    electors: tuple[LeaseElector, LeaseElector],
) -> None:
    a, b = electors
    assert a.try_once()
    with Rounds(b):
        time.sleep(RETRY_S)
        assert not b.is_leader()
        a.release()
        released = time.monotonic()
        took = _until(b.is_leader, 10)
        print(f"\nfailover after a release: {time.monotonic() - released:.1f}s")
        assert not a.is_leader()
        assert took <= RETRY_S + 1

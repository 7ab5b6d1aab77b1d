"""The leader Lease's rounds, decided without a cluster (the API calls: tests/integration)."""

import pytest
from kubernetes.client import ApiClient

from infercycle.kube.lease import LeaseElector, LeaseRecord, Step, next_step


def record(holder: str, duration_s: float = 15.0) -> LeaseRecord:
    return LeaseRecord(holder, "2026-01-01T00:00:00.000000Z", duration_s, 3, "42")


def test_no_lease_is_created() -> None:
    assert next_step(None, "a", 0.0) is Step.CREATE


def test_our_own_lease_is_renewed_however_old_it_looks() -> None:
    assert next_step(record("a"), "a", 0.0) is Step.RENEW
    assert next_step(record("a"), "a", 3600.0) is Step.RENEW


def test_someone_elses_lease_is_left_while_it_changes() -> None:
    assert next_step(record("b"), "a", 0.0) is Step.WAIT
    assert next_step(record("b"), "a", 14.9) is Step.WAIT


def test_a_lease_unchanged_for_its_duration_or_released_is_taken() -> None:
    assert next_step(record("b"), "a", 15.0) is Step.TAKE
    assert next_step(record("b", duration_s=5), "a", 6.0) is Step.TAKE
    assert next_step(record(""), "a", 0.0) is Step.TAKE


def test_timings_must_let_the_leader_step_down_before_anyone_takes_over() -> None:
    with pytest.raises(ValueError, match="retry < renew deadline < lease duration"):
        LeaseElector(ApiClient(), "ns", "lease", "a", lease_duration_s=10, renew_deadline_s=10)

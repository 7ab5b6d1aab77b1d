"""Shared test setup: the real local cluster fixtures live in tests/fixtures/cluster.py."""

pytest_plugins = ["tests.fixtures.cluster", "tests.fixtures.lws"]

"""Every built-in query parses with a real PromQL parser and reads only the metrics its profile
says it reads (the names checked against the servers' definitions)."""

from __future__ import annotations

import promql_parser
import pytest

from infercycle.api.servers import PROFILES, SignalSource

QUERIES = [
    pytest.param(source, id=f"{profile.server.value}-{source.signal}")
    for profile in PROFILES.values()
    for source in profile.sources.values()
    if source.query is not None
]


def _metric_names(expression: promql_parser.Expr) -> set[str]:
    names: set[str] = set()

    def visit(node: promql_parser.Expr) -> bool:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)
        return True

    promql_parser.walk(expression, visit)
    return names


@pytest.mark.parametrize("source", QUERIES)
def test_builtin_query_parses_and_reads_its_declared_metrics(source: SignalSource) -> None:
    assert source.query is not None
    expression = promql_parser.parse(source.query)
    read = {name.removesuffix("_bucket") for name in _metric_names(expression)}
    assert read, "a query that reads no metric"
    assert read <= set(source.metrics), sorted(read - set(source.metrics))


def test_the_parser_refuses_a_broken_query() -> None:
    with pytest.raises(ValueError, match="parenthesis"):
        promql_parser.parse("sum by (namespace, pod) (rate(x[5m])")

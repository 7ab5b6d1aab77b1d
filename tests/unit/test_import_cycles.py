"""The import-cycle check finds every circle, and the package has none."""

from __future__ import annotations

from hack.import_cycles import circle_through, import_edges, main, strongly_connected


def test_a_graph_without_circles_has_no_groups() -> None:
    edges = {"a": {"b", "c"}, "b": {"c"}, "c": set()}
    assert strongly_connected(edges) == []


def test_two_modules_importing_each_other_form_a_group() -> None:
    edges = {"a": {"b"}, "b": {"a"}, "c": {"a"}}
    assert strongly_connected(edges) == [["a", "b"]]


def test_a_long_circle_is_one_group_and_the_circle_is_spelled_out() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"d"}, "d": {"a"}, "e": {"a"}}
    groups = strongly_connected(edges)
    assert groups == [["a", "b", "c", "d"]]
    assert circle_through(groups[0], edges) == ["a", "b", "c", "d", "a"]


def test_separate_circles_are_separate_groups() -> None:
    edges = {"a": {"b"}, "b": {"a", "c"}, "c": {"d"}, "d": {"c"}}
    assert strongly_connected(edges) == [["a", "b"], ["c", "d"]]


def test_a_module_importing_itself_is_a_circle() -> None:
    edges = {"a": {"a"}, "b": {"a"}}
    assert strongly_connected(edges) == [["a"]]
    assert circle_through(["a"], edges) == ["a", "a"]


def test_the_shortest_circle_is_reported() -> None:
    edges = {"a": {"b", "x"}, "b": {"a"}, "x": {"y"}, "y": {"a"}}
    assert circle_through(["a", "b", "x", "y"], edges) == ["a", "b", "a"]


def test_the_package_has_no_import_cycle() -> None:
    edges = import_edges(["infercycle"])
    assert "infercycle.api.resolver" in edges
    assert strongly_connected(edges) == []
    assert main([]) == 0

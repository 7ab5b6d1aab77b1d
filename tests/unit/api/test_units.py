import pytest

from infercycle.api.units import format_duration, parse_duration, parse_quantity


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("5m", 300), ("1h30m", 5400), ("250ms", 0.25), ("1.5h", 5400), ("2h0m5s", 7205)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "5d", "m5", "5m 3s", "-5m", "1h-3m"])
def test_parse_duration_rejects_with_the_expected_form(text: str) -> None:
    with pytest.raises(ValueError, match=r'for example "30s", "5m" or "1h30m"'):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("512Mi", 512 * 2**20),
        ("2Gi", 2 * 2**30),
        ("0.9", 0.9),
        ("250m", 0.25),
        ("1.5k", 1500),
        ("2e3", 2000),
        ("100", 100),
        (".5", 0.5),
    ],
)
def test_parse_quantity(text: str, value: float) -> None:
    assert parse_quantity(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["", "Mi", "12 Mi", "1.2.3", "5Q", "90%"])
def test_parse_quantity_rejects_with_examples(text: str) -> None:
    with pytest.raises(ValueError, match="is not a Kubernetes quantity"):
        parse_quantity(text)


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.25, "250ms"), (30, "30s"), (5400, "1h30m"), (3600, "1h"), (0, "0ms")]
)
def test_format_duration_round_trips(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds)

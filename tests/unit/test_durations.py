"""The one parser of spans of time (watch --every, honeypot --since)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relaycheck.durations import UNITS, seconds
from relaycheck.errors import UsageError


@pytest.mark.parametrize(
    ("text", "expected"),
    [("90", 90), ("90s", 90), ("15m", 900), ("24h", 86400), ("7d", 604800), ("2w", 1209600), ("1h30m", 5400),
     (" 1.5h ", 5400)],
)
def test_spans_people_type(text: str, expected: float) -> None:
    assert seconds(text, "--since") == expected


@pytest.mark.parametrize("text", ["", "h", "7x", "-1h", "1 h", "7d\n1s", "1e9", "9" * 40, "1h30"])
def test_anything_else_is_one_usage_line_naming_the_option(text: str) -> None:
    with pytest.raises(UsageError, match=r"^--every takes a span of time") as caught:
        seconds(text, "--every")
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 120


@given(st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(sorted(UNITS))), min_size=1, max_size=4))
def test_a_sum_of_parts_is_the_sum_of_their_seconds(parts: list[tuple[int, str]]) -> None:
    text = "".join(f"{n}{u}" for n, u in parts)
    assert seconds(text, "--since") == sum(n * UNITS[u] for n, u in parts)

"""Target parsing: ``host``, ``host:port``, ``IP:port``, ``[IPv6]:port``, bare IPv6; bad input is a UsageError."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from relaycheck.api import TargetSpec, parse_target
from relaycheck.dns import is_ip, split_host_port, valid_hostname
from relaycheck.errors import UsageError


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("mx.example.com", "mx.example.com", None),
        ("mx.example.com:2525", "mx.example.com", 2525),
        ("host:2525", "host", 2525),
        ("localhost", "localhost", None),
        ("192.0.2.7", "192.0.2.7", None),
        ("192.0.2.7:2525", "192.0.2.7", 2525),
        ("[2001:db8::7]:25", "2001:db8::7", 25),
        ("[2001:db8::7]", "2001:db8::7", None),
        ("2001:db8::7", "2001:db8::7", None),
        ("::1", "::1", None),
        ("MX.Example.COM.", "mx.example.com", None),
        ("MX.Example.COM.:587", "mx.example.com", 587),
        ("  mx.example.com  ", "mx.example.com", None),
        ("mx.example.com:1", "mx.example.com", 1),
        ("mx.example.com:65535", "mx.example.com", 65535),
        ("mx.example.com:025", "mx.example.com", 25),
        ("_smtp.example.com", "_smtp.example.com", None),
        ("[2001:DB8::7]:465", "2001:db8::7", 465),
    ],
)
def test_parse_target(text: str, host: str, port: int | None) -> None:
    assert parse_target(text) == TargetSpec(given=text, host=host, port=port)


@pytest.mark.parametrize(
    ("text", "default", "expected"),
    [
        ("host", 25, ("host", 25)),
        ("host", None, ("host", None)),
        ("host:2525", 25, ("host", 2525)),
        ("192.0.2.7:2525", None, ("192.0.2.7", 2525)),
        ("[2001:db8::7]:25", 53, ("2001:db8::7", 25)),
        ("[2001:db8::7]", 53, ("2001:db8::7", 53)),
        ("2001:db8::7", 53, ("2001:db8::7", 53)),
        (" 192.0.2.53 ", 53, ("192.0.2.53", 53)),
    ],
)
def test_split_host_port(text: str, default: int | None, expected: tuple[str, int | None]) -> None:
    assert split_host_port(text, default_port=default) == expected


@pytest.mark.parametrize(
    "text",
    [
        "host:0",
        "host:99999",
        "host:65536",
        "host:abc",
        "host:",
        "host:-1",
        "host:+25",
        "host: 25",
        "192.0.2.7:0",
        "[2001:db8::1]:0",
        "[2001:db8::1]:abc",
        "[2001:db8::1]:",
        "[2001:db8::1]x",
        "[2001:db8::1]25",
        "[]:25",
        "[]",
        "[2001:db8::1",
        "[2001:db8::1:25",
        "[192.0.2.1",
        "[mx.example.com",
        "bad_host!",
        "a b",
        "-bad.example",
        "bad..example",
        "mx.example.com/25",
        "user@mx.example.com",
        "[not-an-ip]:25x",
    ],
)
def test_malformed_targets_raise_usage_error_naming_the_input(text: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_target(text)
    assert text.strip() in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("text", ["", "   ", "\t"])
def test_empty_target_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError, match="empty"):
        parse_target(text)


@pytest.mark.parametrize("text", ["host:0", "host:99999", "host:abc", "[2001:db8::1]:0"])
def test_split_host_port_rejects_bad_ports(text: str) -> None:
    with pytest.raises(UsageError, match="port"):
        split_host_port(text, default_port=25)


@pytest.mark.parametrize("text", ["mx.example.com:²", "[2001:db8::1]:2²"])
def test_non_decimal_digit_port_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError):
        parse_target(text)


@pytest.mark.parametrize("text", ["mx\\065.example.com", "a\\045b.example.com", "bad-.example.com"])
def test_names_that_are_not_ldh_host_names_are_refused(text: str) -> None:
    with pytest.raises(UsageError):
        parse_target(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.0.2.1", True),
        ("2001:db8::1", True),
        ("::ffff:192.0.2.1", True),
        ("192.0.2.256", False),
        ("mx.example.com", False),
        ("", False),
        ("[2001:db8::1]", False),
    ],
)
def test_is_ip(text: str, expected: bool) -> None:
    assert is_ip(text) is expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("mx.example.com", True),
        ("mx.example.com.", True),
        ("localhost", True),
        ("mail-1.example.org", True),
        ("_dmarc.example.org", True),
        ("", False),
        (".", False),
        ("-mx.example.com", False),
        ("mx!.example.com", False),
        ("a b.example.com", False),
        ("a..b", False),
        ("x" * 64 + ".example.com", False),  # label over 63 octets
        (".".join(["a" * 60] * 5), False),  # name over 255 octets
    ],
)
def test_valid_hostname(name: str, expected: bool) -> None:
    assert valid_hostname(name) is expected


def _check_parse_target(text: str) -> None:
    try:
        spec = parse_target(text)
    except UsageError as exc:
        assert str(exc)
        return
    assert isinstance(spec, TargetSpec)
    assert spec.given == text
    assert spec.host
    assert spec.host == spec.host.lower()
    assert not spec.host.endswith(".")
    assert spec.port is None or 1 <= spec.port <= 65535
    assert is_ip(spec.host) or valid_hostname(spec.host)


def _no_odd_digits(text: str) -> bool:
    """Exclude characters that str.isdigit() accepts but int() refuses (covered by its own test)."""
    return not any(ch.isdigit() and not ch.isdecimal() for ch in text)


_TARGET_ALPHABET = st.sampled_from([*"abcxyzABC019.:-_[]! \t@/%\\²", "２", "é", "\0"])
_TARGET_TEXT = st.one_of(st.text(max_size=40), st.text(_TARGET_ALPHABET, max_size=30))


@settings(max_examples=200)
@given(_TARGET_TEXT.filter(_no_odd_digits))
@example("[2001:db8::1]:25")
@example("[")
@example("]:")
@example(":")
@example("::")
@example("[::]:65535")
@example("." * 300)
def test_parse_target_returns_a_spec_or_raises_usage_error(text: str) -> None:
    _check_parse_target(text)


@settings(max_examples=50)
@given(_TARGET_TEXT)
@example("host:²")
def test_parse_target_on_any_text_never_raises_anything_but_usage_error(text: str) -> None:
    _check_parse_target(text)

"""Options that reach the wire: control characters never pass, names are normalised (IDN to
xn--), and every refusal names the option."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relaycheck import validate
from relaycheck.errors import UsageError
from relaycheck.options import EngineOptions, HygieneOptions

CONTROL = st.sampled_from(["\r", "\n", "\0", "\t", "\x1b", "\x7f"])


@given(st.text(max_size=20), CONTROL, st.text(max_size=20))
def test_control_characters_never_pass(before: str, control: str, after: str) -> None:
    value = f"{before}{control}{after}"
    for check in (
        lambda: validate.helo_name(value),
        lambda: validate.domain(value, "--local-domain"),
        lambda: validate.address(f"me{value}@example.com", "--sender"),
        lambda: validate.address(f"me@exa{value}mple.com", "--sender"),
    ):
        with pytest.raises(UsageError):
            check()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Mail.Example.COM.", "mail.example.com"),
        ("mañana.example", "xn--maana-pta.example"),
        ("[192.0.2.1]", "[192.0.2.1]"),
        ("[IPv6:2001:db8::1]", "[IPv6:2001:db8::1]"),
    ],
)
def test_helo_names_are_normalised(value: str, expected: str) -> None:
    assert validate.helo_name(value) == expected


@pytest.mark.parametrize("value", ["", "a..b", "-x.example", "[999.1.1.1]", "[IPv6:nonsense]", "x y.example"])
def test_not_helo_names(value: str) -> None:
    with pytest.raises(UsageError, match="--helo"):
        validate.helo_name(value)


def test_addresses() -> None:
    assert validate.address("probe@mañana.example", "--ext-recipient") == "probe@xn--maana-pta.example"
    assert validate.address('"a.b"@[192.0.2.1]', "--sender") == '"a.b"@[192.0.2.1]'
    for bad in ("nobody", "@example.com", "me@localhost", "<me@example.com>", "me@exa mple.com"):
        with pytest.raises(UsageError, match="--sender: not a mail address"):
            validate.address(bad, "--sender")


@pytest.mark.parametrize("value", ["192.0.2.53", "192.0.2.53:5353", "[2001:db8::53]:53", "2001:db8::53"])
def test_resolvers(value: str) -> None:
    assert validate.resolver(value) == value


@pytest.mark.parametrize("value", ["nonsense", "dns.example:53", "192.0.2.53:0", "1.2.3.4:x", ""])
def test_not_resolvers(value: str) -> None:
    with pytest.raises(UsageError, match="--resolver needs an IP address"):
        validate.resolver(value)


def test_wire_ready_checks_every_field_and_names_it() -> None:
    good = EngineOptions(helo="client.example", local_domain="Relay.Example.", hygiene=HygieneOptions(
        dnsbl_zones=("zen.example",)))
    ready = validate.wire_ready(good)
    assert (ready.helo, ready.local_domain) == ("client.example", "relay.example")
    cases = {
        "--helo": {"helo": "a\r\nb"},
        "--local-domain": {"local_domain": "x\0y"},
        "--sender": {"sender": "a\n@b.example"},
        "--ext-recipient": {"ext_recipients": ("ok@a.example", "x@b\r.example")},
        "--confirm": {"confirm_address": "me@\0.example"},
        "--resolver": {"resolver": "nonsense"},
        "--dnsbl-zone": {"hygiene": HygieneOptions(dnsbl_zones=("zen\n.example",))},
    }
    for option, change in cases.items():
        with pytest.raises(UsageError, match=option):
            validate.wire_ready(EngineOptions(**{"helo": "client.example", **change}))  # type: ignore[arg-type]

"""DNSBL query names (RFC 5782) and the meaning of answers, incl. refusals that are not listings."""

from __future__ import annotations

import ipaddress

import pytest

from relaycheck.dnsbl import all_zones, interpret, load_zones, query_name, zone_info


@pytest.mark.parametrize(
    ("ip", "zone", "name"),
    [
        ("192.0.2.1", "zen.spamhaus.org", "1.2.0.192.zen.spamhaus.org"),
        ("198.51.100.23", "bl.spamcop.net.", "23.100.51.198.bl.spamcop.net"),  # trailing dot
        ("192.0.2.99", "ZEN.Spamhaus.ORG", "99.2.0.192.zen.spamhaus.org"),  # case
        ("::ffff:192.0.2.1", "zen.spamhaus.org", "1.2.0.192.zen.spamhaus.org"),  # IPv4-mapped
        ("[192.0.2.1]", "zen.spamhaus.org", "1.2.0.192.zen.spamhaus.org"),  # address literal
        # RFC 5782 §2.4's own example
        (
            "2001:db8:1:2:3:4:567:89ab",
            "ugly.example.com",
            "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.ugly.example.com",
        ),
        (
            "2001:db8::1",
            "zen.spamhaus.org",
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.zen.spamhaus.org",
        ),
    ],
)
def test_query_name(ip: str, zone: str, name: str) -> None:
    assert query_name(ip, zone) == name


def test_ipv6_query_name_has_32_nibbles() -> None:
    labels = query_name("2001:db8::25", "x.test").split(".")
    assert len(labels) == 32 + 2


@pytest.mark.parametrize("bad", ["mail.example.com", "192.0.2", "", "192.0.2.256"])
def test_query_name_refuses_non_addresses(bad: str) -> None:
    with pytest.raises(ValueError):
        query_name(bad, "zen.spamhaus.org")


def test_nxdomain_is_not_listed() -> None:
    result = interpret("zen.spamhaus.org", [], None)
    assert result.listed is False
    assert result.codes == ()


def test_listing_codes_carry_their_meaning_and_txt() -> None:
    result = interpret("zen.spamhaus.org", ["127.0.0.2", "127.0.0.10"], "https://check.spamhaus.org/sbl/query/SBL1")
    assert result.listed is True
    assert result.codes == ("127.0.0.2", "127.0.0.10")
    assert "SBL" in result.meaning and "PBL" in result.meaning
    assert result.txt == "https://check.spamhaus.org/sbl/query/SBL1"


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        ("127.255.255.254", "public"),  # Spamhaus: asked through an open/public resolver
        ("127.255.255.252", "typing"),
        ("127.255.255.255", "too many"),
    ],
)
def test_spamhaus_refusals_are_unknown(answer: str, words: str) -> None:
    result = interpret("zen.spamhaus.org", [answer], None)
    assert result.listed is None
    assert words in result.meaning


def test_any_127_255_255_x_is_unknown_for_every_zone() -> None:
    for zone in ("bl.spamcop.net", "psbl.surriel.com", "dnsbl.example.net"):
        assert interpret(zone, ["127.255.255.254"], None).listed is None
        assert interpret(zone, ["127.255.255.1"], None).listed is None


def test_127_0_0_1_is_never_a_listing() -> None:
    assert interpret("bl.spamcop.net", ["127.0.0.1"], None).listed is None


def test_answers_outside_loopback_are_unknown() -> None:
    # a resolver that rewrites NXDOMAIN to an ad server, or a zone that is not a blocklist any more
    result = interpret("bl.spamcop.net", ["192.0.2.55"], None)
    assert result.listed is None
    assert "outside 127.0.0.0/8" in result.meaning


def test_a_listing_wins_over_an_error_code_in_the_same_answer() -> None:
    assert interpret("zen.spamhaus.org", ["127.255.255.254", "127.0.0.4"], None).listed is True


def test_undocumented_code_of_a_known_zone_is_still_a_listing() -> None:
    result = interpret("bl.spamcop.net", ["127.0.0.7"], None)
    assert result.listed is True
    assert "127.0.0.7" in result.meaning


def test_user_added_zone_gets_generic_meanings_and_is_asked_for_ipv6() -> None:
    info = zone_info("Custom.DNSBL.example.")
    assert info.name == "custom.dnsbl.example" and info.ipv6
    result = interpret("custom.dnsbl.example", ["127.0.0.5"], None)
    assert result.listed is True and result.zone == "custom.dnsbl.example"


def test_decommissioned_zone_answers_are_not_trusted() -> None:
    sorbs = zone_info("dnsbl.sorbs.net")
    assert sorbs.defunct and not sorbs.enabled
    assert interpret("dnsbl.sorbs.net", ["127.0.0.2"], None).listed is None


def test_zone_data() -> None:
    names = [z.name for z in load_zones()]
    assert "zen.spamhaus.org" in names and "bl.spamcop.net" in names and "b.barracudacentral.org" in names
    assert "dnsbl.sorbs.net" not in names
    assert len(set(names)) == len(names)
    assert zone_info("zen.spamhaus.org").ipv6 and not zone_info("bl.spamcop.net").ipv6
    assert len(all_zones()) > len(names)
    for zone in all_zones():
        assert zone.title and zone.delist
        for code in (*zone.codes, *zone.errors):
            assert ipaddress.ip_address(code) in ipaddress.ip_network("127.0.0.0/8")
        assert not set(zone.codes) & set(zone.errors)

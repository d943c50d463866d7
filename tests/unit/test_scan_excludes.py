"""Exclude lists: the IANA default, user blocks and files, lookups against brute force."""

from __future__ import annotations

import ipaddress
import pathlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relaycheck.errors import UsageError
from relaycheck.reach import Exclusion, parse_exclusions
from relaycheck.scan.addresses import Block, parse_block
from relaycheck.scan.excludes import ExcludeList, build_excludes, default_rules


def reason(excludes: ExcludeList, text: str) -> str | None:
    ip = ipaddress.ip_address(text)
    return excludes.reason(ip.version, int(ip))


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.255.255.254",
        "10.1.2.3",
        "172.16.0.1",
        "172.31.255.255",
        "192.168.1.1",
        "100.64.0.1",
        "169.254.1.1",
        "192.0.2.1",
        "198.51.100.1",
        "203.0.113.1",
        "198.18.0.1",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "0.0.0.0",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "fd12::1",
        "2001:db8::25",
        "::ffff:8.8.8.8",
        "64:ff9b::808:808",
        "2002:808:808::1",
        "ff02::1",
        "3fff::1",
    ],
)
def test_default_list_excludes_special_purpose_space(address: str) -> None:
    assert reason(build_excludes(include_reserved=False), address)


@pytest.mark.parametrize(
    "address",
    [
        "8.8.8.8",
        "1.1.1.1",
        "172.32.0.1",
        "192.169.0.1",
        "2a00:1450:4001::1a",
        "2606:4700::1111",
        "11.0.0.1",
        "223.255.255.254",
    ],
)
def test_default_list_allows_public_space(address: str) -> None:
    assert reason(build_excludes(include_reserved=False), address) is None


def test_reasons_name_the_registry_entry() -> None:
    excludes = build_excludes(include_reserved=False)
    assert reason(excludes, "10.0.0.1") == "Private-Use (RFC 1918)"
    assert reason(excludes, "127.0.0.1") == "Loopback (RFC 1122)"


def test_include_reserved_lifts_the_default_only() -> None:
    excludes = build_excludes(include_reserved=True, excludes=["127.0.0.2, 127.0.1.0/24"])
    assert reason(excludes, "127.0.0.1") is None
    assert reason(excludes, "127.0.0.2") == "listed in --exclude"
    assert reason(excludes, "127.0.1.77") == "listed in --exclude"


def test_exclude_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "optout.conf"
    path.write_text("# opt-outs\n198.51.100.0/25   # customer asked, ticket 42\n\n203.0.113.7\n2001:db8::/48\n")
    excludes = build_excludes(include_reserved=True, exclude_files=[str(path)])
    assert reason(excludes, "198.51.100.3") == "customer asked, ticket 42"
    assert reason(excludes, "198.51.100.200") is None
    assert reason(excludes, "203.0.113.7") == f"listed in {path}"
    assert reason(excludes, "2001:db8::9") == f"listed in {path}"
    path.write_text("198.51.100.0/25\nnot-an-address\n")
    with pytest.raises(UsageError, match=r"optout.conf:2"):
        build_excludes(include_reserved=True, exclude_files=[str(path)])
    with pytest.raises(UsageError, match=r"cannot read .*missing: No such file"):
        build_excludes(include_reserved=True, exclude_files=[str(tmp_path / "missing")])


def test_default_list_parses_and_covers_both_families() -> None:
    rules = default_rules()
    assert {r.block.version for r in rules} == {4, 6}
    assert all(r.reason and "RFC" in r.reason for r in rules)


def test_overlaps_cut_a_block_into_excluded_parts() -> None:
    excludes = ExcludeList(parse_exclusions("192.0.2.0/30 # a\n192.0.2.2-192.0.2.9 # b\n192.0.2.200 # c", "f"))
    parts = [(str(p), r) for p, r in excludes.overlaps(parse_block("192.0.2.1-192.0.2.200"))]
    assert parts == [("192.0.2.1-192.0.2.3", "a"), ("192.0.2.4-192.0.2.9", "b"), ("192.0.2.200", "c")]
    assert excludes.excluded_count(parse_block("192.0.2.0/24")) == 11


@given(
    st.lists(st.tuples(st.integers(0, 300), st.integers(0, 300)), max_size=8),
    st.lists(st.integers(0, 300), min_size=1, max_size=40),
)
def test_lookup_matches_brute_force(ranges: list[tuple[int, int]], probes: list[int]) -> None:
    rules = [Exclusion(Block(4, min(a, b), max(a, b)), f"r{n}") for n, (a, b) in enumerate(ranges)]
    excludes = ExcludeList(rules)
    for value in probes:
        covering = [r for r in rules if r.block.first <= value <= r.block.last]
        found = excludes.reason(4, value)
        assert (found is not None) == bool(covering)
        if found is not None:
            assert found in {r.reason for r in covering}
        assert excludes.reason(6, value) is None  # families never mix

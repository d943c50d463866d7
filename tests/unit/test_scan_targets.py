"""Scan inputs: addresses, CIDR, ranges, names, zgrab2 CSV; lazy expansion; seeded order; shards."""

from __future__ import annotations

import ipaddress
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relaycheck.errors import UsageError
from relaycheck.reach import Exclusion
from relaycheck.scan.addresses import MAX_BLOCK, Block, looks_like_block, parse_block
from relaycheck.scan.excludes import ExcludeList
from relaycheck.scan.targets import (
    Item,
    Kind,
    estimate,
    expand,
    in_shard,
    parse_csv_line,
    parse_inputs,
    parse_line,
    parse_token,
    permutation,
    shard_of,
)

NONE = ExcludeList()


def addresses(specs: list[str], excludes: ExcludeList = NONE, seed: int = 0) -> list[Item]:
    return list(expand(parse_inputs(specs, [], (25,)), excludes, seed))


# -- blocks ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "first", "last"),
    [
        ("192.0.2.7", "192.0.2.7", "192.0.2.7"),
        ("192.0.2.0/24", "192.0.2.0", "192.0.2.255"),
        ("192.0.2.7/24", "192.0.2.0", "192.0.2.255"),  # host bits set: the network, as zmap does
        ("192.0.2.10-192.0.2.20", "192.0.2.10", "192.0.2.20"),
        ("192.0.2.10-20", "192.0.2.10", "192.0.2.20"),  # last-octet shorthand
        ("192.0.2.250-192.0.3.5", "192.0.2.250", "192.0.3.5"),
        ("2001:db8::/126", "2001:db8::", "2001:db8::3"),
        ("2001:db8::1-2001:db8::3", "2001:db8::1", "2001:db8::3"),
        ("[2001:db8::1]", "2001:db8::1", "2001:db8::1"),
        ("0.0.0.0/0", "0.0.0.0", "255.255.255.255"),
    ],
)
def test_parse_block(text: str, first: str, last: str) -> None:
    block = parse_block(text)
    assert block.address(block.first) == ipaddress.ip_address(first).compressed
    assert block.address(block.last) == ipaddress.ip_address(last).compressed


@pytest.mark.parametrize(
    "text",
    [
        "",
        "192.0.2.0/33",
        "192.0.2.20-192.0.2.10",
        "192.0.2.1-2001:db8::1",
        "mx.example.org",
        "192.0.2.1-300",
        "2001:db8::/64",
        "fe80::1%eth0",
        "1.2.3",
    ],
)
def test_parse_block_refuses(text: str) -> None:
    with pytest.raises(UsageError):
        parse_block(text)


def test_a_block_is_two_numbers_even_for_a_slash_8() -> None:
    block = parse_block("10.0.0.0/8")
    assert block.size == 2**24
    lazy = expand(parse_inputs(["10.0.0.0/8"], [], (25,)), NONE, 0)
    first = list(itertools.islice(lazy, 5))  # a generator: five items cost five items, not 16M
    network = ipaddress.ip_network("10.0.0.0/8")
    assert len(first) == 5 and all(ipaddress.ip_address(i.ip or "") in network for i in first)


def test_max_block() -> None:
    assert parse_block("::/96").size == MAX_BLOCK
    with pytest.raises(UsageError, match="more than one scan input"):
        parse_block("::/95")


@given(st.integers(0, 2**32 - 1), st.integers(0, 32))
def test_cidr_matches_ipaddress(value: int, prefix: int) -> None:
    network = ipaddress.ip_network((value, prefix), strict=False)
    block = parse_block(str(network))
    assert (block.first, block.last) == (int(network.network_address), int(network.broadcast_address))
    assert str(block) == (str(network.network_address) if prefix == 32 else str(network))


@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_range_round_trip(a: int, b: int) -> None:
    low, high = sorted((a, b))
    text = f"{ipaddress.IPv4Address(low)}-{ipaddress.IPv4Address(high)}"
    block = parse_block(text)
    assert (block.first, block.last) == (low, high)
    assert parse_block(str(block)) == block


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.0.2.1", True),
        ("192.0.2.0/24", True),
        ("192.0.2.1-9", True),
        ("::1", True),
        ("mx-1.example.org", False),
        ("example.org", False),
        ("192.0.2.1:25", False),
        ("[::1]:25", False),
    ],
)
def test_looks_like_block(text: str, expected: bool) -> None:
    assert looks_like_block(text) is expected


# -- order and shards ----------------------------------------------------------------------------


@settings(max_examples=200)
@given(st.integers(0, 3000), st.integers(), st.text(max_size=8))
def test_permutation_is_a_bijection(n: int, seed: int, salt: str) -> None:
    assert sorted(permutation(n, seed, salt)) == list(range(n))


def test_permutation_is_seeded_and_spreads_a_block() -> None:
    order = list(permutation(4096, 7, "x"))
    assert order == list(permutation(4096, 7, "x"))
    assert order != list(permutation(4096, 8, "x"))
    # consecutive targets land in different /24s (the per-subnet load is spread)
    assert sum(a >> 8 == b >> 8 for a, b in itertools.pairwise(order)) < 4096 // 50


@settings(max_examples=50)
@given(st.integers(1, 6), st.integers())
def test_shards_partition_the_scan(shards: int, seed: int) -> None:
    every = addresses(["192.0.2.0/26", "198.51.100.7", "mx.example.org"])
    parts = [list(in_shard(iter(every), seed, shards, s)) for s in range(shards)]
    keys = [item.key for part in parts for item in part]
    assert sorted(keys) == sorted(i.key for i in every)  # nothing lost, nothing twice
    assert len(set(keys)) == len(keys)


def test_shard_split_is_stable_and_roughly_even() -> None:
    keys = [f"10.0.{i >> 8}.{i & 255}|25|" for i in range(4000)]
    counts = [sum(shard_of(k, 3, 4) == s for k in keys) for s in range(4)]
    assert all(800 < c < 1200 for c in counts), counts
    assert [shard_of(k, 3, 4) for k in keys] == [shard_of(k, 3, 4) for k in keys]


# -- expansion and excludes ----------------------------------------------------------------------


def test_expand_yields_allowed_addresses_once_and_one_record_per_excluded_part() -> None:
    excludes = ExcludeList([Exclusion(parse_block("192.0.2.8/29"), "lab"), Exclusion(parse_block("192.0.2.0"), "net")])
    items = addresses(["192.0.2.0/28"], excludes)
    excluded = [i for i in items if i.kind is Kind.EXCLUDED]
    assert [(i.block, i.reason) for i in excluded] == [("192.0.2.0", "net"), ("192.0.2.8/29", "lab")]
    scanned = sorted(int(ipaddress.ip_address(i.ip or "")) for i in items if i.kind is Kind.ADDRESS)
    base = int(ipaddress.ip_address("192.0.2.0"))
    assert scanned == [base + n for n in range(1, 8)]


@settings(max_examples=100)
@given(
    st.integers(0, 255),
    st.integers(0, 255),
    st.lists(st.tuples(st.integers(0, 255), st.integers(0, 255)), max_size=4),
)
def test_expand_against_brute_force(a: int, b: int, rules: list[tuple[int, int]]) -> None:
    base = int(ipaddress.ip_address("198.51.100.0"))
    low, high = sorted((a, b))
    block_text = f"{ipaddress.IPv4Address(base + low)}-{ipaddress.IPv4Address(base + high)}"
    excludes = ExcludeList(
        Exclusion(Block(4, base + min(x, y), base + max(x, y)), f"r{n}") for n, (x, y) in enumerate(rules)
    )
    items = addresses([block_text], excludes)
    scanned = {int(ipaddress.ip_address(i.ip or "")) for i in items if i.kind is Kind.ADDRESS}
    expected = {v for v in range(base + low, base + high + 1) if excludes.reason(4, v) is None}
    assert scanned == expected
    assert len(scanned) == sum(i.kind is Kind.ADDRESS for i in items)
    covered = sum(parse_block(i.block or "").size for i in items if i.kind is Kind.EXCLUDED)
    assert covered + len(scanned) == high - low + 1


def test_estimate_counts_records() -> None:
    excludes = ExcludeList([Exclusion(parse_block("192.0.2.0/30"), "x")])
    assert estimate(["192.0.2.0/29", "mx.example.org", "198.51.100.1"], [], (25,), excludes) == 4 + 1 + 1 + 1
    assert estimate([], ["-"], (25,), excludes) is None


# -- tokens, lines, CSV --------------------------------------------------------------------------


def test_tokens() -> None:
    def expanded(token: str, ports: tuple[int, ...]) -> list[Item]:
        return list(expand(iter([parse_token(token, ports)]), NONE, 0))

    assert expanded("192.0.2.7:2525", (25,)) == [Item(Kind.ADDRESS, "192.0.2.7:2525", 2525, ip="192.0.2.7")]
    assert expanded("[2001:DB8::7]:25", (587,)) == [Item(Kind.ADDRESS, "[2001:DB8::7]:25", 25, ip="2001:db8::7")]
    assert [i.key for i in expanded("192.0.2.7", (25, 465, 587))] == [
        "192.0.2.7|25|",
        "192.0.2.7|465|",
        "192.0.2.7|587|",
    ]
    assert parse_token("MX1.Example.ORG.", (25,)) == Item(Kind.NAME, "MX1.Example.ORG.", 25, name="mx1.example.org")
    named = parse_token("mx1.example.org:587", (25,))
    assert (named.kind, named.port, named.port_given) == (Kind.NAME, 587, True)  # type: ignore[union-attr]
    with pytest.raises(UsageError):
        parse_token("not a host!", (25,))


def test_csv_lines_zgrab2_style() -> None:
    pinned = parse_csv_line("192.0.2.7,example.org,mx,2525", (25,))
    assert isinstance(pinned, Item) is False  # an ip field is a block (it may be a CIDR)
    items = list(expand(iter([pinned]), NONE, 0))
    assert items == [
        Item(Kind.ADDRESS, "192.0.2.7,example.org,mx,2525", 2525, ip="192.0.2.7", name="example.org", tag="mx")
    ]
    assert parse_csv_line(",example.net", (25,)) == Item(Kind.NAME, ",example.net", 25, name="example.net")
    assert parse_csv_line(",example.net,,587", (25,)) == Item(
        Kind.NAME, ",example.net,,587", 587, name="example.net", port_given=True
    )
    cidr = list(expand(iter([parse_csv_line("192.0.2.0/30,,t", (25,))]), NONE, 0))
    assert sorted(i.ip or "" for i in cidr) == ["192.0.2.0", "192.0.2.1", "192.0.2.2", "192.0.2.3"]
    assert {i.tag for i in cidr} == {"t"}
    for bad in (",,", "example.org,example.org", "192.0.2.1,bad domain!", "192.0.2.1,,,99999", "1,2,3,4,5"):
        with pytest.raises(UsageError):
            parse_csv_line(bad, (25,))


def test_list_file_lines(tmp_path: object) -> None:
    assert list(parse_line("  # a comment", (25,))) == []
    assert list(parse_line("", (25,))) == []
    two = list(parse_line("192.0.2.1 mx.example.org  # two targets", (25,)))
    assert [type(x).__name__ for x in two] == ["_BlockSpec", "Item"]
    bad = list(parse_line("192.0.2.1,bad domain!", (25,)))
    assert len(bad) == 1 and isinstance(bad[0], Item) and bad[0].kind is Kind.INVALID and bad[0].reason


def test_list_file_and_stdin(tmp_path: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import pathlib
    import sys

    path = pathlib.Path(str(tmp_path)) / "targets.txt"
    path.write_text("192.0.2.1\n# comment\n,example.org,mx\n192.0.2.8/31\n")
    items = list(expand(parse_inputs([], [str(path)], (25,)), NONE, 0))
    assert sorted(i.key for i in items) == sorted(
        ["192.0.2.1|25|", "|25|example.org", "192.0.2.8|25|", "192.0.2.9|25|"]
    )
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"198.51.100.1\n198.51.100.2\n")))
    assert [i.ip for i in expand(parse_inputs([], ["-"], (25,)), NONE, 0)] == ["198.51.100.1", "198.51.100.2"]
    with pytest.raises(UsageError, match=r"cannot read .*targets\.txt\.missing: No such file"):
        list(parse_inputs([], [str(path) + ".missing"], (25,)))

"""The SSRF guard: no address class that points inward is ever connected to, directly or via DNS.

The HTTP tests run the app without --allow-private and check three things for every refusal:
the answer is a clear 422, no check was created, and nothing connected to a listening socket
standing in for the internal service.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest

from relaycheck.reach import Exclusion, special_purpose
from relaycheck.scan.excludes import build_excludes
from relaycheck.testing.dnsserver import DnsServerThread
from relaycheck.web import Settings, create_app
from relaycheck.web.guard import refusal
from tests.support.live import LiveServer

from .conftest import ENGINE, SmtpFactory, WebFactory


@pytest.fixture(scope="module")
def listener() -> Iterator[socket.socket]:
    """An internal service on loopback: after a refused check, nobody may have connected to it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    yield sock
    sock.close()


@pytest.fixture(scope="module")
def public(listener: socket.socket, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """One app as on the Internet (no --allow-private), shared by the refusal tests of this module."""
    port = listener.getsockname()[1]
    with DnsServerThread(MX_RECORDS) as dns:
        settings = Settings(
            db_url=str(tmp_path_factory.mktemp("ssrf") / "web.db"),
            resolver=dns.address,
            engine=ENGINE,
            ports=(25, 465, 587, port),
            requests_per_minute=10_000,
        )
        with LiveServer(create_app(settings)) as live, httpx.Client(base_url=live.url, timeout=20) as client:
            yield client


def refused(client: httpx.Client, target: str, port: int | None = None) -> str:
    """Ask for a check that must be refused; return the message. Nothing may have been created."""
    response = client.post("/api/v1/checks", json={"target": target, "port": port})
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "refused"
    host = target.strip("[]")
    assert client.get("/api/v1/checks", params={"target": host, "port": port or 25}).json()["checks"] == []
    message = response.json()["message"]
    assert isinstance(message, str)
    return message


def assert_untouched(sock: socket.socket) -> None:
    with pytest.raises(BlockingIOError):  # nothing waiting in the accept queue
        sock.accept()


INTERNAL_LITERALS = [
    ("127.0.0.1", "Loopback"),
    ("127.10.20.30", "Loopback"),
    ("0.0.0.0", "Unspecified"),
    ("10.1.2.3", "Private-Use"),
    ("172.16.0.1", "Private-Use"),
    ("192.168.1.1", "Private-Use"),
    ("100.64.0.1", "carrier-grade NAT"),
    ("169.254.169.254", "Link-Local"),  # cloud metadata
    ("224.0.0.1", "Multicast"),
    ("239.255.255.250", "Multicast"),
    ("255.255.255.255", "Broadcast"),
    ("240.0.0.1", "Reserved"),
    ("198.18.0.1", "Benchmarking"),
    ("192.0.2.1", "Documentation"),
    ("192.0.0.8", "IETF Protocol Assignments"),  # Python 3.11 thinks it is global
    ("192.88.99.1", "6to4 Relay Anycast"),
    ("192.31.196.1", "AS112"),  # globally routed, but no mail server: the one policy of scans too
    ("[3fff::25]", "Documentation (RFC 9637)"),
    ("[100::1]", "Discard-Only"),
    ("[::1]", "Loopback"),
    ("[::]", "Unspecified"),
    ("[fe80::1]", "Link-Local"),
    ("[fc00::1]", "Unique-Local"),
    ("[fd12:3456::1]", "Unique-Local"),
    ("[ff02::1]", "Multicast"),
    ("[2001:db8::25]", "Documentation"),
    ("[2002:808:808::1]", "6to4"),  # a public IPv4 inside, but the prefix is excluded from scans as well
    ("[::ffff:127.0.0.1]", "IPv4-mapped"),
    ("[::ffff:10.0.0.1]", "IPv4-mapped"),
    ("[::ffff:8.8.8.8]", "IPv4-mapped"),  # never a real destination in DNS either
    ("[64:ff9b::7f00:1]", "NAT64 for 127.0.0.1"),
    ("[64:ff9b::a00:1]", "NAT64 for 10.0.0.1"),
    ("[64:ff9b:1::1]", "local-use NAT64"),
    ("[2002:7f00:1::1]", "6to4 for 127.0.0.1"),
    ("[2002:a9fe:a9fe::1]", "6to4 for 169.254.169.254"),
]


@pytest.mark.parametrize(("target", "words"), INTERNAL_LITERALS)
def test_internal_address_literals_are_refused(public: httpx.Client, target: str, words: str) -> None:
    assert words in refused(public, target)


@pytest.mark.parametrize(
    "target",
    ["127.1", "0x7f000001", "2130706433", "0177.0.0.1", "localhost", "intranet", "mail.0x7f"],
)
def test_address_tricks_and_local_names_are_refused_before_any_lookup(public: httpx.Client, target: str) -> None:
    assert "domain name" in refused(public, target)


MX_RECORDS = {
    ("loop.test", "MX"): ["10 mx.loop.test."],
    ("mx.loop.test", "A"): ["127.0.0.1"],
    ("private.test", "MX"): ["10 mx.private.test."],
    ("mx.private.test", "A"): ["10.0.0.25"],
    ("metadata.test", "MX"): ["10 mx.metadata.test."],
    ("mx.metadata.test", "A"): ["169.254.169.254"],
    ("v6loop.test", "MX"): ["10 mx.v6loop.test."],
    ("mx.v6loop.test", "AAAA"): ["::1"],
    ("mapped.test", "MX"): ["10 mx.mapped.test."],
    ("mx.mapped.test", "AAAA"): ["::ffff:127.0.0.1"],
    ("linklocal.test", "MX"): ["10 mx.linklocal.test."],
    ("mx.linklocal.test", "AAAA"): ["fe80::25"],
    ("ula.test", "MX"): ["10 mx.ula.test."],
    ("mx.ula.test", "AAAA"): ["fd00::25"],
    ("nat64.test", "MX"): ["10 mx.nat64.test."],
    ("mx.nat64.test", "AAAA"): ["64:ff9b::7f00:1"],
    ("both.test", "MX"): ["10 mx.both.test."],
    ("mx.both.test", "A"): ["127.0.0.1"],
    ("mx.both.test", "AAAA"): ["::1"],
    ("many.test", "MX"): ["10 a.many.test.", "20 b.many.test."],
    ("a.many.test", "A"): ["10.0.0.1"],
    ("b.many.test", "A"): ["192.168.0.1"],
    # no MX: the name itself is the implicit MX (RFC 5321 §5.1)
    ("implicit.test", "A"): ["127.0.0.1"],
    # the MX host is named as an address
    ("literal.test", "MX"): ["10 localhost."],
}


@pytest.mark.parametrize(
    ("domain", "words"),
    [
        ("loop.test", "127.0.0.1 is a special-purpose address: Loopback (RFC 1122)"),
        ("private.test", "10.0.0.25 is a special-purpose address: Private-Use (RFC 1918)"),
        ("metadata.test", "169.254.169.254 is a special-purpose address: Link-Local (RFC 3927)"),
        ("v6loop.test", "::1 is a special-purpose address: Loopback"),
        ("mapped.test", "IPv4-mapped"),
        ("linklocal.test", "Link-Local"),
        ("ula.test", "Unique-Local"),
        ("nat64.test", "NAT64 for 127.0.0.1"),
        ("both.test", "Loopback"),
        ("many.test", "a.many.test: 10.0.0.1"),
        ("implicit.test", "Loopback"),
    ],
)
def test_mx_records_pointing_inward_are_refused(
    public: httpx.Client, listener: socket.socket, domain: str, words: str
) -> None:
    assert words in refused(public, domain, port=listener.getsockname()[1])
    assert_untouched(listener)


def test_mx_named_localhost_is_refused(public: httpx.Client, listener: socket.socket) -> None:
    assert "Loopback" in refused(public, "literal.test", port=listener.getsockname()[1])
    assert_untouched(listener)


def test_only_the_allowed_mx_hosts_of_a_mixed_domain_are_tested(web: WebFactory, smtp: SmtpFactory) -> None:
    """With --allow-private, loopback is allowed, multicast never: that MX is reported, not tested."""
    server = smtp("closed")
    records = {
        ("mixed.test", "MX"): ["10 good.mixed.test.", "20 bad.mixed.test."],
        ("good.mixed.test", "A"): ["127.0.0.1"],
        ("bad.mixed.test", "A"): ["224.0.0.25"],
    }
    app = web(records=records, allow_private=True, ports=(25, server.port))
    created = app.create("mixed.test", port=server.port)
    assert created.status_code == 202
    assert [t["host"] for t in created.json()["plan"]["targets"]] == ["good.mixed.test"]
    done = app.wait(created.json()["id"])
    report = done["report"]
    assert [t["target"]["host"] for t in report["targets"]] == ["good.mixed.test"]
    multicast = "not tested: 224.0.0.25 is a special-purpose address: Multicast (RFC 5771)"
    assert report["problems"] == [{"input": "bad.mixed.test", "problem": multicast}]
    assert done["verdict"] == "inconclusive"  # one MX could not be tested: not a clean bill of health


@pytest.mark.parametrize("port", [22, 80, 2525, 6379, 11211])
def test_ports_outside_the_allow_list_are_refused(public: httpx.Client, port: int) -> None:
    for target, given in ((f"mx.example.com:{port}", None), ("mx.example.com", port)):
        message = refused(public, target, given)
        assert f"port {port} is not tested" in message
        assert "25, 465, 587" in message


def test_too_many_addresses_are_capped(web: WebFactory, smtp: SmtpFactory) -> None:
    server = smtp("closed")
    records = {
        ("big.test", "MX"): [f"{n} mx{n}.big.test." for n in range(1, 5)],
        **{(f"mx{n}.big.test", "A"): [f"127.0.0.{n}"] for n in range(1, 5)},
    }
    app = web(records=records, ports=(25, server.port), max_targets=1)
    created = app.create("big.test", port=server.port).json()
    assert len(created["plan"]["targets"]) == 1
    assert len(created["plan"]["problems"]) == 3
    assert all("more than 1 addresses" in p["problem"] for p in created["plan"]["problems"])
    app.wait(created["id"])


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "193.0.14.129", "2001:4860:4860::8888", "2a00:1450:4001:80b::201a", "64:ff9b::808:808"],
)
def test_public_addresses_pass_the_guard(address: str) -> None:
    assert refusal(address, allow_private=False) is None


def test_allow_private_still_refuses_what_nobody_can_connect_to() -> None:
    assert refusal("127.0.0.1", allow_private=True) is None
    assert refusal("10.0.0.1", allow_private=True) is None
    assert refusal("::1", allow_private=True) is None
    for address in ("0.0.0.0", "::", "224.0.0.1", "ff02::1", "255.255.255.255", "::ffff:224.0.0.1"):
        assert refusal(address, allow_private=True), address


@pytest.mark.parametrize("exclusion", special_purpose(), ids=str)
def test_the_web_and_scans_share_one_address_policy(exclusion: Exclusion) -> None:
    """Every block a scan leaves out by default is refused by the web service, and the blocks
    nobody can connect to stay refused and excluded in labs (--allow-private, --include-reserved)."""
    block = exclusion.block
    value = block.first + block.size // 2  # inside, away from the edges
    address = block.address(value)
    if str(block) == "64:ff9b::/96":
        return  # a NAT64 address is judged by the IPv4 inside; scans test the IPv4 address itself
    assert refusal(address, allow_private=False), address
    assert build_excludes(include_reserved=False).reason(block.version, value)
    lab = build_excludes(include_reserved=True).reason(block.version, value)
    assert bool(refusal(address, allow_private=True)) == bool(lab), address

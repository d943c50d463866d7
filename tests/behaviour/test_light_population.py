"""The light population server (``tests.support.lightsmtp``) says exactly what the aiosmtpd
behaviour servers say: the same transcripts and verdicts from ``relaycheck check`` and ``scan``,
the same bytes for what a check never sends (odd verbs, bad lines, DATA content)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import pathlib
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from relaycheck.api import CheckOptions, check
from relaycheck.cli import main
from relaycheck.engine import EngineOptions
from relaycheck.hygiene import HygieneOptions
from relaycheck.model import TargetReport
from relaycheck.render.json import target_report_dict
from relaycheck.testing.loopthread import LoopThread
from relaycheck.testing.servers import BEHAVIOURS, Behaviour, BehaviourHandler, BehaviourSMTP, ServerThread
from tests.support.lightsmtp import VERBS, LightHost, unsupported
from tests.support.population import Population, plan

SUPPORTED = sorted(name for name, b in BEHAVIOURS.items() if unsupported(b) is None)
MODES = ("rcpt", "data-probe")
BASE = "127.8.0.1"
# one host per (behaviour, mode): a host is checked once per server, so greylisting's first
# sight of every (peer, sender, recipient) is the check itself on both servers
HOSTS = {pair: str(ipaddress.IPv4Address(BASE) + i) for i, pair in enumerate((b, m) for b in SUPPORTED for m in MODES)}
MEMBERS = {ip: behaviour for (behaviour, _mode), ip in HOSTS.items()}

# One session at a time: which session carries which chunk, and which probes a proof mid-battery
# leaves out, depend on which session comes up first; one at a time, both servers get the same
# commands in the same order, and the comparison is byte for byte.
ENGINE = EngineOptions(
    ext_recipients=("relaytest@outside-a.test", "relaytest@outside-b.test"), helo="scan.relaycheck.test",
    command_timeout=10, greeting_timeout=10, connect_timeout=10, hygiene=HygieneOptions(ptr=False, dnsbl=False),
    max_connections=1,
)  # fmt: skip
RANDOM = re.compile(r"rc-nouser-[0-9a-f]+")  # the check's random unknown user, new every run
# Timing; the ports (the two populations listen on different ones); and which connection did
# what: the check opens its connections side by side, numbered as they come up, and may open a
# spare it then only greets and quits (more round trips) — with either server.
VOLATILE = {"at", "duration_s", "port", "connection", "connections", "transcripts", "round_trips"}
IDLE = {"EHLO scan.relaycheck.test", "QUIT", None}


@pytest.fixture(scope="module")
def populations() -> Iterator[tuple[Population, Population]]:
    """The same hosts twice, on two ports: aiosmtpd servers and light servers."""
    with Population(MEMBERS) as aiosmtpd, Population(MEMBERS, server="light") as light:
        yield aiosmtpd, light


def scrub(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    if isinstance(value, str):
        return RANDOM.sub("rc-nouser-*", value)
    return value


def transcript(report: TargetReport) -> list[tuple[bool, str | None, list[Any]]]:
    """Per connection: every (sent, reply code, reply lines, note), timing left out; connections
    in a canonical order, the spares that did nothing but greet and quit left out."""
    return sorted(
        (
            (c.tls, c.error,
             [scrub([e.sent, e.reply and e.reply.code, e.reply and list(e.reply.lines), e.note]) for e in c.exchanges])
            for c in report.connections
            if {e.sent for e in c.exchanges} - IDLE
        ),
        key=repr,
    )  # fmt: skip


def run_check(address: str, mode: str) -> TargetReport:
    options = CheckOptions(engine=replace(ENGINE, data_probe=mode == "data-probe"))
    report = asyncio.run(check(address, options))
    assert len(report.targets) == 1
    return report.targets[0]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("behaviour", SUPPORTED)
def test_check_transcripts_and_verdicts_are_identical(populations: tuple[Population, Population],
                                                      behaviour: str, mode: str) -> None:
    aiosmtpd, light = populations
    ip = HOSTS[behaviour, mode]
    before = (aiosmtpd.stats.accepted, light.stats.accepted)
    by_aiosmtpd = run_check(aiosmtpd.address(ip), mode)
    by_light = run_check(light.address(ip), mode)
    assert by_aiosmtpd.error is None and by_aiosmtpd.connections
    assert transcript(by_light) == transcript(by_aiosmtpd)
    assert (by_light.verdict.kind, by_light.verdict.confidence) == (by_aiosmtpd.verdict.kind,
                                                                    by_aiosmtpd.verdict.confidence)
    # everything else the report says (observations, findings, facts, evidence) too
    assert scrub(target_report_dict(by_light)) == scrub(target_report_dict(by_aiosmtpd))
    # and the same bookkeeping: connections counted, commands recorded
    assert aiosmtpd.stats.accepted - before[0] == len(by_aiosmtpd.connections)
    assert light.stats.accepted - before[1] == len(by_light.connections)
    # (connections run side by side: their commands interleave in any order)
    assert sorted(scrub(light.handlers[ip].commands)) == sorted(scrub(aiosmtpd.handlers[ip].commands))
    assert light.handlers[ip].data_started == aiosmtpd.handlers[ip].data_started
    if mode == "data-probe" and behaviour == "open":
        assert light.handlers[ip].data_started > 0  # the probe did reach 354


class LightServerThread(LoopThread):
    """One light server on 127.0.0.1, like ``ServerThread`` for aiosmtpd."""

    def __init__(self, behaviour: Behaviour) -> None:
        super().__init__(f"light-{behaviour.name}")
        self.host = LightHost(behaviour, BehaviourHandler(behaviour, literal="[127.0.0.1]"))
        self.port = 0
        self._server: asyncio.Server | None = None

    async def setup(self) -> None:
        self._server = await self._loop.create_server(self.host.protocol, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def teardown(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


def final_replies(data: bytes) -> int:
    return len(re.findall(rb"(?m)^\d{3} ", data))


def converse(address: tuple[str, int], steps: list[tuple[bytes, int]]) -> bytes:
    """Send each step's bytes once the replies before it have arrived (``replies``: how many final
    reply lines the step brings, so a server sees each step in a read of its own); then half-close
    and read to the end. The greeting counts as the first reply."""
    with socket.create_connection(address, timeout=20) as sock:
        got = b""
        expected = 1
        for data, replies in steps:
            while final_replies(got) < expected:
                chunk = sock.recv(65536)
                assert chunk, got
                got += chunk
            sock.sendall(data)
            expected += replies
        sock.shutdown(socket.SHUT_WR)
        while chunk := sock.recv(65536):
            got += chunk
    return got


LONG = b"a" * 3000
SCRIPTS: dict[str, list[tuple[bytes, int]]] = {
    "verbs before EHLO": [(b"AUTH PLAIN\r\nmail FROM:<a@b.test>\r\nrcpt to:<a@b.test>\r\nDATA\r\nrset\r\n"
                           b"vrfy\r\nVRFY postmaster\r\nexpn postmaster\r\nNOOP x\r\nhelp\r\nHELP mail\r\nhelp helo\r\n"
                           b"STARTTLS\r\nstarttls now\r\nQUIT x\r\nquit\r\n", 0)],
    "HELO then EHLO": [(b"helo\r\nHELO client.test\r\nAUTH\r\nhelp ehlo\r\nMAIL FROM:<a@b.test> SIZE=10\r\n"
                        b"ehlo\r\nEHLO client.test\r\nAUTH LOGIN\r\nhelp EHLO\r\nhElP\r\nQUIT\r\n", 0)],
    # the fifth unknown verb (" NOOP" and "NOOP\t" are two) gets a goodbye
    "bad lines": [(b"\r\n   \r\n\n\xff\xfe\r\nNOOP \xff\r\nNOOP   \r\n NOOP\r\nNOOP\t\r\nNOOP\r\r\n"
                   b"FOO\r\nbar baz\r\n", 0)],
    "too long": [(b"EHLO client.test\r\nNOOP " + b"a" * 995 + b"\r\nNOOP " + b"a" * 997 + b"\r\nNOOP " + LONG
                  + b"\r\nMAIL FROM:<" + b"m" * 520 + b">\r\nRCPT TO:<" + b"r" * 520 + b">\r\nRSET\r\n"
                  b"HELO client.test\r\nMAIL FROM:<" + b"m" * 520 + b">\r\nNOOP\r\n", 0)],
    "too long across reads": [(b"NOOP\r\nNOOP " + LONG, 1), (LONG, 0), (LONG + b"\r\nNOOP\r\n", 2),
                              (b"NOOP " + b"b" * 900, 0), (b"b" * 200 + b"\r\nQUIT\r\n", 0)],
    "DATA": [(b"EHLO client.test\r\nDATA\r\nMAIL FROM:<a@b.test>\r\nDATA\r\nRCPT TO:<nobody@relay.test>\r\n"
              b"DATA\r\nRCPT TO:<postmaster@relay.test>\r\nDATA now\r\nDATA\r\n", 0),
             (b"Subject: x\r\n\r\n..dot\r\n.x\r\n" + b"c" * 999 + b"\r\n.\r\nNOOP\r\n", 0),
             (b"MAIL FROM:<a@b.test>\r\nRSET\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<alice@relay.test>\r\nDATA\r\n", 0),
             (b"c" * 1000 + b"\r\n.\r\nRSET\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<alice@relay.test>\r\nDATA\r\n", 0),
             (LONG + b"\r\n.\r\nNOOP\r\nQUIT\r\n", 0)],
    "DATA refused": [(b"EHLO client.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<alice@relay.test>\r\nDATA\r\n"
                      b"NOOP\r\n", 0)],
    "DATA across reads": [(b"EHLO client.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<alice@relay.test>\r\nDATA\r\n", 4),
                          (b"line\r", 0), (b"\n.", 0), (b"\r", 0), (b"\nNOOP\r\nRSET\r\n", 2),
                          (b"MAIL FROM:<a@b.test>\r\nRCPT TO:<alice@relay.test>\r\nDATA\r\n" + LONG, 3),
                          (LONG + b"\r", 0), (b"\n.\r\nNOOP\r\n", 0)],
}  # fmt: skip
# A server that closes with input still unread makes the kernel reset the connection, and the
# client may lose replies: every script ends with the command that closes, if any. So no DATA
# content for refuse-at-data: it would be read as commands, five unknown verbs and a goodbye.
RAW_CASES = [
    (behaviour, script)
    for behaviour in ("closed", "open", "refuse-at-data", "multiline", "no-pipelining")
    for script in SCRIPTS
    if behaviour != "refuse-at-data" or script in ("DATA refused", "verbs before EHLO", "bad lines", "too long")
]


@pytest.mark.parametrize(("behaviour", "script"), RAW_CASES)
def test_raw_commands_get_the_same_bytes(populations: tuple[Population, Population], behaviour: str,
                                         script: str) -> None:
    aiosmtpd, light = populations
    ip = HOSTS[behaviour, "rcpt"]
    by_aiosmtpd = converse((ip, aiosmtpd.port), SCRIPTS[script])
    assert by_aiosmtpd.startswith(b"220 mx.relay.test Python SMTP ")
    assert converse((ip, light.port), SCRIPTS[script]) == by_aiosmtpd


KNOBS = {
    "errors_before_421": (dict(errors_before_421=3),
                          [(b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\n" + b"RCPT TO:<x@o.test>\r\n" * 4, 0)]),
    "drop_after_commands": (dict(drop_after_commands=3),
                            [(b"EHLO c.test\r\nVRFY x\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<alice@relay.test>\r\n"
                              b"RSET\r\nMAIL FROM:<>\r\n", 0)]),
    "vrfy_enabled": (dict(vrfy_enabled=True), [(b"VRFY alice\r\nVRFY <Postmaster@relay.test>\r\nVRFY bob\r\nVRFY\r\n"
                                                b"QUIT\r\n", 0)]),
    "banner": (dict(banner="mail.example.test ESMTP Postfix"), [(b"EHLO c.test\r\nHELO c.test\r\nQUIT\r\n", 0)]),
    "refused senders": (dict(refuse_senders=frozenset({"outside", "null"})),
                        [(b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nMAIL FROM:<>\r\nMAIL FROM:<x@relay.test>\r\n"
                          b"RCPT TO:<alice@relay.test>\r\nRSET\r\nMAIL FROM:<x>\r\nQUIT\r\n", 0)]),
    "STARTTLS 454": (dict(starttls_failure="454"), [(b"EHLO c.test\r\nSTARTTLS\r\nSTARTTLS x\r\nQUIT\r\n", 0)]),
    "STARTTLS broken": (dict(starttls_failure="handshake"), [(b"EHLO c.test\r\nSTARTTLS\r\n", 2),
                                                                (b"\x16\x03\x01\x00\x05hello", 0)]),
    "refused after the dot": (dict(refuse_after_dot=True, relay_if=lambda t: True),
                              [(b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@o.test>\r\nDATA\r\n", 0),
                               (b"Subject: x\r\n\r\nhello\r\n.\r\nQUIT\r\n", 0)]),
    "error limit at DATA": (dict(errors_before_421=1, refuse_data=True, relay_if=lambda t: True),
                            [(b"EHLO c.test\r\nDATA\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@o.test>\r\nDATA\r\n", 0)]),
}  # fmt: skip


def test_connection_limit_gets_the_same_bytes() -> None:
    """max_connections: the session beyond the limit gets 421 at the greeting; once one closes, the
    next is served again."""
    behaviour = replace(BEHAVIOURS["closed"], max_connections=1)
    with ServerThread(behaviour) as aiosmtpd, LightServerThread(behaviour) as light:
        seen = []
        for server in (aiosmtpd, light):
            with socket.create_connection(("127.0.0.1", server.port), timeout=20) as first:
                greeting = first.recv(1024)
                second = converse(("127.0.0.1", server.port), [])
                first.sendall(b"QUIT\r\n")
                while first.recv(1024):
                    pass
            book = server.handler if server is aiosmtpd else server.host.book
            # the server has counted the first session out before the client could read its end
            assert book.sessions.get("127.0.0.1") == 0
            seen.append((greeting, second, converse(("127.0.0.1", server.port), [(b"QUIT\r\n", 0)])))
    assert seen[0][1] == b"421 4.7.0 mx.relay.test Error: too many connections from 127.0.0.1\r\n"
    assert seen[1] == seen[0]


@pytest.mark.parametrize("knob", KNOBS)
def test_behaviour_knobs_get_the_same_bytes(knob: str) -> None:
    changes, steps = KNOBS[knob]
    behaviour = replace(BEHAVIOURS["closed"], **changes)
    with ServerThread(behaviour) as aiosmtpd, LightServerThread(behaviour) as light:
        by_aiosmtpd = converse(("127.0.0.1", aiosmtpd.port), steps)
        assert converse(("127.0.0.1", light.port), steps) == by_aiosmtpd
    # aiosmtpd may still parse (and record) what follows a close: light stops reading
    assert light.host.book.commands == aiosmtpd.handler.commands[: len(light.host.book.commands)]


def test_scan_verdicts_equal_with_either_server(tmp_path: pathlib.Path) -> None:
    members = plan(40, {"open": 1, "closed": 1}, "127.8.100.1")
    records = {}
    for server in ("aiosmtpd", "light"):
        out = tmp_path / f"{server}.jsonl"
        with Population(members, server=server) as population:
            code = main(["scan", *members, "-p", str(population.port), "-o", str(out), "--include-reserved",
                         "--ext-recipient", "relaytest@outside-a.test", "--ext-recipient", "relaytest@outside-b.test",
                         "--helo", "scan.relaycheck.test", "--timeout", "10", "--no-ptr", "--rate", "0",
                         "--concurrency", "40", "--per-subnet", "0", "--progress", "none"])
        assert code == 1  # open relays found
        lines = [json.loads(line) for line in out.read_text().splitlines()]
        records[server] = {
            r["ip"]: (r["status"], r["verdict"], r["confidence"], [e["probe_id"] for e in r["evidence"]]) for r in lines
        }
    assert records["light"] == records["aiosmtpd"]
    assert {ip: v[1] for ip, v in records["light"].items()} == members  # open hosts open, closed hosts closed


def test_every_aiosmtpd_verb_is_answered() -> None:
    assert {name[5:] for name in dir(BehaviourSMTP) if name.startswith("smtp_")} == VERBS


def test_unsupported_behaviours_are_refused() -> None:
    assert sorted(set(BEHAVIOURS) - {"starttls-required"}) == SUPPORTED
    with pytest.raises(ValueError, match="starttls-required requires STARTTLS"):
        Population({"127.8.200.1": "starttls-required", "127.8.200.2": "open"}, server="light")
    with pytest.raises(ValueError, match="unknown server"):
        Population({"127.8.200.1": "open"}, server="postfix")
    for changes in (dict(auth_any_password=True), dict(next_hop=("127.0.0.1", 25)), dict(require_starttls=True)):
        behaviour = replace(BEHAVIOURS["open"], **changes)
        with pytest.raises(ValueError):
            LightHost(behaviour, BehaviourHandler(behaviour))
    Population({"127.8.200.1": "starttls-required"})  # aiosmtpd serves it


def test_population_command_serves_light_servers() -> None:
    done = subprocess.run([sys.executable, "-m", "tests.support.population", "--count", "3", "--server", "light",
                           "--base", "127.8.201.1"], input="", capture_output=True, text=True, timeout=60, check=True,
                          cwd=pathlib.Path(__file__).resolve().parents[2])
    first, last = (json.loads(line) for line in done.stdout.splitlines())
    assert first["port"] > 0 and last["accepted"] == 0

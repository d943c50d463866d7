"""The engine's general rules, each against a loopback server that behaves that way: refused
senders, failing STARTTLS, per-client connection limits, AUTH bypass, delivery mode as the last
judge, catch-alls, only what was observed, failed lookups."""

from __future__ import annotations

import asyncio
import json
import pathlib
import socket
import time

import pytest

from relaycheck.api import CheckOptions, check
from relaycheck.cli import main
from relaycheck.hygiene import HygieneOptions, inspect_session
from relaycheck.model import (
    Confidence,
    DeliveryState,
    Exchange,
    Outcome,
    ProbeKind,
    Target,
    TargetReport,
    Transport,
    VerdictKind,
)
from relaycheck.smtp.session import SessionConfig, SmtpSession
from relaycheck.testing.dnsserver import DnsServerThread
from tests.support.population import Population

from .conftest import BASE, ServerFactory, check_one
from .test_confirm import _with_sink, free_port, run_with_sink


def relay(report: TargetReport, tls: bool = False) -> list[object]:
    return [o for o in report.observations if o.kind is ProbeKind.RELAY and o.tls is tls]


def sent_lines(report: TargetReport) -> list[str]:
    return [e.sent for c in report.connections for e in c.exchanges if e.sent]


# -- 1. a refused sender says nothing about relaying -------------------------------------------


def test_outside_sender_refused_at_mail_is_judged_with_other_senders(smtp_server: ServerFactory) -> None:
    report = check_one(smtp_server("outside-sender-refused").address)
    assert report.verdict.kind is VerdictKind.CLOSED
    v01 = next(o for o in report.observations if o.probe_id == "V01")
    assert v01.refused_sender is not None and v01.refused_sender.enhanced == "5.1.8"
    assert v01.mail_from == "<>" and v01.outcome is Outcome.REJECTED_POLICY  # judged through the null sender
    postmaster = next(o for o in report.observations if o.role == "postmaster")
    assert postmaster.outcome is Outcome.ACCEPTED and postmaster.refused_sender is not None
    assert "refused their sender at MAIL" in report.verdict.explanation


def test_open_relay_behind_a_sender_check_is_open(smtp_server: ServerFactory) -> None:
    report = check_one(smtp_server("outside-sender-refused-open").address)
    assert report.verdict.kind is VerdictKind.OPEN
    v01 = next(o for o in report.observations if o.probe_id == "V01")
    assert v01.outcome is Outcome.ACCEPTED and v01.mail_from == "<>"
    assert v01.refused_sender is not None and v01.refused_sender.code == 550


def test_local_sender_is_tried_when_the_null_sender_is_refused_too(smtp_server: ServerFactory) -> None:
    server = smtp_server("closed", refuse_senders=frozenset({"outside", "null"}))
    report = check_one(server.address)
    assert report.verdict.kind is VerdictKind.CLOSED
    v01 = next(o for o in report.observations if o.probe_id == "V01")
    assert v01.mail_from == "<relaycheck@relay.test>" and v01.outcome is Outcome.REJECTED_POLICY


def test_every_sender_refused_is_inconclusive(smtp_server: ServerFactory) -> None:
    report = check_one(smtp_server("every-sender-refused").address)
    assert report.verdict.kind is VerdictKind.INCONCLUSIVE
    assert "Every sender was refused" in report.verdict.explanation
    assert "501 5.1.7" in report.verdict.explanation


# -- 2. a failing STARTTLS does not spoil the clear-text verdict --------------------------------


def test_starttls_454_leaves_the_plaintext_verdict_and_is_a_finding(smtp_server: ServerFactory) -> None:
    report = check_one(smtp_server("starttls-454").address)
    assert report.facts.starttls_offered
    assert report.verdict.kind is VerdictKind.CLOSED
    over_tls = relay(report, tls=True)
    assert over_tls and all(o.outcome is Outcome.SKIPPED for o in over_tls)  # type: ignore[attr-defined]
    assert all("454" in o.reason for o in over_tls)  # type: ignore[attr-defined]
    assert "26 relay probe(s) were not run (STARTTLS could not be used" in report.verdict.explanation
    assert "tls-handshake-failed" in {f.code for f in report.findings}


def test_broken_handshake_leaves_the_open_verdict(smtp_server: ServerFactory) -> None:
    no_inspection = HygieneOptions(ptr=False, dnsbl=False, tls=False, vrfy=False)
    # --exhaustive: the battery over STARTTLS is tried although the clear-text one proved it open
    report = check_one(smtp_server("starttls-broken").address, hygiene=no_inspection, exhaustive=True)
    assert report.verdict.kind is VerdictKind.OPEN
    assert all(o.outcome is Outcome.SKIPPED for o in relay(report, tls=True))  # type: ignore[attr-defined]
    # one STARTTLS attempt, not one per probe and retry
    assert sum(line == "STARTTLS" for line in sent_lines(report)) == 1
    # the failure the battery met is reported even without the inspection session
    assert report.hygiene is not None and report.hygiene.tls is not None and report.hygiene.tls.error
    assert "tls-handshake-failed" in {f.code for f in report.findings}


# -- 3. per-client connection limits ------------------------------------------------------------


@pytest.mark.parametrize("behaviour", ["closed", "open"])
@pytest.mark.parametrize("limit", [1, 2])
def test_connection_limit_still_gets_the_whole_battery(smtp_server: ServerFactory, behaviour: str, limit: int) -> None:
    server = smtp_server(behaviour, max_connections=limit, tls=True)
    report = check_one(server.address, exhaustive=True)
    assert report.verdict.kind is (VerdictKind.CLOSED if behaviour == "closed" else VerdictKind.OPEN)
    assert len(relay(report)) == 26 and len(relay(report, tls=True)) == 26
    ran = [o for o in report.observations if o.role != "catch-all"]  # on demand: no trick was accepted
    assert all(o.outcome not in (Outcome.ERROR, Outcome.SKIPPED) for o in ran)


# -- 4. a made-up login that relays -------------------------------------------------------------

BYPASS = HygieneOptions(ptr=False, dnsbl=False, auth_bypass=True)


def test_auth_bypass_that_relays_is_open(smtp_server: ServerFactory, capsys: pytest.CaptureFixture[str]) -> None:
    server = smtp_server("closed", auth_any_password=True, relay_if=lambda t: t.authenticated)
    report = check_one(server.address, hygiene=BYPASS)
    assert report.verdict.kind is VerdictKind.OPEN
    assert report.verdict.confidence is Confidence.AUTH_BYPASS
    assert all(o.outcome is not Outcome.ACCEPTED for o in relay(report))  # anonymous relaying is refused
    code = main(["check", server.address, "--ext-recipient", "relaytest@outside-a.test", "--ext-recipient",
                 "relaytest@outside-b.test", "--no-ptr", "--no-dnsbl", "--auth-bypass-check"])  # fmt: skip
    assert code == 1
    assert "OPEN" in capsys.readouterr().out


def test_auth_accepted_but_relay_refused_is_not_open(smtp_server: ServerFactory) -> None:
    report = check_one(smtp_server("closed", auth_any_password=True).address, hygiene=BYPASS)
    assert report.verdict.kind is VerdictKind.CLOSED
    assert "auth-bypass" in {f.code for f in report.findings}  # still a finding: any password logs in


# -- 5. delivery mode is the judge of last resort -----------------------------------------------


def test_refused_after_the_final_dot_is_closed(smtp_server: ServerFactory) -> None:
    report, (server, sink) = run_with_sink(smtp_server, "refuse-after-dot", relay=False)
    assert report.verdict.kind is VerdictKind.CLOSED
    assert not server.handler.messages and not sink.handler.arrivals
    refused = [o for o in relay(report) if o.delivery is not None]  # type: ignore[attr-defined]
    assert refused and all(o.delivery.state is DeliveryState.NOT_ACCEPTED for o in refused)  # type: ignore[attr-defined]


def test_late_delivery_is_still_confirmed_within_the_timeout(smtp_server: ServerFactory) -> None:
    sink_port = free_port()
    server = smtp_server("open", next_hop=("127.0.0.1", sink_port), delivery_delay=1.5)  # a later queue run
    started = time.monotonic()
    report, _ = asyncio.run(_with_sink(server.address, sink_port, confirm_timeout=30))
    assert report.verdict.kind is VerdictKind.OPEN
    assert report.verdict.confidence is Confidence.CONFIRMED
    assert time.monotonic() - started < 30  # the wait ended with the arrivals, not the timeout


def test_not_delivered_exits_3_not_1(smtp_server: ServerFactory, capsys: pytest.CaptureFixture[str]) -> None:
    server = smtp_server("open")  # keeps what it accepts: nothing ever arrives
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sink_port = sock.getsockname()[1]
    code = main(["check", server.address, "--confirm", "operator@confirm.test", "--sink", f"127.0.0.1:{sink_port}",
                 "--confirm-timeout", "1", "--no-ptr", "--no-dnsbl"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 3, out
    assert "not delivered within 1 s" in out


# -- 6. catch-alls ------------------------------------------------------------------------------


def test_trick_accepted_while_unknown_local_users_are_refused_is_open(smtp_server: ServerFactory) -> None:
    # the catch-all control is judged through the null sender too: its refusal is what counts
    server = smtp_server("percent-only", refuse_senders=frozenset({"outside"}))
    report = check_one(server.address)
    catch_all = next(o for o in report.observations if o.role == "catch-all")
    assert catch_all.outcome is Outcome.REJECTED_OTHER and catch_all.mail_from == "<>"
    assert report.verdict.kind is VerdictKind.OPEN
    assert all(o.local_part_trick for o in report.observations if o.probe_id in report.verdict.evidence)


def test_trick_accepted_when_the_catch_all_control_could_not_be_judged_is_inconclusive(
    smtp_server: ServerFactory,
) -> None:
    # local users are refused, but no sender reaches RCPT for the control: unknown, so no alarm
    server = smtp_server("percent-only", refuse_senders=frozenset({"outside", "null", "local"}))
    report = check_one(server.address)
    assert report.verdict.kind is VerdictKind.INCONCLUSIVE


# -- 7. only what was observed ------------------------------------------------------------------


def test_hostile_host_names_never_reach_an_address(smtp_server: ServerFactory) -> None:
    server = smtp_server("closed", banner="<script>alert(1)</script> ESMTP", hostname="<b>x</b>")
    report = check_one(server.address, local_domain=None)
    lines = [line for line in sent_lines(report) if line.startswith(("MAIL", "RCPT"))]
    assert lines and not any("<script" in line or "<b>" in line for line in lines)
    v06 = next(o for o in report.observations if o.probe_id == "V06")
    assert v06.mail_from == "<relaycheck@[127.0.0.1]>"  # the address literal stands in


def test_a_session_that_fails_before_tls_says_nothing_about_tls() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, not listening: the server is gone
        port = sock.getsockname()[1]

        def new_session(transport: Transport, context: object) -> SmtpSession:
            return SmtpSession("127.0.0.1", port, SessionConfig(helo_name="client.relaycheck.test"),
                               address="127.0.0.1", transport=transport)  # fmt: skip

        inspection = asyncio.run(
            inspect_session(new_session, "127.0.0.1", Transport.PLAIN, True, HygieneOptions(), "relay.test")
        )
    assert inspection.tls is None


# -- 9. failed lookups are not findings ---------------------------------------------------------


def test_failed_ptr_lookup_is_not_a_missing_ptr(smtp_server: ServerFactory) -> None:
    with DnsServerThread({}, servfail={"1.0.0.127.in-addr.arpa"}) as dns:
        report = check_one(smtp_server("closed").address, hygiene=HygieneOptions(dnsbl=False), resolver=dns.address)
    assert report.hygiene is not None and report.hygiene.ptr_names is None
    assert report.hygiene.dns_note is not None and "lookup failed" in report.hygiene.dns_note
    assert "no-ptr" not in {f.code for f in report.findings}


def test_no_ptr_or_dnsbl_lookups_for_loopback_without_a_resolver(smtp_server: ServerFactory) -> None:
    report = check_one(smtp_server("closed").address, hygiene=HygieneOptions())  # the fence stops any DNS
    assert report.hygiene is not None and report.hygiene.ptr_names is None and report.hygiene.dnsbl is None
    assert report.hygiene.dns_note is not None and "skipped" in report.hygiene.dns_note
    assert not {"no-ptr", "dnsbl-unknown", "dnsbl-listed"} & {f.code for f in report.findings}


def test_a_name_without_a_dot_follows_the_resolver(smtp_server: ServerFactory,
                                                   capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    server = smtp_server("closed")
    with DnsServerThread({("mailhost", "A"): ["127.0.0.1"]}) as dns:
        code = main(["check", f"mailhost:{server.port}", "--resolver", dns.address, "--ext-recipient",
                     "relaytest@outside-a.test", "--ext-recipient", "relaytest@outside-b.test", "--no-ptr",
                     "--no-dnsbl", "--local-domain", "relay.test"])  # fmt: skip
        asked = list(dns.queries)
    assert code == 0, capsys.readouterr()
    assert ("mailhost", "A") in asked


# -- scan says what check says ------------------------------------------------------------------


def test_scan_verdicts_equal_check_verdicts_for_the_rule_servers(tmp_path: pathlib.Path) -> None:
    behaviours = ("outside-sender-refused", "outside-sender-refused-open", "every-sender-refused", "starttls-454",
                  "starttls-broken", "one-connection")  # fmt: skip
    members = {f"127.8.150.{n + 1}": b for n, b in enumerate(behaviours)}
    out = tmp_path / "scan.jsonl"
    with Population(members) as population:
        main(["scan", *members, "-p", str(population.port), "-o", str(out), "--include-reserved",
              "--ext-recipient", "relaytest@outside-a.test", "--ext-recipient", "relaytest@outside-b.test",
              "--helo", "client.relaycheck.test", "--timeout", "10", "--no-ptr", "--no-dnsbl", "--rate", "0",
              "--per-subnet", "0", "--progress", "none"])  # fmt: skip
        checked = {ip: check_one(population.address(ip), local_domain=None).verdict.kind.value for ip in members}
    scanned = {r["ip"]: r["verdict"] for r in map(json.loads, out.read_text().splitlines())}
    assert scanned == checked
    assert checked == {ip: EXPECTED[b] for ip, b in members.items()}


EXPECTED = {
    "outside-sender-refused": "closed",
    "outside-sender-refused-open": "open",
    "every-sender-refused": "inconclusive",
    "starttls-454": "closed",
    "starttls-broken": "open",
    "one-connection": "closed",
}


def test_a_server_that_dies_mid_test_gets_no_finding_about_what_was_never_seen(smtp_server: ServerFactory) -> None:
    server = smtp_server("closed")  # never offers STARTTLS
    stopped: list[bool] = []

    def hook(target: Target, index: int, exchange: Exchange) -> None:
        if not stopped and (exchange.sent or "").startswith("RCPT"):
            server.stop()  # the server goes away after the preflight's first answer
            stopped.append(True)

    report = asyncio.run(check(server.address, CheckOptions(engine=BASE), on_exchange=hook)).targets[0]
    assert stopped and report.verdict.kind is VerdictKind.INCONCLUSIVE
    assert "tls-handshake-failed" not in {f.code for f in report.findings}
    assert report.hygiene is not None and report.hygiene.tls is None  # nothing was seen of TLS

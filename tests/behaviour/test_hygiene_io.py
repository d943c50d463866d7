"""Hygiene facts collected from real (loopback) servers: TLS, relay after TLS, VRFY, AUTH, PTR."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from relaycheck.api import CheckOptions, check, expand, parse_target
from relaycheck.hygiene import HygieneOptions
from relaycheck.model import Outcome, ProbeKind, Transport, VerdictKind
from relaycheck.testing.dnsserver import DnsServerThread

from .conftest import BASE, NO_DNS, ServerFactory, check_one


def test_untrusted_certificate_is_read_and_reported(smtp_server: ServerFactory) -> None:
    report = check_one(smtp_server("closed", tls=True).address)
    assert report.hygiene is not None and report.hygiene.tls is not None
    tls = report.hygiene.tls
    assert tls.offered and tls.established
    assert tls.chain_verified is False and tls.verify_error  # trustme's CA is not in the trust store
    assert tls.cert_sans == ("mx.relay.test",)
    assert tls.version in ("TLSv1.2", "TLSv1.3") and tls.cipher
    assert tls.self_signed is False  # issued by a (test) CA, not self-signed
    assert tls.hostname_matches is None  # the target was given as an IP: nothing to compare


def test_relay_policy_is_tested_again_after_starttls(smtp_server: ServerFactory) -> None:
    server = smtp_server("closed", tls=True, relay_if=lambda t: t.tls)
    report = check_one(server.address)
    assert report.verdict.kind is VerdictKind.OPEN
    assert "V01/tls" in report.verdict.evidence
    plain = next(o for o in report.observations if o.probe_id == "V01")
    assert plain.outcome is Outcome.REJECTED_POLICY and not plain.tls
    over_tls = next(o for o in report.observations if o.probe_id == "V01/tls")
    assert over_tls.outcome is Outcome.ACCEPTED and over_tls.tls


def test_tls_battery_can_be_turned_off(smtp_server: ServerFactory) -> None:
    server = smtp_server("closed", tls=True, relay_if=lambda t: t.tls)
    report = check_one(server.address, hygiene=HygieneOptions(ptr=False, dnsbl=False, tls_battery=False))
    assert report.verdict.kind is VerdictKind.CLOSED
    assert not any(o.probe_id.endswith("/tls") for o in report.observations)


def test_vrfy_answers_are_collected(smtp_server: ServerFactory) -> None:
    report = check_one(smtp_server("closed", vrfy_enabled=True).address)
    assert report.hygiene is not None
    assert report.hygiene.vrfy_postmaster is not None and report.hygiene.vrfy_postmaster.code == 250
    assert report.hygiene.vrfy_random is not None and report.hygiene.vrfy_random.code == 550


def test_vrfy_is_asked_over_tls_when_the_server_requires_starttls(smtp_server: ServerFactory) -> None:
    # before STARTTLS such a server says 530 to everything: VRFY asked then would miss the leak
    report = check_one(smtp_server("starttls-required", vrfy_enabled=True).address)
    assert report.facts.tls_required and report.hygiene is not None
    assert report.hygiene.vrfy_postmaster is not None and report.hygiene.vrfy_postmaster.code == 250
    assert report.hygiene.vrfy_random is not None and report.hygiene.vrfy_random.code == 550
    assert any(f.code == "vrfy-enabled" for f in report.findings)
    assert report.hygiene.tls is not None and report.hygiene.tls.established


def test_vrfy_check_can_be_turned_off(smtp_server: ServerFactory) -> None:
    server = smtp_server("closed", vrfy_enabled=True)
    report = check_one(server.address, hygiene=HygieneOptions(ptr=False, dnsbl=False, vrfy=False))
    assert report.hygiene is not None and report.hygiene.vrfy_postmaster is None
    assert not any(c.startswith("VRFY") for c in server.handler.commands)


def test_auth_offered_in_clear_text_is_noticed(smtp_server: ServerFactory) -> None:
    report = check_one(smtp_server("closed", auth_any_password=True).address)
    assert report.hygiene is not None
    assert {"PLAIN", "LOGIN"} <= set(report.hygiene.auth_before_tls)


def test_auth_bypass_check_makes_exactly_one_attempt(smtp_server: ServerFactory) -> None:
    server = smtp_server("closed", auth_any_password=True, relay_if=lambda t: t.authenticated)
    report = check_one(server.address, hygiene=HygieneOptions(ptr=False, dnsbl=False, auth_bypass=True))
    assert report.hygiene is not None
    assert report.hygiene.auth_bypass_reply is not None and report.hygiene.auth_bypass_reply.code == 235
    assert report.hygiene.auth_bypass_relay is not None and report.hygiene.auth_bypass_relay.code == 250
    auth_lines = [e.sent for c in report.connections for e in c.exchanges if e.sent and e.sent.startswith("AUTH")]
    assert len(auth_lines) == 1  # never more than one attempt: no credential guessing
    # the anonymous battery itself was refused: the relay needs (any) AUTH
    assert all(o.outcome is not Outcome.ACCEPTED for o in report.observations if o.kind is ProbeKind.RELAY)


def test_no_auth_attempt_without_the_option(smtp_server: ServerFactory) -> None:
    report = check_one(smtp_server("closed", auth_any_password=True).address)
    assert not any(e.sent and e.sent.startswith("AUTH") for c in report.connections for e in c.exchanges)


def test_ptr_and_forward_confirmation_from_a_dns_server(smtp_server: ServerFactory) -> None:
    server = smtp_server("closed", host="127.0.0.3")
    records = {
        ("3.0.0.127.in-addr.arpa", "PTR"): ["mx.relay.test."],
        ("mx.relay.test", "A"): ["127.0.0.3"],
    }
    with DnsServerThread(records) as dns:
        report = check_one(server.address, resolver=dns.address, hygiene=HygieneOptions(dnsbl=False))
    assert report.hygiene is not None
    assert report.hygiene.ptr_names == ("mx.relay.test",)
    assert report.hygiene.fcrdns is True


def test_ptr_that_does_not_resolve_back_is_not_forward_confirmed(smtp_server: ServerFactory) -> None:
    server = smtp_server("closed", host="127.0.0.4")
    records = {("4.0.0.127.in-addr.arpa", "PTR"): ["elsewhere.test."], ("elsewhere.test", "A"): ["127.0.0.9"]}
    with DnsServerThread(records) as dns:
        report = check_one(server.address, resolver=dns.address, hygiene=HygieneOptions(dnsbl=False))
    assert report.hygiene is not None
    assert report.hygiene.ptr_names == ("elsewhere.test",) and report.hygiene.fcrdns is False


def test_dns_checks_are_off_without_being_asked(smtp_server: ServerFactory) -> None:
    report = check_one(smtp_server("closed").address, hygiene=NO_DNS)
    assert report.hygiene is not None and report.hygiene.ptr_names is None and report.hygiene.dnsbl is None


def test_implicit_tls_target_is_tested_over_tls(smtp_server: ServerFactory) -> None:
    server = smtp_server("open", implicit_tls=True)
    options = CheckOptions(engine=replace(BASE, hygiene=NO_DNS), transport=Transport.TLS)
    report = asyncio.run(check(server.address, options)).targets[0]
    assert report.target.transport is Transport.TLS
    assert report.verdict.kind is VerdictKind.OPEN  # the relay battery ran inside TLS
    # every session that got as far as a greeting did so inside TLS (the certificate check's
    # first, verifying handshake fails against the test CA and never gets one)
    assert all(c.tls for c in report.connections if any(e.reply for e in c.exchanges))
    assert report.hygiene is not None and report.hygiene.tls is not None and report.hygiene.tls.established


def test_all_ports_expands_every_address_to_25_465_and_587() -> None:
    targets = asyncio.run(expand(parse_target("192.0.2.7"), CheckOptions(ports=(25, 465, 587))))
    assert [(t.port, t.transport) for t in targets] == [
        (25, Transport.PLAIN),
        (465, Transport.TLS),
        (587, Transport.PLAIN),
    ]
    explicit = asyncio.run(expand(parse_target("192.0.2.7:2525"), CheckOptions(ports=(25, 465, 587))))
    assert [t.port for t in explicit] == [2525]  # an explicit port wins


def test_no_inspection_session_when_there_is_nothing_to_ask(smtp_server: ServerFactory) -> None:
    plain_only = HygieneOptions(ptr=False, dnsbl=False, vrfy=False)  # TLS check on, but none offered
    report = check_one(smtp_server("closed").address, hygiene=plain_only)
    assert report.hygiene is not None and report.hygiene.tls is not None
    assert report.hygiene.tls.offered is False
    assert all(any((e.sent or "").startswith("MAIL") for e in c.exchanges) for c in report.connections)

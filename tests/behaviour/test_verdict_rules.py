"""Every verdict rule against a server that behaves that way (aiosmtpd, loopback)."""

from __future__ import annotations

from relaycheck.model import Confidence, Outcome, ProbeKind, TargetReport, VerdictKind

from .conftest import ServerFactory, check_one


def accepted_relay(report: TargetReport) -> set[str]:
    return {o.probe_id for o in report.observations if o.kind is ProbeKind.RELAY and o.outcome is Outcome.ACCEPTED}


def test_open_relay_is_open_at_rcpt(smtp_server: ServerFactory) -> None:
    server = smtp_server("open")
    report = check_one(server.address)
    assert report.verdict.kind is VerdictKind.OPEN
    assert report.verdict.confidence is Confidence.ACCEPTED_AT_RCPT
    assert {"V01", "V01b"} <= set(report.verdict.evidence)
    assert "--confirm" in report.verdict.explanation  # says it could be accept-then-discard


def test_closed_server_is_closed_only_with_postmaster_accepted(smtp_server: ServerFactory) -> None:
    server = smtp_server("closed")
    report = check_one(server.address)
    assert report.verdict.kind is VerdictKind.CLOSED
    controls = {o.probe_id: o for o in report.observations if o.kind is ProbeKind.CONTROL}
    assert controls["C-POSTMASTER"].outcome is Outcome.ACCEPTED
    assert not accepted_relay(report)
    relay_count = sum(o.kind is ProbeKind.RELAY for o in report.observations)
    assert relay_count == 26  # V01–V25 plus V01 to the second outside domain


def test_percent_hack_only_is_open_with_the_tricks_as_evidence(smtp_server: ServerFactory) -> None:
    server = smtp_server("percent-only")
    report = check_one(server.address)
    assert report.verdict.kind is VerdictKind.OPEN
    assert accepted_relay(report) == {"V12", "V13", "V14", "V15"}
    assert all("%" in o.rcpt_to for o in report.observations if o.probe_id in report.verdict.evidence)


def test_null_sender_only_is_open(smtp_server: ServerFactory) -> None:
    report = check_one(smtp_server("null-sender-only").address)
    assert report.verdict.kind is VerdictKind.OPEN
    assert accepted_relay(report) == {"V03"}


def test_spoofed_local_sender_only_is_open(smtp_server: ServerFactory) -> None:
    report = check_one(smtp_server("spoofed-local-sender-only").address)
    assert report.verdict.kind is VerdictKind.OPEN
    assert accepted_relay(report) == {"V05", "V06"}


def test_source_route_only_is_open(smtp_server: ServerFactory) -> None:
    report = check_one(smtp_server("source-route-only").address)
    assert report.verdict.kind is VerdictKind.OPEN
    assert accepted_relay(report) == {"V20", "V21"}


def test_greylisting_without_budget_is_inconclusive_with_advice(smtp_server: ServerFactory) -> None:
    report = check_one(smtp_server("greylisting", greylist_delay=60).address)
    assert report.verdict.kind is VerdictKind.INCONCLUSIVE
    assert "--retry-budget" in (report.verdict.advice or "")
    assert any(o.outcome is Outcome.DEFERRED for o in report.observations)


def test_greylisting_clears_within_the_retry_budget(smtp_server: ServerFactory) -> None:
    server = smtp_server("greylisting", greylist_delay=0.3)
    report = check_one(server.address, retry_budget=20, retry_first_wait=0.2)
    assert report.verdict.kind is VerdictKind.OPEN
    v01 = next(o for o in report.observations if o.probe_id == "V01")
    assert v01.attempts >= 2  # deferred first, accepted on a retry with the same envelope


def test_greylisting_that_never_clears_ends_inconclusive_within_budget(smtp_server: ServerFactory) -> None:
    server = smtp_server("greylisting", greylist_delay=3600)
    report = check_one(server.address, retry_budget=0.5, retry_first_wait=0.2)
    assert report.verdict.kind is VerdictKind.INCONCLUSIVE
    assert report.duration < 10


def test_temporary_relay_denied_counts_as_refusal(smtp_server: ServerFactory) -> None:
    report = check_one(smtp_server("relay-denied-4xx").address)
    assert report.verdict.kind is VerdictKind.CLOSED
    v01 = next(o for o in report.observations if o.probe_id == "V01")
    assert v01.reply is not None and v01.reply.code == 454
    assert v01.outcome is Outcome.REJECTED_POLICY


def test_server_refusing_everyone_is_inconclusive(smtp_server: ServerFactory) -> None:
    report = check_one(smtp_server("reject-everything").address)
    assert report.verdict.kind is VerdictKind.INCONCLUSIVE
    assert "postmaster" in report.verdict.explanation


def test_starttls_required_is_tested_over_tls(smtp_server: ServerFactory) -> None:
    report = check_one(smtp_server("starttls-required").address)
    assert report.facts.tls_required
    assert report.verdict.kind is VerdictKind.OPEN
    assert all(o.tls for o in report.observations)
    assert any(f.code == "tls-required" for f in report.findings)


def test_catch_all_with_only_tricks_accepted_is_inconclusive_not_open(smtp_server: ServerFactory) -> None:
    report = check_one(smtp_server("catch-all").address)
    assert report.verdict.kind is VerdictKind.INCONCLUSIVE
    assert any(f.code == "catch-all" for f in report.findings)
    assert all(o.local_part_trick for o in report.observations if o.probe_id in report.verdict.evidence)


def test_relay_for_one_outside_domain_is_a_relay_domain_not_an_open_relay(smtp_server: ServerFactory) -> None:
    report = check_one(smtp_server("relay-domain").address)
    assert report.verdict.kind is VerdictKind.CLOSED
    finding = next(f for f in report.findings if f.code == "relay-domain")
    assert "outside-a.test" in finding.title
    # the battery was run again towards the domain it does not relay for
    v02 = next(o for o in report.observations if o.probe_id == "V02")
    assert v02.outside_domain == "outside-b.test" and v02.outcome is Outcome.REJECTED_POLICY


def test_refusal_for_a_non_relay_reason_does_not_prove_closed(smtp_server: ServerFactory) -> None:
    server = smtp_server("closed", deny_reply="550 5.1.2 <{rcpt}>: Recipient address rejected: Domain not found")
    report = check_one(server.address)
    assert report.verdict.kind is VerdictKind.INCONCLUSIVE
    assert "--ext-recipient" in (report.verdict.advice or "")


def test_multiline_replies_are_read_whole(smtp_server: ServerFactory) -> None:
    report = check_one(smtp_server("multiline").address)
    assert report.verdict.kind is VerdictKind.CLOSED
    v01 = next(o for o in report.observations if o.probe_id == "V01")
    assert v01.reply is not None and len(v01.reply.lines) == 3 and v01.reply.enhanced == "5.7.1"

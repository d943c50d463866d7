"""A lean battery: what the server sees (commands, accepted recipients, connections) per verdict.

Stop when proven (an open relay is proven by the first round; ``--exhaustive`` runs everything),
one transaction per sender (one MAIL, several RCPT), refused senders not sent again. Counted on
the server's side: what a mail admin would find in the logs.
"""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from relaycheck.cli import main
from relaycheck.hygiene import HygieneOptions
from relaycheck.model import ConnectionLog, Outcome, ProbeKind, TargetReport, VerdictKind
from relaycheck.testing.servers import BEHAVIOURS, ServerThread

from .conftest import ServerFactory, check_one

BATTERY_ONLY = HygieneOptions(ptr=False, dnsbl=False, tls=False, vrfy=False)
RELAY_PROBES = 26  # V01, V01b, V02…V25 with two outside domains


def verbs(server: ServerThread) -> Counter[str]:
    return Counter(c.split(" ", 1)[0] for c in server.handler.commands)


def outside_rcpts(server: ServerThread) -> list[str]:
    return [c for c in server.handler.commands if c.startswith("RCPT") and "outside-" in c]


def relay(report: TargetReport) -> list[object]:
    return [o for o in report.observations if o.kind is ProbeKind.RELAY]


def test_an_open_relay_is_proven_by_the_first_round_on_one_connection(smtp_server: ServerFactory) -> None:
    server = smtp_server("open")
    report = check_one(server.address, hygiene=HygieneOptions(ptr=False, dnsbl=False, tls=False))
    assert report.verdict.kind is VerdictKind.OPEN
    # postmaster and the two plain outside recipients in one transaction; the catch-all control
    # after them (its refusal's wording names the MTA whose fix the report gives); VRFY/EXPN too
    assert verbs(server) == Counter({"RCPT": 4, "MAIL": 1, "VRFY": 2})  # the handler records these verbs
    assert len(outside_rcpts(server)) == 2 <= 8
    skipped = [o for o in report.observations if o.outcome is Outcome.SKIPPED]
    assert len(skipped) == RELAY_PROBES - 2
    assert {o.reason for o in skipped} == {"not run: verdict proven"}
    assert server.handler.connections == 1  # no session opened ahead of need
    assert report.hygiene is not None and report.hygiene.vrfy_postmaster is not None
    assert report.hygiene.fingerprint is not None and report.hygiene.fingerprint.family == "postfix"


def test_the_tls_battery_is_not_run_once_proven(smtp_server: ServerFactory) -> None:
    server = smtp_server("open", tls=True)
    report = check_one(server.address, hygiene=HygieneOptions(ptr=False, dnsbl=False, tls=False, vrfy=False))
    over_tls = [o for o in report.observations if o.probe_id.endswith("/tls")]
    assert over_tls and all(o.outcome is Outcome.SKIPPED for o in over_tls)
    assert len(outside_rcpts(server)) <= 8


def test_exhaustive_runs_every_probe_in_one_transaction_per_sender(smtp_server: ServerFactory) -> None:
    server = smtp_server("open")
    report = check_one(server.address, hygiene=BATTERY_ONLY, exhaustive=True)
    assert report.verdict.kind is VerdictKind.OPEN
    assert all(o.outcome is not Outcome.SKIPPED for o in report.observations)
    assert len(outside_rcpts(server)) == RELAY_PROBES
    senders = {o.mail_from for o in report.observations}
    seen = verbs(server)
    # every probe's RCPT once; a MAIL per sender and session, not per probe
    assert seen["RCPT"] == RELAY_PROBES + 2
    assert seen["MAIL"] <= len(senders) + server.handler.connections < RELAY_PROBES


def test_a_closed_server_gets_every_probe_in_few_transactions(smtp_server: ServerFactory) -> None:
    server = smtp_server("closed")
    report = check_one(server.address, hygiene=BATTERY_ONLY)
    assert report.verdict.kind is VerdictKind.CLOSED
    ran = [o for o in report.observations if o.outcome is not Outcome.SKIPPED]
    assert len(ran) == RELAY_PROBES + 1  # and postmaster; the catch-all control only when a trick is accepted
    catch_all = next(o for o in report.observations if o.role == "catch-all")
    assert catch_all.reason == "not run: not needed: no local-part trick was accepted"
    seen = verbs(server)
    assert seen["RCPT"] == RELAY_PROBES + 1
    assert seen["MAIL"] + seen["RSET"] < RELAY_PROBES  # one by one it was 28 MAIL and 25 RSET
    assert server.handler.connections == 3  # 27 refusals, at most 9 per session


def test_a_catch_all_is_not_proven_open_and_runs_everything(smtp_server: ServerFactory) -> None:
    server = smtp_server("catch-all")
    report = check_one(server.address, hygiene=BATTERY_ONLY)
    assert report.verdict.kind is VerdictKind.INCONCLUSIVE  # tricks accepted: maybe local
    assert all(o.outcome is not Outcome.SKIPPED for o in report.observations)  # the tricks called for the control
    catch_all = next(o for o in report.observations if o.role == "catch-all")
    assert catch_all.outcome is Outcome.ACCEPTED


def test_a_closed_server_costs_three_connections_vrfy_included(smtp_server: ServerFactory) -> None:
    """26 refused relay probes and EXPN's refusal at 9 errors a session (Postfix's soft limit is
    10, and QUIT's reply would sleep): VRFY/EXPN ride on the first session, no session of their own."""
    server = smtp_server("closed")
    report = check_one(server.address, hygiene=HygieneOptions(ptr=False, dnsbl=False, tls=False))
    assert report.verdict.kind is VerdictKind.CLOSED
    assert server.handler.connections == 3
    assert report.hygiene is not None and report.hygiene.expn_postmaster is not None
    for connection in report.connections:
        refused = [e for e in connection.exchanges if e.sent and e.reply is not None and not e.reply.positive]
        assert len(refused) <= 9


def test_a_trick_accepted_while_unknown_users_are_refused_is_open_either_way(smtp_server: ServerFactory) -> None:
    server = smtp_server("percent-only")  # refuses unknown local users, relays through u%ext@local
    report = check_one(server.address, hygiene=BATTERY_ONLY)
    assert report.verdict.kind is VerdictKind.OPEN
    exhaustive = check_one(server.address, hygiene=BATTERY_ONLY, exhaustive=True)
    assert exhaustive.verdict.kind is VerdictKind.OPEN
    ran = {o.probe_id for o in report.observations if o.outcome is not Outcome.SKIPPED}
    for obs in exhaustive.observations:  # what ran is what the exhaustive run saw
        if obs.probe_id in ran:
            assert obs.outcome is next(o.outcome for o in report.observations if o.probe_id == obs.probe_id)


def test_a_refused_sender_is_not_sent_again(smtp_server: ServerFactory) -> None:
    server = smtp_server("outside-sender-refused")
    report = check_one(server.address, hygiene=BATTERY_ONLY)
    assert report.verdict.kind is VerdictKind.CLOSED
    mails = Counter(c for c in server.handler.commands if c.startswith("MAIL"))
    outside = {m: n for m, n in mails.items() if "outside-" in m}
    assert outside and all(n == 1 for n in outside.values()), outside
    per_session: Counter[int] = Counter()
    for connection in report.connections:
        for exchange in connection.exchanges:
            if exchange.reply is not None and exchange.reply.code >= 400 and exchange.sent:
                per_session[connection.index] += 1
    assert max(per_session.values()) < 10  # under Postfix's soft error limit


@pytest.mark.parametrize("behaviour", sorted(BEHAVIOURS))
def test_grouped_and_one_by_one_give_the_same_outcomes(smtp_server: ServerFactory, behaviour: str) -> None:
    """RFC 5321 makes each RCPT's answer independent of the others in the transaction: the verdict
    and every probe's outcome are those of one transaction per probe."""
    server = smtp_server(behaviour)

    def outcomes(report: TargetReport) -> dict[str, tuple[str, str, str, str]]:
        random_user = re.compile(r"rc-nouser-[0-9a-f]+")  # a new one on every check
        return {
            o.probe_id: (o.outcome, o.stage, o.mail_from, random_user.sub("rc-nouser", o.rcpt_to))
            for o in report.observations
        }

    for exhaustive in (False, True):
        grouped = check_one(server.address, hygiene=BATTERY_ONLY, exhaustive=exhaustive)
        alone = check_one(server.address, hygiene=BATTERY_ONLY, exhaustive=exhaustive, one_by_one=True)
        assert grouped.verdict.kind is alone.verdict.kind, behaviour
        if exhaustive:
            assert outcomes(grouped) == outcomes(alone), behaviour
            continue
        # Stopping when proven: which probes were already under way when the proof came depends
        # on which session came up first; every probe both runs sent got the same answer.
        both = {k for k, v in outcomes(grouped).items() if v[0] is not Outcome.SKIPPED} & {
            k for k, v in outcomes(alone).items() if v[0] is not Outcome.SKIPPED
        }
        assert {k: outcomes(grouped)[k] for k in both} == {k: outcomes(alone)[k] for k in both}, behaviour


def test_json_reports_the_probes_not_run(smtp_server: ServerFactory, capsys: pytest.CaptureFixture[str]) -> None:
    server = smtp_server("open")
    code = main(["check", server.address, "--json", "--ext-recipient", "relaytest@outside-a.test",
                 "--ext-recipient", "relaytest@outside-b.test", "--local-domain", "relay.test", "--no-ptr",
                 "--no-dnsbl"])  # fmt: skip
    assert code == 1
    observations = json.loads(capsys.readouterr().out)["targets"][0]["observations"]
    skipped = [o for o in observations if o["outcome"] == "skipped"]
    assert skipped and all(o["reason"] == "not run: verdict proven" for o in skipped)
    code = main(["check", server.address, "--ext-recipient", "relaytest@outside-a.test", "--ext-recipient",
                 "relaytest@outside-b.test", "--local-domain", "relay.test", "--no-ptr", "--no-dnsbl"])  # fmt: skip
    assert "not run: verdict proven (--exhaustive runs them)" in capsys.readouterr().out
    code = main(["check", server.address, "--format", "markdown", "--ext-recipient", "relaytest@outside-a.test",
                 "--ext-recipient", "relaytest@outside-b.test", "--local-domain", "relay.test", "--no-ptr",
                 "--no-dnsbl"])  # fmt: skip
    assert f"({RELAY_PROBES - 2} not run)" in capsys.readouterr().out


def test_the_tls_facts_come_from_the_tls_batterys_own_handshake(smtp_server: ServerFactory) -> None:
    """No inspection session for TLS: the TLS battery's first STARTTLS is made with the trust
    store, and a certificate that does not verify (this one is self-signed) costs one handshake
    more, the battery's own session, whose certificate the findings describe."""
    server = smtp_server("closed", tls=True)
    report = check_one(server.address, hygiene=HygieneOptions(ptr=False, dnsbl=False))
    assert report.verdict.kind is VerdictKind.CLOSED
    assert report.hygiene is not None and report.hygiene.tls is not None
    tls = report.hygiene.tls
    assert tls.established and tls.chain_verified is False and tls.verify_error and tls.cert_sha256
    assert "cert-untrusted" in {f.code for f in report.findings}
    relay_sessions = [c for c in report.connections if any((e.sent or "").startswith("RCPT") for e in c.exchanges)]
    refused_handshakes = [c for c in report.connections if "certificate verify failed" in (c.error or "")]
    assert len(refused_handshakes) == 1  # the verifying try; everything else carried probes
    assert len(report.connections) == len(relay_sessions) + 1


def test_probes_sent_again_with_another_sender_ride_on_a_session_with_budget_left(smtp_server: ServerFactory) -> None:
    """The server refuses the outside sender: those probes go again with the null sender, first
    on the session the battery kept (refusal budget left) instead of a new one; no session is
    opened only to greet and quit."""
    server = smtp_server("outside-sender-refused")
    report = check_one(server.address, hygiene=BATTERY_ONLY)
    assert report.verdict.kind is VerdictKind.CLOSED
    senders = [{(e.sent or "").partition(":")[2] for e in c.exchanges if (e.sent or "").startswith("MAIL")}
               for c in report.connections]  # fmt: skip
    assert all(senders), "a session that sent no MAIL"
    # 4 refusals and EXPN's on the first session, 9 one-probe senders, 17 probes again with <>:
    # 31 refusals at 9 a session; each battery on sessions of its own took 6
    assert len(report.connections) <= 5
    for connection in report.connections:
        refused = [e for e in connection.exchanges if e.sent and e.reply is not None and not e.reply.positive]
        assert len(refused) <= 9


def test_the_tls_battery_starts_with_starttls_on_a_clear_text_session_with_budget_left(
    smtp_server: ServerFactory,
) -> None:
    """VRFY of a random user refused too: 28 clear-text refusals, the fourth session carries one,
    and is kept for the battery over STARTTLS (RSET, STARTTLS on it). Its verifying handshake
    fails on this self-signed certificate, so no session was opened only to fail it."""
    server = smtp_server("closed", tls=True, vrfy_enabled=True)
    report = check_one(server.address, hygiene=HygieneOptions(ptr=False, dnsbl=False))
    assert report.verdict.kind is VerdictKind.CLOSED
    assert report.hygiene is not None and report.hygiene.tls is not None and report.hygiene.tls.verify_error

    def rcpt_before_starttls(connection: ConnectionLog) -> bool:
        sent = [e.sent or "" for e in connection.exchanges]
        return "STARTTLS" in sent and any(s.startswith("RCPT") for s in sent[: sent.index("STARTTLS")])

    upgraded = [c for c in report.connections if rcpt_before_starttls(c)]
    assert len(upgraded) == 1 and "certificate verify failed" in (upgraded[0].error or "")
    assert all(any((e.sent or "").startswith("RCPT") for e in c.exchanges) for c in report.connections)
    over_tls = [o for o in report.observations if o.probe_id.endswith("/tls") and o.kind is ProbeKind.RELAY]
    assert len(over_tls) == RELAY_PROBES and all(o.outcome is not Outcome.SKIPPED for o in over_tls)


def test_a_server_requiring_starttls_answers_vrfy_and_shows_tls_on_the_batterys_session(
    smtp_server: ServerFactory,
) -> None:
    """The battery runs over STARTTLS from the start; its first session also asks VRFY/EXPN (over
    TLS, where they get their real answer) and its handshake gives the TLS findings: no inspection
    session after it."""
    server = smtp_server("starttls-required")
    report = check_one(server.address, hygiene=HygieneOptions(ptr=False, dnsbl=False))
    assert report.facts.tls_required and report.verdict.kind is VerdictKind.OPEN
    hygiene = report.hygiene
    assert hygiene is not None and hygiene.tls is not None and hygiene.tls.established
    assert hygiene.vrfy_postmaster is not None and hygiene.vrfy_postmaster.code != 530
    vrfy_sessions = [c for c in report.connections if any((e.sent or "").startswith("VRFY") for e in c.exchanges)]
    assert len(vrfy_sessions) == 1
    assert any((e.sent or "").startswith("RCPT") for e in vrfy_sessions[0].exchanges)
    assert len(report.connections) <= 3  # the clear-text preflight, the verifying try, the battery

"""Verdict tables: reply classification and the verdict rules, as pure functions (no sockets)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from relaycheck.model import (
    Confidence,
    Delivery,
    DeliveryState,
    Observation,
    Outcome,
    ProbeKind,
    Reply,
    Stage,
    VerdictKind,
)
from relaycheck.smtp.wire import parse_enhanced
from relaycheck.verdict import AuthBypass, classify_reply, decide, is_sender_refused, is_tls_required


def reply(text: str) -> Reply:
    code, _, rest = text.partition(" ")
    return Reply(int(code), (rest,), parse_enhanced(int(code), rest))


@pytest.mark.parametrize(
    ("stage", "text", "outcome"),
    [
        (Stage.RCPT, "250 2.1.5 Ok", Outcome.ACCEPTED),
        (Stage.RCPT, "251 2.1.5 User not local; will forward", Outcome.ACCEPTED),
        (Stage.RCPT, "554 5.7.1 <u@ext.test>: Relay access denied", Outcome.REJECTED_POLICY),  # Postfix
        (Stage.RCPT, "454 4.7.1 <u@ext.test>: Relay access denied", Outcome.REJECTED_POLICY),  # defer_unauth
        (Stage.RCPT, "550 relay not permitted", Outcome.REJECTED_POLICY),  # Exim
        (Stage.RCPT, "550 5.7.1 <u@ext.test>... Relaying denied", Outcome.REJECTED_POLICY),  # Sendmail
        (Stage.RCPT, "550 5.7.54 SMTP; Unable to relay recipient in non-accepted domain", Outcome.REJECTED_POLICY),
        (Stage.RCPT, "553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)", Outcome.REJECTED_POLICY),
        (Stage.RCPT, "550 5.1.1 <u@relay.example>: User unknown", Outcome.REJECTED_OTHER),  # not "relay"!
        (Stage.RCPT, "550 5.1.2 <u@ext.test>: Domain not found", Outcome.REJECTED_OTHER),
        (Stage.RCPT, "501 5.1.3 Bad recipient address syntax", Outcome.REJECTED_OTHER),
        (Stage.RCPT, "451 4.7.1 Greylisted, try again later", Outcome.DEFERRED),
        (Stage.RCPT, "450 4.2.0 <u@ext.test>: Recipient address rejected: Greylisted", Outcome.DEFERRED),
        (Stage.RCPT, "421 4.7.0 too many errors", Outcome.ERROR),
        (Stage.RCPT, "530 5.7.0 Must issue a STARTTLS command first", Outcome.REJECTED_OTHER),
        (Stage.MAIL, "501 5.1.7 Bad sender address syntax", Outcome.REJECTED_OTHER),
        (Stage.MAIL, "553 5.7.1 Sender address rejected: not permitted", Outcome.REJECTED_POLICY),
        (Stage.DATA, "354 End data with <CR><LF>.<CR><LF>", Outcome.ACCEPTED),
        (Stage.DATA, "554 5.7.1 relaying denied at DATA", Outcome.REJECTED_POLICY),
    ],
)
def test_classify_reply(stage: Stage, text: str, outcome: Outcome) -> None:
    assert classify_reply(stage, reply(text)).outcome is outcome


def test_starttls_530_is_recognised_but_auth_530_is_not() -> None:
    assert is_tls_required(reply("530 5.7.0 Must issue a STARTTLS command first"))
    assert is_tls_required(reply("530 Must issue a STARTTLS command first"))
    assert not is_tls_required(reply("530 5.7.0 Authentication required"))
    assert not is_tls_required(reply("550 5.7.0 STARTTLS first"))


ROLES = {"C-POSTMASTER": "postmaster", "C-CATCHALL": "catch-all"}  # the verdict finds controls by role


def obs(probe_id: str, text: str, **kw: object) -> Observation:
    r = reply(text)
    kind = ProbeKind.CONTROL if probe_id.startswith("C-") else ProbeKind.RELAY
    stage = kw.pop("stage", Stage.RCPT)
    assert isinstance(stage, Stage)
    base = Observation(
        probe_id=probe_id,
        kind=kind,
        title=probe_id,
        mail_from="<s@b.test>",
        rcpt_to="<u@a.test>",
        outcome=classify_reply(stage, r).outcome,
        stage=stage,
        reply=r,
        reason="",
        outside_domain="a.test" if kind is ProbeKind.RELAY else None,
        role=ROLES.get(probe_id),
    )
    return replace(base, **kw)  # type: ignore[arg-type]


POSTMASTER_OK = obs("C-POSTMASTER", "250 2.1.5 Ok")
NO_CATCH_ALL = obs("C-CATCHALL", "550 5.1.1 User unknown")
DENIED = "554 5.7.1 Relay access denied"


def battery(
    *relay: Observation, controls: tuple[Observation, ...] = (POSTMASTER_OK, NO_CATCH_ALL)
) -> list[Observation]:
    return [*relay, *controls]


def test_all_refused_for_policy_with_postmaster_accepted_is_closed() -> None:
    decision = decide(
        battery(obs("V01", DENIED), obs("V03", DENIED), obs("V12", "501 5.1.3 Bad syntax", local_part_trick=True))
    )
    assert decision.verdict.kind is VerdictKind.CLOSED


def test_closed_needs_the_postmaster_control() -> None:
    refused_postmaster = obs("C-POSTMASTER", "554 5.7.1 Client host rejected")
    decision = decide(battery(obs("V01", DENIED), controls=(refused_postmaster, NO_CATCH_ALL)))
    assert decision.verdict.kind is VerdictKind.INCONCLUSIVE
    assert "postmaster" in decision.verdict.explanation


def test_one_plain_acceptance_is_open() -> None:
    decision = decide(battery(obs("V01", DENIED), obs("V03", "250 2.1.5 Ok")))
    assert decision.verdict.kind is VerdictKind.OPEN
    assert decision.verdict.evidence == ("V03",)


def test_trick_accepted_by_a_catch_all_is_not_called_open() -> None:
    catch_all = obs("C-CATCHALL", "250 2.1.5 Ok")
    decision = decide(
        battery(
            obs("V01", DENIED), obs("V15", "250 2.1.5 Ok", local_part_trick=True), controls=(POSTMASTER_OK, catch_all)
        )
    )
    assert decision.verdict.kind is VerdictKind.INCONCLUSIVE
    assert {f.code for f in decision.findings} == {"catch-all"}


def test_trick_accepted_without_catch_all_is_open() -> None:
    decision = decide(battery(obs("V01", DENIED), obs("V12", "250 2.1.5 Ok", local_part_trick=True)))
    assert decision.verdict.kind is VerdictKind.OPEN


def test_deferred_is_not_a_refusal() -> None:
    decision = decide(battery(obs("V01", DENIED), obs("V03", "451 4.7.1 Greylisted, try again later")))
    assert decision.verdict.kind is VerdictKind.INCONCLUSIVE
    assert "--retry-budget" in (decision.verdict.advice or "")


def test_non_relay_refusal_of_a_plain_probe_is_not_proof_of_closed() -> None:
    decision = decide(battery(obs("V01", "550 5.1.2 Domain not found"), obs("V03", "550 5.1.2 Domain not found")))
    assert decision.verdict.kind is VerdictKind.INCONCLUSIVE


def test_relay_for_one_domain_only_is_a_relay_domain() -> None:
    v01 = obs("V01", "250 2.1.5 Ok", domain_check=True, outside_domain="a.test")
    v01b = obs("V01b", DENIED, domain_check=True, outside_domain="b.test")
    decision = decide(battery(v01, v01b, obs("V03", DENIED, outside_domain="b.test")))
    assert decision.verdict.kind is VerdictKind.CLOSED
    assert [f.code for f in decision.findings] == ["relay-domain"]
    assert "a.test" in decision.findings[0].title


def test_relay_to_every_outside_domain_is_open() -> None:
    v01 = obs("V01", "250 2.1.5 Ok", domain_check=True, outside_domain="a.test")
    v01b = obs("V01b", "250 2.1.5 Ok", domain_check=True, outside_domain="b.test")
    assert decide(battery(v01, v01b)).verdict.kind is VerdictKind.OPEN


def test_refused_at_data_is_not_open() -> None:
    data = reply("554 5.7.1 relaying denied at DATA")
    refused = obs("V01", "554 5.7.1 relaying denied at DATA", stage=Stage.DATA, data_reply=data)
    decision = decide(battery(refused))
    assert decision.verdict.kind is VerdictKind.CLOSED
    assert "refused-at-data" in {f.code for f in decision.findings}


def test_accepted_at_data_raises_the_confidence() -> None:
    accepted = obs("V01", "250 2.1.5 Ok", data_reply=reply("354 go ahead"))
    decision = decide(battery(accepted))
    assert decision.verdict.kind is VerdictKind.OPEN
    assert decision.verdict.confidence == "accepted-at-data"


def test_no_answers_is_inconclusive() -> None:
    broken = replace(obs("V01", DENIED), outcome=Outcome.ERROR, reply=None, reason="connection dropped")
    decision = decide(battery(broken))
    assert decision.verdict.kind is VerdictKind.INCONCLUSIVE
    assert "connection dropped" in decision.verdict.explanation


def test_syntax_refusal_of_an_odd_but_outside_address_closes_that_path() -> None:
    # OpenSMTPD: "501 5.1.3 Recipient address syntax error" for source routes / unbracketed paths
    syntax = obs("V20", "501 5.1.3 Recipient address syntax error")
    decision = decide(battery(obs("V01", "550 Invalid recipient: <u@a.test>"), syntax))
    assert decision.verdict.kind is VerdictKind.CLOSED


def test_sender_verification_at_rcpt_closes_that_path() -> None:
    # stock Exim: "require verify = sender" refuses spoofed local senders at RCPT
    spoofed = obs("V05", "550 Sender verify failed")
    decision = decide(battery(obs("V01", "550 relay not permitted"), spoofed))
    assert decision.verdict.kind is VerdictKind.CLOSED


# -- the engine's general rules, as pure decisions ---------------------------------------------

SENDER_REFUSED = "553 5.1.8 <s@b.test>: Sender address rejected: Domain not found"


def test_a_refused_sender_is_not_judged_and_does_not_close_a_path() -> None:
    refused_at_mail = obs("V01", SENDER_REFUSED, stage=Stage.MAIL)
    assert is_sender_refused(refused_at_mail)
    assert decide(battery(refused_at_mail, obs("V03", DENIED))).verdict.kind is VerdictKind.CLOSED
    # only refused senders: nothing was judged
    decision = decide(battery(refused_at_mail, obs("V02", SENDER_REFUSED, stage=Stage.MAIL)))
    assert decision.verdict.kind is VerdictKind.INCONCLUSIVE
    assert "Every sender was refused" in decision.verdict.explanation


def test_sender_refused_at_rcpt_and_4xx_sender_refusals_count_as_refused_senders() -> None:
    assert is_sender_refused(obs("V01", "450 4.1.8 <s@b.test>: Sender address rejected: Domain not found"))
    assert is_sender_refused(obs("V01", "550 5.7.1 <s@b.test>: Sender address rejected: Access denied"))
    assert not is_sender_refused(obs("V01", DENIED))
    assert not is_sender_refused(obs("V01", "530 5.7.0 Must issue a STARTTLS command first", stage=Stage.MAIL))


def test_postmaster_refused_for_its_sender_is_every_sender_refused() -> None:
    postmaster = obs("C-POSTMASTER", SENDER_REFUSED, stage=Stage.MAIL)
    decision = decide(battery(obs("V01", SENDER_REFUSED, stage=Stage.MAIL), controls=(postmaster, NO_CATCH_ALL)))
    assert decision.verdict.kind is VerdictKind.INCONCLUSIVE
    assert "Every sender was refused" in decision.verdict.explanation


def test_skipped_probes_do_not_count() -> None:
    skipped = replace(obs("V01/tls", DENIED), outcome=Outcome.SKIPPED, reply=None, reason="not run: STARTTLS refused")
    assert decide(battery(obs("V01", DENIED), skipped)).verdict.kind is VerdictKind.CLOSED
    assert decide(battery(skipped)).verdict.kind is VerdictKind.INCONCLUSIVE


def test_auth_bypass_that_relays_is_open_and_one_that_does_not_is_not() -> None:
    relayed = AuthBypass(reply("235 2.7.0 Authentication successful"), reply("250 2.1.5 Ok"))
    decision = decide(battery(obs("V01", DENIED)), auth_bypass=relayed)
    assert decision.verdict.kind is VerdictKind.OPEN
    assert decision.verdict.confidence is Confidence.AUTH_BYPASS
    refused = AuthBypass(reply("235 2.7.0 Authentication successful"), reply(DENIED))
    assert decide(battery(obs("V01", DENIED)), auth_bypass=refused).verdict.kind is VerdictKind.CLOSED
    failed = AuthBypass(reply("535 5.7.8 Authentication failed"), reply("250 2.1.5 Ok"))
    assert decide(battery(obs("V01", DENIED)), auth_bypass=failed).verdict.kind is VerdictKind.CLOSED


def test_delivery_mode_never_says_open_without_an_arrival() -> None:
    taken = replace(obs("V01", "250 2.1.5 Ok"), delivery=Delivery(DeliveryState.NOT_DELIVERED, "t1"))
    decision = decide(battery(taken), confirm_timeout=30)
    assert decision.verdict.kind is VerdictKind.INCONCLUSIVE
    assert decision.verdict.confidence is Confidence.ACCEPTED_NOT_DELIVERED
    assert "not delivered within 30 s" in decision.verdict.explanation
    arrived = replace(taken, delivery=Delivery(DeliveryState.CONFIRMED, "t1"))
    assert decide(battery(arrived), confirm_timeout=30).verdict.confidence is Confidence.CONFIRMED
    after_dot = obs("V01", "554 5.7.1 rejected after DATA", stage=Stage.DATA)
    assert decide(battery(after_dot), confirm_timeout=30).verdict.kind is VerdictKind.CLOSED


def test_a_trick_is_open_only_when_unknown_local_users_are_known_to_be_refused() -> None:
    trick = obs("V12", "250 2.1.5 Ok", local_part_trick=True)
    assert decide(battery(obs("V01", DENIED), trick)).verdict.kind is VerdictKind.OPEN
    unjudged = obs("C-CATCHALL", SENDER_REFUSED, stage=Stage.MAIL)
    decision = decide(battery(obs("V01", DENIED), trick, controls=(POSTMASTER_OK, unjudged)))
    assert decision.verdict.kind is VerdictKind.INCONCLUSIVE
    assert "could not be learnt" in decision.verdict.explanation


def test_controls_are_found_by_role_not_by_id() -> None:
    renamed = replace(POSTMASTER_OK, probe_id="C-PM-2")
    assert decide(battery(obs("V01", DENIED), controls=(renamed, NO_CATCH_ALL))).verdict.kind is VerdictKind.CLOSED

"""Servers the test does not know in advance: hypothesis draws a behaviour from the cross product
of sender policy, recipient policy, relay families, catch-all, TLS behaviour, connection limit, error limit,
greylisting and the reply wording of five MTAs; a small oracle, written here from the drawn
behaviour alone, says what the verdict must be."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relaycheck.api import CheckOptions, check
from relaycheck.model import Outcome, VerdictKind
from relaycheck.testing.servers import Behaviour, ServerThread, Transaction

from .conftest import BASE


@dataclass(frozen=True)
class Wording:
    deny: str
    unknown_user: str
    sender: str
    greylist: str


WORDINGS = {
    "postfix": Wording(
        "554 5.7.1 <{rcpt}>: Relay access denied",
        "550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown in local recipient table",
        "553 5.1.8 <{sender}>: Sender address rejected: Domain not found",
        "450 4.2.0 <{rcpt}>: Recipient address rejected: Greylisted, see http://postgrey.schweikert.ch/",
    ),
    "exim": Wording(
        "550 relay not permitted",
        "550 Unrouteable address",
        "550 Sender verify failed",
        "451 Temporary local problem - please try later",
    ),
    "sendmail": Wording(
        "550 5.7.1 <{rcpt}>... Relaying denied",
        "550 5.1.1 <{rcpt}>... User unknown",
        "553 5.1.8 <{sender}>... Domain of sender address {sender} does not exist",
        "451 4.7.1 Greylisting in action, please come back later",
    ),
    "exchange": Wording(
        "550 5.7.54 SMTP; Unable to relay recipient in non-accepted domain",
        "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
        "550 5.7.1 Sender address rejected: access denied",
        "451 4.7.1 Please try again later",
    ),
    "qmail": Wording(
        "553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)",
        "550 sorry, no mailbox here by that name. (#5.1.1)",
        "553 sorry, your envelope sender domain must exist (#5.7.1)",
        "451 greylisted, try again later (#4.3.0)",
    ),
}
SENDER_POLICIES = (frozenset(), frozenset({"outside"}), frozenset({"outside", "null"}),
                   frozenset({"outside", "null", "local"}))  # fmt: skip
FAMILIES = ("anyone", "null-sender", "local-sender", "source-route")
# How outside recipients the server does not relay for are answered: refused for policy (in the
# drawn MTA's words), deferred for policy (Postfix's defer_unauth_destination), relayed for one
# outside domain only (a backup MX), or refused as an unknown domain (says nothing about relaying)
RECIPIENT_POLICIES = ("deny", "deny-4xx", "relay-domain", "unknown-domain")
RECIPIENT_REPLIES = {
    "deny-4xx": "454 4.7.1 <{rcpt}>: Relay access denied",
    "unknown-domain": "550 5.1.2 <{rcpt}>: Recipient address rejected: Domain not found",
}
TLS = ("none", "works", "454", "handshake", "required")
LOCAL = ("relay.test", "mx.relay.test")


@dataclass(frozen=True)
class Drawn:
    senders_refused: frozenset[str]
    recipients: str
    families: frozenset[str]
    percent_hack: bool
    catch_all: bool
    tls: str
    connection_limit: int | None
    error_limit: int | None
    greylisting: bool
    wording: str

    def behaviour(self) -> Behaviour:
        families = self.families

        def relays(t: Transaction) -> bool:
            sender = t.mail.raw.strip()
            return (
                "anyone" in families
                or (self.recipients == "relay-domain" and t.rcpt.domain == "outside-a.test")
                or ("null-sender" in families and sender.startswith("<>"))
                or ("local-sender" in families and t.mail.domain in LOCAL)
                or ("source-route" in families and t.rcpt.source_routed)
            )

        words = WORDINGS[self.wording]
        return Behaviour(
            "drawn",
            relay_if=relays,
            percent_hack=self.percent_hack,
            catch_all=self.catch_all,
            refuse_senders=self.senders_refused,
            deny_reply=RECIPIENT_REPLIES.get(self.recipients, words.deny),
            unknown_user_reply=words.unknown_user,
            sender_reply=words.sender,
            greylist_reply=words.greylist,
            greylist_delay=0.2 if self.greylisting else None,
            require_starttls=self.tls == "required",
            starttls_failure=self.tls if self.tls in ("454", "handshake") else None,
            max_connections=self.connection_limit,
            errors_before_421=self.error_limit,
        )


def oracle(d: Drawn) -> VerdictKind:
    """The verdict, from what the server was drawn to do (not from anything the engine says)."""
    senders = {"outside", "null", "local"} - d.senders_refused  # the engine tries all three
    if not senders:
        return VerdictKind.INCONCLUSIVE  # every sender refused
    relays = (
        "anyone" in d.families
        or "source-route" in d.families
        or ("null-sender" in d.families and "null" in senders)
        or ("local-sender" in d.families and "local" in senders)
    )
    if relays:
        return VerdictKind.OPEN
    if d.catch_all:
        return VerdictKind.INCONCLUSIVE  # local-looking tricks accepted: maybe local delivery
    if d.percent_hack:
        return VerdictKind.OPEN  # unknown local users refused, and a trick relays
    if d.recipients == "unknown-domain":
        return VerdictKind.INCONCLUSIVE  # a refusal that is not about relaying proves nothing
    return VerdictKind.CLOSED  # relaying for one outside domain only is a relay domain, not open


drawn_servers = st.builds(
    Drawn,
    senders_refused=st.sampled_from(SENDER_POLICIES),
    recipients=st.sampled_from(RECIPIENT_POLICIES),
    families=st.frozensets(st.sampled_from(FAMILIES), max_size=2),
    percent_hack=st.booleans(),
    catch_all=st.booleans(),
    tls=st.sampled_from(TLS),
    connection_limit=st.sampled_from((None, 1, 2)),
    error_limit=st.sampled_from((None, 3, 10)),
    greylisting=st.booleans(),
    wording=st.sampled_from(sorted(WORDINGS)),
)


# Derandomized and without an example database: the same examples on every machine and run;
# few enough that it stays well under a minute on a loaded machine.
@settings(max_examples=60, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
@given(drawn=drawn_servers)
def test_verdict_equals_the_oracle(drawn: Drawn, server_tls: ssl.SSLContext) -> None:
    behaviour = drawn.behaviour()
    context = server_tls if drawn.tls in ("works", "required") else None
    with ServerThread(behaviour, tls_context=context) as server:
        engine = BASE
        if drawn.greylisting:
            engine = replace(engine, retry_budget=15.0, retry_first_wait=0.3)
        report = asyncio.run(check(server.address, CheckOptions(engine=engine))).targets[0]
    expected = oracle(drawn)
    assert report.verdict.kind is expected, (drawn, report.verdict.explanation)
    # a failing STARTTLS or a connection limit never leaves a probe unanswered
    assert not [o.probe_id for o in report.observations if o.outcome is Outcome.ERROR], drawn


def test_the_oracle_agrees_with_the_named_behaviours() -> None:
    """The oracle's reading of a few named behaviours is the verdict the other tests prove."""
    base = Drawn(frozenset(), "deny", frozenset(), False, False, "none", None, None, False, "postfix")
    assert oracle(base) is VerdictKind.CLOSED
    assert oracle(replace(base, catch_all=True)) is VerdictKind.INCONCLUSIVE
    assert oracle(replace(base, percent_hack=True)) is VerdictKind.OPEN
    assert oracle(replace(base, senders_refused=SENDER_POLICIES[-1])) is VerdictKind.INCONCLUSIVE
    assert oracle(replace(base, recipients="relay-domain")) is VerdictKind.CLOSED
    assert oracle(replace(base, recipients="unknown-domain")) is VerdictKind.INCONCLUSIVE

"""PURE: replies -> outcomes, observations -> verdict and findings (DESIGN §2).

No I/O here. The reply classification rules are data (``POLICY_PATTERNS``, ``TLS_REQUIRED``…),
the verdict is a sequence of small, named decisions so that each rule has its own test.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from relaycheck.model import (
    Confidence,
    DeliveryState,
    Finding,
    Observation,
    Outcome,
    ProbeKind,
    Reply,
    Severity,
    Stage,
    Verdict,
    VerdictKind,
)

# Reply texts that say "this is about relaying / policy", as real MTAs word it:
# Postfix "Relay access denied", Exim "relay not permitted", Sendmail "Relaying denied",
# Exchange "Unable to relay", qmail "not in my list of allowed rcpthosts", MDaemon, IIS…
POLICY_PATTERNS: tuple[re.Pattern[str], ...] = tuple(
    re.compile(p, re.IGNORECASE)
    for p in (
        r"\brelay(ing)?\b",
        r"rcpthosts",
        r"\bnot\s+(permitted|allowed|authori[sz]ed)\b",
        r"\baccess denied\b",
        r"\bauthentication (is )?required\b",
        r"\bnon-accepted domain\b",
        r"\bnot (a )?local\b",
        r"\bwe do not relay\b",
        # OpenSMTPD refuses relaying with "550 Invalid recipient: <u@ext>" (no enhanced code), the
        # same words as for an unknown local user; for an outside domain it can only mean "no".
        r"\binvalid recipient\b",
    )
)
# "530 5.7.0 Must issue a STARTTLS command first" (Postfix), "530 Must issue a STARTTLS…" (Exim)
TLS_REQUIRED = re.compile(r"starttls|\btls\b|encrypt", re.IGNORECASE)
# 4xx that are not relay refusals but "come back later": greylisting, rate limits, tempfail.
GREYLIST_HINT = re.compile(r"greylist|graylist|try again|later|postgrey", re.IGNORECASE)


# The reply tests below are pure functions of an immutable Reply, and a scan meets the same
# replies on thousands of servers: each is worked out once (bounded cache).
_memo = functools.lru_cache(maxsize=4096)


# Refusals about the sender, even when they come at RCPT (smtpd_delay_reject, Exim's
# "require verify = sender"): the server will not take this envelope at all.
SENDER_CODES = frozenset({"5.1.7", "5.1.8", "4.1.7", "4.1.8"})
SENDER_TEXT = re.compile(r"\bsender\b", re.IGNORECASE)


@_memo
def is_sender_refusal(reply: Reply) -> bool:
    return reply.enhanced in SENDER_CODES or bool(SENDER_TEXT.search(_ECHOED.sub(" ", reply.text)))


# A refusal of the address's syntax (unbracketed paths, source routes, quotes): that way of
# writing the address does not get through, which closes the path as surely as a policy does.
SYNTAX_CODES = frozenset({"5.1.3", "5.5.2", "5.5.4"})
SYNTAX_TEXT = re.compile(r"\bsyntax\b", re.IGNORECASE)


@_memo
def is_syntax_refusal(reply: Reply) -> bool:
    return reply.code == 501 or reply.enhanced in SYNTAX_CODES or bool(SYNTAX_TEXT.search(reply.text))


def is_tls_required(reply: Reply) -> bool:
    if reply.code != 530:
        return False
    if TLS_REQUIRED.search(reply.text):
        return True
    return reply.enhanced == "5.7.0" and "auth" not in reply.text.lower()


# Addresses and host names echoed in replies ("<u@mx.relay.example>") must not count as words.
_ECHOED = re.compile(r"<[^>]*>|\S+@\S+|\b[\w-]+(\.[\w-]+)+\b")


def is_policy_text(reply: Reply) -> bool:
    text = _ECHOED.sub(" ", reply.text)
    return any(p.search(text) for p in POLICY_PATTERNS)


@_memo
def is_relay_denied(reply: Reply) -> bool:
    """A refusal that is about relaying (policy), temporary or permanent.

    The enhanced status code decides when there is one (5.7.x security/policy; 5.1.x addressing
    is not policy); otherwise the wording does.
    """
    if reply.enhanced is not None:
        subject = reply.enhanced.split(".")[1]
        if subject != "7":
            return False
        return not GREYLIST_HINT.search(reply.text) or is_policy_text(reply)
    return is_policy_text(reply)


@dataclass(frozen=True)
class Classified:
    outcome: Outcome
    reason: str


@_memo
def classify_reply(stage: Stage, reply: Reply) -> Classified:
    """The outcome of one probe given the reply that ended it at ``stage``."""
    if reply.code == 421:
        return Classified(Outcome.ERROR, "the server closed the session (421)")
    if stage is Stage.DATA:
        if reply.code == 354:
            return Classified(Outcome.ACCEPTED, "DATA accepted (354): the server would take content")
    elif reply.code // 100 == 2:
        return Classified(Outcome.ACCEPTED, f"accepted at {stage.value.upper()} ({reply.code})")
    if is_tls_required(reply):
        return Classified(Outcome.REJECTED_OTHER, "the server requires STARTTLS before mail")
    if reply.transient:
        if is_relay_denied(reply):
            return Classified(Outcome.REJECTED_POLICY, "temporary relay refusal (counts as refusal)")
        return Classified(Outcome.DEFERRED, "temporary failure (greylisting, rate limit or tempfail)")
    if reply.permanent:
        if stage is Stage.MAIL:
            if is_relay_denied(reply):
                return Classified(Outcome.REJECTED_POLICY, "sender refused for policy")
            return Classified(Outcome.REJECTED_OTHER, "sender refused")
        if is_relay_denied(reply):
            return Classified(Outcome.REJECTED_POLICY, "refused for policy (relaying denied)")
        if reply.code == 503:
            return Classified(Outcome.REJECTED_OTHER, "out of sequence (an earlier step failed)")
        if is_sender_refusal(reply):
            return Classified(Outcome.REJECTED_OTHER, "sender refused (checked at RCPT)")
        return Classified(Outcome.REJECTED_OTHER, "refused, but not for a relay reason")
    return Classified(Outcome.REJECTED_OTHER, f"unexpected reply {reply.code}")


def _probe_refused(obs: Observation) -> bool:
    """This relay path is shut: refused for policy; refused at all for tricks or at MAIL; or
    refused for the sender or for the address's syntax.

    A plain outside probe refused for another reason (``5.1.2 domain not found``, a recipient
    callout's ``5.1.1``) proves nothing about relaying: it may hide an open relay.
    """
    if obs.outcome is Outcome.REJECTED_POLICY:
        return True
    if obs.outcome is Outcome.REJECTED_OTHER:
        return (
            obs.local_part_trick
            or obs.stage is Stage.MAIL
            or (
                obs.reply is not None
                and (obs.reply.code == 503 or is_sender_refusal(obs.reply) or is_syntax_refusal(obs.reply))
            )
        )
    return False


def _accepted(obs: Observation) -> bool:
    """Accepted at RCPT, and not refused at DATA when the DATA probe ran."""
    if obs.outcome is not Outcome.ACCEPTED:
        return False
    return obs.data_reply is None or obs.data_reply.code == 354


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    findings: tuple[Finding, ...]


def _quote(obs: Observation) -> str:
    shown = f"RCPT TO:{obs.rcpt_to}"
    return f"{obs.probe_id} MAIL FROM:{obs.mail_from} {shown} -> {obs.reply}" if obs.reply else shown


def decide(
    observations: Sequence[Observation], *, tls_required: bool = False, confirm_timeout: float | None = None
) -> Decision:
    """The verdict for one target from its observations (DESIGN §2).

    ``confirm_timeout`` is set in delivery mode: how long arrivals were awaited.
    """
    relay = [o for o in observations if o.kind is ProbeKind.RELAY]
    controls = {o.probe_id: o for o in observations if o.kind is ProbeKind.CONTROL}
    postmaster = controls.get("C-POSTMASTER")
    catch_all = controls.get("C-CATCHALL")
    findings: list[Finding] = []

    postmaster_ok = postmaster is not None and postmaster.outcome is Outcome.ACCEPTED
    catch_all_on = catch_all is not None and catch_all.outcome is Outcome.ACCEPTED
    if catch_all_on and catch_all is not None:
        findings.append(
            Finding(
                "catch-all",
                Severity.INFO,
                "The server accepts any local recipient (catch-all)",
                f"A local user that cannot exist was accepted ({catch_all.reply}). Tricks that "
                "hide the outside address in a local-looking one may be delivered locally.",
                (catch_all.probe_id,),
            )
        )
    if tls_required:
        findings.append(
            Finding(
                "tls-required",
                Severity.INFO,
                "The server requires STARTTLS before accepting mail",
                "Relay probes in clear text were answered 530; they were repeated over STARTTLS.",
            )
        )

    accepted = [o for o in relay if _accepted(o)]
    refused_at_data = [o for o in relay if o.stage is Stage.DATA and o.outcome is not Outcome.ACCEPTED]
    if refused_at_data:
        findings.append(
            Finding(
                "refused-at-data",
                Severity.INFO,
                "Recipients accepted at RCPT were refused at DATA",
                "The server accepts outside recipients but refuses the message content: "
                "it does not relay them.",
                tuple(o.probe_id for o in refused_at_data),
            )
        )

    # Backup MX / relay domain: plain probes reached some outside domains but not others.
    relay_domains = relay_domains_of(relay)
    if relay_domains:
        findings.append(
            Finding(
                "relay-domain",
                Severity.INFO,
                "Relays for " + ", ".join(sorted(relay_domains)) + " only",
                "The server accepts mail for "
                + ", ".join(sorted(relay_domains))
                + " but refuses other outside domains: it is a backup MX or relay for that "
                "domain, not an open relay. If that is not intended, remove it from the "
                "relay domains.",
                tuple(o.probe_id for o in accepted if o.outside_domain in relay_domains),
            )
        )
        accepted = [o for o in accepted if o.outside_domain not in relay_domains]
        relay = [o for o in relay if o.outside_domain not in relay_domains]

    confirmed = [o for o in accepted if o.delivery is not None and o.delivery.state is DeliveryState.CONFIRMED]
    if confirmed:
        return Decision(_confirmed(confirmed, accepted), tuple(findings))
    plain = [o for o in accepted if not o.local_part_trick]
    tricks = [o for o in accepted if o.local_part_trick]
    if plain or (tricks and not catch_all_on):
        evidence = plain + tricks
        if confirm_timeout is not None and any(
            o.delivery is not None and o.delivery.state is DeliveryState.NOT_DELIVERED for o in evidence
        ):
            return Decision(_not_delivered(evidence, confirm_timeout), tuple(findings))
        at_data = any(o.data_reply is not None for o in evidence)
        confidence = Confidence.ACCEPTED_AT_DATA if at_data else Confidence.ACCEPTED_AT_RCPT
        caveat = (
            "The server said it would take the message (at DATA too)"
            if confidence is Confidence.ACCEPTED_AT_DATA
            else "This was judged from the reply to RCPT; a server can still accept and then "
            "discard or bounce: run with --confirm ADDRESS to prove delivery"
        )
        trick_note = (
            " Some of the accepted addresses are local-part tricks that some MTAs treat as "
            "local mailboxes; the catch-all control was refused, so they are taken as relaying."
            if tricks and not plain
            else ""
        )
        return Decision(
            Verdict(
                VerdictKind.OPEN,
                confidence,
                f"The server accepted {len(evidence)} relay attempt(s) from an outside client "
                f"to an outside recipient, e.g. {_quote(evidence[0])}. {caveat}.{trick_note}",
                tuple(o.probe_id for o in evidence),
                FIX_OPEN,
            ),
            tuple(findings),
        )
    if tricks:  # only tricks accepted, and the server is a catch-all
        return Decision(
            Verdict(
                VerdictKind.INCONCLUSIVE,
                Confidence.UNDETERMINED,
                "Every plain relay attempt was refused, but the server accepts any local "
                f"recipient, and it accepted {len(tricks)} address trick(s) such as "
                f"{tricks[0].rcpt_to} that may be delivered to a local mailbox rather than "
                "relayed. Probing cannot tell which.",
                tuple(o.probe_id for o in tricks),
                "Run with --confirm ADDRESS to learn whether a test message actually leaves.",
            ),
            tuple(findings),
        )
    return _not_open(relay, postmaster, postmaster_ok, tuple(findings), relay_domains)


FIX_OPEN = "Restrict relaying to authenticated users and your own networks."


def _confirmed(confirmed: list[Observation], accepted: list[Observation]) -> Verdict:
    first = confirmed[0]
    assert first.delivery is not None
    path = f" It took this path: {' <- '.join(first.delivery.received)}." if first.delivery.received else ""
    others = len(accepted) - len(confirmed)
    rest = f" {others} other accepted attempt(s) did not arrive." if others else ""
    return Verdict(
        VerdictKind.OPEN,
        Confidence.CONFIRMED,
        f"Confirmed open relay: {len(confirmed)} test message(s) sent through the server from an "
        f"outside client arrived in the operator's mailbox, e.g. {_quote(first)}.{path}{rest}",
        tuple(o.probe_id for o in confirmed),
        FIX_OPEN,
    )


def _not_delivered(evidence: list[Observation], waited: float) -> Verdict:
    refused = [o for o in evidence if o.delivery is not None and o.delivery.state is DeliveryState.NOT_ACCEPTED]
    return Verdict(
        VerdictKind.OPEN,
        Confidence.ACCEPTED_NOT_DELIVERED,
        f"The server accepted {len(evidence)} relay attempt(s) from an outside client, e.g. "
        f"{_quote(evidence[0])}, and took the test messages, but none arrived within {waited:g} s. "
        "It may accept and then discard or bounce relayed mail (a spam-trap or anti-harvesting "
        "behaviour), queue it for later, or deliver it somewhere else."
        + (f" {len(refused)} message(s) could not be sent at all." if refused else ""),
        tuple(o.probe_id for o in evidence),
        "Check the server's queue and logs for the test tokens; even if nothing leaves, accepting "
        "relay attempts invites abuse: " + FIX_OPEN[0].lower() + FIX_OPEN[1:],
    )


def _not_open(
    relay: list[Observation],
    postmaster: Observation | None,
    postmaster_ok: bool,
    findings: tuple[Finding, ...],
    relay_domains: set[str],
) -> Decision:
    deferred = [o for o in relay if o.outcome is Outcome.DEFERRED]
    if postmaster is not None and postmaster.outcome is Outcome.DEFERRED:
        deferred.append(postmaster)
    errors = [o for o in relay if o.outcome in (Outcome.ERROR, Outcome.SKIPPED)]
    unproven = [o for o in relay if o.outcome is Outcome.REJECTED_OTHER and not _probe_refused(o)]
    policy = [o for o in relay if o.outcome is Outcome.REJECTED_POLICY]
    tls_refused = [o for o in relay if o.reply is not None and is_tls_required(o.reply)]

    def inconclusive(text: str, advice: str, evidence: Iterable[Observation] = ()) -> Decision:
        return Decision(
            Verdict(
                VerdictKind.INCONCLUSIVE,
                Confidence.UNDETERMINED,
                text,
                tuple(o.probe_id for o in evidence),
                advice,
            ),
            findings,
        )

    if not relay:
        return inconclusive("No relay probe could be run.", "Check that the server is reachable.")
    if tls_refused and len(tls_refused) == len(relay):
        return inconclusive(
            "The server requires STARTTLS before any mail and TLS could not be used, so "
            "relaying was not tested.",
            "Check the server's TLS setup, or test again with --transport starttls.",
            tls_refused,
        )
    if deferred:
        return inconclusive(
            f"{len(deferred)} attempt(s) were deferred with a temporary error "
            f"(e.g. {deferred[0].reply}), typical of greylisting or rate limiting. A deferred "
            "attempt is not a refusal.",
            "Test again with --retry-budget 300 so that relaycheck retries until the "
            "greylisting clears.",
            deferred,
        )
    if not postmaster_ok:
        said = f" (postmaster got: {postmaster.reply})" if postmaster and postmaster.reply else ""
        return inconclusive(
            "The server refuses mail from us altogether, even to postmaster"
            f"{said}. It refuses us; it may still relay for others, so this is not a "
            "clean bill of health.",
            "Test from another network, or check the configuration with 'relaycheck audit'.",
            [postmaster] if postmaster else [],
        )
    if errors:
        return inconclusive(
            f"{len(errors)} relay attempt(s) got no answer ({errors[0].reason}).",
            "Test again later; if the server drops connections, check its error limits.",
            errors,
        )
    if unproven or not policy:
        example = unproven[0] if unproven else relay[0]
        return inconclusive(
            "Relay attempts were refused, but not for a relay reason "
            f"(e.g. {example.reply}): the refusal may hide an open relay.",
            "Use --ext-recipient with an address at a domain that resolves and accepts mail.",
            unproven,
        )
    scope = (
        f"It relays only for {', '.join(sorted(relay_domains))} (see the relay-domain finding), "
        "which is not open relaying. "
        if relay_domains
        else ""
    )
    return Decision(
        Verdict(
            VerdictKind.CLOSED,
            Confidence.POLICY_REFUSAL,
            f"{scope}Every one of the {len(relay)} relay attempts was refused "
            f"({len(policy)} for relay policy, e.g. {policy[0].reply}), while mail to "
            "postmaster was accepted: the server takes mail from us but will not relay it.",
            tuple(o.probe_id for o in policy),
            None,
        ),
        findings,
    )


def relay_domains_of(relay: Sequence[Observation]) -> set[str]:
    """Outside domains reached by the plain per-domain probe while another domain was refused."""
    by_domain: dict[str, bool] = {}
    for obs in relay:
        if obs.domain_check and obs.outside_domain is not None:
            by_domain[obs.outside_domain] = _accepted(obs)
    if len(by_domain) < 2 or all(by_domain.values()) or not any(by_domain.values()):
        return set()
    refused = [d for d, ok in by_domain.items() if not ok]
    refused_for_policy = any(
        _probe_refused(o) for o in relay if o.domain_check and o.outside_domain in refused
    )
    return {d for d, ok in by_domain.items() if ok} if refused_for_policy else set()

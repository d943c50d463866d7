"""PURE: replies -> outcomes, observations -> verdict and findings (DESIGN §2).

No I/O here. The reply classification rules are data (``POLICY_PATTERNS``, ``TLS_REQUIRED``…),
the verdict is a sequence of small, named decisions so that each rule has its own test.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

from relaycheck.findings import registry
from relaycheck.model import (
    Confidence,
    DeliveryState,
    Finding,
    Observation,
    Outcome,
    ProbeKind,
    Reply,
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


def is_sender_refused(obs: Observation) -> bool:
    """The probe's *sender* was refused: at MAIL, or at RCPT in words about the sender.

    That says nothing about relaying (sender domain checks, SPF at MAIL, a resolver that cannot
    see the sender's domain): the engine runs such probes again with other senders, and the
    verdict is judged from the probes whose sender was accepted.
    """
    reply = obs.reply
    if reply is None or reply.code == 421 or is_tls_required(reply):
        return False
    if obs.outcome is Outcome.DEFERRED:
        return is_sender_refusal(reply)
    if obs.outcome not in (Outcome.REJECTED_POLICY, Outcome.REJECTED_OTHER):
        return False
    return obs.stage is Stage.MAIL or (obs.stage is Stage.RCPT and is_sender_refusal(reply))


def _judged(obs: Observation) -> bool:
    """Whether a probe's outcome says anything about relaying (its sender accepted, and it ran)."""
    return obs.outcome is not Outcome.SKIPPED and not is_sender_refused(obs)


def _probe_refused(obs: Observation) -> bool:
    """This relay path is shut: refused for policy; refused at all for tricks or after DATA; or
    refused for the address's syntax or out of sequence.

    A plain outside probe refused for another reason (``5.1.2 domain not found``, a recipient
    callout's ``5.1.1``) proves nothing about relaying: it may hide an open relay.
    """
    if obs.outcome is Outcome.REJECTED_POLICY:
        return True
    if obs.outcome is Outcome.REJECTED_OTHER:
        return (
            obs.local_part_trick
            or obs.stage is Stage.DATA
            or (obs.reply is not None and (obs.reply.code == 503 or is_syntax_refusal(obs.reply)))
        )
    return False


def _accepted(obs: Observation) -> bool:
    """Accepted at RCPT, and not refused at DATA when the DATA probe ran."""
    if obs.outcome is not Outcome.ACCEPTED:
        return False
    return obs.data_reply is None or obs.data_reply.code == 354


def _delivered(obs: Observation) -> bool:
    return obs.delivery is not None and obs.delivery.state is DeliveryState.CONFIRMED


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    findings: tuple[Finding, ...]


@dataclass(frozen=True)
class AuthBypass:
    """The one bogus AUTH (``--auth-bypass-check``) and the relay RCPT right after it."""

    auth: Reply | None
    relay: Reply | None

    @property
    def relays(self) -> bool:
        accepted = self.auth is not None and self.auth.code == 235
        return accepted and self.relay is not None and self.relay.code // 100 == 2


@dataclass(frozen=True)
class Evidence:
    """What the rules look at, worked out once from the observations."""

    relay: tuple[Observation, ...]  # relay probes judged (sender accepted, ran), relay domains left out
    unjudged: tuple[Observation, ...]  # relay probes whose sender was refused by every sender tried
    postmaster: Observation | None
    catch_all: Observation | None
    relay_domains: frozenset[str]
    tls_required: bool = False
    confirm_timeout: float | None = None  # delivery mode: how long arrivals were awaited
    auth_bypass: AuthBypass | None = None

    @functools.cached_property
    def accepted(self) -> list[Observation]:
        return [o for o in self.relay if _accepted(o)]

    @functools.cached_property
    def plain(self) -> list[Observation]:
        return [o for o in self.accepted if not o.local_part_trick]

    @functools.cached_property
    def tricks(self) -> list[Observation]:
        return [o for o in self.accepted if o.local_part_trick]

    @property
    def postmaster_ok(self) -> bool:
        return self.postmaster is not None and self.postmaster.outcome is Outcome.ACCEPTED

    @property
    def catch_all_on(self) -> bool:
        return self.catch_all is not None and self.catch_all.outcome is Outcome.ACCEPTED

    @property
    def local_users_refused(self) -> bool:
        """The catch-all control was refused at RCPT: unknown local users are not taken."""
        control = self.catch_all
        return (
            control is not None
            and control.outcome in (Outcome.REJECTED_POLICY, Outcome.REJECTED_OTHER)
            and _judged(control)
        )

    @property
    def relayed(self) -> list[Observation]:
        """Accepted relay attempts that cannot be a local delivery: plain outside recipients, and
        tricks when the server refuses unknown local users."""
        return self.plain + self.tricks if self.plain or self.local_users_refused else []


def evidence_of(
    observations: Sequence[Observation],
    *,
    tls_required: bool = False,
    confirm_timeout: float | None = None,
    auth_bypass: AuthBypass | None = None,
) -> Evidence:
    relay = [o for o in observations if o.kind is ProbeKind.RELAY]
    controls: dict[str, Observation] = {}
    for o in observations:  # the first of each role: the battery's own, not its repeat over STARTTLS
        if o.kind is ProbeKind.CONTROL and o.role is not None and _judged(o):
            controls.setdefault(o.role, o)
    for o in observations:  # else one whose sender was refused (every sender refused)
        if o.kind is ProbeKind.CONTROL and o.role is not None and o.outcome is not Outcome.SKIPPED:
            controls.setdefault(o.role, o)
    domains = relay_domains_of(relay)
    return Evidence(
        relay=tuple(o for o in relay if _judged(o) and o.outside_domain not in domains),
        unjudged=tuple(o for o in relay if is_sender_refused(o)),
        postmaster=controls.get("postmaster"),
        catch_all=controls.get("catch-all"),
        relay_domains=frozenset(domains),
        tls_required=tls_required,
        confirm_timeout=confirm_timeout,
        auth_bypass=auth_bypass,
    )


def decide(
    observations: Sequence[Observation],
    *,
    tls_required: bool = False,
    confirm_timeout: float | None = None,
    auth_bypass: AuthBypass | None = None,
) -> Decision:
    """The verdict for one target from its observations: the first rule that decides.

    ``confirm_timeout`` is set in delivery mode: how long arrivals were awaited.
    """
    evidence = evidence_of(
        observations, tls_required=tls_required, confirm_timeout=confirm_timeout, auth_bypass=auth_bypass
    )
    relay = [o for o in observations if o.kind is ProbeKind.RELAY]
    findings = tuple(f for rule in FINDING_RULES if (f := rule(evidence, relay)) is not None)
    not_run = [o for o in relay if o.outcome is Outcome.SKIPPED]
    for rule in RULES:
        verdict = rule(evidence)
        if verdict is not None:
            if not_run:  # a path that could not be tested is said, not judged
                note = f" {len(not_run)} relay probe(s) were not run ({not_run[0].reason.removeprefix('not run: ')})."
                verdict = replace(verdict, explanation=verdict.explanation + note)
            return Decision(verdict, findings)
    raise AssertionError("the last rule always decides")  # pragma: no cover


FIX_OPEN = "Restrict relaying to authenticated users and your own networks."
Rule = Callable[[Evidence], Verdict | None]


def _quote(obs: Observation) -> str:
    shown = f"RCPT TO:{obs.rcpt_to}"
    return f"{obs.probe_id} MAIL FROM:{obs.mail_from} {shown} -> {obs.reply}" if obs.reply else shown


def _inconclusive(text: str, advice: str, evidence: Iterable[Observation] = ()) -> Verdict:
    return Verdict(VerdictKind.INCONCLUSIVE, Confidence.UNDETERMINED, text, tuple(o.probe_id for o in evidence), advice)


def _sender_note(e: Evidence) -> str:
    """Said when some probes were judged with a stand-in sender because theirs was refused."""
    switched = [o for o in e.relay if o.refused_sender is not None]
    if not switched:
        return ""
    first = switched[0]
    return (
        f" {len(switched)} probe(s) were run again with the null or a local sender because the server "
        f"refused their sender at MAIL ({first.refused_sender}), which says nothing about relaying."
    )


# --- the rules, in order: the first one that returns a verdict decides ------------------------


def confirmed_delivery(e: Evidence) -> Verdict | None:
    """Delivery mode: a test message arrived in the operator's mailbox."""
    confirmed = [o for o in e.accepted if _delivered(o)]
    if not confirmed:
        return None
    first = confirmed[0]
    assert first.delivery is not None
    path = f" It took this path: {' <- '.join(first.delivery.received)}." if first.delivery.received else ""
    others = len(e.accepted) - len(confirmed)
    rest = f" {others} other accepted attempt(s) did not arrive." if others else ""
    return Verdict(
        VerdictKind.OPEN,
        Confidence.CONFIRMED,
        f"Confirmed open relay: {len(confirmed)} test message(s) sent through the server from an "
        f"outside client arrived in the operator's mailbox, e.g. {_quote(first)}.{path}{rest}",
        tuple(o.probe_id for o in confirmed),
        FIX_OPEN,
    )


def not_delivered(e: Evidence) -> Verdict | None:
    """Delivery mode is the judge of last resort: accepted but never arrived is not proof."""
    if e.confirm_timeout is None or not e.accepted:
        return None
    unknown = [o for o in e.accepted if o.delivery is not None and o.delivery.state is DeliveryState.UNKNOWN]
    taken = [o for o in e.accepted if o.delivery is not None and o.delivery.state is DeliveryState.NOT_DELIVERED]
    shown = (taken or unknown or e.accepted)[0]
    if taken:
        what = (
            f"accepted, not delivered within {e.confirm_timeout:g} s: the server took {len(taken)} test "
            f"message(s) (e.g. {_quote(shown)}) but none arrived. It may accept and then discard or bounce "
            "relayed mail (a spam-trap or anti-harvesting behaviour), queue it for later, or deliver it "
            "somewhere else."
        )
    elif unknown:
        what = "the test messages were sent, but the mailbox could not be read to see whether they arrived."
    else:
        what = (
            f"the server accepted {len(e.accepted)} relay attempt(s) at RCPT (e.g. {_quote(shown)}), "
            "but no test message could be sent through it."
        )
    return Verdict(
        VerdictKind.INCONCLUSIVE,
        Confidence.ACCEPTED_NOT_DELIVERED,
        "Not proven open: " + what,
        tuple(o.probe_id for o in e.accepted),
        "Check the server's queue and logs for the test tokens, or test again with a longer "
        "--confirm-timeout; even if nothing leaves, accepting relay attempts invites abuse: "
        + FIX_OPEN[0].lower()
        + FIX_OPEN[1:],
    )


def accepted_relay(e: Evidence) -> Verdict | None:
    """Probe mode: an outside recipient accepted from an outside client."""
    evidence = e.relayed
    if not evidence:
        return None
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
        if not e.plain
        else ""
    )
    return Verdict(
        VerdictKind.OPEN,
        confidence,
        f"The server accepted {len(evidence)} relay attempt(s) from an outside client "
        f"to an outside recipient, e.g. {_quote(evidence[0])}. {caveat}.{trick_note}{_sender_note(e)}",
        tuple(o.probe_id for o in evidence),
        FIX_OPEN,
    )


def auth_bypass_relay(e: Evidence) -> Verdict | None:
    """``--auth-bypass-check``: a made-up login was accepted and an outside recipient followed."""
    bypass = e.auth_bypass
    if bypass is None or not bypass.relays:
        return None
    return Verdict(
        VerdictKind.OPEN,
        Confidence.AUTH_BYPASS,
        f"The server accepted a made-up user name and password ({bypass.auth}) and then an outside "
        f"recipient ({bypass.relay}): any password relays, so anyone who sends AUTH first can relay "
        "through it.",
        (),
        "Fix the authentication backend so that it checks passwords (a PAM or SASL setup that "
        "accepts anything, a test account left in place), then relay only for authenticated users.",
    )


def tricks_maybe_local(e: Evidence) -> Verdict | None:
    """Only local-looking tricks accepted, and unknown local users are not known to be refused."""
    if not e.tricks:
        return None
    why = (
        "the server accepts any local recipient"
        if e.catch_all_on
        else "whether the server refuses unknown local users could not be learnt"
    )
    return _inconclusive(
        f"Every plain relay attempt was refused, but {why}, and it accepted {len(e.tricks)} address "
        f"trick(s) such as {e.tricks[0].rcpt_to} that may be delivered to a local mailbox rather than "
        "relayed. Probing cannot tell which.",
        "Run with --confirm ADDRESS to learn whether a test message actually leaves.",
        e.tricks,
    )


def nothing_run(e: Evidence) -> Verdict | None:
    if e.relay or e.unjudged:
        return None
    if e.tls_required:
        return _inconclusive(
            "The server requires STARTTLS before any mail and TLS could not be used, so relaying was not tested.",
            "Check the server's TLS setup, or test again with --transport starttls.",
        )
    return _inconclusive("No relay probe could be run.", "Check that the server is reachable.")


def tls_unusable(e: Evidence) -> Verdict | None:
    refused = [o for o in e.relay if o.reply is not None and is_tls_required(o.reply)]
    if not refused or len(refused) != len(e.relay):
        return None
    return _inconclusive(
        "The server requires STARTTLS before any mail and TLS could not be used, so relaying was not tested.",
        "Check the server's TLS setup, or test again with --transport starttls.",
        refused,
    )


def deferred(e: Evidence) -> Verdict | None:
    waiting = [o for o in e.relay if o.outcome is Outcome.DEFERRED]
    if e.postmaster is not None and e.postmaster.outcome is Outcome.DEFERRED and _judged(e.postmaster):
        waiting.append(e.postmaster)
    if not waiting:
        return None
    return _inconclusive(
        f"{len(waiting)} attempt(s) were deferred with a temporary error (e.g. {waiting[0].reply}), "
        "typical of greylisting or rate limiting. A deferred attempt is not a refusal.",
        "Test again with --retry-budget 300 so that relaycheck retries until the greylisting clears.",
        waiting,
    )


def every_sender_refused(e: Evidence) -> Verdict | None:
    """No sender at all was accepted (outside, null, local): relaying could not be judged."""
    postmaster_unjudged = e.postmaster is not None and is_sender_refused(e.postmaster)
    if e.relay and not postmaster_unjudged:
        return None
    shown = e.postmaster if postmaster_unjudged else (e.unjudged[0] if e.unjudged else None)
    said = f" (e.g. {shown.reply})" if shown is not None and shown.reply is not None else ""
    return _inconclusive(
        f"Every sender was refused{said}: the outside sender, the null sender and a sender in the "
        "server's own domain. A refusal of the sender says nothing about relaying; it refuses us, "
        "it may still relay for others.",
        "Test from a network whose DNS can resolve the sender's domain, with --sender set to an "
        "address the server accepts, or check the configuration with 'relaycheck audit'.",
        [shown] if shown is not None else [],
    )


def refuses_us(e: Evidence) -> Verdict | None:
    if e.postmaster_ok:
        return None
    said = f" (postmaster got: {e.postmaster.reply})" if e.postmaster and e.postmaster.reply else ""
    return _inconclusive(
        f"The server refuses mail from us altogether, even to postmaster{said}. It refuses us; it may "
        "still relay for others, so this is not a clean bill of health.",
        "Test from another network, or check the configuration with 'relaycheck audit'.",
        [e.postmaster] if e.postmaster else [],
    )


def unanswered(e: Evidence) -> Verdict | None:
    errors = [o for o in e.relay if o.outcome is Outcome.ERROR]
    if not errors:
        return None
    return _inconclusive(
        f"{len(errors)} relay attempt(s) got no answer ({errors[0].reason}).",
        "Test again later; if the server drops connections, check its error limits.",
        errors,
    )


def unproven(e: Evidence) -> Verdict | None:
    doubtful = [o for o in e.relay if o.outcome is Outcome.REJECTED_OTHER and not _probe_refused(o)]
    if not doubtful and any(o.outcome is Outcome.REJECTED_POLICY for o in e.relay):
        return None
    example = doubtful[0] if doubtful else e.relay[0]
    return _inconclusive(
        "Relay attempts were refused, but not for a relay reason "
        f"(e.g. {example.reply}): the refusal may hide an open relay.",
        "Use --ext-recipient with an address at a domain that resolves and accepts mail.",
        doubtful,
    )


def closed(e: Evidence) -> Verdict | None:
    policy = [o for o in e.relay if o.outcome is Outcome.REJECTED_POLICY]
    scope = (
        f"It relays only for {', '.join(sorted(e.relay_domains))} (see the relay-domain finding), "
        "which is not open relaying. "
        if e.relay_domains
        else ""
    )
    return Verdict(
        VerdictKind.CLOSED,
        Confidence.POLICY_REFUSAL,
        f"{scope}Every one of the {len(e.relay)} relay attempts was refused "
        f"({len(policy)} for relay policy, e.g. {policy[0].reply}), while mail to "
        f"postmaster was accepted: the server takes mail from us but will not relay it.{_sender_note(e)}",
        tuple(o.probe_id for o in policy),
        None,
    )


RULES: tuple[Rule, ...] = (
    confirmed_delivery,
    not_delivered,
    accepted_relay,
    auth_bypass_relay,
    tricks_maybe_local,
    nothing_run,
    tls_unusable,
    deferred,
    every_sender_refused,
    refuses_us,
    unanswered,
    unproven,
    closed,
)


# --- the verdict's own findings ---------------------------------------------------------------

FindingRule = Callable[[Evidence, Sequence[Observation]], Finding | None]


def catch_all_finding(e: Evidence, relay: Sequence[Observation]) -> Finding | None:
    if not e.catch_all_on or e.catch_all is None:
        return None
    return registry.finding(
        "catch-all",
        f"A local user that cannot exist was accepted ({e.catch_all.reply}). Tricks that "
        "hide the outside address in a local-looking one may be delivered locally.",
        (e.catch_all.probe_id,),
    )


def tls_required_finding(e: Evidence, relay: Sequence[Observation]) -> Finding | None:
    if not e.tls_required:
        return None
    return registry.finding(
        "tls-required",
        "Relay probes in clear text were answered 530; they were repeated over STARTTLS.",
    )


def refused_at_data_finding(e: Evidence, relay: Sequence[Observation]) -> Finding | None:
    refused = [o for o in relay if o.stage is Stage.DATA and o.outcome is not Outcome.ACCEPTED]
    if not refused:
        return None
    return registry.finding(
        "refused-at-data",
        "The server accepts outside recipients but refuses the message content: it does not relay them.",
        tuple(o.probe_id for o in refused),
    )


def relay_domain_finding(e: Evidence, relay: Sequence[Observation]) -> Finding | None:
    if not e.relay_domains:
        return None
    names = ", ".join(sorted(e.relay_domains))
    return registry.finding(
        "relay-domain",
        f"The server accepts mail for {names} but refuses other outside domains: it is a backup MX "
        "or relay for that domain, not an open relay. If that is not intended, remove it from the "
        "relay domains.",
        tuple(o.probe_id for o in relay if _accepted(o) and o.outside_domain in e.relay_domains),
        title="Relays for " + names + " only",
    )


FINDING_RULES: tuple[FindingRule, ...] = (
    catch_all_finding,
    tls_required_finding,
    refused_at_data_finding,
    relay_domain_finding,
)


def relay_domains_of(relay: Sequence[Observation]) -> set[str]:
    """Outside domains reached by the plain per-domain probe while another domain was refused."""
    by_domain = {
        o.outside_domain: _accepted(o)
        for o in relay
        if o.domain_check and o.outside_domain is not None and _judged(o)
    }
    if len(by_domain) < 2 or all(by_domain.values()) or not any(by_domain.values()):
        return set()
    refused = {d for d, ok in by_domain.items() if not ok}
    refused_for_policy = any(_probe_refused(o) for o in relay if o.domain_check and o.outside_domain in refused)
    return {d for d, ok in by_domain.items() if ok} if refused_for_policy else set()

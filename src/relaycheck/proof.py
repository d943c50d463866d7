"""PURE: when the relay verdict is proven, and the order that proves it soonest.

Each accepted recipient is work (a queue file, a log line) on somebody's server, and an open
relay is proven by a handful of them: once no further probe can change the verdict, the engine
stops sending relay probes (``--exhaustive`` goes on, to list every accepted path).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

from relaycheck.catalogue import PlannedProbe
from relaycheck.model import Observation, Outcome, ProbeKind
from relaycheck.verdict import accepted_relay, evidence_of, is_sender_refused

PROVEN = "verdict proven"  # the reason of the probes left out: "not run: verdict proven"

# Controls that run only when a result needs them, with why they were not run otherwise. The
# catch-all control (a local user that cannot exist) only judges accepted local-part tricks: on
# a server that accepted none it would be one more refusal counted against the error limit.
ON_DEMAND: dict[str, str] = {"catch-all": "not needed: no local-part trick was accepted"}


def demands(obs: Observation) -> str | None:
    """The on-demand control (its role) that ``obs`` calls for: an accepted local-part trick
    needs the catch-all control to tell relaying from a local mailbox."""
    if obs.kind is ProbeKind.RELAY and obs.local_part_trick and obs.outcome is Outcome.ACCEPTED:
        return "catch-all"
    return None


def on_demand(probes: Sequence[PlannedProbe]) -> tuple[list[PlannedProbe], list[PlannedProbe]]:
    """The probes to send, and the controls to send only when a result calls for them."""
    return [p for p in probes if p.role not in ON_DEMAND], [p for p in probes if p.role in ON_DEMAND]


def first_round(probes: Sequence[PlannedProbe]) -> list[PlannedProbe]:
    """The probes that can prove an open relay at once: the plain outside recipient at every
    outside domain, and the postmaster control (the server takes mail from us) where it is still
    to run."""
    return [p for p in probes if p.domain_check or p.role == "postmaster"]


def proving_order(probes: Sequence[PlannedProbe]) -> list[PlannedProbe]:
    """The first round first, then the rest grouped by sender (catalogue order within a sender), so
    that a transaction carries as many recipients as possible."""
    head = first_round(probes)
    rest = [p for p in probes if p not in head]
    senders = list(dict.fromkeys([p.mail_from for p in head] + [p.mail_from for p in rest]))
    return head + sorted(rest, key=lambda p: senders.index(p.mail_from))


def _final(obs: Observation) -> bool:
    """An outcome no retry will change: accepted, or refused with the sender accepted."""
    if obs.outcome is Outcome.ACCEPTED:
        return True
    return obs.outcome in (Outcome.REJECTED_POLICY, Outcome.REJECTED_OTHER) and not is_sender_refused(obs)


def is_proven(observations: Iterable[Observation], *, domain_checks: int) -> bool:
    """The server is an open relay whatever the probes not yet run would show.

    It holds when the verdict rules already say open (plain outside recipients accepted, or a
    trick accepted while unknown local users are refused: the catch-all control's final answer),
    the postmaster control was accepted, and the plain probe towards each of the
    ``domain_checks`` outside domains has its final answer with no relay domain among them (a
    backup MX accepts one domain only, and that would take its probes out of the evidence).
    Only for probe mode: at DATA or in delivery mode later stages can still say no.
    """
    seen = list(observations)
    checks = [o for o in seen if o.kind is ProbeKind.RELAY and o.domain_check]
    if domain_checks < 1 or len(checks) < domain_checks or not all(_final(o) for o in checks):
        return False
    controls = {o.role: o for o in seen if o.kind is ProbeKind.CONTROL and o.role is not None}
    postmaster = controls.get("postmaster")
    if postmaster is None or postmaster.outcome is not Outcome.ACCEPTED:
        return False
    evidence = evidence_of(seen)
    return not evidence.relay_domains and accepted_relay(evidence) is not None


def _family(obs: Observation) -> tuple[bool, bool]:
    return obs.tls, obs.local_part_trick


def one_per_family(accepted: Sequence[Observation]) -> list[Observation]:
    """Delivery mode sends one test message per path family, never one per accepted probe: plain
    outside recipients and local-part tricks, in clear text and over TLS (the first of each)."""
    families: dict[tuple[bool, bool], Observation] = {}
    for obs in accepted:
        families.setdefault(_family(obs), obs)
    return list(families.values())


def spoken_for(accepted: Sequence[Observation], sent: dict[str, Observation]) -> dict[str, Observation]:
    """The accepted probes that got no message of their own, judged by their family's message when
    it was refused (at DATA or after the content): the same server refuses the same content."""
    by_family = {_family(o): o for o in sent.values()}
    judged: dict[str, Observation] = {}
    for obs in accepted:
        message = by_family.get(_family(obs))
        if obs.probe_id in sent or message is None or message.outcome is Outcome.ACCEPTED:
            continue
        judged[obs.probe_id] = replace(
            obs,
            outcome=message.outcome,
            stage=message.stage,
            reply=message.reply,
            data_reply=message.data_reply,
            reason=f"{message.reason} (the test message of {message.probe_id}, same path family)",
        )
    return judged

"""One target, start to finish: preflight, battery, retries, STARTTLS phase, hygiene, DATA stage.

Speed comes from doing little and overlapping the rest: one preflight (whose postmaster check
also tells whether TLS is required), the battery's connections opened while it runs, DNS
lookups concurrent with the SMTP work. Politeness comes from the limits in ``battery``.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from relaycheck.advice import advice_for
from relaycheck.battery import (
    FAILURES,
    Opened,
    Ready,
    Run,
    abandon,
    battery,
    discard,
    observation,
    open_for_battery,
    ready,
    transaction,
)
from relaycheck.catalogue import PlannedProbe, Slots, plan_probes
from relaycheck.delivery import ArrivalWatcher, data_probe, deliver, mark_arrivals, mark_unknown, sent_tokens
from relaycheck.dns import make_resolver
from relaycheck.errors import RelaycheckError, kind_of
from relaycheck.findings import hygiene_findings, with_remediation
from relaycheck.findings.registry import fix_for
from relaycheck.fingerprint import fingerprint
from relaycheck.hygiene import SessionInspection, auth_bypass_check, dns_facts, inspect_session
from relaycheck.model import (
    Confidence,
    DnsblResult,
    Exchange,
    HygieneFacts,
    Observation,
    Outcome,
    ProbeKind,
    Reply,
    SessionFacts,
    Target,
    TargetReport,
    TlsFacts,
    Transport,
    Verdict,
    VerdictKind,
)
from relaycheck.options import DEFAULT_OUTSIDE, EngineOptions, default_helo, ip_literal
from relaycheck.smtp.wire import banner_host
from relaycheck.verdict import decide, is_tls_required, relay_domains_of

__all__ = ["DEFAULT_OUTSIDE", "EngineOptions", "check_target", "default_helo", "ip_literal"]


def _slots(run: Run, facts: SessionFacts) -> Slots:
    options = run.options
    host = facts.banner_host or facts.ehlo_host
    literal = ip_literal(run.peer) if run.peer else f"[{run.target.host}]"
    local_domain = options.local_domain or run.target.domain or host or literal
    return Slots(
        outside=options.outside,
        sender_ext=options.sender_address,
        local_domain=local_domain,
        host=host or local_domain,
        ip_literal=literal,
        random_user="rc-nouser-" + secrets.token_hex(5),
    )


def _unreachable(target: Target, failure: RelaycheckError, started: float, run: Run | None) -> TargetReport:
    reason = str(failure)
    return TargetReport(
        target=target,
        verdict=Verdict(
            VerdictKind.INCONCLUSIVE,
            Confidence.UNDETERMINED,
            f"The server could not be tested: {reason}.",
            (),
            advice_for(failure),
        ),
        connections=tuple(s.log() for s in run.sessions) if run else (),
        round_trips=sum(s.round_trips for s in run.sessions) if run else 0,
        duration=time.monotonic() - started,
        error=reason,
        error_kind=kind_of(failure),
    )


@dataclass(frozen=True)
class RetryWait:
    """The engine is about to wait before retrying deferred probes (greylisting), for live displays."""

    attempt: int  # the retry round that follows the wait, 1 for the first
    deferred: int  # probes still deferred
    wait: float  # seconds until that round starts
    budget_left: float  # seconds of the retry budget left, the wait included


async def check_target(
    target: Target,
    options: EngineOptions,
    *,
    on_exchange: Callable[[int, Exchange], None] | None = None,
    watcher: ArrivalWatcher | None = None,
    on_status: Callable[[str], None] | None = None,
    on_retry: Callable[[RetryWait], None] | None = None,
) -> TargetReport:
    """Test one SMTP endpoint. Never raises for network trouble: it is reported instead."""
    started = time.monotonic()
    deadline = started + options.deadline + options.retry_budget
    run = Run(target, options, deadline, on_exchange)
    run.tls_phase = target.transport is Transport.STARTTLS
    # Open the battery's other connections while the preflight runs: their setup round trips
    # overlap with the preflight's instead of following it.
    ahead: list[Opened] = [asyncio.ensure_future(open_for_battery(run)) for _ in range(options.max_connections - 1)]
    try:
        session, greeting, ehlo = await run.open()
    except FAILURES as exc:
        await abandon(run, ahead)
        return _unreachable(target, exc, started, run)
    run.peer = session.peer_address
    facts = SessionFacts(
        banner=greeting,
        banner_host=banner_host(greeting),
        ehlo_host=ehlo.host if ehlo else None,
        extensions=ehlo.keywords if ehlo else (),
        esmtp=ehlo is not None,
        pipelining=ehlo is not None and ehlo.has("PIPELINING"),
        starttls_offered=ehlo is not None and ehlo.has("STARTTLS"),
        ip_literal=ip_literal(run.peer) if run.peer else None,
    )
    if greeting.code != 220:
        await session.quit()
        await abandon(run, ahead)
        return _refused_greeting(target, greeting, facts, run, started)
    slots = _slots(run, facts)
    facts = replace(facts, local_domain=slots.local_domain)
    dns_task = _dns_task(run)
    probes = plan_probes(slots, optional=options.all_probes)
    by_id = {p.id: p for p in probes}
    attempts: dict[str, int] = {}
    # The preflight's check: the postmaster control, alone, before anything is pipelined. It
    # tells whether the server takes mail from us at all (so how many refusals to expect) and
    # whether it requires STARTTLS first; a pipelined batch of 530s or refusals would run into
    # the server's error limits (Postfix: "too many errors" after 20).
    postmaster = next(p for p in probes if p.role == "postmaster")
    try:
        check = await transaction(session, postmaster, facts.pipelining)
    except FAILURES as exc:
        await abandon(run, ahead)
        return _unreachable(target, exc, started, run)
    attempts[postmaster.id] = 1
    tls_first = any(r is not None and is_tls_required(r) for r in (check.mail, check.rcpt))
    if tls_first and not run.tls_phase and target.transport is Transport.PLAIN:
        facts = replace(facts, tls_required=True)
        run.tls_phase = True
        await session.quit()
        await discard(ahead)  # clear-text sessions: of no use now
        results = await battery(run, probes, [], {})
    else:
        results = {postmaster.id: observation(check, tls=session.tls, connection=session.index, attempts=1)}
        refusals = sum(1 for r in (check.mail, check.rcpt) if r is not None and not r.positive)
        first = Ready(session, facts.pipelining, pending_mail=True, refusals=refusals)
        rest = [p for p in probes if p is not postmaster]
        results.update(await battery(run, rest, [ready(first), *ahead], attempts))
        needs_tls = [o for o in results.values() if o.reply is not None and is_tls_required(o.reply)]
        if needs_tls and not run.tls_phase and target.transport is Transport.PLAIN:
            facts = replace(facts, tls_required=True)  # required for some commands only
            run.tls_phase = True
            tls_results = await battery(run, probes, [], {})
            if any(o.outcome is not Outcome.ERROR for o in tls_results.values()):
                results = tls_results

    results = await _retry_deferred(run, results, by_id, attempts, on_retry)
    results = await _around_relay_domains(run, slots, results, attempts)
    second = await _second_phase(run, probes, facts, slots)
    results.update(second.tls_battery)

    accepted = [o for o in results.values() if o.kind is ProbeKind.RELAY and o.outcome is Outcome.ACCEPTED]
    if options.confirm_address and accepted:
        results.update(await _confirm(run, accepted, watcher, on_status))
    elif options.data_probe and accepted:
        results.update(await data_probe(run.open_phase, accepted, options.max_connections))

    order = [p.id for p in probes] + [f"{p.id}{TLS_SUFFIX}" for p in probes]
    observations = tuple(results[i] for i in order if i in results)
    names, fcrdns, dnsbl = await dns_task if dns_task is not None else (None, None, None)
    decision = decide(
        observations,
        tls_required=facts.tls_required,
        confirm_timeout=options.confirm_timeout if options.confirm_address else None,
    )
    replies = [r for c in run.sessions for e in c.exchanges if (r := e.reply) is not None]
    identity = fingerprint(facts.banner, facts.extensions, replies)
    hygiene = HygieneFacts(
        ptr_names=names,
        fcrdns=fcrdns,
        tls=second.inspection.tls if second.inspection else None,
        auth_before_tls=_auth_mechanisms(facts.extensions) if target.transport is not Transport.TLS else (),
        auth_after_tls=second.inspection.auth_after_tls if second.inspection else (),
        vrfy_postmaster=second.inspection.vrfy_postmaster if second.inspection else None,
        vrfy_random=second.inspection.vrfy_random if second.inspection else None,
        expn_postmaster=second.inspection.expn_postmaster if second.inspection else None,
        auth_bypass_reply=second.auth_bypass[0],
        auth_bypass_relay=second.auth_bypass[1],
        dnsbl=dnsbl,
        fingerprint=identity,
    )
    verdict = decision.verdict
    if verdict.kind is VerdictKind.OPEN:  # the fix for the MTA we are talking to
        verdict = replace(verdict, advice=fix_for("open-relay", identity.family) or verdict.advice)
    findings = with_remediation(decision.findings, identity.family) + hygiene_findings(
        target.host, target.port, facts, hygiene, identity.family
    )
    return TargetReport(
        target=replace(target, address=run.peer or target.address),
        verdict=verdict,
        facts=facts,
        observations=observations,
        findings=tuple(findings),
        connections=tuple(s.log() for s in run.sessions),
        round_trips=sum(s.round_trips for s in run.sessions),
        duration=time.monotonic() - started,
        hygiene=hygiene,
    )


TLS_SUFFIX = "/tls"  # ids of the relay battery repeated over STARTTLS


@dataclass(frozen=True)
class _SecondPhase:
    tls_battery: dict[str, Observation]
    inspection: SessionInspection | None
    auth_bypass: tuple[Reply | None, Reply | None]


async def _second_phase(run: Run, probes: list[PlannedProbe], facts: SessionFacts, slots: Slots) -> _SecondPhase:
    """After the battery: the battery again over STARTTLS (relay policy can differ after TLS),
    the inspection session (VRFY, certificate) and the optional AUTH-bypass check, together
    and within the per-host connection limit."""
    options, hygiene = run.options, run.options.hygiene
    target = run.target
    tls_possible = facts.starttls_offered or target.transport is Transport.TLS
    # A session only when there is something to ask: VRFY, or a TLS handshake to look at.
    inspect = hygiene.vrfy or (hygiene.tls and tls_possible)
    tls_battery = (
        hygiene.tls_battery
        and facts.starttls_offered
        and not facts.tls_required
        and target.transport is Transport.PLAIN
    )
    spare = max(1, options.max_connections - int(inspect) - int(hygiene.auth_bypass))

    async def over_tls() -> dict[str, Observation]:
        if not tls_battery:
            return {}
        found = await battery(run.phase(True), probes, [], {}, connections=spare)
        return {f"{k}{TLS_SUFFIX}": replace(v, probe_id=f"{v.probe_id}{TLS_SUFFIX}") for k, v in found.items()}

    async def inspection() -> SessionInspection | None:
        if not inspect:
            no_tls = TlsFacts(offered=False) if hygiene.tls else None  # known without connecting
            return SessionInspection(no_tls, (), None, None, None)
        return await inspect_session(
            run.new_session, target.host, target.transport, facts.starttls_offered, hygiene, slots.local_domain,
            tls_required=facts.tls_required,
        )

    async def bypass() -> tuple[Reply | None, Reply | None]:
        if not hygiene.auth_bypass:
            return None, None
        return await auth_bypass_check(
            run.new_session, target.transport, facts.starttls_offered, slots.sender_ext, slots.outside[0]
        )

    if not tls_battery and not hygiene.auth_bypass:  # the usual case: one task is all it takes
        return _SecondPhase({}, await inspection(), (None, None))
    found, inspected, bypassed = await asyncio.gather(over_tls(), inspection(), bypass())
    return _SecondPhase(found, inspected, bypassed)


def _auth_mechanisms(extensions: Sequence[str]) -> tuple[str, ...]:
    for keyword in extensions:
        word, _, rest = keyword.partition(" ")
        if word == "AUTH":
            return tuple(m.upper() for m in rest.split())
    return ()


def _dns_task(
    run: Run,
) -> asyncio.Future[tuple[tuple[str, ...] | None, bool | None, tuple[DnsblResult, ...] | None]] | None:
    """PTR/FCrDNS/DNSBL lookups, started at once so that they overlap the SMTP work."""
    hygiene = run.options.hygiene
    if run.peer is None or not hygiene.needs_dns:
        return None
    try:
        resolver = make_resolver(run.options.resolver)
    except RelaycheckError:
        return None
    return asyncio.ensure_future(dns_facts(resolver, run.peer, hygiene))


async def _confirm(
    run: Run,
    accepted: list[Observation],
    watcher: ArrivalWatcher | None,
    on_status: Callable[[str], None] | None,
) -> dict[str, Observation]:
    """Delivery mode: one test message per accepted probe, then wait for them to arrive."""
    options = run.options
    assert options.confirm_address is not None
    sent = await deliver(
        run.open_phase,
        accepted,
        limit=options.max_connections,
        confirm_address=options.confirm_address,
        target_label=replace(run.target, address=run.peer or run.target.address).label,
        operator=options.helo,
    )
    tokens = sent_tokens(sent)
    if not tokens or watcher is None:
        return sent
    if on_status is not None:
        on_status(
            f"{run.target.label}: {len(tokens)} test message(s) sent to {options.confirm_address}; "
            f"waiting up to {options.confirm_timeout:g} s for them to arrive ({watcher.via})"
        )
    try:
        arrivals = await watcher.wait_for(tokens, options.confirm_timeout)
    except RelaycheckError as exc:  # keep the report: the messages were sent, arrivals unknown
        if on_status is not None:
            on_status(f"{run.target.label}: cannot see arrivals: {exc}")
        return mark_unknown(sent)
    if on_status is not None:
        on_status(f"{run.target.label}: {len(arrivals)} of {len(tokens)} test message(s) arrived")
    return mark_arrivals(sent, arrivals, watcher.via)


async def _around_relay_domains(
    run: Run, slots: Slots, results: dict[str, Observation], attempts: dict[str, int]
) -> dict[str, Observation]:
    """When the first outside domain is one the server relays for (a backup MX), run the battery
    again towards an outside domain it refused, so that the verdict rests on the whole battery.
    The per-domain probes keep their results: they are the relay-domain evidence."""
    relayed = relay_domains_of(list(results.values()))
    others = tuple(r for r in slots.outside if r.rpartition("@")[2] not in relayed)
    if not relayed or not others or slots.outside[0] in others:
        return results
    reordered = replace(slots, outside=others + tuple(r for r in slots.outside if r not in others))
    again = [
        p
        for p in plan_probes(reordered, optional=run.options.all_probes)
        if p.kind is ProbeKind.RELAY and not p.domain_check
    ]
    return {**results, **await battery(run, again, [], attempts)}


async def _retry_deferred(
    run: Run,
    results: dict[str, Observation],
    by_id: dict[str, PlannedProbe],
    attempts: dict[str, int],
    on_retry: Callable[[RetryWait], None] | None = None,
) -> dict[str, Observation]:
    """Retry 4xx-deferred probes with back-off until they clear or the budget is spent."""
    budget_end = time.monotonic() + run.options.retry_budget
    wait = run.options.retry_first_wait
    attempt = 0
    while True:
        deferred = [by_id[o.probe_id] for o in results.values() if o.outcome is Outcome.DEFERRED]
        left = budget_end - time.monotonic()
        if not deferred or left <= 0:
            return results
        attempt += 1
        if on_retry is not None:
            on_retry(RetryWait(attempt, len(deferred), min(wait, left), left))
        await asyncio.sleep(min(wait, left))
        wait = min(wait * 2, 30.0)
        retried = await battery(run, deferred, [], attempts)
        for probe_id, obs in retried.items():
            previous = results[probe_id]
            results[probe_id] = replace(obs, attempts=previous.attempts + 1)


def _refused_greeting(target: Target, greeting: Reply, facts: SessionFacts, run: Run, started: float) -> TargetReport:
    return TargetReport(
        target=replace(target, address=run.peer or target.address),
        verdict=Verdict(
            VerdictKind.INCONCLUSIVE,
            Confidence.UNDETERMINED,
            f"The server refused the session at once ({greeting}). It refuses us; it may still relay for others.",
            (),
            "Test from another network, or check the configuration with 'relaycheck audit'.",
        ),
        facts=facts,
        connections=tuple(s.log() for s in run.sessions),
        round_trips=sum(s.round_trips for s in run.sessions),
        duration=time.monotonic() - started,
    )

"""One target, start to finish: preflight, battery, retries, STARTTLS phase, hygiene, DATA stage.

Speed comes from doing little and overlapping the rest: one preflight (whose postmaster check
also tells whether TLS is required), the battery's connections opened while it runs, DNS
lookups concurrent with the SMTP work. Politeness comes from the limits in ``battery``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from dns.asyncresolver import Resolver

from relaycheck.advice import advice_for
from relaycheck.battery import (
    FAILURES,
    Chunk,
    Opened,
    Proof,
    Ready,
    Run,
    battery,
    observation,
    open_for_battery,
    open_within_limit,
    ready,
    run_chunk,
    skipped,
)
from relaycheck.catalogue import PlannedProbe, Slots, plan_probes
from relaycheck.delivery import ArrivalWatcher, data_probe, deliver, mark_arrivals, mark_unknown, sent_tokens
from relaycheck.dns import make_resolver
from relaycheck.errors import CertificateUnverified, ConnectionClosed, RelaycheckError, TlsError, kind_of
from relaycheck.findings import hygiene_findings, with_remediation
from relaycheck.findings.registry import fix_for
from relaycheck.fingerprint import fingerprint
from relaycheck.hygiene import (
    HygieneOptions,
    SessionInspection,
    auth_bypass_check,
    auth_mechanisms,
    dns_facts,
    inspect_session,
    tls_facts,
    verifying_tls_context,
    vrfy_replies,
)
from relaycheck.model import (
    Confidence,
    DnsblResult,
    Exchange,
    Fingerprint,
    HygieneFacts,
    Observation,
    Outcome,
    ProbeKind,
    Reply,
    SessionFacts,
    Stage,
    Target,
    TargetReport,
    TlsFacts,
    Transport,
    Verdict,
    VerdictKind,
)
from relaycheck.names import is_hostname
from relaycheck.options import DEFAULT_OUTSIDE, EngineOptions, default_helo, ip_literal
from relaycheck.proof import (
    ON_DEMAND,
    PROVEN,
    first_round,
    is_proven,
    on_demand,
    one_per_family,
    proving_order,
    spoken_for,
)
from relaycheck.smtp.session import SmtpSession
from relaycheck.smtp.wire import Ehlo, banner_host
from relaycheck.verdict import AuthBypass, decide, is_sender_refused, is_tls_required, relay_domains_of

__all__ = ["DEFAULT_OUTSIDE", "EngineOptions", "check_target", "default_helo", "ip_literal"]


def _slots(run: Run, facts: SessionFacts) -> Slots:
    options = run.options
    # A name the server gives itself goes into addresses only when it is a domain name: a
    # banner or EHLO reply is the server's to write, "<script>" included.
    host = next((h for h in (facts.banner_host, facts.ehlo_host) if h and "." in h and is_hostname(h)), None)
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


VrfyReplies = tuple[Reply | None, Reply | None, Reply | None]  # VRFY postmaster, VRFY a random user, EXPN


@dataclass
class _Preflight:
    """What the first session learnt, and what the rest of the check is planned from."""

    session: SmtpSession
    facts: SessionFacts
    slots: Slots
    probes: list[PlannedProbe]
    first: Chunk  # the postmaster control and the first round, on the first session
    attempts: dict[str, int] = field(default_factory=dict)
    vrfy: VrfyReplies | None = None  # asked on the first session (else by the inspection session)
    # What the first battery's STARTTLS showed, when the server requires it (no inspection session)
    tls_seen: TlsBattery | None = None

    @property
    def by_id(self) -> dict[str, PlannedProbe]:
        return {p.id: p for p in self.probes}


async def check_target(
    target: Target,
    options: EngineOptions,
    *,
    on_exchange: Callable[[int, Exchange], None] | None = None,
    watcher: ArrivalWatcher | None = None,
    on_status: Callable[[str], None] | None = None,
    on_retry: Callable[[RetryWait], None] | None = None,
) -> TargetReport:
    """Test one SMTP endpoint. Never raises for network trouble: it is reported instead.

    The phases: preflight (greeting, EHLO, the postmaster control and the first round), the relay
    battery (over STARTTLS when the server requires it; again with other senders where the sender
    was refused), retries of deferred probes, the battery towards another outside domain when the
    first is a relay domain, the second phase (the battery over STARTTLS, the inspection session,
    the AUTH-bypass check), the DATA stage, then the report.
    """
    started = time.monotonic()
    run = Run(target, options, started + options.deadline + options.retry_budget, on_exchange)
    run.tls_phase = target.transport is Transport.STARTTLS
    pre = await _preflight(run, started)
    if isinstance(pre, TargetReport):
        return pre
    dns_task = _dns_task(run)
    run.tls_next = _tls_battery_follows(run, pre.facts)
    try:
        results = await _first_battery(run, pre)
        results = await _retry_deferred(run, results, pre.by_id, on_retry)
        results = await _around_relay_domains(run, pre.slots, results, pre.attempts)
        results = await _retry_deferred(run, results, pre.by_id, on_retry)  # what that battery met
        second = await _second_phase(run, pre, results)
    finally:
        await run.release()  # no session is kept past the phases that use them
    results.update(second.tls_battery)
    results.update(await _data_stage(run, results, watcher, on_status))
    lookups = await dns_task if dns_task is not None else _NO_LOOKUPS
    return _report(run, pre, results, second, lookups, started)


async def _preflight(run: Run, started: float) -> _Preflight | TargetReport:
    """Greeting, EHLO, then the postmaster control and the first round (the plain outside
    recipient at each outside domain) in one transaction: an open relay is proven here, on one
    connection. It also tells whether the server takes mail from us at all and whether it
    requires STARTTLS first (a 530 costs this session a few errors, well under any limit)."""
    target, options = run.target, run.options
    try:
        session, greeting, ehlo = await run.open()
    except FAILURES as exc:
        return _unreachable(target, exc, started, run)
    run.peer = session.peer_address
    facts = _session_facts(run, greeting, ehlo)
    if greeting.code != 220:
        await session.quit()
        return _refused_greeting(target, greeting, facts, run, started)
    slots = _slots(run, facts)
    facts = replace(facts, local_domain=slots.local_domain)
    probes = plan_probes(slots, optional=options.all_probes)
    postmaster = next(p for p in probes if p.role == "postmaster")
    head = [postmaster, *first_round([p for p in probes if p is not postmaster])]
    try:
        first = await run_chunk(session, head, facts.pipelining, quit_at_end=False)
    except FAILURES as exc:
        session.abort()
        return _unreachable(target, exc, started, run)
    if not any(item.probe is postmaster for item in first.done):
        session.abort()
        return _unreachable(target, first.failure or ConnectionClosed("no reply"), started, run)
    pre = _Preflight(session, facts, slots, probes, first, {item.probe.id: 1 for item in first.done})
    replies = [r for item in first.done for r in (item.mail, item.rcpt) if r is not None]
    if any(is_tls_required(r) for r in replies):
        pre.facts = replace(pre.facts, tls_required=True)
    return pre


def _session_facts(run: Run, greeting: Reply, ehlo: Ehlo | None) -> SessionFacts:
    return SessionFacts(
        banner=greeting,
        banner_host=banner_host(greeting),
        ehlo_host=ehlo.host if ehlo else None,
        extensions=ehlo.keywords if ehlo else (),
        esmtp=ehlo is not None,
        pipelining=ehlo is not None and ehlo.has("PIPELINING"),
        starttls_offered=ehlo is not None and ehlo.has("STARTTLS"),
        ip_literal=ip_literal(run.peer) if run.peer else None,
    )


VRFY_COST = 3  # the most errors VRFY/EXPN can add to a session (each may be refused)


async def _first_session(run: Run, pre: _Preflight) -> Ready:
    """The first session, for the battery: VRFY/EXPN are asked on it first (no session of their
    own), their refusals counted against its budget as the server counts them."""
    first = pre.first
    refusals = first.errors
    if run.options.hygiene.vrfy and not pre.facts.tls_required:
        pre.vrfy = await vrfy_replies(pre.session, pre.slots.local_domain)
        refusals += sum(1 for r in pre.vrfy if r is not None and not r.positive)
    return Ready(pre.session, pre.facts.pipelining, pending_mail=True, refusals=refusals, open_mail=first.open_mail)


async def _proven_at_once(run: Run, pre: _Preflight, controls: list[PlannedProbe]) -> dict[str, Observation]:
    """The first round proved an open relay: no other session is opened. The on-demand controls
    still run on the first session (one RCPT each): the catch-all control's refusal is the reply
    whose wording names the MTA, and the fix in the report is that MTA's."""
    session, tls = pre.session, pre.session.tls
    found: dict[str, Observation] = {}
    if controls:
        try:
            chunk = await run_chunk(
                session, controls, pre.facts.pipelining, reset_first=True, open_mail=pre.first.open_mail,
                quit_at_end=False,
            )
        except FAILURES as exc:
            chunk = Chunk([], exc)
        found = {
            item.probe.id: observation(item, tls=tls, connection=session.index, attempts=1) for item in chunk.done
        }
        found |= _not_run([c for c in controls if c.id not in found], chunk.stop or "no reply", session.index, tls=tls)
        if chunk.stop is not None:
            session.abort()
            return found
    try:
        await _first_session(run, pre)
    except FAILURES:
        session.abort()
        return found
    await session.quit()
    return found


def _sessions_ahead(run: Run, pre: _Preflight, waiting: int) -> int:
    """How many more sessions the battery will want for ``waiting`` probes, beyond what the first
    session's budget carries (VRFY/EXPN counted at their worst): opened at once, together."""
    options = run.options
    per_connection = max(1, options.probes_per_connection)
    spent = pre.first.errors + (VRFY_COST if options.hygiene.vrfy else 0)
    beyond = max(0, waiting - max(0, per_connection - spent))
    return min(options.max_connections - 1, -(-beyond // per_connection))


async def _first_battery(run: Run, pre: _Preflight) -> dict[str, Observation]:
    """The relay battery and the controls: over the first session and the ones opened once the
    first round has not proven the verdict; over STARTTLS when the server requires it (530) and
    the target is clear text."""
    plain_target = run.target.transport is Transport.PLAIN
    if pre.facts.tls_required and plain_target:
        await pre.session.quit()
        run.tls_phase = True
        hygiene = run.options.hygiene
        over_tls = await over_starttls(
            run,
            pre.probes,
            pre.slots,
            proof=_proof(run, pre.probes, {}),
            look=hygiene.tls,
            vrfy_domain=pre.slots.local_domain if hygiene.vrfy else None,
        )
        if over_tls.failure is None:
            pre.tls_seen, pre.vrfy = over_tls, over_tls.vrfy
        return over_tls.results
    tls = pre.session.tls
    results: dict[str, Observation] = {}
    for item in pre.first.done:
        seen = observation(item, tls=tls, connection=pre.session.index, attempts=1)
        results[item.probe.id] = seen
        if seen.stage is Stage.MAIL and item.mail.permanent and is_sender_refused(seen):
            run.refused_senders.setdefault((tls, item.probe.mail_from), item.mail)  # not sent again
        elif item.mail.positive:
            run.accepted_senders.add((tls, item.probe.mail_from))
    # In the proving order of the whole plan: the first round's sender first, so that the first
    # session carries on in the transaction the first round left open.
    rest, called = on_demand([p for p in proving_order(pre.probes) if p.id not in results])
    proof = _proof(run, pre.probes, results)
    if proof is not None and proof(results) and pre.first.stop is None:
        results.update(await _proven_at_once(run, pre, called))
        results.update(_not_run(rest, PROVEN, 0, tls=tls))
        return results
    openers: list[Opened] = []
    if pre.first.stop is None:
        openers.append(asyncio.ensure_future(_first_session(run, pre)))
    else:  # the server ended the first session: the probes it did not answer wait for the others
        pre.session.abort()
    to_send = [p for p in rest if (tls, p.mail_from) not in run.refused_senders]  # the others are settled unsent
    ahead = _sessions_ahead(run, pre, len(to_send)) if openers else run.options.max_connections
    openers += [asyncio.ensure_future(open_for_battery(run)) for _ in range(ahead)]
    found = await battery(run, rest, openers, pre.attempts, proof=proof, on_demand=called, park=True)
    results.update(found)
    results = await other_senders(run, pre.probes, pre.slots, results)
    needs_tls = [o for o in results.values() if o.reply is not None and is_tls_required(o.reply)]
    if not needs_tls or run.tls_phase or not plain_target:
        return results
    pre.facts = replace(pre.facts, tls_required=True)  # required for some commands only
    run.tls_phase = True
    await run.release()
    over_tls = await over_starttls(run, pre.probes, pre.slots, proof=_proof(run, pre.probes, {}))
    return results if over_tls.failure is not None else over_tls.results


@dataclass(frozen=True)
class TlsBattery:
    results: dict[str, Observation]
    failure: str | None = None  # why STARTTLS could not be used: the battery was not run
    tls_error: bool = False  # the failure was TLS's own (refused STARTTLS, failed handshake)
    # What its first session showed of TLS, when asked to look (``over_starttls(look=True)``)
    tls: TlsFacts | None = None
    auth_after_tls: tuple[str, ...] = ()
    vrfy: VrfyReplies | None = None  # asked on its first session (``vrfy_domain``)


async def _upgraded(kept: Ready, context: ssl.SSLContext | None) -> Ready | str | None:
    """STARTTLS on a clear-text session the battery kept: the session with its refusal budget as
    it stands (the server's error count survives STARTTLS), the reason its certificate did not
    verify, or None when this session cannot be used (a fresh one is tried instead). STARTTLS
    itself failing (refused, a broken handshake) raises ``TlsError``: the phase ends there, as it
    would on a fresh session."""
    session = kept.session
    try:
        if kept.pending_mail and not (await session.command("RSET")).positive:
            await session.quit()
            return None
        reply = await session.starttls(context)
        if reply.code != 220:
            await session.quit()
            raise TlsError(f"STARTTLS refused: {reply}")
        _, ehlo = await session.ehlo()
    except CertificateUnverified as exc:
        return exc.reason
    except TlsError:
        raise
    except FAILURES:
        session.abort()
        return None
    if ehlo is None:
        await session.quit()
        return None
    return Ready(session, ehlo.has("PIPELINING"), refusals=kept.refusals, ehlo=ehlo)


async def _first_tls_session(run: Run, look: bool, kept: Ready | None = None) -> tuple[Ready, TlsFacts | None]:
    """The first session of a battery over STARTTLS: ``kept``, a clear-text session the battery
    kept, upgraded, else a new one. With ``look``, its handshake is the one the TLS findings come
    from (no inspection session of its own): made with the trust store; a certificate that does
    not verify costs that handshake, and a session without verification describes the certificate
    with the reason it did not verify."""
    context = verifying_tls_context() if look else None
    attempt = await _upgraded(kept, context) if kept is not None else None
    if attempt is None and look:
        try:
            attempt = await open_within_limit(replace(run, starttls_context=context))
        except CertificateUnverified as exc:
            attempt = exc.reason
    first = attempt if isinstance(attempt, Ready) else await open_within_limit(run)
    if not look:
        return first, None
    verify_error = attempt if isinstance(attempt, str) else None
    ssl_object = first.session.ssl_object
    if ssl_object is None:
        return first, TlsFacts(offered=True, error="no TLS state")
    return first, tls_facts(ssl_object, run.target.host, offered=True, verify_error=verify_error)


def _proof(run: Run, probes: Sequence[PlannedProbe], known: dict[str, Observation]) -> Proof | None:
    """When to stop sending relay probes: once the results (with ``known``, the results so far)
    prove the verdict. None when every probe must run: ``--exhaustive``, and the modes in which
    a later stage can still refuse (``--data-probe``, delivery mode)."""
    options = run.options
    if options.exhaustive or options.data_probe or options.confirm_address:
        return None
    checks = sum(1 for p in probes if p.domain_check)
    return lambda results: is_proven({**known, **results}.values(), domain_checks=checks)


async def over_starttls(
    run: Run,
    probes: list[PlannedProbe],
    slots: Slots,
    connections: int | None = None,
    *,
    proof: Proof | None = None,
    look: bool = False,
    kept: Ready | None = None,
    vrfy_domain: str | None = None,
) -> TlsBattery:
    """The battery over STARTTLS. One session is opened first: a STARTTLS that fails (454, a
    broken handshake) ends the phase at once, its probes reported as not run, instead of every
    probe failing on connection after connection. ``look``: that first session's handshake also
    gives the TLS facts; ``vrfy_domain``: VRFY/EXPN are asked on it too (a server that requires
    STARTTLS answers them only over TLS)."""
    tls_run = run if run.tls_phase else run.phase(True)
    try:
        first, seen = await _first_tls_session(tls_run, look, kept)
    except FAILURES as exc:
        why = f"STARTTLS could not be used: {exc}"
        return TlsBattery(_not_run(probes, why, len(run.sessions) - 1), why, isinstance(exc, TlsError))
    vrfy: VrfyReplies | None = None
    openers: list[Opened] = [ready(first)]
    if vrfy_domain is not None:
        try:
            vrfy = await vrfy_replies(first.session, vrfy_domain)
        except FAILURES:  # the session is gone: the battery opens its own
            first.session.abort()
            openers = []
        else:
            first.refusals += sum(1 for r in vrfy if r is not None and not r.positive)
    ordered, called = on_demand(proving_order(probes))
    found = await battery(
        tls_run,
        ordered,
        openers,
        {},
        connections=connections,
        proof=proof,
        head=len(first_round(ordered)),
        on_demand=called,
        park=True,
    )
    found = await other_senders(tls_run, probes, slots, found)
    run.limit = tls_run.limit or run.limit
    offered = auth_mechanisms(first.ehlo.keywords if first.ehlo else ()) if seen is not None else ()
    return TlsBattery(found, tls=seen, auth_after_tls=offered, vrfy=vrfy)


def _not_run(probes: Sequence[PlannedProbe], why: str, connection: int, *, tls: bool = True) -> dict[str, Observation]:
    return {p.id: skipped(p, why, tls=tls, connection=max(0, connection)) for p in probes}


async def other_senders(
    run: Run, probes: list[PlannedProbe], slots: Slots, results: dict[str, Observation]
) -> dict[str, Observation]:
    """Probes whose sender was refused (at MAIL, or at RCPT for the sender) run again with the
    null sender, then with a sender in the server's own domain: a refused sender says nothing
    about relaying. A probe keeps its first observation when every sender was refused."""
    by_id = {p.id: p for p in probes}
    for sender in ("<>", f"<{slots.spoof_local_part}@{slots.local_domain}>"):
        refused = [o for o in results.values() if o.probe_id in by_id and is_sender_refused(o)]
        again = proving_order([replace(by_id[o.probe_id], mail_from=sender) for o in refused if o.mail_from != sender])
        if not again:
            continue
        proof = _proof(run, probes, results)
        waiting = _waiting_controls(results, by_id)
        found = await battery(
            run, again, [], {}, proof=proof, head=len(first_round(again)), on_demand=waiting, park=True
        )
        for probe_id, obs in found.items():
            if not is_sender_refused(obs) and obs.outcome is not Outcome.ERROR:
                first = results[probe_id]
                results[probe_id] = replace(obs, refused_sender=first.refused_sender or first.reply)
    return results


TLS_SUFFIX = "/tls"  # ids of the relay battery repeated over STARTTLS


@dataclass(frozen=True)
class _SecondPhase:
    tls_battery: dict[str, Observation]
    inspection: SessionInspection | None
    auth_bypass: tuple[Reply | None, Reply | None]
    tls_failure: str | None = None  # the battery over STARTTLS could not run: TLS's own failure


def _tls_battery_follows(run: Run, facts: SessionFacts) -> bool:
    """The relay battery runs again over STARTTLS after the clear-text one (relay policy can
    differ after TLS): offered, not required (then the first battery is already over TLS)."""
    return (
        run.options.hygiene.tls_battery
        and facts.starttls_offered
        and not facts.tls_required
        and run.target.transport is Transport.PLAIN
    )


async def _second_phase(run: Run, pre: _Preflight, results: dict[str, Observation]) -> _SecondPhase:
    """After the battery: the battery again over STARTTLS (relay policy can differ after TLS),
    the inspection session (VRFY, certificate) and the optional AUTH-bypass check, together
    and within the per-host connection limit (one after another when the server has shown a
    per-client limit)."""
    options, hygiene, facts, slots = run.options, run.options.hygiene, pre.facts, pre.slots
    target = run.target
    tls_possible = facts.starttls_offered or target.transport is Transport.TLS
    vrfy_done = pre.vrfy is not None  # asked on the first session
    tls_battery = _tls_battery_follows(run, facts)
    # A clear-text session the battery kept with budget left: the battery over STARTTLS starts on it.
    kept = next((p for p in run.parked if not p.session.tls), None)
    run.parked[:] = [p for p in run.parked if p is not kept]
    await run.release()
    proof = _proof(run, pre.probes, {})
    proven = proof is not None and proof(results)
    look = hygiene.tls and tls_battery and not proven  # the TLS facts from the TLS battery's handshake
    seen = pre.tls_seen if pre.tls_seen is not None and pre.tls_seen.tls is not None else None
    # A session only when there is something to ask: VRFY, or a TLS handshake to look at.
    inspect = (hygiene.vrfy and not vrfy_done) or (hygiene.tls and tls_possible and not look and seen is None)
    spare = max(1, options.max_connections - int(inspect) - int(hygiene.auth_bypass))

    async def over_tls() -> TlsBattery:
        if (not tls_battery or proven) and kept is not None:
            await kept.session.quit()
        if not tls_battery:
            return TlsBattery({})
        if proven:  # nothing over STARTTLS can change the verdict
            relay = [replace(p, id=f"{p.id}{TLS_SUFFIX}") for p in pre.probes if p.kind is ProbeKind.RELAY]
            return TlsBattery(_not_run(relay, PROVEN, 0))
        found = await over_starttls(run, pre.probes, slots, connections=spare, look=look, kept=kept)
        renamed = {f"{k}{TLS_SUFFIX}": replace(v, probe_id=f"{k}{TLS_SUFFIX}") for k, v in found.results.items()}
        return replace(found, results=renamed)

    async def inspection() -> SessionInspection | None:
        vrfy = pre.vrfy or (None, None, None)
        if not inspect:
            no_tls = TlsFacts(offered=False) if hygiene.tls else None  # known without connecting
            return SessionInspection(no_tls, (), *vrfy)
        asked = replace(hygiene, vrfy=hygiene.vrfy and not vrfy_done, tls=hygiene.tls and not look and seen is None)
        inspected = await inspect_session(
            run.new_session, target.host, target.transport, facts.starttls_offered, asked, slots.local_domain,
            tls_required=facts.tls_required,
        )
        return replace(inspected, vrfy_postmaster=vrfy[0], vrfy_random=vrfy[1], expn_postmaster=vrfy[2]) if (
            vrfy_done
        ) else inspected

    async def bypass() -> tuple[Reply | None, Reply | None]:
        if not hygiene.auth_bypass:
            return None, None
        return await auth_bypass_check(
            run.new_session, target.transport, facts.starttls_offered, slots.sender_ext, slots.outside[0]
        )

    if run.limit is not None:  # the server limits sessions per client: one at a time
        found, inspected, bypassed = await over_tls(), await inspection(), await bypass()
    else:
        found, inspected, bypassed = await asyncio.gather(over_tls(), inspection(), bypass())
    await run.release()
    failure = found.failure if found.tls_error else None
    shown = found if look else seen  # what a battery's first STARTTLS handshake showed
    if shown is not None and inspected is not None:
        inspected = replace(inspected, tls=shown.tls, auth_after_tls=shown.auth_after_tls)
    return _SecondPhase(found.results, inspected, bypassed, failure)


async def _data_stage(
    run: Run, results: dict[str, Observation], watcher: ArrivalWatcher | None, on_status: Callable[[str], None] | None
) -> dict[str, Observation]:
    """--confirm: one test message per accepted relay probe; --data-probe: DATA, then hang up."""
    options = run.options
    accepted = [o for o in results.values() if o.kind is ProbeKind.RELAY and o.outcome is Outcome.ACCEPTED]
    if not accepted:
        return {}
    if options.confirm_address:
        return await _confirm(run, accepted, watcher, on_status)
    if options.data_probe:
        return await data_probe(run.open_phase, accepted, options.max_connections)
    return {}


_Lookups = tuple[tuple[str, ...] | None, bool | None, tuple[DnsblResult, ...] | None, str | None]
_NO_LOOKUPS: _Lookups = (None, None, None, None)


def _report(
    run: Run, pre: _Preflight, results: dict[str, Observation], second: _SecondPhase, lookups: _Lookups, started: float
) -> TargetReport:
    """The verdict, the findings and the report, from everything the phases collected."""
    options, target, facts = run.options, run.target, pre.facts
    order = [p.id for p in pre.probes] + [f"{p.id}{TLS_SUFFIX}" for p in pre.probes]
    observations = tuple(results[i] for i in order if i in results)
    bypass = AuthBypass(*second.auth_bypass) if options.hygiene.auth_bypass else None
    decision = decide(
        observations,
        tls_required=facts.tls_required,
        confirm_timeout=options.confirm_timeout if options.confirm_address else None,
        auth_bypass=bypass,
    )
    replies = [r for c in run.sessions for e in c.exchanges if (r := e.reply) is not None]
    identity = fingerprint(facts.banner, facts.extensions, replies)
    hygiene = _hygiene(target, facts, second, lookups, identity)
    verdict = decision.verdict
    if verdict.kind is VerdictKind.OPEN and verdict.confidence is not Confidence.AUTH_BYPASS:
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


def _hygiene(
    target: Target, facts: SessionFacts, second: _SecondPhase, lookups: _Lookups, identity: Fingerprint
) -> HygieneFacts:
    names, fcrdns, dnsbl, dns_note = lookups
    inspection = second.inspection or SessionInspection(None, (), None, None, None)
    tls = inspection.tls
    if second.tls_failure is not None and (tls is None or tls.established):
        tls = TlsFacts(offered=True, error=second.tls_failure)  # what the battery over STARTTLS met
    return HygieneFacts(
        ptr_names=names,
        fcrdns=fcrdns,
        tls=tls,
        auth_before_tls=auth_mechanisms(facts.extensions) if target.transport is not Transport.TLS else (),
        auth_after_tls=inspection.auth_after_tls,
        vrfy_postmaster=inspection.vrfy_postmaster,
        vrfy_random=inspection.vrfy_random,
        expn_postmaster=inspection.expn_postmaster,
        auth_bypass_reply=second.auth_bypass[0],
        auth_bypass_relay=second.auth_bypass[1],
        dnsbl=dnsbl,
        fingerprint=identity,
        dns_note=dns_note,
    )


def _dns_task(run: Run) -> asyncio.Future[_Lookups] | None:
    """PTR/FCrDNS/DNSBL lookups, started at once so that they overlap the SMTP work.

    Not for loopback, private or otherwise non-public addresses unless ``--resolver`` names a
    DNS server (one that knows the private zone): public DNS has nothing to say about them, and
    a blocklist query would only leak the address.
    """
    hygiene = run.options.hygiene
    if run.peer is None or not hygiene.needs_dns:
        return None
    if run.options.resolver is None and not ipaddress.ip_address(run.peer).is_global:
        skipped = f"PTR and DNSBL lookups skipped for the non-public address {run.peer}"
        return asyncio.ensure_future(_no_lookups(skipped))
    try:
        resolver = make_resolver(run.options.resolver)
    except RelaycheckError as exc:
        return asyncio.ensure_future(_no_lookups(f"PTR and DNSBL lookups failed: {exc}"))
    return asyncio.ensure_future(_lookups(resolver, run.peer, hygiene))


async def _no_lookups(note: str) -> _Lookups:
    return None, None, None, note


async def _lookups(resolver: Resolver, address: str, hygiene: HygieneOptions) -> _Lookups:
    names, fcrdns, dnsbl = await dns_facts(resolver, address, hygiene)
    failed = hygiene.ptr and names is None
    return names, fcrdns, dnsbl, "PTR lookup failed (timeout, server failure or no resolver)" if failed else None


async def _confirm(
    run: Run,
    accepted: list[Observation],
    watcher: ArrivalWatcher | None,
    on_status: Callable[[str], None] | None,
) -> dict[str, Observation]:
    """Delivery mode: one test message per proven path family, then wait for them to arrive."""
    options = run.options
    assert options.confirm_address is not None
    messages = one_per_family(accepted)
    sent = await deliver(
        run.open_phase,
        messages,
        limit=options.max_connections,
        confirm_address=options.confirm_address,
        target_label=replace(run.target, address=run.peer or run.target.address).label,
        operator=options.helo,
    )
    sent = {**sent, **spoken_for(accepted, sent)}
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
    waiting = _waiting_controls(results, {p.id: p for p in plan_probes(reordered, optional=run.options.all_probes)})
    found = await battery(run, again, [], attempts, on_demand=waiting, park=True)
    found = await other_senders(run, again, reordered, found)
    return {**results, **found}


async def _retry_deferred(
    run: Run,
    results: dict[str, Observation],
    by_id: dict[str, PlannedProbe],
    on_retry: Callable[[RetryWait], None] | None = None,
) -> dict[str, Observation]:
    """Retry 4xx-deferred probes with back-off until they clear or the budget is spent."""
    if run.retry_until is None:  # one budget for every round of the check
        run.retry_until = time.monotonic() + run.options.retry_budget
    budget_end = run.retry_until
    wait = run.options.retry_first_wait
    attempt = 0
    while True:
        # the envelope as last sent: a stand-in sender when the probe's own was refused
        deferred = [
            replace(by_id[o.probe_id], mail_from=o.mail_from, rcpt_to=o.rcpt_to, outside_domain=o.outside_domain)
            for o in results.values()
            if o.outcome is Outcome.DEFERRED
        ]
        left = budget_end - time.monotonic()
        if not deferred or left <= 0:
            return results
        attempt += 1
        if on_retry is not None:
            on_retry(RetryWait(attempt, len(deferred), min(wait, left), left))
        await run.release()  # no session is held through the wait
        await asyncio.sleep(min(wait, left))
        wait = min(wait * 2, 30.0)
        proof = _proof(run, list(by_id.values()), results)
        waiting = _waiting_controls(results, by_id)  # a trick accepted this time calls for them
        retried = await battery(run, deferred, [], {}, proof=proof, on_demand=waiting)  # each round its own drop budget
        for probe_id, obs in retried.items():
            previous = results[probe_id]
            if obs.outcome is Outcome.SKIPPED and previous.outcome is Outcome.SKIPPED:
                continue  # still not needed
            results[probe_id] = replace(obs, attempts=previous.attempts + 1, refused_sender=previous.refused_sender)


def _waiting_controls(results: dict[str, Observation], by_id: dict[str, PlannedProbe]) -> list[PlannedProbe]:
    """The on-demand controls no result has called for yet: a later battery (retries, other
    senders, the other outside domain) takes them along, should one of its results call."""
    return [
        by_id[o.probe_id]
        for o in results.values()
        if o.role in ON_DEMAND and o.outcome is Outcome.SKIPPED and o.probe_id in by_id
    ]


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

"""One target: preflight, spread the battery over a few connections, retries (DESIGN §5).

Speed comes from doing little: one preflight, at most ``max_connections`` connections at once,
each carrying a chunk of probes small enough to stay under typical error limits (Postfix slows
down after 10 errors in a session), the whole chunk pipelined in one write when the server
offers PIPELINING. Politeness comes from the same limits.
"""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace

from relaycheck.catalogue import PlannedProbe, Slots, plan_probes
from relaycheck.delivery import ArrivalWatcher, data_probe, deliver, mark_arrivals, sent_tokens
from relaycheck.dns import make_resolver
from relaycheck.errors import ConnectError, ProtocolError, RelaycheckError, TlsError, TransportError
from relaycheck.findings import hygiene_findings, with_remediation
from relaycheck.fingerprint import fingerprint
from relaycheck.hygiene import HygieneOptions, SessionInspection, auth_bypass_check, dns_facts, inspect_session
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
    Stage,
    Target,
    TargetReport,
    Transport,
    Verdict,
    VerdictKind,
)
from relaycheck.remediation import fix_for
from relaycheck.smtp.session import PartialReplies, SessionConfig, SmtpSession
from relaycheck.smtp.wire import Ehlo, banner_host, mail_from, rcpt_to
from relaycheck.verdict import classify_reply, decide, is_tls_required, relay_domains_of

DEFAULT_OUTSIDE = ("relaycheck-probe@gmail.com", "relaycheck-probe@outlook.com")
MAX_ATTEMPTS = 3  # per probe, across dropped connections


def default_helo() -> str:
    name = socket.getfqdn()
    return name if "." in name and not name.startswith("localhost") else "relaycheck.invalid"


@dataclass(frozen=True)
class EngineOptions:
    ext_recipients: tuple[str, ...] = DEFAULT_OUTSIDE
    sender: str | None = None  # default: relaycheck@<second outside domain>
    local_domain: str | None = None
    helo: str = field(default_factory=default_helo)
    retry_budget: float = 0.0  # seconds to keep retrying deferred probes (greylisting)
    retry_first_wait: float = 1.0
    data_probe: bool = False
    confirm_address: str | None = None  # delivery mode: the operator's own mailbox
    confirm_timeout: float = 120.0  # seconds to wait for test messages to arrive
    max_connections: int = 3  # at once, per host
    # Refusable probes per connection. Postfix counts an error after each refusal and, once a
    # session has 10 (smtpd_soft_error_limit), sleeps 1 s before every later reply: 9 keeps
    # every reply prompt. The postmaster control (expected to be accepted) rides along free.
    probes_per_connection: int = 9
    all_probes: bool = False  # also the optional catalogue entries (the V26 literal control)
    connect_timeout: float = 10.0
    command_timeout: float = 30.0
    greeting_timeout: float = 30.0
    deadline: float = 300.0  # per target, on top of the retry budget
    hygiene: HygieneOptions = field(default_factory=HygieneOptions)
    resolver: str | None = None  # DNS server for PTR/DNSBL (IP[:PORT]); None: the system's

    @property
    def outside(self) -> tuple[str, ...]:
        """Outside recipients: in delivery mode only the operator's own address, ever."""
        return (self.confirm_address,) if self.confirm_address else self.ext_recipients

    @property
    def sender_address(self) -> str:
        if self.sender:
            return self.sender
        domain = self.outside[-1].rpartition("@")[2]
        return f"relaycheck@{domain}"


def ip_literal(address: str) -> str:
    ip = ipaddress.ip_address(address)
    return f"[IPv6:{ip.compressed}]" if ip.version == 6 else f"[{ip}]"


@dataclass
class _Run:
    """Mutable bookkeeping for one target (kept out of the pure layers)."""

    target: Target
    options: EngineOptions
    deadline: float
    on_exchange: Callable[[int, Exchange], None] | None = None
    sessions: list[SmtpSession] = field(default_factory=list)
    peer: str | None = None
    tls_phase: bool = False  # relay probes run over STARTTLS

    def new_session(self, transport: Transport | None = None, tls_context: ssl.SSLContext | None = None) -> SmtpSession:
        if transport is None:
            transport = (
                self.target.transport
                if self.target.transport is Transport.TLS
                else (Transport.STARTTLS if self.tls_phase else Transport.PLAIN)
            )
        session = SmtpSession(
            self.target.host,
            self.target.port,
            SessionConfig(
                helo_name=self.options.helo,
                connect_timeout=self.options.connect_timeout,
                greeting_timeout=self.options.greeting_timeout,
                command_timeout=self.options.command_timeout,
                deadline=self.deadline,
            ),
            address=self.peer or self.target.address or self.target.host,
            transport=transport,
            index=len(self.sessions),
            on_exchange=self.on_exchange,
            tls_context=tls_context,
        )
        self.sessions.append(session)
        return session

    async def open(self) -> tuple[SmtpSession, Reply, Ehlo | None]:
        """Connect, greet, EHLO (and STARTTLS + EHLO again in the TLS phase).

        Returns the session, the greeting and the parsed EHLO reply (None after a HELO
        fallback, or when the greeting refused us).
        """
        session = self.new_session()
        greeting = await session.connect()
        if greeting.code != 220:
            return session, greeting, None
        _, ehlo = await session.ehlo()
        if self.tls_phase and self.target.transport is not Transport.TLS:
            tls_reply = await session.starttls()
            if tls_reply.code != 220:
                raise TlsError(f"STARTTLS refused: {tls_reply}")
            _, ehlo = await session.ehlo()
        return session, greeting, ehlo

    def phase(self, tls: bool) -> _Run:
        """The same run (shared session list and peer) with relay probes over STARTTLS or not."""
        return replace(self, tls_phase=tls or self.target.transport is Transport.STARTTLS)

    async def open_phase(self, tls: bool) -> tuple[SmtpSession, Reply, Ehlo | None]:
        return await self.phase(tls).open()


def _transcript_lines(probes: Sequence[PlannedProbe], quit_at_end: bool, reset_first: bool = False) -> list[str]:
    lines: list[str] = []
    for number, probe in enumerate(probes):
        if number or reset_first:
            lines.append("RSET")
        lines += [mail_from(probe.mail_from), rcpt_to(probe.rcpt_to)]
    if quit_at_end:
        lines.append("QUIT")
    return lines


@dataclass(frozen=True)
class _ProbeReplies:
    probe: PlannedProbe
    mail: Reply
    rcpt: Reply | None  # None when MAIL was refused and RCPT not sent


def _observation(result: _ProbeReplies, *, tls: bool, connection: int, attempts: int) -> Observation:
    probe = result.probe
    if result.rcpt is None or result.mail.code // 100 != 2:
        stage, reply = Stage.MAIL, result.mail
    else:
        stage, reply = Stage.RCPT, result.rcpt
    classified = classify_reply(stage, reply)
    return _from_probe(
        probe,
        outcome=classified.outcome,
        stage=stage,
        reply=reply,
        reason=classified.reason,
        tls=tls,
        connection=connection,
        attempts=attempts,
    )


def _failed(probe: PlannedProbe, reason: str, *, attempts: int, connection: int) -> Observation:
    return _from_probe(
        probe,
        outcome=Outcome.ERROR,
        stage=Stage.CONNECT,
        reply=None,
        reason=reason,
        connection=connection,
        attempts=attempts,
    )


def _from_probe(
    probe: PlannedProbe,
    *,
    outcome: Outcome,
    stage: Stage,
    reply: Reply | None,
    reason: str,
    connection: int,
    attempts: int,
    tls: bool = False,
) -> Observation:
    """An observation of ``probe``: its envelope and catalogue flags, and what happened."""
    return Observation(
        probe_id=probe.id,
        kind=probe.kind,
        title=probe.title,
        mail_from=probe.mail_from,
        rcpt_to=probe.rcpt_to,
        outcome=outcome,
        stage=stage,
        reply=reply,
        reason=reason,
        outside_domain=probe.outside_domain,
        local_part_trick=probe.local_part_trick,
        domain_check=probe.domain_check,
        tls=tls,
        connection=connection,
        attempts=attempts,
    )


async def _run_chunk(
    session: SmtpSession, probes: Sequence[PlannedProbe], pipelining: bool, reset_first: bool = False
) -> tuple[list[_ProbeReplies], str | None]:
    """Run probes on an open session. Returns the completed ones and why it stopped early.

    ``reset_first``: a transaction is open on the session (the STARTTLS check): RSET it first.
    """
    done: list[_ProbeReplies] = []
    if pipelining:
        lines = _transcript_lines(probes, quit_at_end=True, reset_first=reset_first)
        try:
            replies = await session.pipeline(lines)
            stop = None
        except PartialReplies as partial:
            replies, stop = partial.replies, str(partial.cause)
        position = 0
        for number, probe in enumerate(probes):
            if number or reset_first:
                position += 1  # RSET
            if position + 1 >= len(replies):
                break
            mail, rcpt = replies[position], replies[position + 1]
            position += 2
            if 421 in (mail.code, rcpt.code):
                return done, f"server closed the session: {mail if mail.code == 421 else rcpt}"
            done.append(_ProbeReplies(probe, mail, rcpt))
        session.close()
        return done, stop
    try:
        for number, probe in enumerate(probes):
            if number or reset_first:
                await session.command("RSET")
            mail = await session.command(mail_from(probe.mail_from))
            if mail.code == 421:
                return done, f"server closed the session: {mail}"
            answer: Reply | None = None
            if mail.code // 100 == 2:
                answer = await session.command(rcpt_to(probe.rcpt_to))
                if answer.code == 421:
                    return done, f"server closed the session: {answer}"
            done.append(_ProbeReplies(probe, mail, answer))
    except PartialReplies as partial:
        return done, str(partial.cause)
    await session.quit()
    return done, None


@dataclass
class Ready:
    """A session ready for a chunk of the battery."""

    session: SmtpSession
    pipelining: bool
    pending_mail: bool = False  # a transaction is open (the preflight's check): RSET first
    refusals: int = 0  # refusals already spent on this session, counted against the budget


Opened = Awaitable[Ready]


async def _ready(ready: Ready) -> Ready:
    return ready


async def _transaction(session: SmtpSession, probe: PlannedProbe, pipelining: bool) -> _ProbeReplies:
    """One probe's MAIL and RCPT, leaving the transaction open (pipelined when allowed)."""
    if pipelining:
        mail, rcpt = await session.pipeline([mail_from(probe.mail_from), rcpt_to(probe.rcpt_to)])
        return _ProbeReplies(probe, mail, rcpt)
    mail = await session.command(mail_from(probe.mail_from))
    answer = await session.command(rcpt_to(probe.rcpt_to)) if mail.positive else None
    return _ProbeReplies(probe, mail, answer)


async def _open_for_battery(run: _Run) -> Ready:
    session, greeting, ehlo = await run.open()
    if greeting.code != 220:
        session.close()
        raise ConnectError(f"server refused the session: {greeting}")
    return Ready(session, ehlo is not None and ehlo.has("PIPELINING"))


async def _battery(
    run: _Run,
    probes: list[PlannedProbe],
    preopened: list[Opened],
    attempts: dict[str, int],
    connections: int | None = None,
) -> dict[str, Observation]:
    """Run ``probes`` over at most ``connections`` (default ``max_connections``) at once.

    Every probe may be refused, and each session carries at most ``probes_per_connection``
    refusals. ``preopened`` sessions (the preflight's, and ones opened while it ran) are used
    first. Chunks cut short (421, drop) are re-queued on fresh connections, with smaller chunks
    from then on: the server has told us its limit.
    """
    results: dict[str, Observation] = {}
    per_connection = max(1, run.options.probes_per_connection)
    queue: list[PlannedProbe] = list(probes)
    lock = asyncio.Lock()

    async def take(budget: int) -> list[PlannedProbe]:
        async with lock:
            chunk = queue[: max(1, budget)]
            del queue[: len(chunk)]
            return chunk

    async def worker() -> None:
        nonlocal per_connection
        while queue:
            index = len(run.sessions)
            chunk: list[PlannedProbe] = []
            try:
                ready = await (preopened.pop(0) if preopened else _open_for_battery(run))
                index = ready.session.index
                chunk = await take(per_connection - ready.refusals)
                if not chunk:
                    await ready.session.quit()
                    return
                for probe in chunk:
                    attempts[probe.id] = attempts.get(probe.id, 0) + 1
                done, stop = await _run_chunk(ready.session, chunk, ready.pipelining, reset_first=ready.pending_mail)
            except (TransportError, ProtocolError, PartialReplies) as exc:
                if not chunk:  # could not even open a session: give every waiting probe a try
                    chunk = await take(per_connection)
                    for probe in chunk:
                        attempts[probe.id] = attempts.get(probe.id, 0) + 1
                done, stop = [], str(exc)
            for item in done:
                results[item.probe.id] = _observation(
                    item,
                    tls=run.tls_phase or run.target.transport is Transport.TLS,
                    connection=index,
                    attempts=attempts[item.probe.id],
                )
            left = chunk[len(done) :]
            if not left:
                continue
            if done:
                per_connection = max(1, min(per_connection, len(done)))
            async with lock:
                for probe in left:
                    if attempts[probe.id] >= MAX_ATTEMPTS:
                        results[probe.id] = _failed(
                            probe, stop or "no reply", attempts=attempts[probe.id], connection=index
                        )
                    else:
                        queue.append(probe)

    limit = connections or run.options.max_connections
    workers = max(1, min(limit, -(-len(probes) // per_connection)))
    await asyncio.gather(*(worker() for _ in range(workers)))
    await _discard(preopened)
    return results


async def _discard(openers: list[Opened]) -> None:
    """Close sessions that were opened ahead but not needed."""
    for opener in openers:
        try:
            ready = await opener
        except (TransportError, ProtocolError, PartialReplies):
            continue
        await ready.session.quit()
    openers.clear()


async def _abandon(run: _Run, openers: list[Opened]) -> None:
    """The preflight failed: stop the connections opened ahead instead of waiting for them."""
    tasks = [asyncio.ensure_future(o) for o in openers]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for session in run.sessions:
        session.abort()
    openers.clear()


def _slots(run: _Run, facts: SessionFacts) -> Slots:
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


def _unreachable(target: Target, reason: str, started: float, run: _Run | None) -> TargetReport:
    return TargetReport(
        target=target,
        verdict=Verdict(
            VerdictKind.INCONCLUSIVE,
            Confidence.UNDETERMINED,
            f"The server could not be tested: {reason}.",
            (),
            "Check the host name and port, and that outbound connections to it are allowed "
            "from here (many networks block port 25).",
        ),
        connections=tuple(s.log() for s in run.sessions) if run else (),
        round_trips=sum(s.round_trips for s in run.sessions) if run else 0,
        duration=time.monotonic() - started,
        error=reason,
    )


async def check_target(
    target: Target,
    options: EngineOptions,
    *,
    on_exchange: Callable[[int, Exchange], None] | None = None,
    watcher: ArrivalWatcher | None = None,
    on_status: Callable[[str], None] | None = None,
) -> TargetReport:
    """Test one SMTP endpoint. Never raises for network trouble: it is reported instead."""
    started = time.monotonic()
    deadline = started + options.deadline + options.retry_budget
    run = _Run(target, options, deadline, on_exchange)
    run.tls_phase = target.transport is Transport.STARTTLS
    # Open the battery's other connections while the preflight runs: their setup round trips
    # overlap with the preflight's instead of following it.
    ahead: list[Opened] = [asyncio.ensure_future(_open_for_battery(run)) for _ in range(options.max_connections - 1)]
    try:
        session, greeting, ehlo = await run.open()
    except (TransportError, ProtocolError, PartialReplies) as exc:
        await _abandon(run, ahead)
        return _unreachable(target, str(exc), started, run)
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
        await _abandon(run, ahead)
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
        check = await _transaction(session, postmaster, facts.pipelining)
    except (TransportError, ProtocolError, PartialReplies) as exc:
        await _abandon(run, ahead)
        return _unreachable(target, str(exc), started, run)
    attempts[postmaster.id] = 1
    tls_first = any(r is not None and is_tls_required(r) for r in (check.mail, check.rcpt))
    if tls_first and not run.tls_phase and target.transport is Transport.PLAIN:
        facts = replace(facts, tls_required=True)
        run.tls_phase = True
        await session.quit()
        await _discard(ahead)  # clear-text sessions: of no use now
        results = await _battery(run, probes, [], {})
    else:
        results = {postmaster.id: _observation(check, tls=session.tls, connection=session.index, attempts=1)}
        refusals = sum(1 for r in (check.mail, check.rcpt) if r is not None and not r.positive)
        first = Ready(session, facts.pipelining, pending_mail=True, refusals=refusals)
        rest = [p for p in probes if p is not postmaster]
        results.update(await _battery(run, rest, [_ready(first), *ahead], attempts))
        needs_tls = [o for o in results.values() if o.reply is not None and is_tls_required(o.reply)]
        if needs_tls and not run.tls_phase and target.transport is Transport.PLAIN:
            facts = replace(facts, tls_required=True)  # required for some commands only
            run.tls_phase = True
            tls_results = await _battery(run, probes, [], {})
            if any(o.outcome is not Outcome.ERROR for o in tls_results.values()):
                results = tls_results

    results = await _retry_deferred(run, results, by_id, attempts)
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


async def _second_phase(run: _Run, probes: list[PlannedProbe], facts: SessionFacts, slots: Slots) -> _SecondPhase:
    """After the battery: the battery again over STARTTLS (relay policy can differ after TLS),
    the inspection session (VRFY, certificate) and the optional AUTH-bypass check, together
    and within the per-host connection limit."""
    options, hygiene = run.options, run.options.hygiene
    target = run.target
    inspect = hygiene.tls or hygiene.vrfy
    tls_battery = (
        hygiene.tls_battery
        and facts.starttls_offered
        and not facts.tls_required
        and target.transport is Transport.PLAIN
    )
    spare = max(1, options.max_connections - int(inspect) - int(hygiene.auth_bypass))

    async def battery() -> dict[str, Observation]:
        if not tls_battery:
            return {}
        found = await _battery(run.phase(True), probes, [], {}, connections=spare)
        return {f"{k}{TLS_SUFFIX}": replace(v, probe_id=f"{v.probe_id}{TLS_SUFFIX}") for k, v in found.items()}

    async def inspection() -> SessionInspection | None:
        if not inspect:
            return None
        return await inspect_session(
            run.new_session, target.host, target.transport, facts.starttls_offered, hygiene, slots.local_domain
        )

    async def bypass() -> tuple[Reply | None, Reply | None]:
        if not hygiene.auth_bypass:
            return None, None
        return await auth_bypass_check(
            run.new_session, target.transport, facts.starttls_offered, slots.sender_ext, slots.outside[0]
        )

    found, inspected, bypassed = await asyncio.gather(battery(), inspection(), bypass())
    return _SecondPhase(found, inspected, bypassed)


def _auth_mechanisms(extensions: Sequence[str]) -> tuple[str, ...]:
    for keyword in extensions:
        word, _, rest = keyword.partition(" ")
        if word == "AUTH":
            return tuple(m.upper() for m in rest.split())
    return ()


def _dns_task(
    run: _Run,
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
    run: _Run,
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
    arrivals = await watcher.wait_for(tokens, options.confirm_timeout)
    if on_status is not None:
        on_status(f"{run.target.label}: {len(arrivals)} of {len(tokens)} test message(s) arrived")
    return mark_arrivals(sent, arrivals, watcher.via)


async def _around_relay_domains(
    run: _Run, slots: Slots, results: dict[str, Observation], attempts: dict[str, int]
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
    return {**results, **await _battery(run, again, [], attempts)}


async def _retry_deferred(
    run: _Run,
    results: dict[str, Observation],
    by_id: dict[str, PlannedProbe],
    attempts: dict[str, int],
) -> dict[str, Observation]:
    """Retry 4xx-deferred probes with back-off until they clear or the budget is spent."""
    budget_end = time.monotonic() + run.options.retry_budget
    wait = run.options.retry_first_wait
    while True:
        deferred = [by_id[o.probe_id] for o in results.values() if o.outcome is Outcome.DEFERRED]
        left = budget_end - time.monotonic()
        if not deferred or left <= 0:
            return results
        await asyncio.sleep(min(wait, left))
        wait = min(wait * 2, 30.0)
        retried = await _battery(run, deferred, [], attempts)
        for probe_id, obs in retried.items():
            previous = results[probe_id]
            results[probe_id] = replace(obs, attempts=previous.attempts + 1)


def _refused_greeting(target: Target, greeting: Reply, facts: SessionFacts, run: _Run, started: float) -> TargetReport:
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

"""Running probes over a few SMTP connections: the battery.

One ``Run`` per target opens sessions (clear text, STARTTLS or implicit TLS). ``battery``
spreads the probes over at most ``max_connections`` sessions at once, each carrying a chunk of
at most ``probes_per_connection`` possible refusals, pipelined in one write when the server
offers PIPELINING; chunks cut short by a 421 or a drop are re-queued on fresh connections.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace

from relaycheck.catalogue import PlannedProbe
from relaycheck.errors import (
    ConnectError,
    ConnectionClosed,
    ConnectionLimited,
    ProtocolError,
    RelaycheckError,
    TlsError,
    TransportError,
)
from relaycheck.model import Exchange, Observation, Outcome, Reply, Stage, Target, Transport
from relaycheck.options import EngineOptions
from relaycheck.proof import ON_DEMAND, PROVEN, demands
from relaycheck.smtp.session import PartialReplies, SessionConfig, SmtpSession
from relaycheck.smtp.wire import Ehlo, mail_from, rcpt_to
from relaycheck.verdict import classify_reply, is_sender_refused

MAX_ATTEMPTS = 3  # per probe, across dropped connections
FAILURES = (TransportError, ProtocolError, PartialReplies)


@dataclass
class Run:
    """Mutable bookkeeping for one target (kept out of the pure layers)."""

    target: Target
    options: EngineOptions
    deadline: float
    on_exchange: Callable[[int, Exchange], None] | None = None
    sessions: list[SmtpSession] = field(default_factory=list)
    peer: str | None = None
    tls_phase: bool = False  # relay probes run over STARTTLS
    limit: int | None = None  # sessions at once the server allows us (learnt from a 421 greeting)
    chunk: int | None = None  # probes per session the server's error limit allows (learnt from a 421)
    retry_until: float | None = None  # the end of the retry budget for deferred probes, once started
    # Senders the server refused at MAIL (by TLS phase), with its reply: not sent again in this run.
    refused_senders: dict[tuple[bool, str], Reply] = field(default_factory=dict)
    accepted_senders: set[tuple[bool, str]] = field(default_factory=set)  # senders whose MAIL was accepted
    starttls_context: ssl.SSLContext | None = None  # for STARTTLS (None: any certificate)
    # Sessions a battery ended with refusal budget left, kept for the next battery of the check
    # (other senders, the other outside domain): it needs no session of its own for a few probes.
    parked: list[Ready] = field(default_factory=list)
    # The battery over STARTTLS follows the clear-text one: a clear-text session with budget left is
    # kept for it (STARTTLS on it, and the battery goes on there).
    tls_next: bool = False

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
            tls_reply = await session.starttls(self.starttls_context)
            if tls_reply.code != 220:
                raise TlsError(f"STARTTLS refused: {tls_reply}")
            _, ehlo = await session.ehlo()
        return session, greeting, ehlo

    async def release(self) -> None:
        """QUIT the parked sessions (before a wait, a new phase, the report): never held idle."""
        parked, self.parked[:] = list(self.parked), []
        await asyncio.gather(*(p.session.quit() for p in parked))

    def phase(self, tls: bool) -> Run:
        """The same run (shared session list and peer) with relay probes over STARTTLS or not."""
        return replace(self, tls_phase=tls or self.target.transport is Transport.STARTTLS)

    async def open_phase(self, tls: bool) -> tuple[SmtpSession, Reply, Ehlo | None]:
        return await self.phase(tls).open()


@dataclass(frozen=True)
class ProbeReplies:
    probe: PlannedProbe
    mail: Reply
    rcpt: Reply | None  # None when MAIL was refused and RCPT not sent


def observation(result: ProbeReplies, *, tls: bool, connection: int, attempts: int) -> Observation:
    probe = result.probe
    if result.rcpt is None or result.mail.code // 100 != 2:
        stage, reply = Stage.MAIL, result.mail
    else:
        stage, reply = Stage.RCPT, result.rcpt
    classified = classify_reply(stage, reply)
    return from_probe(
        probe,
        outcome=classified.outcome,
        stage=stage,
        reply=reply,
        reason=classified.reason,
        tls=tls,
        connection=connection,
        attempts=attempts,
    )


def failed(probe: PlannedProbe, reason: str, *, attempts: int, connection: int) -> Observation:
    return from_probe(
        probe,
        outcome=Outcome.ERROR,
        stage=Stage.CONNECT,
        reply=None,
        reason=reason,
        connection=connection,
        attempts=attempts,
    )


def from_probe(
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
        role=probe.role,
        tls=tls,
        connection=connection,
        attempts=attempts,
    )


def skipped(probe: PlannedProbe, why: str, *, tls: bool, connection: int = 0) -> Observation:
    """``probe`` was not run, and why: "not run: <why>"."""
    return from_probe(
        probe,
        outcome=Outcome.SKIPPED,
        stage=Stage.CONNECT,
        reply=None,
        reason=f"not run: {why}",
        connection=connection,
        attempts=0,
        tls=tls,
    )


MAX_RECIPIENTS = 50  # RCPTs in one transaction (RFC 5321 has servers take at least 100)


@dataclass(frozen=True)
class OpenMail:
    """A transaction left open on a session: its MAIL was accepted, more RCPTs may follow."""

    sender: str
    reply: Reply
    recipients: int


@dataclass
class Chunk:
    """What one chunk of probes produced on a session."""

    done: list[ProbeReplies]
    failure: RelaycheckError | None  # why the session ended early (a 421, a drop); None: still usable
    errors: int = 0  # 4xx/5xx replies the server counted against the session
    open_mail: OpenMail | None = None

    @property
    def stop(self) -> str | None:
        return None if self.failure is None else str(self.failure)


def envelopes(probes: Sequence[PlannedProbe], grouped: bool) -> list[list[PlannedProbe]]:
    """Probes that share a sender share one transaction (one MAIL, several RCPT): the server
    answers each RCPT on its own (RFC 5321), so the replies are those of one probe per MAIL."""
    if not grouped:
        return [[p] for p in probes]
    by_sender: dict[str, list[PlannedProbe]] = {}
    for probe in probes:
        by_sender.setdefault(probe.mail_from, []).append(probe)
    return [group[i : i + MAX_RECIPIENTS] for group in by_sender.values() for i in range(0, len(group), MAX_RECIPIENTS)]


@dataclass(frozen=True)
class _Step:
    reset: bool  # RSET first
    mail: bool  # MAIL first (else the open transaction carries on)
    probes: list[PlannedProbe]


def _steps(groups: list[list[PlannedProbe]], reset_first: bool, open_mail: OpenMail | None) -> list[_Step]:
    steps: list[_Step] = []
    for number, group in enumerate(groups):
        carries_on = (
            number == 0
            and open_mail is not None
            and open_mail.sender == group[0].mail_from
            and open_mail.recipients + len(group) <= MAX_RECIPIENTS
        )
        steps.append(_Step(reset=not carries_on and (number > 0 or reset_first), mail=not carries_on, probes=group))
    return steps


def _lines(steps: list[_Step]) -> list[str]:
    lines: list[str] = []
    for step in steps:
        lines += ["RSET"] * step.reset + [mail_from(step.probes[0].mail_from)] * step.mail
        lines += [rcpt_to(p.rcpt_to) for p in step.probes]
    return lines


def _typed(cause: Exception) -> RelaycheckError:
    return cause if isinstance(cause, RelaycheckError) else ConnectionClosed(str(cause))


def _closed(reply: Reply) -> ConnectionClosed:
    return ConnectionClosed(f"server closed the session: {reply}")


def _read_pipelined(
    steps: list[_Step], replies: list[Reply], open_mail: OpenMail | None, failure: RelaycheckError | None
) -> Chunk:
    """Pair the replies of a pipelined chunk with its probes (as far as they go)."""
    chunk = Chunk([], failure)
    position = 0

    def take() -> Reply | None:
        nonlocal position
        if position >= len(replies):
            return None
        position += 1
        return replies[position - 1]

    mail: Reply | None = open_mail.reply if open_mail is not None else None
    recipients = open_mail.recipients if open_mail is not None else 0
    for step in steps:
        if step.reset and (reset := take()) is not None and reset.code == 421:
            return replace(chunk, failure=_closed(reset), open_mail=None)
        if step.mail:
            mail, recipients = take(), 0
            if mail is None:
                return replace(chunk, open_mail=None)
            if mail.code == 421:
                return replace(chunk, failure=_closed(mail), open_mail=None)
            chunk.errors += not mail.positive
        assert mail is not None
        for probe in step.probes:
            rcpt = take()
            if rcpt is None:
                return replace(chunk, open_mail=None)
            if rcpt.code == 421:
                return replace(chunk, failure=_closed(rcpt), open_mail=None)
            chunk.errors += not rcpt.positive
            chunk.done.append(ProbeReplies(probe, mail, rcpt))
            recipients += 1
        chunk.open_mail = OpenMail(step.probes[0].mail_from, mail, recipients) if mail.positive else None
    return chunk


async def run_chunk(
    session: SmtpSession,
    probes: Sequence[PlannedProbe],
    pipelining: bool,
    reset_first: bool = False,
    *,
    grouped: bool = True,
    open_mail: OpenMail | None = None,
    quit_at_end: bool = True,
) -> Chunk:
    """Run probes on an open session: the completed ones, why it stopped early, the errors.

    ``reset_first``: a transaction is open on the session: RSET it first, unless ``open_mail``
    (its accepted MAIL) has the sender of the first group, which then carries on in it.
    ``quit_at_end``: QUIT once the chunk is answered, else the session stays open for another
    chunk. QUIT goes alone, not in the chunk's write: it ends our side of the stream at once
    (``SmtpSession.pipeline``), which Exim needs to send anything it holds back, and a FIN in
    the same write as the probes could cost their replies behind a middlebox that ends the whole
    connection on it.
    """
    steps = _steps(envelopes(probes, grouped), reset_first, open_mail)
    if pipelining:
        cause: Exception | None = None
        try:
            replies = await session.pipeline(_lines(steps))
        except PartialReplies as partial:
            replies, cause = partial.replies, partial.cause
        chunk = _read_pipelined(steps, replies, open_mail, None if cause is None else _typed(cause))
        if quit_at_end:
            if chunk.stop is None:
                await session.quit()
            else:
                session.close()
        return chunk
    chunk = Chunk([], None)
    try:
        mail = open_mail.reply if open_mail is not None else None
        recipients = open_mail.recipients if open_mail is not None else 0
        for step in steps:
            if step.reset and (reset := await session.command("RSET")).code == 421:
                return Chunk(chunk.done, _closed(reset), chunk.errors)
            if step.mail:
                mail, recipients = await session.command(mail_from(step.probes[0].mail_from)), 0
                if mail.code == 421:
                    return Chunk(chunk.done, _closed(mail), chunk.errors)
                chunk.errors += not mail.positive
            assert mail is not None
            for probe in step.probes:
                answer: Reply | None = None
                if mail.positive:
                    answer = await session.command(rcpt_to(probe.rcpt_to))
                    if answer.code == 421:
                        return Chunk(chunk.done, _closed(answer), chunk.errors)
                    chunk.errors += not answer.positive
                    recipients += 1
                chunk.done.append(ProbeReplies(probe, mail, answer))
            chunk.open_mail = OpenMail(step.probes[0].mail_from, mail, recipients) if mail.positive else None
    except PartialReplies as partial:
        return Chunk(chunk.done, _typed(partial.cause), chunk.errors)
    if quit_at_end:
        await session.quit()
    return chunk


@dataclass
class Ready:
    """A session ready for a chunk of the battery."""

    session: SmtpSession
    pipelining: bool
    pending_mail: bool = False  # a transaction is open (the preflight's check): RSET first
    refusals: int = 0  # refusals already spent on this session, counted against the budget
    open_mail: OpenMail | None = None  # the open transaction's accepted MAIL: more RCPTs may follow
    ehlo: Ehlo | None = None  # the session's last EHLO reply (after STARTTLS in the TLS phase)


Opened = Awaitable[Ready]


async def ready(ready: Ready) -> Ready:
    return ready


async def transaction(session: SmtpSession, probe: PlannedProbe, pipelining: bool) -> ProbeReplies:
    """One probe's MAIL and RCPT, leaving the transaction open (pipelined when allowed)."""
    if pipelining:
        mail, rcpt = await session.pipeline([mail_from(probe.mail_from), rcpt_to(probe.rcpt_to)])
        return ProbeReplies(probe, mail, rcpt)
    mail = await session.command(mail_from(probe.mail_from))
    answer = await session.command(rcpt_to(probe.rcpt_to)) if mail.positive else None
    return ProbeReplies(probe, mail, answer)


async def open_for_battery(run: Run) -> Ready:
    session, greeting, ehlo = await run.open()
    if greeting.code == 421:
        session.abort()  # at once: it must not count as one of our open sessions
        raise ConnectionLimited(f"server refused the session: {greeting}")
    if greeting.code != 220:
        session.close()
        raise ConnectError(f"server refused the session: {greeting}")
    return Ready(session, ehlo is not None and ehlo.has("PIPELINING"), ehlo=ehlo)


LIMIT_BACKOFF = (0.1, 0.2, 0.4, 0.8, 1.6, 3.2)  # seconds between tries when alone and refused with 421


async def open_within_limit(run: Run, opener: Opened | None = None, *, others: Callable[[], int] = lambda: 0) -> Ready:
    """A session for the battery; when the server answers 421 at the greeting (a per-client limit):
    raise ``ConnectionLimited`` if ``others()`` of our sessions are at work (use fewer in parallel),
    else wait and try again (the server may not have counted our last session as closed yet)."""
    for wait in (*LIMIT_BACKOFF, None):
        try:
            return await (opener if opener is not None else open_for_battery(run))
        except ConnectionLimited:
            opener = None
            if others() > 0 or wait is None or time.monotonic() + wait > run.deadline:
                raise
        await asyncio.sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover


Proof = Callable[[dict[str, Observation]], bool]  # the verdict is proven from these results


class _Battery:
    """The shared state of one ``battery`` call: the queue, the results, the sessions at work."""

    def __init__(
        self,
        run: Run,
        probes: list[PlannedProbe],
        preopened: list[Opened],
        attempts: dict[str, int],
        proof: Proof | None = None,
        on_demand: Sequence[PlannedProbe] = (),
    ) -> None:
        self.run = run
        # Controls that join the queue only when a result calls for them (``proof.demands``).
        self.on_demand = {p.role: p for p in on_demand if p.role in ON_DEMAND}
        self.queue = list(probes)
        self.preopened = preopened
        self.attempts = attempts
        self.proof = proof
        self.results: dict[str, Observation] = {}
        per_connection = run.options.probes_per_connection
        self.per_connection = max(1, min(per_connection, run.chunk or per_connection))
        self.lock = asyncio.Lock()
        self.opening = 0  # workers waiting for their session: each will take up to per_connection probes
        self.working = 0  # workers holding a session
        self.keep = False  # park sessions with budget left in ``idle`` instead of ending them
        self.park = False  # the same for the next battery, when one is coming (see ``holding``)
        # The sessions opened ahead take their first chunk in the order they were opened, whichever
        # comes up first: the same battery sends the same commands on the same session every time.
        self.dealt = 0  # sessions taken from ``preopened`` so far (their ticket is their rank)
        self.turn = 0  # the ticket whose first chunk is next
        self.turns = asyncio.Condition()
        # What the run knew of senders when this battery started: chunks do not depend on which
        # session happened to answer first (the same battery sends the same commands every time).
        self.refused = dict(run.refused_senders)
        self.accepted = set(run.accepted_senders)
        self.idle: list[Ready] = []

    @property
    def tls(self) -> bool:
        return self.run.tls_phase or self.run.target.transport is Transport.TLS

    def cost(self, probes: Sequence[PlannedProbe]) -> int:
        """The most errors ``probes`` can cost a session: one per RCPT, and one per MAIL whose sender
        may be refused (a server that refused a sender before). Postfix counts each of them."""
        wary = bool(self.refused)
        senders = {p.mail_from for p in probes if wary and (self.tls, p.mail_from) not in self.accepted}
        return len(probes) + len(senders)

    async def take(self, budget: int) -> list[PlannedProbe]:
        async with self.lock:
            size = 1
            while size < len(self.queue) and self.cost(self.queue[: size + 1]) <= budget:
                size += 1
            chunk = self.queue[:size]
            del self.queue[: len(chunk)]
            for probe in chunk:
                self.attempts[probe.id] = self.attempts.get(probe.id, 0) + 1
            return chunk

    async def wait_turn(self, ticket: int | None) -> None:
        if ticket is not None:
            async with self.turns:
                await self.turns.wait_for(lambda: self.turn >= ticket)

    async def pass_turn(self, ticket: int | None) -> None:
        if ticket is not None and self.turn <= ticket:
            async with self.turns:
                self.turn = max(self.turn, ticket + 1)
                self.turns.notify_all()

    async def session(self) -> tuple[Ready | str | None, int | None]:
        """A session, the reason none could be opened, or None: the server limits connections per
        client and the other workers carry on (this one retires); and the session's ticket when it
        was opened ahead."""
        if self.idle:
            return self.idle.pop(0), None
        self.opening += 1
        ticket: int | None = None
        try:
            opener = self.preopened.pop(0) if self.preopened else None
            if opener is not None:
                ticket, self.dealt = self.dealt, self.dealt + 1
            return await open_within_limit(self.run, opener, others=lambda: self.working), ticket
        except ConnectionLimited as exc:
            if self.working == 0:
                return str(exc), ticket
            self.run.limit = min(self.run.limit or self.working, self.working)
            return None, ticket
        except FAILURES as exc:
            return str(exc), ticket
        finally:
            self.opening -= 1

    async def worker(self) -> None:
        while self.queue:
            if not self.idle and not self.preopened and len(self.queue) <= self.opening * self.per_connection:
                # The sessions being opened will carry what is left: a new one would only say
                # EHLO and QUIT (seen under load, when the first chunk ends before they are up).
                return
            index = len(self.run.sessions)
            ready, ticket = await self.session()
            if ready is None or isinstance(ready, str):
                await self.pass_turn(ticket)
            if ready is None:
                return
            if isinstance(ready, str):  # could not even open a session: give waiting probes a try
                self.settle(await self.take(self.per_connection), [], ready, index)
                continue
            self.working += 1
            try:
                await self.use(ready, ticket)
            finally:
                self.working -= 1
                await self.pass_turn(ticket)

    async def use(self, ready: Ready, ticket: int | None = None) -> None:
        """Chunks on one session while its refusal budget lasts; then QUIT, or park it (``keep``)."""
        session = ready.session
        while True:
            budget = self.per_connection - ready.refusals
            await self.wait_turn(ticket)
            chunk: list[PlannedProbe] = []
            while not chunk and budget > 0 and self.queue:  # probes settled unsent leave room for more
                chunk = self.known_refused(await self.take(budget))
            await self.pass_turn(ticket)
            ticket = None
            hold = self.holding
            if not chunk:
                if self.queue or not hold or budget <= 0:
                    await session.quit()
                else:
                    self.idle.append(ready)
                return
            # The last chunk on this session: nothing left (nor a control its answers may call
            # for), or a chunk that may spend the whole budget.
            calls = bool(self.on_demand) and any(p.local_part_trick for p in chunk)
            last = (not self.queue and not hold and not calls) or self.cost(chunk) >= budget
            try:
                result = await run_chunk(
                    session,
                    chunk,
                    ready.pipelining,
                    reset_first=ready.pending_mail,
                    grouped=not self.run.options.one_by_one,
                    open_mail=ready.open_mail,
                    quit_at_end=last,
                )
            except FAILURES as exc:
                result = Chunk([], exc)
            self.settle(chunk, result.done, result.stop, session.index)
            self.check_proof()
            if result.stop is not None:
                if result.done:  # the server has told us its limit: smaller chunks from now on, in this run
                    errors = ready.refusals + result.errors
                    learnt = min(len(result.done), errors) if errors else len(result.done)
                    self.per_connection = max(1, min(self.per_connection, learnt))
                    self.run.chunk = self.per_connection
                session.abort()
                return
            if last:
                return
            ready.refusals += result.errors
            ready.pending_mail, ready.open_mail = True, result.open_mail

    @property
    def holding(self) -> bool:
        """Sessions with budget left are kept (QUIT not pipelined with their last chunk): for this
        battery's next round, or for the next battery once one is certain: a refused sender's
        probes go again with other senders, or the battery over STARTTLS follows."""
        return self.keep or (self.park and (bool(self.run.refused_senders) or self.run.tls_next))

    async def leave(self, park: bool) -> None:
        """The battery is done with its idle sessions: parked for the next one (the one with the
        most budget left), or ended."""
        idle = sorted(self.idle, key=lambda r: r.refusals)
        self.idle = []
        keep = [r for r in idle[:1] if park and r.refusals < self.per_connection and r.session.connected]
        self.run.parked += keep
        await discard([ready(r) for r in idle if r not in keep])

    def known_refused(self, chunk: list[PlannedProbe]) -> list[PlannedProbe]:
        """Settle at once the probes whose sender the server refused at MAIL earlier in this run
        (sending it again would only add errors towards its limit); the rest are to be sent."""
        refused = self.refused
        send: list[PlannedProbe] = []
        for probe in chunk:
            reply = refused.get((self.tls, probe.mail_from))
            if reply is None:
                send.append(probe)
                continue
            seen = observation(ProbeReplies(probe, reply, None), tls=self.tls, connection=0, attempts=0)
            self.results[probe.id] = replace(seen, reason=f"{seen.reason} (earlier in this run: not sent again)")
        return send

    def check_proof(self) -> bool:
        """Once the verdict is proven, the probes still waiting are not sent."""
        if self.proof is None or not self.proof(self.results):
            return False
        for probe in self.queue:
            self.results[probe.id] = skipped(probe, PROVEN, tls=self.tls)
        self.queue.clear()
        return True

    def call_for(self, found: Observation) -> None:
        """Queue the on-demand control ``found`` calls for (first in line: the proof may wait on
        it), with ``found``'s sender: the control must be judged as the probe was."""
        role = demands(found)
        control = self.on_demand.pop(role, None) if role is not None else None
        if control is not None:
            self.queue.insert(0, replace(control, mail_from=found.mail_from))

    def not_needed(self) -> None:
        """The on-demand controls no result called for: reported as not run, and why."""
        for role, control in self.on_demand.items():
            self.results[control.id] = skipped(control, ON_DEMAND[role], tls=self.tls)
        self.on_demand.clear()

    def settle(self, chunk: list[PlannedProbe], done: list[ProbeReplies], stop: str | None, index: int) -> None:
        """Record what a chunk produced; re-queue the rest, or give up on probes tried too often."""
        run = self.run
        for item in done:
            found = observation(item, tls=self.tls, connection=index, attempts=self.attempts[item.probe.id])
            self.results[item.probe.id] = found
            self.call_for(found)
            if found.stage is Stage.MAIL and item.mail.permanent and is_sender_refused(found):
                run.refused_senders.setdefault((self.tls, item.probe.mail_from), item.mail)
            elif item.mail.positive:
                run.accepted_senders.add((self.tls, item.probe.mail_from))
        left = chunk[len(done) :]
        for probe in left:
            if self.attempts[probe.id] >= MAX_ATTEMPTS:
                self.results[probe.id] = failed(
                    probe, stop or "no reply", attempts=self.attempts[probe.id], connection=index
                )
            else:
                self.queue.append(probe)


async def battery(
    run: Run,
    probes: list[PlannedProbe],
    preopened: list[Opened],
    attempts: dict[str, int],
    connections: int | None = None,
    *,
    proof: Proof | None = None,
    head: int = 0,
    on_demand: Sequence[PlannedProbe] = (),
    park: bool = False,
) -> dict[str, Observation]:
    """Run ``probes`` over at most ``connections`` (default ``max_connections``) at once.

    Every probe may be refused, and each session carries at most ``probes_per_connection``
    refusals. ``preopened`` sessions (the preflight's, and ones opened while it ran) are used
    first. Chunks cut short (421, drop) are re-queued on fresh connections, with smaller chunks
    from then on: the server has told us its limit. A session refused with 421 at the greeting
    while others are at work (a per-client connection limit) retires its worker: the battery
    goes on over fewer connections, and the run remembers the limit.

    ``proof``: once it holds for the results, the probes still waiting are reported as not run.
    ``head``: the first probes that may prove the verdict go alone on the first session; the
    others follow only if they did not (the order is the caller's: see ``proof.proving_order``).
    ``on_demand``: controls sent only when a result calls for them, else reported as not needed.
    ``park``: a session left with refusal budget is not ended but parked in ``run.parked`` for the
    next battery (whoever parks must ``run.release()`` before any wait); the sessions parked
    before this battery are always used first.
    """
    state = _Battery(run, probes, preopened, attempts, proof, on_demand)
    # The sessions an earlier battery parked (this phase's) are used before any new one.
    state.idle = [p for p in run.parked if p.session.tls == state.tls]
    run.parked[:] = [p for p in run.parked if p not in state.idle]
    if state.check_proof():  # proven before this battery started
        await discard(preopened)
        await state.leave(park)
        state.not_needed()
        return state.results
    if head and proof is not None and len(probes) > head:
        rest, state.queue = state.queue[head:], state.queue[:head]
        state.keep = True
        await state.worker()
        state.keep = False
        state.queue += rest
        if state.check_proof():
            await discard(state.preopened)
            await state.leave(False)
    state.park = park
    limit = min(connections or run.options.max_connections, run.limit or run.options.max_connections)
    workers = max(1, min(limit, -(-len(state.queue) // state.per_connection)))
    if state.queue:
        await asyncio.gather(*(state.worker() for _ in range(workers)))
    await discard(preopened)
    await state.leave(park)
    for probe in state.queue:  # not expected: every worker retired with probes still waiting
        state.results[probe.id] = failed(
            probe, "no session could be opened", attempts=attempts.get(probe.id, 0), connection=0
        )
    state.not_needed()
    return state.results


async def discard(openers: list[Opened]) -> None:
    """Close sessions that were opened ahead but not needed (together: one round trip, not one each)."""

    async def close(opener: Opened) -> None:
        try:
            ready = await opener
        except FAILURES:
            return
        await ready.session.quit()

    pending = list(openers)
    openers.clear()
    await asyncio.gather(*(close(o) for o in pending))


async def abandon(run: Run, openers: list[Opened]) -> None:
    """The preflight failed: stop the connections opened ahead instead of waiting for them."""
    tasks = [asyncio.ensure_future(o) for o in openers]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for session in run.sessions:
        session.abort()
    openers.clear()

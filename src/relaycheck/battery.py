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
from relaycheck.errors import ConnectError, ConnectionLimited, ProtocolError, TlsError, TransportError
from relaycheck.model import Exchange, Observation, Outcome, Reply, Stage, Target, Transport
from relaycheck.options import EngineOptions
from relaycheck.smtp.session import PartialReplies, SessionConfig, SmtpSession
from relaycheck.smtp.wire import Ehlo, mail_from, rcpt_to
from relaycheck.verdict import classify_reply

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

    def phase(self, tls: bool) -> Run:
        """The same run (shared session list and peer) with relay probes over STARTTLS or not."""
        return replace(self, tls_phase=tls or self.target.transport is Transport.STARTTLS)

    async def open_phase(self, tls: bool) -> tuple[SmtpSession, Reply, Ehlo | None]:
        return await self.phase(tls).open()


def transcript_lines(probes: Sequence[PlannedProbe], quit_at_end: bool, reset_first: bool = False) -> list[str]:
    lines: list[str] = []
    for number, probe in enumerate(probes):
        if number or reset_first:
            lines.append("RSET")
        lines += [mail_from(probe.mail_from), rcpt_to(probe.rcpt_to)]
    if quit_at_end:
        lines.append("QUIT")
    return lines


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


async def run_chunk(
    session: SmtpSession, probes: Sequence[PlannedProbe], pipelining: bool, reset_first: bool = False
) -> tuple[list[ProbeReplies], str | None]:
    """Run probes on an open session. Returns the completed ones and why it stopped early.

    ``reset_first``: a transaction is open on the session (the STARTTLS check): RSET it first.
    """
    done: list[ProbeReplies] = []
    if pipelining:
        lines = transcript_lines(probes, quit_at_end=True, reset_first=reset_first)
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
            done.append(ProbeReplies(probe, mail, rcpt))
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
            done.append(ProbeReplies(probe, mail, answer))
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
    return Ready(session, ehlo is not None and ehlo.has("PIPELINING"))


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


class _Battery:
    """The shared state of one ``battery`` call: the queue, the results, the sessions at work."""

    def __init__(
        self, run: Run, probes: list[PlannedProbe], preopened: list[Opened], attempts: dict[str, int]
    ) -> None:
        self.run = run
        self.queue = list(probes)
        self.preopened = preopened
        self.attempts = attempts
        self.results: dict[str, Observation] = {}
        per_connection = run.options.probes_per_connection
        self.per_connection = max(1, min(per_connection, run.chunk or per_connection))
        self.lock = asyncio.Lock()
        self.opening = 0  # workers waiting for their session: each will take up to per_connection probes
        self.working = 0  # workers holding a session

    async def take(self, budget: int) -> list[PlannedProbe]:
        async with self.lock:
            chunk = self.queue[: max(1, budget)]
            del self.queue[: len(chunk)]
            for probe in chunk:
                self.attempts[probe.id] = self.attempts.get(probe.id, 0) + 1
            return chunk

    async def session(self) -> Ready | str | None:
        """A session, the reason none could be opened, or None: the server limits connections per
        client and the other workers carry on (this one retires)."""
        self.opening += 1
        try:
            opener = self.preopened.pop(0) if self.preopened else None
            return await open_within_limit(self.run, opener, others=lambda: self.working)
        except ConnectionLimited as exc:
            if self.working == 0:
                return str(exc)
            self.run.limit = min(self.run.limit or self.working, self.working)
            return None
        except FAILURES as exc:
            return str(exc)
        finally:
            self.opening -= 1

    async def worker(self) -> None:
        while self.queue:
            if not self.preopened and len(self.queue) <= self.opening * self.per_connection:
                # The sessions being opened will carry what is left: a new one would only say
                # EHLO and QUIT (seen under load, when the first chunk ends before they are up).
                return
            index = len(self.run.sessions)
            ready = await self.session()
            if ready is None:
                return
            if isinstance(ready, str):  # could not even open a session: give waiting probes a try
                self.settle(await self.take(self.per_connection), [], ready, index)
                continue
            self.working += 1
            try:
                await self.use(ready)
            finally:
                self.working -= 1

    async def use(self, ready: Ready) -> None:
        chunk = await self.take(self.per_connection - ready.refusals)
        if not chunk:
            await ready.session.quit()
            return
        try:
            done, stop = await run_chunk(ready.session, chunk, ready.pipelining, reset_first=ready.pending_mail)
        except FAILURES as exc:
            done, stop = [], str(exc)
        self.settle(chunk, done, stop, ready.session.index)

    def settle(self, chunk: list[PlannedProbe], done: list[ProbeReplies], stop: str | None, index: int) -> None:
        """Record what a chunk produced; re-queue the rest, or give up on probes tried too often."""
        run = self.run
        for item in done:
            self.results[item.probe.id] = observation(
                item,
                tls=run.tls_phase or run.target.transport is Transport.TLS,
                connection=index,
                attempts=self.attempts[item.probe.id],
            )
        left = chunk[len(done) :]
        if done and left:  # the server has told us its limit: smaller chunks from now on, in this run
            self.per_connection = max(1, min(self.per_connection, len(done)))
            run.chunk = self.per_connection
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
) -> dict[str, Observation]:
    """Run ``probes`` over at most ``connections`` (default ``max_connections``) at once.

    Every probe may be refused, and each session carries at most ``probes_per_connection``
    refusals. ``preopened`` sessions (the preflight's, and ones opened while it ran) are used
    first. Chunks cut short (421, drop) are re-queued on fresh connections, with smaller chunks
    from then on: the server has told us its limit. A session refused with 421 at the greeting
    while others are at work (a per-client connection limit) retires its worker: the battery
    goes on over fewer connections, and the run remembers the limit.
    """
    state = _Battery(run, probes, preopened, attempts)
    limit = min(connections or run.options.max_connections, run.limit or run.options.max_connections)
    workers = max(1, min(limit, -(-len(probes) // state.per_connection)))
    await asyncio.gather(*(state.worker() for _ in range(workers)))
    await discard(preopened)
    for probe in state.queue:  # not expected: every worker retired with probes still waiting
        state.results[probe.id] = failed(
            probe, "no session could be opened", attempts=attempts.get(probe.id, 0), connection=0
        )
    return state.results


async def discard(openers: list[Opened]) -> None:
    """Close sessions that were opened ahead but not needed."""
    for opener in openers:
        try:
            ready = await opener
        except FAILURES:
            continue
        await ready.session.quit()
    openers.clear()


async def abandon(run: Run, openers: list[Opened]) -> None:
    """The preflight failed: stop the connections opened ahead instead of waiting for them."""
    tasks = [asyncio.ensure_future(o) for o in openers]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for session in run.sessions:
        session.abort()
    openers.clear()

"""Checks as asyncio tasks in the server process: admission, live progress, results into the store.

``Service.submit`` is the one way a check starts (the form, the re-test button and the API all
use it). In order, it: parses and vets the input (``guard``), applies the per-client and global
limits, resolves once and vets every address, joins a running or recent check of the same
*addresses* (one running test per address set, then a cooldown: aliases and other spellings of
one server are one server), leaves out addresses another check tested moments ago, stores the
plan, and starts the task. The task tests every vetted address with ``engine.check_target``
(connecting to that address only) and publishes progress per target and per probe, and the
greylisting retries with their waits, for the progress page and its event stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from relaycheck.api import Started, TargetSpec
from relaycheck.catalogue import Slots, plan_probes
from relaycheck.engine import EngineOptions, RetryWait, check_target
from relaycheck.errors import DnsError, ErrorKind, RelaycheckError, UsageError
from relaycheck.model import Exchange, InputProblem, Report, Target, TargetReport
from relaycheck.render.json import report_dict, target_dict
from relaycheck.report import EXIT_OK, EXIT_OPEN, summarize
from relaycheck.web import store as st
from relaycheck.web.guard import Plan, Refused, endpoint, parse_input, resolve
from relaycheck.web.settings import Settings

log = logging.getLogger("relaycheck.web")

MODES = ("probe", "data-probe")
LINES_KEPT = 6  # recent transcript lines shown per target while a check runs
LINE_CAP = 240  # characters of one progress line (server text can be long)
RESOLVING_PER_CLIENT = 8  # DNS resolutions at once per client (before any limit on checks applies)


class Limited(RelaycheckError):
    """Refused for now by a rate or capacity limit: HTTP ``status`` with ``Retry-After``."""

    kind = ErrorKind.LIMITED

    def __init__(self, status: int, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class Forbidden(Refused):
    """The request asks for something the operator has not enabled (e.g. data-probe mode)."""


def expected_probes(options: EngineOptions) -> int:
    """How many probes one target's battery plans (the progress bar's length)."""
    slots = Slots(
        outside=options.outside,
        sender_ext=options.sender_address,
        local_domain="example.test",
        host="mx.example.test",
        ip_literal="[192.0.2.1]",
        random_user="rc-progress",
    )
    return len(plan_probes(slots))


def web_options(settings: Settings, *, data_probe: bool) -> EngineOptions:
    """The engine options for one web check: probe mode (or data-probe when enabled), nothing more.

    Delivery mode and the AUTH-bypass check are never run from the web; DNS lookups the engine
    makes itself (PTR, DNSBL) go to the service's resolver; deferred probes (greylisting) are
    retried for the operator's retry budget (``settings.engine``), so that a web user never has
    to come back.
    """
    options = settings.engine
    return replace(
        options,
        data_probe=data_probe and settings.allow_data_probe,
        confirm_address=None,
        hygiene=replace(options.hygiene, auth_bypass=False),
        resolver=options.resolver or settings.resolver,
    )


def _line(exchange: Exchange) -> str:
    if exchange.sent is None:
        text = f"greeting: {exchange.reply}" if exchange.reply else (exchange.note or "")
    else:
        text = exchange.sent + (f" → {exchange.reply}" if exchange.reply else f" → ({exchange.note or 'no reply'})")
    return text if len(text) <= LINE_CAP else text[: LINE_CAP - 1] + "…"


@dataclass
class TargetProgress:
    label: str
    expected: int
    state: str = "waiting"  # waiting, testing, done
    answered: int = 0  # RCPT replies seen: one per probe decided (retries count again)
    lines: deque[str] = field(default_factory=lambda: deque(maxlen=LINES_KEPT))
    verdict: str | None = None
    retry: dict[str, Any] | None = None  # the greylisting wait under way, for the live page
    retries: int = 0  # retry rounds started

    def waiting(self, event: RetryWait) -> None:
        self.retries = event.attempt
        now = datetime.now(UTC)
        self.retry = {
            "attempt": event.attempt,
            "deferred": event.deferred,
            "wait_s": round(event.wait, 1),
            "at": (now + timedelta(seconds=event.wait)).isoformat(timespec="milliseconds"),
            "budget_ends": (now + timedelta(seconds=event.budget_left)).isoformat(timespec="seconds"),
        }

    def record(self, exchange: Exchange) -> None:
        if exchange.sent and exchange.sent.upper().startswith("RCPT TO:") and exchange.reply is not None:
            self.answered += 1
        if self.retry is not None and exchange.sent is not None:
            self.retry = self.retry | {"wait_s": 0.0}  # the retry round is on the wire
        line = _line(exchange)
        if line:
            self.lines.append(line)

    def as_dict(self) -> dict[str, Any]:
        done = self.expected if self.state == "done" else min(self.answered, self.expected)
        return {
            "label": self.label,
            "state": self.state,
            "done": done,
            "expected": self.expected,
            "lines": list(self.lines),
            "verdict": self.verdict,
            "retries": self.retries,
            "retry": self.retry if self.state == "testing" else None,
        }


class Progress:
    """Live state of one running check; ``wait`` wakes event streams when it changes."""

    def __init__(self, targets: list[TargetProgress]) -> None:
        self.targets = targets
        self.status = st.QUEUED
        self.finished = False
        self.version = 0
        self._changed = asyncio.Event()

    def touch(self) -> None:
        self.version += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait(self, seen: int, timeout: float) -> bool:
        """Wait until the version differs from ``seen``; False on timeout."""
        if self.version != seen:
            return True
        changed = self._changed
        try:
            async with asyncio.timeout(timeout):
                await changed.wait()
        except TimeoutError:
            return False
        return True

    def as_dict(self) -> dict[str, Any]:
        targets = [t.as_dict() for t in self.targets]
        return {
            "status": self.status,
            "done": sum(t["done"] for t in targets),
            "expected": sum(t["expected"] for t in targets),
            "targets": targets,
        }


def overall_verdict(report: Report) -> str:
    """One word for the whole check, consistent with the CLI's exit code."""
    code = summarize(report).exit_code
    return "open" if code == EXIT_OPEN else "closed" if code == EXIT_OK else "inconclusive"


def plan_dict(plan: Plan) -> dict[str, Any]:
    return {
        "host": plan.spec.host,
        "targets": [target_dict(t) | {"label": t.label} for t in plan.targets],
        "problems": [{"input": p.given, "problem": p.problem} for p in plan.problems],
    }


@dataclass(frozen=True)
class Submitted:
    row: st.CheckRow
    reused: bool  # an existing running or recent check of the same target was returned


class _AddressLock:
    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


Endpoint = tuple[str, int]  # (canonical address, port)


class Service:
    def __init__(self, settings: Settings, store: st.Store) -> None:
        self.settings = settings
        self.store = store
        self.progress: dict[str, Progress] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self._clients: dict[str, int] = {}  # client -> checks being prepared or running
        self._pending: dict[str, asyncio.Future[str | None]] = {}  # address key -> id being prepared
        self._running: dict[str, str] = {}  # address key -> id of its running check
        self._busy: dict[Endpoint, str] = {}  # address being tested -> id of the check testing it
        self._tested: dict[Endpoint, tuple[str, float]] = {}  # address -> (check id, monotonic end of cooldown)
        self._resolving: dict[str, int] = {}  # client -> DNS resolutions under way
        self._preparing = 0  # admitted checks still resolving
        self._locks: dict[tuple[str, int], _AddressLock] = {}
        self._expected = expected_probes(settings.engine)

    # -- reading ---------------------------------------------------------------------------

    async def get(self, check_id: str) -> st.CheckRow | None:
        return await asyncio.to_thread(self.store.get, check_id)

    async def history(self, target: str | Sequence[str], client: str) -> list[st.CheckRow]:
        """Recent checks of ``target``: only ``client``'s own unless the operator made history public."""
        only = None if self.settings.public_history else client
        return list(await asyncio.to_thread(self.store.history, target, self.settings.history_length, client=only))

    def retest_after(self, row: st.CheckRow) -> datetime | None:
        """When the target of ``row`` may be tested again (None: now, or not this row's business)."""
        if row.status == st.ERROR:
            return None
        if row.active:
            return datetime.now(UTC) + timedelta(seconds=self.settings.cooldown)
        moment = (row.finished or row.created) + timedelta(seconds=self.settings.cooldown)
        return moment if moment > datetime.now(UTC) else None

    # -- starting --------------------------------------------------------------------------

    async def submit(self, text: str, port: int | None, mode: str, client: str) -> Submitted:
        """Start a check, or return the running/recent one of the same addresses.

        Raises ``UsageError`` (malformed), ``Refused`` (not allowed: address, port, name),
        ``Forbidden`` (mode not enabled), ``DnsError`` (cannot resolve), ``Limited`` (429/503).
        """
        settings = self.settings
        if mode not in MODES:
            raise UsageError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
        if mode == "data-probe" and not settings.allow_data_probe:
            raise Forbidden("data-probe mode is not enabled on this service")
        spec, chosen = parse_input(text, port, ports=settings.ports, allow_private=settings.allow_private)
        plan = await self._resolve(spec, chosen, client)
        key = plan.key
        admitted = started = False
        try:
            # One running test per address set. No await between these checks and the
            # reservation below, so two simultaneous requests cannot both start one.
            while True:
                joined = self._running.get(key)
                pending = self._pending.get(key)
                if joined is None and pending is not None:  # being prepared by another request
                    joined = await asyncio.shield(pending)
                    if joined is None:  # that request failed (refused, limited): look again
                        continue
                if joined is not None:
                    row = await self.get(joined)
                    if row is not None:
                        return Submitted(row, reused=True)
                if self._pending.get(key) is None:
                    break
            future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
            self._pending[key] = future
            try:
                recent = await asyncio.to_thread(self.store.latest, key)
                if recent is not None and not recent.active and self.retest_after(recent) is not None:
                    future.set_result(recent.id)  # the cooldown: everybody gets the recent result
                    return Submitted(recent, reused=True)
                plan, covering = self._without_recent(plan)
                if not plan.targets:  # every address was tested moments ago by other checks
                    row = await self.get(covering) if covering else None
                    if row is not None:
                        future.set_result(row.id)
                        return Submitted(row, reused=True)
                    raise Limited(429, "this server was tested moments ago; try again later", settings.cooldown)
                self._admit(client)  # joining a check costs nothing; starting one takes a slot
                admitted = True
                row = await asyncio.to_thread(
                    self.store.create,
                    target=key,
                    given=spec.given,
                    port=chosen,
                    mode=mode,
                    plan=plan_dict(plan),
                    client=client,
                )
                self._start(row, plan, client)  # from here the task owns the client's slot
                started = True
                future.set_result(row.id)
                return Submitted(row, reused=False)
            finally:
                if not future.done():
                    future.set_result(None)
                del self._pending[key]
        finally:
            if admitted:
                self._preparing -= 1
                if not started:
                    self._release(client)

    async def _resolve(self, spec: TargetSpec, port: int, client: str) -> Plan:
        """Resolve and vet, at most ``RESOLVING_PER_CLIENT`` lookups at once per client."""
        if self._resolving.get(client, 0) >= RESOLVING_PER_CLIENT:
            raise Limited(429, "too many lookups at once from your address", retry_after=5)
        self._resolving[client] = self._resolving.get(client, 0) + 1
        try:
            settings = self.settings
            return await resolve(
                spec,
                port,
                resolver=settings.resolver,
                allow_private=settings.allow_private,
                max_targets=settings.max_targets,
            )
        finally:
            left = self._resolving[client] - 1
            if left:
                self._resolving[client] = left
            else:
                del self._resolving[client]

    def _without_recent(self, plan: Plan) -> tuple[Plan, str | None]:
        """Leave out the addresses another check is testing or tested within the cooldown.

        Returns the plan that is left and the id of a check that covers a left-out address.
        """
        now = time.monotonic()
        for gone in [e for e, (_, until) in self._tested.items() if until <= now]:
            del self._tested[gone]
        kept: list[Target] = []
        problems = list(plan.problems)
        covering: str | None = None
        for target in plan.targets:
            place = endpoint(target)
            busy = self._busy.get(place)
            tested = self._tested.get(place)
            if busy is None and tested is None:
                kept.append(target)
                continue
            covering = covering or busy or (tested[0] if tested else None)
            when = "is being tested by another check" if busy else "was tested moments ago by another check"
            why = f"not tested: {place[0]} port {place[1]} {when} (one test per server at a time)"
            problems.append(InputProblem(target.host, why))
        return replace(plan, targets=tuple(kept), problems=tuple(problems)), covering

    def _admit(self, client: str) -> None:
        settings = self.settings
        if self._clients.get(client, 0) >= settings.max_running_per_client:
            raise Limited(
                429,
                f"you already have {settings.max_running_per_client} tests running; wait for one to finish",
                retry_after=15,
            )
        if len(self.tasks) + self._preparing >= settings.max_running:
            raise Limited(503, "the service is busy with other tests; try again in a minute", retry_after=60)
        self._clients[client] = self._clients.get(client, 0) + 1
        self._preparing += 1

    def _release(self, client: str) -> None:
        left = self._clients.get(client, 0) - 1
        if left > 0:
            self._clients[client] = left
        else:
            self._clients.pop(client, None)

    def _start(self, row: st.CheckRow, plan: Plan, client: str) -> None:
        options = web_options(self.settings, data_probe=row.mode == "data-probe")
        progress = Progress([TargetProgress(t.label, self._expected) for t in plan.targets])
        self.progress[row.id] = progress
        task = asyncio.get_running_loop().create_task(self._run(row, plan, client, options, progress))
        self.tasks[row.id] = task
        self._running[row.target] = row.id
        for place in plan.endpoints:
            self._busy[place] = row.id

    @contextlib.asynccontextmanager
    async def _address(self, target: Target) -> AsyncIterator[None]:
        """One test at a time per address and port, whichever checks ask for it."""
        key = (target.address or target.host, target.port)
        entry = self._locks.setdefault(key, _AddressLock())
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._locks[key]

    async def _run(
        self, row: st.CheckRow, plan: Plan, client: str, options: EngineOptions, progress: Progress
    ) -> None:
        started = Started()
        gate = asyncio.Semaphore(max(1, self.settings.targets_at_once))

        async def one(shown: TargetProgress, target: Target) -> TargetReport:
            async with gate, self._address(target):
                shown.state = "testing"
                progress.touch()

                def hook(_index: int, exchange: Exchange) -> None:
                    shown.record(exchange)
                    progress.touch()

                def retrying(event: RetryWait) -> None:
                    shown.waiting(event)
                    progress.touch()

                # target.address is the vetted address: the engine connects there and nowhere else
                result = await check_target(target, options, on_exchange=hook, on_retry=retrying)
                shown.state = "done"
                shown.verdict = str(result.verdict.kind)
                shown.expected = len(result.observations)  # the real count, not the estimate
                progress.touch()
                return result

        try:
            await asyncio.to_thread(self.store.set_running, row.id)
            progress.status = st.RUNNING
            progress.touch()
            results = await asyncio.gather(*(one(s, t) for s, t in zip(progress.targets, plan.targets, strict=True)))
            report = started.report(results, plan.problems, row.mode)
            await asyncio.to_thread(
                self.store.finish, row.id, verdict=overall_verdict(report), report=report_dict(report)
            )
            progress.status = st.DONE
        except asyncio.CancelledError:
            self.store.fail(row.id, "interrupted: the service was stopped during the test")
            progress.status = st.ERROR
            raise
        except Exception:
            log.exception("check %s of %s failed", row.id, row.target)
            await asyncio.to_thread(
                self.store.fail, row.id, "the test stopped because of an internal error (it has been logged)"
            )
            progress.status = st.ERROR
        finally:
            progress.finished = True
            progress.touch()
            self.tasks.pop(row.id, None)
            self.progress.pop(row.id, None)
            self._running.pop(row.target, None)
            until = time.monotonic() + self.settings.cooldown
            for place in plan.endpoints:
                if self._busy.get(place) == row.id:
                    del self._busy[place]
                if progress.status == st.DONE:
                    self._tested[place] = (row.id, until)
            self._release(client)

    async def stop(self) -> None:
        """Cancel every running check (server shutdown); each is marked interrupted."""
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


__all__ = ["DnsError", "Forbidden", "Limited", "Refused", "Service", "Submitted", "UsageError"]

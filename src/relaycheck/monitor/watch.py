"""``watch``: test targets on a schedule, store every run, alert on a change.

One round checks every (input, port) in turn, with a random pause between targets (jitter, so a
fleet of watchers does not hit a server in step). Each run is stored with its full report in
the history store (the web UI's table), compared with the run before it, and, per alert channel,
with the state that channel last announced: a channel is alerted when the state differs, with
the before/after diff. A delivered alert records the state it announced, so the same state is
never announced twice; a failed one is retried (``deliver``), reported, recorded, and tried again
next round, still against the last state the channel did hear about.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from relaycheck.api import CheckOptions, check, parse_target
from relaycheck.history.changes import Change, diff, state_digest
from relaycheck.history.store import BASELINE, FAILED, SENT, CheckRow, Store
from relaycheck.monitor.channels import Channel, deliver
from relaycheck.monitor.payload import alert_payload
from relaycheck.render.json import report_dict
from relaycheck.report import EXIT_INCONCLUSIVE, EXIT_OK, EXIT_OPEN, summarize
from relaycheck.web.guard import target_key


@dataclass(frozen=True)
class Job:
    given: str
    host: str  # the input's host or domain, normalised
    port: int
    key: str  # host:port, the history key (the web UI's)


@dataclass(frozen=True)
class RunResult:
    job: Job
    row: CheckRow
    exit_code: int
    changes: tuple[Change, ...]  # against the run before
    failures: tuple[str, ...]  # alert channels that failed, with why


@dataclass(frozen=True)
class WatchSettings:
    check: CheckOptions
    channels: tuple[Channel, ...] = ()
    jitter: float = 10.0  # seconds, at most, between two targets of a round
    alert_attempts: int = 3
    alert_wait: float = 2.0


def jobs(inputs: Sequence[str], options: CheckOptions) -> list[Job]:
    """One job per input and port (an explicit host:port keeps its port). Raises UsageError."""
    out: list[Job] = []
    for given in inputs:
        spec = parse_target(given)
        for port in (spec.port,) if spec.port else (options.ports or (options.port,)):
            job = Job(given, spec.host, port, target_key(spec.host, port))
            if job not in out:
                out.append(job)
    return out


def overall(report: dict[str, Any]) -> str:
    code = report["summary"]["exit_code"]
    return "open" if code == EXIT_OPEN else "closed" if code == EXIT_OK else "inconclusive"


def combined_exit(codes: Sequence[int]) -> int:
    """``check``'s rule over several reports: any open wins, then any undecided."""
    if EXIT_OPEN in codes:
        return EXIT_OPEN
    return EXIT_INCONCLUSIVE if any(c != EXIT_OK for c in codes) else EXIT_OK


class Watcher:
    def __init__(self, store: Store, settings: WatchSettings, log: Callable[[str], None], warn: Callable[[str], None]):
        self.store = store
        self.settings = settings
        self.log = log  # one line per run and per change (stdout)
        self.warn = warn  # alert failures (stderr)

    async def round(self, round_jobs: Sequence[Job]) -> list[RunResult]:
        results = []
        for index, job in enumerate(round_jobs):
            if index and self.settings.jitter > 0:
                await asyncio.sleep(random.uniform(0, self.settings.jitter))
            results.append(await self.run(job))
        return results

    async def run(self, job: Job) -> RunResult:
        options = replace(self.settings.check, port=job.port, ports=None)
        report = await check([job.given], options)
        data = report_dict(report)
        # the web UI's plan shape: what was tested and what was left out
        plan = {"host": job.host, "targets": [t["target"] for t in data["targets"]], "problems": data["problems"]}
        row = await asyncio.to_thread(
            self.store.record, target=job.key, given=job.given, port=job.port, mode=report.mode, plan=plan,
            verdict=overall(data), report=data,
        )  # fmt: skip
        previous = await asyncio.to_thread(self.store.previous_done, job.key, row.created)
        changes = tuple(diff(previous.report if previous else None, data))
        stamp = row.created.isoformat(timespec="seconds")
        if previous is None:
            self.log(f"{stamp} {job.key} {row.verdict} (first run)")
        elif changes:
            self.log(f"{stamp} {job.key} {previous.verdict} -> {row.verdict}: CHANGED")
            for change in changes:
                self.log(f"    - {change.summary}")
        else:
            self.log(f"{stamp} {job.key} {row.verdict} (no change)")
        failures = await self.alert(job, row, previous)
        return RunResult(job, row, summarize(report).exit_code, changes, failures)

    async def alert(self, job: Job, row: CheckRow, previous: CheckRow | None) -> tuple[str, ...]:
        """Tell every channel whose last announced state differs from this run's."""
        assert row.report is not None
        digest = state_digest(row.report)
        failures: list[str] = []
        for channel in self.settings.channels:
            last = await asyncio.to_thread(self.store.last_sent, job.key, channel.name)
            if last is None:  # a new channel starts from the run before (or this one, for a new target)
                start = previous or row
                assert start.report is not None
                last_state, last_id = state_digest(start.report), start.id
                await asyncio.to_thread(
                    self.store.add_alert, target=job.key, channel=channel.name, check_id=last_id, state=last_state,
                    status=BASELINE, attempts=0, error=None,
                )  # fmt: skip
            else:
                last_state, last_id = last.state, last.check_id
            if last_state == digest:
                continue
            reference = (
                previous
                if previous is not None and previous.id == last_id
                else await asyncio.to_thread(self.store.get, last_id)
            )
            before_report = reference.report if reference else None
            changes = diff(before_report, row.report)
            from relaycheck import __version__

            payload = alert_payload(
                target=job.key,
                given=job.given,
                before=(last_id, before_report, reference.verdict if reference else None),
                after=(row.id, row.report, row.verdict or "inconclusive"),
                changes=changes,
                sent=datetime.now(UTC).isoformat(timespec="seconds"),
                tool_version=__version__,
            )
            outcome = await asyncio.to_thread(
                deliver, channel, payload, attempts=self.settings.alert_attempts, wait=self.settings.alert_wait
            )
            await asyncio.to_thread(
                self.store.add_alert, target=job.key, channel=channel.name, check_id=row.id, state=digest,
                status=SENT if outcome.ok else FAILED, attempts=outcome.attempts, error=outcome.error,
            )  # fmt: skip
            if not outcome.ok:
                message = f"alert for {job.key} via {channel.name} failed after {outcome.attempts} attempt(s): " + (
                    f"{outcome.error}; it will be tried again after the next run"
                )
                self.warn(message)
                failures.append(message)
        return tuple(failures)


async def watch_loop(
    watcher: Watcher,
    round_jobs: Sequence[Job],
    *,
    interval: float,
    once: bool = False,
    exit_on_change: bool = False,
    after_round: Callable[[list[RunResult]], None] | None = None,
) -> int:
    """Rounds until ``once`` or, with ``exit_on_change``, a round with a change; the exit code
    is that round's, by ``check``'s rules. Cancel the task to stop a watch that runs forever."""
    while True:
        results = await watcher.round(round_jobs)
        if after_round is not None:
            after_round(results)
        if once or (exit_on_change and any(r.changes for r in results)):
            return combined_exit([r.exit_code for r in results])
        await asyncio.sleep(interval)

"""PURE: one JSON Lines record per target and port: status taxonomy, verdict, evidence summary.

A record embeds the verdict and evidence fields of ``relaycheck check --json``
(``render.json.target_report_dict``), so a scan and a check of the same host say the same thing
in the same words. ``status`` says whether the test could run at all, from a closed set modelled
on zgrab2's: ``ok`` (SMTP conversation held; the verdict stands), ``excluded``, ``refused``,
``timeout``, ``not-smtp``, ``tls-error``, ``protocol-error``, ``error``.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from relaycheck.errors import ErrorKind
from relaycheck.model import ConnectionLog, TargetReport
from relaycheck.render.json import target_report_dict
from relaycheck.scan.targets import Item, Kind, record_key

if TYPE_CHECKING:
    from relaycheck.scan.output import JsonlOutput

RECORD_VERSION = 1


class Status(StrEnum):
    OK = "ok"
    EXCLUDED = "excluded"
    REFUSED = "refused"
    TIMEOUT = "timeout"
    NOT_SMTP = "not-smtp"
    TLS_ERROR = "tls-error"
    PROTOCOL_ERROR = "protocol-error"
    ERROR = "error"


@dataclass
class ConnectStats:
    """What the scan's event loop saw of one target's TCP connects (the engine's messages do not
    keep the errno: asyncio reports every failed connect as "Connect call failed")."""

    attempts: int = 0
    opened: int = 0
    errnos: list[int] = field(default_factory=list)


# The failure kinds that have a status of their own; every other kind is ``error``.
_STATUS_OF_KIND = {
    ErrorKind.TLS: Status.TLS_ERROR,
    ErrorKind.TIMEOUT: Status.TIMEOUT,
    ErrorKind.REFUSED: Status.REFUSED,
}


def _greeted(connections: tuple[ConnectionLog, ...]) -> bool:
    return any(e.sent is None and e.reply is not None for c in connections for e in c.exchanges)


def status_of(report: TargetReport, stats: ConnectStats | None = None) -> Status:
    """Map the kind of the engine's failure (and the connect errnos) onto the status taxonomy."""
    if report.error is None:
        return Status.OK
    if stats is not None and stats.opened == 0 and stats.errnos:
        if errno.ECONNREFUSED in stats.errnos:
            return Status.REFUSED
        if errno.ETIMEDOUT in stats.errnos:
            return Status.TIMEOUT
    if report.error_kind is ErrorKind.PROTOCOL:
        return Status.PROTOCOL_ERROR if _greeted(report.connections) else Status.NOT_SMTP
    return _STATUS_OF_KIND.get(report.error_kind, Status.ERROR) if report.error_kind else Status.ERROR


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _base(key: str, item: Item, *, ip: str | None, host: str | None, domain: str | None) -> dict[str, Any]:
    return {
        "key": key,
        "ip": ip,
        "port": item.port,
        "host": host,
        "domain": domain,
        "input": item.given,
        "tag": item.tag,
    }


def _evidence(report: TargetReport) -> list[dict[str, Any]]:
    """The observations the verdict rests on, in the verdict's order, one line each (the full list
    is in ``--full``)."""
    by_id = {o.probe_id: o for o in report.observations}
    return [
        {
            "probe_id": o.probe_id,
            "mail_from": o.mail_from,
            "rcpt_to": o.rcpt_to,
            "outcome": str(o.outcome),
            "stage": str(o.stage),
            "reply": str(o.reply) if o.reply is not None else None,
            "tls": o.tls,
        }
        for o in (by_id.get(i) for i in report.verdict.evidence)
        if o is not None
    ]


def report_record(key: str, item: Item, report: TargetReport, *, stats: ConnectStats | None = None,
                  full: bool = False) -> dict[str, Any]:
    """The record of a target the engine tested (whatever came of it), under the key it was
    claimed with (``ip|port|name`` computed before the test)."""
    target = report.target
    ip = key.split("|", 1)[0]
    record = _base(key, item, ip=ip, host=target.host if target.host != ip else None,
                   domain=target.domain)
    status = status_of(report, stats)
    if full:
        result = target_report_dict(report)
    else:  # the same fields without the two big lists (not built, then thrown away: CPU per host)
        result = target_report_dict(replace(report, observations=(), connections=()))
        result["connections"] = len(report.connections)
        del result["transcripts"], result["observations"]
    record.update(
        status=str(status),
        verdict=str(report.verdict.kind),
        confidence=str(report.verdict.confidence),
        error=report.error,
        error_kind=str(report.error_kind) if report.error_kind is not None else None,
        banner=str(report.facts.banner) if report.facts.banner is not None else None,
        evidence=_evidence(report),
        findings=[f.code for f in report.findings],
        result=result,
        connections_opened=stats.opened if stats is not None else len(report.connections),
        time=now(),
        duration_s=round(report.duration, 4),
        v=RECORD_VERSION,
    )
    return record


def excluded_record(item: Item, reason: str, *, ip: str | None = None, host: str | None = None,
                    domain: str | None = None) -> dict[str, Any]:
    """A target (or a whole excluded range of an input block) that was not touched, and why."""
    if item.kind is Kind.EXCLUDED:
        key, ip = item.key, item.block
    else:
        key = record_key(ip, item.port, item.name) if ip is not None else item.key
    record = _base(key, item, ip=ip, host=host, domain=domain if domain is not None else item.name)
    record.update(status=str(Status.EXCLUDED), verdict=None, error=f"excluded: {reason}", time=now(),
                  v=RECORD_VERSION)
    return record


def error_record(item: Item, message: str, *, ip: str | None = None) -> dict[str, Any]:
    """No test happened: unreadable input, DNS failure, null MX, a chunk that kept failing."""
    key = item.key if ip is None else record_key(ip, item.port, item.name)
    record = _base(key, item, ip=ip if ip is not None else item.ip, host=None, domain=item.name)
    record.update(status=str(Status.ERROR), verdict=None, error=message, time=now(), v=RECORD_VERSION)
    return record


def deliver(writer: JsonlOutput, record: dict[str, Any], on_record: Callable[[dict[str, Any]], None] | None) -> bool:
    """A front's last step for a finished record: write it once and show it; False for a
    duplicate (its key is in the file already)."""
    if not writer.write(record):
        return False
    if on_record is not None:
        on_record(record)
    return True


def admit(
    item: Item, writer: JsonlOutput, write: Callable[[dict[str, Any]], None], duplicate: Callable[[], None]
) -> tuple[str, ...] | None:
    """The front's filter for one input, before a target is sent to a worker (``--workers``, Dask).

    Excluded and invalid inputs are written here (``write``); an address already in the file or
    in flight is dropped (``duplicate`` counts it). Returns ``None`` when there is nothing to test,
    else the keys already written for the item's name (``()`` for an address), which the worker
    must not test again.
    """
    if item.kind is Kind.EXCLUDED:
        if writer.claim(item.key):
            write(excluded_record(item, item.reason or "excluded"))
        return None
    if item.kind is Kind.INVALID:
        if writer.claim(item.key):
            write(error_record(item, f"invalid input: {item.reason}"))
        return None
    if item.kind is Kind.ADDRESS:
        if not writer.claim(item.key):
            duplicate()
            return None
        return ()
    assert item.name is not None
    return tuple(writer.keys_for_name(item.name))

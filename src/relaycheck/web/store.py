"""Storage of checks with SQLAlchemy 2 (SQLite file by default, any SQLAlchemy URL otherwise).

One table, ``checks``: what was asked, what was planned (the vetted targets), the status and the
report in the same versioned JSON as ``relaycheck check --json``. The store is synchronous;
the web app calls it through a thread so a slow database never blocks the event loop.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Row

QUEUED, RUNNING, DONE, ERROR = "queued", "running", "done", "error"
STATUSES = (QUEUED, RUNNING, DONE, ERROR)

metadata = MetaData()
checks = Table(
    "checks",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("target", String(300), nullable=False, index=True),  # host:port, the cooldown/history key
    Column("input", String(300), nullable=False),  # what the user typed
    Column("port", Integer, nullable=False),
    Column("mode", String(16), nullable=False),
    Column("created", DateTime(timezone=True), nullable=False, index=True),
    Column("finished", DateTime(timezone=True)),
    Column("status", String(16), nullable=False),
    Column("verdict", String(16)),  # open / closed / inconclusive, when done
    Column("plan", Text, nullable=False),  # JSON: the vetted targets and what was left out
    Column("report", Text),  # JSON report (docs/report-schema.md), when done
    Column("error", Text),  # a message fit for the user, when status is error
)


def now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)  # SQLite gives naive values back


@dataclass(frozen=True)
class CheckRow:
    id: str
    target: str
    input: str
    port: int
    mode: str
    created: datetime
    finished: datetime | None
    status: str
    verdict: str | None
    plan: dict[str, Any]
    report: dict[str, Any] | None
    error: str | None

    @property
    def active(self) -> bool:
        return self.status in (QUEUED, RUNNING)


def _row(row: Row[Any], with_report: bool = True) -> CheckRow:
    m = row._mapping
    created = _aware(m["created"])
    assert created is not None
    return CheckRow(
        id=m["id"],
        target=m["target"],
        input=m["input"],
        port=m["port"],
        mode=m["mode"],
        created=created,
        finished=_aware(m["finished"]),
        status=m["status"],
        verdict=m["verdict"],
        plan=json.loads(m["plan"]),
        report=json.loads(m["report"]) if with_report and m["report"] else None,
        error=m["error"],
    )


def new_id() -> str:
    """Unguessable, URL-safe: permalinks cannot be enumerated."""
    return secrets.token_urlsafe(9)


def make_engine(url: str) -> Engine:
    """An engine for ``url``; a bare path means an SQLite file."""
    if "://" not in url:
        url = f"sqlite:///{url}"
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            if ":memory:" not in url and url not in ("sqlite://", "sqlite:///"):
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


class Store:
    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        metadata.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def create(self, *, target: str, given: str, port: int, mode: str, plan: dict[str, Any]) -> CheckRow:
        values = {
            "id": new_id(),
            "target": target,
            "input": given,
            "port": port,
            "mode": mode,
            "created": now(),
            "finished": None,
            "status": QUEUED,
            "verdict": None,
            "plan": json.dumps(plan),
            "report": None,
            "error": None,
        }
        with self.engine.begin() as conn:
            conn.execute(insert(checks).values(**values))
        found = self.get(str(values["id"]))
        assert found is not None
        return found

    def get(self, check_id: str) -> CheckRow | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(checks).where(checks.c.id == check_id)).first()
        return _row(row) if row is not None else None

    def set_running(self, check_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(checks).where(checks.c.id == check_id).values(status=RUNNING))

    def finish(self, check_id: str, *, verdict: str, report: dict[str, Any]) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(checks)
                .where(checks.c.id == check_id)
                .values(status=DONE, verdict=verdict, report=json.dumps(report), finished=now())
            )

    def fail(self, check_id: str, message: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(checks).where(checks.c.id == check_id).values(status=ERROR, error=message, finished=now())
            )

    def latest(self, target: str) -> CheckRow | None:
        """The newest check of ``target`` that did not fail (for dedup and cooldown)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(checks)
                .where(checks.c.target == target, checks.c.status != ERROR)
                .order_by(checks.c.created.desc())
                .limit(1)
            ).first()
        return _row(row, with_report=False) if row is not None else None

    def history(self, target: str, limit: int = 20) -> Sequence[CheckRow]:
        """Checks of ``target``, newest first, without their reports."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(checks).where(checks.c.target == target).order_by(checks.c.created.desc()).limit(limit)
            ).all()
        return [_row(r, with_report=False) for r in rows]

    def interrupt_unfinished(self) -> int:
        """Checks left queued/running by a previous process: they will never finish now."""
        with self.engine.begin() as conn:
            result = conn.execute(
                update(checks)
                .where(checks.c.status.in_((QUEUED, RUNNING)))
                .values(status=ERROR, error="interrupted: the service restarted during the test", finished=now())
            )
        return int(result.rowcount)

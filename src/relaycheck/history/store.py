"""Storage of checks with SQLAlchemy 2 (SQLite file by default, any SQLAlchemy URL otherwise).

``checks``: what was asked, what was planned (the vetted targets), the status and the report in
the same versioned JSON as ``relaycheck check --json``; who started it (``source``: the web UI or
``watch``; ``client``: the web client's address key, for listing a client's own checks). The
web UI and ``watch`` write the same table, so one target has one history whichever started it.
``alerts``: every alert ``watch`` tried to send, per channel, with the state it announced.

The store is synchronous; the web app calls it through a thread so a slow database never
blocks the event loop. Databases made by an older relaycheck get the new columns on opening.
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
    func,
    insert,
    inspect,
    select,
    text,
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
    Column("source", String(16), nullable=False, server_default="web"),  # "web" or "watch"
    Column("client", String(64), index=True),  # the web client's address key (None for watch)
)
alerts = Table(
    "alerts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("target", String(300), nullable=False, index=True),
    Column("channel", String(300), nullable=False),  # "webhook https://…", "mail a@b", "exec CMD"
    Column("check_id", String(32), nullable=False),  # the run whose state the alert announced
    Column("state", String(64), nullable=False),  # digest of that state (changes.state_digest)
    Column("status", String(16), nullable=False),  # "sent", "failed" or "baseline"
    Column("attempts", Integer, nullable=False),
    Column("error", Text),
    Column("created", DateTime(timezone=True), nullable=False),
)
SENT, FAILED = "sent", "failed"
BASELINE = "baseline"  # not sent: fixes the state a channel starts from (its first run)


def _keys(target: str | Sequence[str]) -> list[str]:
    """One history key, or several read as one history (a server's address key and its name's)."""
    return [target] if isinstance(target, str) else list(target)


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
    source: str = "web"
    client: str | None = None

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
        source=m["source"] or "web",
        client=m["client"],
    )


def _alert(row: Row[Any]) -> AlertRow:
    m = row._mapping
    created = _aware(m["created"])
    assert created is not None
    return AlertRow(
        target=m["target"], channel=m["channel"], check_id=m["check_id"], state=m["state"], status=m["status"],
        attempts=m["attempts"], error=m["error"], created=created,
    )  # fmt: skip


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


def upgrade(engine: Engine) -> None:
    """Create the tables, and add the columns a database made by an older relaycheck lacks."""
    metadata.create_all(engine)
    with engine.begin() as conn:
        for table in (checks, alerts):
            present = {c["name"] for c in inspect(conn).get_columns(table.name)}
            for column in table.columns:
                if column.name not in present:
                    kind = column.type.compile(dialect=engine.dialect)
                    default = f" DEFAULT '{column.server_default.arg}'" if column.server_default is not None else ""  # type: ignore[attr-defined]
                    null = "" if column.nullable or default else " NOT NULL"
                    conn.execute(text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}{default}{null}'))


@dataclass(frozen=True)
class AlertRow:
    target: str
    channel: str
    check_id: str
    state: str
    status: str
    attempts: int
    error: str | None
    created: datetime


class Store:
    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        upgrade(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def create(
        self,
        *,
        target: str,
        given: str,
        port: int,
        mode: str,
        plan: dict[str, Any],
        client: str | None = None,
        source: str = "web",
    ) -> CheckRow:
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
            "client": client,
            "source": source,
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

    def history(
        self,
        target: str | Sequence[str],
        limit: int = 20,
        *,
        offset: int = 0,
        client: str | None = None,
        with_reports: bool = False,
    ) -> Sequence[CheckRow]:
        """Checks of ``target``, newest first (without their reports unless asked); with
        ``client``, only the checks that client started."""
        query = select(checks).where(checks.c.target.in_(_keys(target)))
        if client is not None:
            query = query.where(checks.c.client == client)
        query = query.order_by(checks.c.created.desc(), checks.c.id).limit(limit).offset(offset)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [_row(r, with_report=with_reports) for r in rows]

    def count(self, target: str | Sequence[str], *, client: str | None = None) -> int:
        query = select(func.count()).select_from(checks).where(checks.c.target.in_(_keys(target)))
        if client is not None:
            query = query.where(checks.c.client == client)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def previous_done(
        self, target: str | Sequence[str], before: datetime, *, client: str | None = None
    ) -> CheckRow | None:
        """The newest finished check of ``target`` created before ``before``, with its report."""
        query = select(checks).where(
            checks.c.target.in_(_keys(target)), checks.c.status == DONE, checks.c.created < before
        )
        if client is not None:
            query = query.where(checks.c.client == client)
        with self.engine.connect() as conn:
            row = conn.execute(query.order_by(checks.c.created.desc()).limit(1)).first()
        return _row(row) if row is not None else None

    def record(
        self, *, target: str, given: str, port: int, mode: str, plan: dict[str, Any], verdict: str,
        report: dict[str, Any], source: str = "watch",
    ) -> CheckRow:  # fmt: skip
        """Store a finished run in one step (``watch``: the check ran in this process)."""
        row = self.create(target=target, given=given, port=port, mode=mode, plan=plan, source=source)
        self.finish(row.id, verdict=verdict, report=report)
        found = self.get(row.id)
        assert found is not None
        return found

    # -- alerts ------------------------------------------------------------------------------

    def add_alert(
        self, *, target: str, channel: str, check_id: str, state: str, status: str, attempts: int, error: str | None
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                insert(alerts).values(
                    target=target,
                    channel=channel,
                    check_id=check_id,
                    state=state,
                    status=status,
                    attempts=attempts,
                    error=error,
                    created=now(),
                )
            )

    def last_sent(self, target: str, channel: str) -> AlertRow | None:
        """The state ``channel`` last heard about for ``target``: its newest delivered alert (or baseline)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(alerts)
                .where(alerts.c.target == target, alerts.c.channel == channel, alerts.c.status.in_((SENT, BASELINE)))
                .order_by(alerts.c.id.desc())
                .limit(1)
            ).first()
        return _alert(row) if row is not None else None

    def alerts_of(self, target: str, limit: int = 50) -> Sequence[AlertRow]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(alerts).where(alerts.c.target == target).order_by(alerts.c.id.desc()).limit(limit)
            ).all()
        return [_alert(r) for r in rows]

    def interrupt_unfinished(self) -> int:
        """Checks left queued/running by a previous process: they will never finish now."""
        with self.engine.begin() as conn:
            result = conn.execute(
                update(checks)
                .where(checks.c.status.in_((QUEUED, RUNNING)))
                .values(status=ERROR, error="interrupted: the service restarted during the test", finished=now())
            )
        return int(result.rowcount)

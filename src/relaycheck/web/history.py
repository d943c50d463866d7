"""History pages: a target's tests as a timeline with the changes marked, page by page.

``GET /history?target=…&port=…&page=…`` (HTML) and ``GET /api/v1/history`` (JSON) read the
shared history store, so runs of ``relaycheck watch`` writing to the same database appear too.
Unless the operator enables public history, a client sees only the tests it started itself
(its address key, as the rate limits know it): who tested which server, when, stays private.
The changes of an entry are computed against the entry before it *in what that client sees*.
"""

from __future__ import annotations

import asyncio
import math
from datetime import datetime
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, Field

from relaycheck.errors import UsageError
from relaycheck.history.store import Store
from relaycheck.history.timeline import Entry, timeline
from relaycheck.web.guard import history_keys
from relaycheck.web.schemas import COMMON_ERRORS, error_answer
from relaycheck.web.settings import Settings

API = "/api/v1"
MAX_PAGE = 10_000


class ChangeOut(BaseModel):
    endpoint: str
    kind: str = Field(
        description="verdict, accepted-probes, findings, mta, tls-certificate, tls-expiry, reachability, endpoint"
    )
    before: Any
    after: Any
    summary: str


class RunOut(BaseModel):
    id: str
    created: datetime
    finished: datetime | None
    source: Literal["web", "watch"] | str
    status: str
    verdict: str | None
    changed: bool = Field(description="Something differs from the run before it (see `changes`).")
    changes: list[ChangeOut]
    link: str


class TimelineOut(BaseModel):
    target: str
    page: int
    pages: int
    total: int
    scope: Literal["client", "public"] = Field(
        description="`client`: only the tests this client started; `public`: every test of the target."
    )
    runs: list[RunOut]


def run_out(entry: Entry) -> RunOut:
    row = entry.row
    return RunOut(
        id=row.id, created=row.created, finished=row.finished, source=row.source, status=row.status,
        verdict=row.verdict, changed=entry.changed, changes=[ChangeOut(**c.as_dict()) for c in entry.changes],
        link=f"/check/{row.id}",
    )  # fmt: skip


def register_history(app: FastAPI, store: Store, settings: Settings, templates: Jinja2Templates) -> None:
    page_size = max(1, settings.history_length)

    async def load(request: Request, target: str, port: int, page: int) -> TimelineOut:
        # every name of one server has the same history (UsageError: the caller's 400)
        keys = await history_keys(target, port, resolver=settings.resolver, max_targets=settings.max_targets)
        key = keys[0]
        client = None if settings.public_history else str(getattr(request.state, "client", "unknown"))
        total = await asyncio.to_thread(store.count, keys, client=client)
        pages = max(1, math.ceil(total / page_size))
        page = min(max(1, page), pages)
        rows = await asyncio.to_thread(
            store.history, keys, page_size, offset=(page - 1) * page_size, client=client, with_reports=True
        )
        before = await asyncio.to_thread(store.previous_done, keys, rows[-1].created, client=client) if rows else None
        entries = timeline(rows, before)
        return TimelineOut(
            target=key, page=page, pages=pages, total=total, scope="public" if client is None else "client",
            runs=[run_out(e) for e in entries],
        )  # fmt: skip

    @app.get(
        f"{API}/history",
        tags=["checks"],
        summary="A target's tests as a timeline, newest first, with what changed since the test before",
        response_model=TimelineOut,
        responses={400: error_answer("Malformed target or parameters"), 422: error_answer("Invalid parameters"),
                   **COMMON_ERRORS},
    )
    async def api_timeline(request: Request, target: str, port: int = 25, page: int = 1) -> Response:
        if not 0 < port < 65536 or not 0 < page <= MAX_PAGE or len(target) > 255:
            return JSONResponse({"error": "invalid-request", "message": "port 1-65535, page >= 1"}, status_code=400)
        try:
            out = await load(request, target, port, page)
        except UsageError as exc:
            return JSONResponse({"error": "invalid-target", "message": str(exc)}, status_code=400)
        return JSONResponse(out.model_dump(mode="json"))

    @app.get("/history", response_class=HTMLResponse, include_in_schema=False)
    async def history_page(request: Request, target: str = "", port: int = 25, page: int = 1) -> Response:
        if not target.strip() or not 0 < port < 65536 or not 0 < page <= MAX_PAGE or len(target) > 255:
            context = {"status": 400, "message": "Give a target, e.g. /history?target=mx.example.org"}
            return templates.TemplateResponse(request, "error.html", context, status_code=400)
        try:
            out = await load(request, target, port, page)
        except UsageError as exc:
            return templates.TemplateResponse(
                request, "error.html", {"status": 400, "message": str(exc)}, status_code=400
            )
        context = {"timeline": out, "given": target.strip(), "port": port}
        return templates.TemplateResponse(request, "history.html", context)

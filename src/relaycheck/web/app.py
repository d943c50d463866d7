"""The FastAPI application: HTML pages, the JSON API under ``/api/v1``, event streams, static files.

``create_app(settings)`` builds everything; nothing happens at import time. Pages are rendered
by Jinja2 with autoescaping from the stored report (the same JSON the API serves), so every
server-provided string reaches the browser escaped. A Content Security Policy allows scripts
from this origin only (no inline script), and errors never show a traceback.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Form, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from relaycheck.api import parse_target
from relaycheck.errors import DnsError, ErrorKind, RelaycheckError, UsageError
from relaycheck.web import store as st
from relaycheck.web.guard import Refused, target_key
from relaycheck.web.history import register_history
from relaycheck.web.limits import RateLimiter, client_key, retry_after
from relaycheck.web.runner import Forbidden, Limited, Service, Submitted
from relaycheck.web.settings import Settings
from relaycheck.web.views import make_templates

log = logging.getLogger("relaycheck.web")

API = "/api/v1"
STREAM_SECONDS = 600.0  # longest life of one event stream
CHECK_ID = re.compile(r"[A-Za-z0-9_-]{6,32}")
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
}


# -- API models (the OpenAPI document is generated from these) ------------------------------


class CheckRequest(BaseModel):
    target: str = Field(
        min_length=1,
        max_length=255,
        description="A mail domain (every MX host is tested), a host name, an IP address, "
        "`host:port` or `[IPv6]:port`.",
        examples=["example.com"],
    )
    port: int | None = Field(
        default=None, ge=1, le=65535, description="25, 465 or 587 (a port in `target` wins). Default 25."
    )
    mode: Literal["probe", "data-probe"] = Field(
        default="probe",
        description="`probe` stops at RCPT. `data-probe` (only when the operator enabled it) also "
        "sends DATA and hangs up on 354.",
    )


class Links(BaseModel):
    api: str
    html: str
    events: str


class PlannedTarget(BaseModel):
    label: str
    host: str
    port: int
    transport: str
    address: str | None
    domain: str | None
    mx_preference: int | None


class PlanProblem(BaseModel):
    input: str
    problem: str


class PlanOut(BaseModel):
    targets: list[PlannedTarget] = Field(description="The vetted addresses this check tests.")
    problems: list[PlanProblem] = Field(description="MX hosts or addresses left out, and why.")


class CheckSummary(BaseModel):
    id: str
    target: str = Field(description="`host:port`: the key for cooldown and history.")
    input: str
    port: int
    mode: str
    status: Literal["queued", "running", "done", "error"]
    verdict: Literal["open", "closed", "inconclusive"] | None
    created: datetime
    finished: datetime | None
    retest_after: datetime | None = Field(description="When this target may be tested again (null: now).")
    links: Links


class TargetProgressOut(BaseModel):
    label: str
    state: Literal["waiting", "testing", "done"]
    done: int
    expected: int
    lines: list[str]
    verdict: str | None


class ProgressOut(BaseModel):
    status: str
    done: int
    expected: int
    targets: list[TargetProgressOut]


class CheckOut(CheckSummary):
    reused: bool = Field(
        default=False, description="True when this is an existing running or recent check of the same target."
    )
    error: str | None = None
    plan: PlanOut
    progress: ProgressOut | None = Field(default=None, description="Live progress while the check runs.")
    report: dict[str, Any] | None = Field(
        default=None,
        description="When done: the report, in the same versioned schema as `relaycheck check --json` "
        "(docs/report-schema.md).",
    )


class HistoryOut(BaseModel):
    target: str
    checks: list[CheckSummary]


class ErrorOut(BaseModel):
    error: str = Field(description="A stable code: invalid-target, refused, forbidden, rate-limited, busy, …")
    message: str


class ApiError(RelaycheckError):
    """What the JSON API answers instead of a result: HTTP ``status`` and a stable ``code``."""

    kind = ErrorKind.USAGE

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "Malformed target"},
    403: {"model": ErrorOut, "description": "Mode not enabled, or a cross-site form post"},
    422: {"model": ErrorOut, "description": "Refused target (address class, port) or DNS failure"},
    429: {"model": ErrorOut, "description": "Too many requests or running tests from this client (Retry-After)"},
    503: {"model": ErrorOut, "description": "The service is at capacity (Retry-After)"},
}


def submit_error(exc: Exception) -> ApiError:
    """Map the service's refusals onto HTTP."""
    if isinstance(exc, Limited):
        code = "rate-limited" if exc.status == 429 else "busy"
        return ApiError(exc.status, code, str(exc), {"Retry-After": retry_after(exc.retry_after)})
    if isinstance(exc, Forbidden):
        return ApiError(403, "forbidden", str(exc))
    if isinstance(exc, Refused):
        return ApiError(422, "refused", str(exc))
    if isinstance(exc, DnsError):
        return ApiError(422, "dns", str(exc))
    if isinstance(exc, UsageError):
        return ApiError(400, "invalid-target", str(exc))
    raise exc


# -- middleware -----------------------------------------------------------------------------


class Guard:
    """Pure ASGI middleware: client identity, requests per minute, cross-site posts, headers, and
    a generic error page for any unexpected exception (no traceback reaches a client)."""

    def __init__(self, app: ASGIApp, settings: Settings, limiter: RateLimiter) -> None:
        self.app = app
        self.settings = settings
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        peer = scope.get("client")
        client = client_key(peer[0] if peer else None, headers.get("x-forwarded-for"), self.settings.trusted_proxies)
        scope.setdefault("state", {})["client"] = client
        path: str = scope["path"]
        static = path.startswith("/static/")

        started = False

        async def send_secured(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                out = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    if name not in out:
                        out[name] = value
                if not static and "cache-control" not in out:
                    out["cache-control"] = "no-store"
            await send(message)

        if not static:
            wait = self.limiter.take(client)
            if wait:
                message = "too many requests from your address; slow down"
                response = error_response(path, 429, "rate-limited", message, {"Retry-After": retry_after(wait)})
                await response(scope, receive, send_secured)
                return
        if scope["method"] == "POST" and headers.get("sec-fetch-site") == "cross-site":
            message = "cross-site form posts are not accepted"
            await error_response(path, 403, "forbidden", message)(scope, receive, send_secured)
            return
        try:
            await self.app(scope, receive, send_secured)
        except Exception as exc:
            # Logged with the traceback here; the client gets a generic message, never the details.
            log.error("unhandled error on %s %s", scope["method"], path, exc_info=exc)
            if started:
                raise  # a response is under way: closing the connection is all that is left
            message = "Something went wrong on our side. It has been logged."
            await error_response(path, 500, "internal", message)(scope, receive, send_secured)


def error_response(path: str, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    """A plain error in the form the client asked for (JSON under /api, HTML elsewhere)."""
    if path.startswith(API):
        return JSONResponse({"error": code, "message": message}, status_code=status, headers=headers)
    return HTMLResponse(_plain_page(status, message), status_code=status, headers=headers)


def _plain_page(status: int, message: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{status} · relaycheck</title><link rel="stylesheet" href="/static/style.css"></head>'
        f'<body><main class="page"><h1>{status}</h1><p>{html.escape(message)}</p>'
        '<p><a href="/">Test a mail server</a></p></main></body></html>'
    )


# -- the app --------------------------------------------------------------------------------


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    store = st.Store(settings.db_url)
    service = Service(settings, store)
    templates = make_templates()
    streams = asyncio.Semaphore(settings.max_event_streams)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        interrupted = await asyncio.to_thread(store.interrupt_unfinished)
        if interrupted:
            log.warning("%d checks were interrupted by the last shutdown", interrupted)
        yield
        await service.stop()
        store.close()

    app = FastAPI(
        title="relaycheck",
        summary="Is this mail server an open relay? Tests with evidence, in probe mode (no mail is sent).",
        version="1",
        openapi_url=f"{API}/openapi.json",
        docs_url=None,  # FastAPI's docs pages load scripts from a CDN: not here
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.settings = settings
    app.add_middleware(Guard, settings=settings, limiter=RateLimiter(settings.requests_per_minute))
    app.mount("/static", StaticFiles(packages=[("relaycheck.web", "static")]), name="static")
    register_history(app, store, settings, templates)

    # -- helpers ----------------------------------------------------------------------------

    def links(check_id: str) -> Links:
        api = f"{API}/checks/{check_id}"
        return Links(api=api, html=f"/check/{check_id}", events=f"{api}/events")

    def summary(row: st.CheckRow) -> dict[str, Any]:
        return {
            "id": row.id,
            "target": row.target,
            "input": row.input,
            "port": row.port,
            "mode": row.mode,
            "status": row.status,
            "verdict": row.verdict,
            "created": row.created,
            "finished": row.finished,
            "retest_after": service.retest_after(row),
            "links": links(row.id),
        }

    def resource(row: st.CheckRow, reused: bool = False) -> CheckOut:
        progress = service.progress.get(row.id)
        return CheckOut(
            **summary(row),
            reused=reused,
            error=row.error,
            plan=PlanOut(targets=row.plan.get("targets", []), problems=row.plan.get("problems", [])),
            progress=ProgressOut(**progress.as_dict()) if progress and row.active else None,
            report=row.report,
        )

    async def find(check_id: str) -> st.CheckRow:
        row = await service.get(check_id) if CHECK_ID.fullmatch(check_id) else None
        if row is None:
            raise StarletteHTTPException(404, "no such test")
        return row

    def client_of(request: Request) -> str:
        return str(getattr(request.state, "client", "unknown"))

    # -- error handling ---------------------------------------------------------------------

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> Response:
        return JSONResponse({"error": exc.code, "message": exc.message}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        messages = {404: "There is nothing here.", 405: "That method is not allowed here."}
        message = messages.get(exc.status_code, str(exc.detail) if exc.status_code < 500 else "Something went wrong.")
        if exc.status_code == 404 and exc.detail == "no such test":
            message = "There is no test with that address (links to tests are exact; check for typos)."
        code = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "error")
        if request.url.path.startswith(API):
            return JSONResponse({"error": code, "message": message}, status_code=exc.status_code)
        return templates.TemplateResponse(
            request, "error.html", {"status": exc.status_code, "message": message}, status_code=exc.status_code
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        if not request.url.path.startswith(API):
            return error_response(request.url.path, 400, "invalid-request", "That request is not valid.")
        details = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body')}: {e.get('msg', 'invalid')}"
            for e in exc.errors()
        )
        return JSONResponse({"error": "invalid-request", "message": details or "invalid request"}, status_code=422)

    # -- HTML pages -------------------------------------------------------------------------

    def index_page(
        request: Request, *, error: str | None = None, value: str = "", port: int = 25, status: int = 200
    ) -> Response:
        context = {"error": error, "value": value, "port": port, "ports": sorted(settings.ports)}
        return templates.TemplateResponse(request, "index.html", context, status_code=status)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index(request: Request, target: str = "") -> Response:
        return index_page(request, value=target[:255])

    async def start_from_form(request: Request, text: str, port: int | None, mode: str = "probe") -> Response:
        try:
            done: Submitted = await service.submit(text, port, mode, client_of(request))
        except (UsageError, DnsError, Limited) as exc:
            error = submit_error(exc)
            response = index_page(request, error=error.message, value=text[:255], port=port or 25, status=error.status)
            response.headers.update(error.headers)
            return response
        suffix = "?reused=1" if done.reused else ""
        return RedirectResponse(f"/check/{done.row.id}{suffix}", status_code=303)

    @app.post("/check", include_in_schema=False)
    async def check_form(
        request: Request, target: Annotated[str, Form()] = "", port: Annotated[str, Form()] = "25"
    ) -> Response:
        number = int(port) if port.isdigit() and len(port) <= 5 else None
        if not target.strip():
            return index_page(request, error="Type a mail domain or a server name.", status=400)
        return await start_from_form(request, target, number)

    @app.post("/check/{check_id}/retest", include_in_schema=False)
    async def retest(request: Request, check_id: str) -> Response:
        row = await find(check_id)
        return await start_from_form(request, row.input, row.port, row.mode)

    @app.get("/check/{check_id}", response_class=HTMLResponse, include_in_schema=False)
    async def check_page(request: Request, check_id: str, reused: str = "") -> Response:
        row = await find(check_id)
        progress = service.progress.get(row.id)
        context: dict[str, Any] = {
            "row": row,
            "check": summary(row),
            "reused": bool(reused),
            "settings": settings,
        }
        if row.active:
            context["progress"] = progress.as_dict() if progress else None
            return templates.TemplateResponse(request, "progress.html", context)
        context["history"] = [summary(h) for h in await service.history(row.target, client_of(request))]
        return templates.TemplateResponse(request, "result.html", context)

    # -- event stream -----------------------------------------------------------------------

    async def event_stream(request: Request, check_id: str) -> Response:
        row = await find(check_id)
        progress = service.progress.get(row.id)
        if streams.locked():
            raise ApiError(503, "busy", "too many open event streams", {"Retry-After": "30"})

        async def events() -> AsyncIterator[str]:
            async with streams:
                yield "retry: 3000\n\n"
                if progress is None:
                    yield f"event: done\ndata: {json.dumps({'status': row.status})}\n\n"
                    return
                seen = -1
                ends = time.monotonic() + STREAM_SECONDS  # the browser reconnects after that
                while time.monotonic() < ends:
                    if progress.version != seen:
                        seen = progress.version
                        yield f"event: progress\ndata: {json.dumps(progress.as_dict())}\n\n"
                    if progress.finished:
                        yield f"event: done\ndata: {json.dumps({'status': progress.status})}\n\n"
                        return
                    if not await progress.wait(seen, timeout=15):
                        yield ": keep-alive\n\n"
                    await asyncio.sleep(0.25)  # coalesce bursts of exchanges into one event

        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    @app.get(
        f"{API}/checks/{{check_id}}/events",
        tags=["checks"],
        summary="Live progress as server-sent events",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}, "description": "`progress` events, then `done`"}},
    )
    async def api_events(request: Request, check_id: str) -> Response:
        return await event_stream(request, check_id)

    # -- JSON API ---------------------------------------------------------------------------

    @app.post(
        f"{API}/checks",
        tags=["checks"],
        summary="Start a check (or join the running/recent one of the same target)",
        status_code=202,
        response_model=CheckOut,
        responses={200: {"model": CheckOut, "description": "An existing running or recent check"}, **ERRORS},
    )
    async def api_create(request: Request, body: CheckRequest) -> Response:
        try:
            done = await service.submit(body.target, body.port, body.mode, client_of(request))
        except (UsageError, DnsError, Limited) as exc:
            raise submit_error(exc) from None
        out = resource(done.row, reused=done.reused)
        return JSONResponse(
            out.model_dump(mode="json"),
            status_code=200 if done.reused else 202,
            headers={"Location": out.links.api},
        )

    @app.get(
        f"{API}/checks/{{check_id}}",
        tags=["checks"],
        summary="Status, live progress and (when done) the report",
        response_model=CheckOut,
        responses={404: {"model": ErrorOut}},
    )
    async def api_get(check_id: str) -> CheckOut:
        return resource(await find(check_id))

    @app.get(
        f"{API}/checks",
        tags=["checks"],
        summary="History: earlier checks of one target, newest first",
        response_model=HistoryOut,
        responses={400: {"model": ErrorOut}},
    )
    async def api_history(request: Request, target: str, port: int = 25) -> HistoryOut:
        try:
            spec = parse_target(target)
        except UsageError as exc:
            raise ApiError(400, "invalid-target", str(exc)) from None
        key = target_key(spec.host, spec.port or port)
        rows = await service.history(key, client_of(request))
        return HistoryOut(target=key, checks=[CheckSummary(**summary(r)) for r in rows])

    return app

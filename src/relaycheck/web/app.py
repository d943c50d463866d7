"""The FastAPI application: HTML pages, the JSON API under ``/api/v1``, event streams, static files.

``create_app(settings)`` builds everything; nothing happens at import time. Pages are rendered
by Jinja2 with autoescaping from the stored report (the same JSON the API serves), so every
server-provided string reaches the browser escaped. A Content Security Policy allows scripts
from this origin only (no inline script), and errors never show a traceback. Request bodies
are capped before anything parses them, posts from other sites are refused (Sec-Fetch-Site,
Origin, Referer), and event streams are capped per client and in all.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from fastapi import FastAPI, Form, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from relaycheck.errors import DnsError, ErrorKind, RelaycheckError, UsageError
from relaycheck.options.table import checker
from relaycheck.render.html import render_html
from relaycheck.render.load import report_from_dict
from relaycheck.render.markdown import render_markdown
from relaycheck.web import store as st
from relaycheck.web.guard import Refused, history_keys
from relaycheck.web.history import register_history
from relaycheck.web.limits import (
    BodyTooLarge,
    RateLimiter,
    StreamSlots,
    client_key,
    declared_length,
    is_trusted,
    read_capped,
    retry_after,
)
from relaycheck.web.runner import Forbidden, Limited, Service, Submitted
from relaycheck.web.schemas import COMMON_ERRORS, error_answer
from relaycheck.web.settings import Settings
from relaycheck.web.views import download_name, make_templates

log = logging.getLogger("relaycheck.web")
form_port = checker("port")  # the form's port field means what --port means

API = "/api/v1"
STREAM_SECONDS = 600.0  # longest life of one event stream
KEEPALIVE_SECONDS = 15.0  # a ping event at least this often
CHECK_ID = re.compile(r"[A-Za-z0-9_-]{6,32}")
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    # same-origin: our own posts carry our Origin (with no-referrer browsers send "Origin: null"),
    # and no address of ours ever reaches another site
    "referrer-policy": "same-origin",
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
    target: str = Field(
        description="The tested addresses with the port (`192.0.2.1:25`, several separated by spaces): "
        "the key for cooldown and history, so that every name of one server shares them."
    )
    input: str
    port: int
    mode: str
    status: Literal["queued", "running", "done", "error"]
    verdict: Literal["open", "closed", "inconclusive"] | None
    created: datetime
    finished: datetime | None
    retest_after: datetime | None = Field(description="When this target may be tested again (null: now).")
    links: Links


class RetryOut(BaseModel):
    attempt: int = Field(description="The retry round that follows the wait (1 for the first).")
    deferred: int = Field(description="Probes still deferred (4xx, typically greylisting).")
    wait_s: float = Field(description="Seconds of the wait when it began (0: the round is under way).")
    at: datetime = Field(description="When the retry round starts.")
    budget_ends: datetime = Field(description="When the service stops retrying.")


class TargetProgressOut(BaseModel):
    label: str
    state: Literal["waiting", "testing", "done"]
    done: int
    expected: int
    lines: list[str]
    verdict: str | None
    retries: int = Field(default=0, description="Retry rounds of deferred probes so far.")
    retry: RetryOut | None = Field(default=None, description="The greylisting wait under way, if any.")


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


class ApiError(RelaycheckError):
    """What the JSON API answers instead of a result: HTTP ``status`` and a stable ``code``."""

    kind = ErrorKind.USAGE

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


ERRORS: dict[int | str, dict[str, Any]] = {
    **COMMON_ERRORS,
    400: error_answer("Malformed target"),
    403: error_answer("Mode not enabled, or a post from another site (Sec-Fetch-Site, Origin, Referer)"),
    408: error_answer("The request body did not arrive in time"),
    413: error_answer("The request body is larger than the service accepts"),
    422: error_answer("Invalid request body, refused target (address class, port) or DNS failure"),
    429: error_answer("Too many requests or running tests from this client (Retry-After)"),
    503: error_answer("The service is at capacity (Retry-After)"),
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
    """Pure ASGI middleware: client identity, requests per minute, posts from other sites, the
    body cap, headers, and an error page for any unexpected exception (no traceback reaches a
    client)."""

    def __init__(self, app: ASGIApp, settings: Settings, limiter: RateLimiter, pages: ErrorPages) -> None:
        self.app = app
        self.settings = settings
        self.limiter = limiter
        self.pages = pages

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
        pages = self.pages

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

        async def refuse(status: int, code: str, message: str, wait: float | None = None) -> None:
            await pages.response(path, status, code, message, wait)(scope, receive, send_secured)

        if not static:
            wait = self.limiter.take(client)
            if wait:
                await refuse(429, "rate-limited", "Too many requests from your address; slow down.", wait)
                return
        if scope["method"] == "POST" and not same_origin(headers, self.settings, peer[0] if peer else None):
            await refuse(403, "forbidden", "Posts from other sites are not accepted.")
            return
        cap = self.settings.max_body_bytes
        length = declared_length(scope["headers"])
        if length is not None and length > cap:  # refused before a byte of it is read
            await refuse(413, "too-large", f"The request is too large (at most {cap} bytes are accepted).")
            return
        if scope["method"] in ("POST", "PUT", "PATCH"):
            try:
                async with asyncio.timeout(self.settings.body_seconds):  # a trickling client is let go
                    body, gone = await read_capped(receive, cap)
            except BodyTooLarge:
                await refuse(413, "too-large", f"The request is too large (at most {cap} bytes are accepted).")
                return
            except TimeoutError:
                wait = self.settings.body_seconds
                await refuse(408, "timeout", f"The request body did not arrive within {wait:g} s.")
                return
            receive = replay(body, gone, receive)
        try:
            await self.app(scope, receive, send_secured)
        except Exception as exc:
            # Logged with the traceback here; the client gets a generic message, never the details.
            log.error("unhandled error on %s %s", scope["method"], path, exc_info=exc)
            if started:
                raise  # a response is under way: closing the connection is all that is left
            await refuse(500, "internal", "Something went wrong on our side. It has been logged.")


def replay(body: bytes, disconnected: bool, receive: Receive) -> Receive:
    """A ``receive`` that hands the app the body read already, then the client's own messages."""
    given = False

    async def again() -> Message:
        nonlocal given
        if not given:
            given = True
            if disconnected:
                return {"type": "http.disconnect"}
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again


def _origin_host(value: str) -> str | None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    default = 443 if parts.scheme == "https" else 80
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{parts.port or default}"


def _host_header(value: str, scheme: str) -> str:
    parts = urlsplit(f"//{value}")
    default = 443 if scheme == "https" else 80
    hostname = parts.hostname or ""
    host = f"[{hostname}]" if ":" in hostname else hostname
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{host}:{port or default}"


def same_origin(headers: Headers, settings: Settings, peer: str | None) -> bool:
    """Whether a post comes from this site's own pages (or from no browser page at all).

    ``Sec-Fetch-Site`` when the browser sends it (a page cannot forge it); else ``Origin``; else
    ``Referer``. A client that sends none of them (curl, scripts) is not a browser a foreign page
    could drive. The
    site's own address is the ``Host`` header (``X-Forwarded-Host`` from a trusted proxy); the
    scheme is not compared, as a TLS proxy in front talks plain HTTP to us.
    """
    fetch_site = headers.get("sec-fetch-site")
    if fetch_site is not None:
        return fetch_site in ("same-origin", "none")
    origin = headers.get("origin")
    referer = headers.get("referer")
    if origin is None and referer is None:
        return True
    claimed = origin if origin is not None else referer or ""
    if claimed == "null":  # sandboxed frames, file: pages, some redirects: never our pages
        return False
    scheme = urlsplit(claimed).scheme
    own = headers.get("host", "")
    forwarded = headers.get("x-forwarded-host")
    if forwarded and peer is not None and is_trusted(peer, settings.trusted_proxies):
        own = forwarded.split(",")[0].strip()
    theirs = _origin_host(claimed)
    return bool(own) and theirs is not None and _host_header(own, scheme) == theirs


class ErrorPages:
    """Errors in the form the client asked for: JSON under /api, a page in the site layout elsewhere."""

    def __init__(self, templates: Any) -> None:
        self.templates = templates

    def page(self, status: int, message: str, wait: float | None = None) -> str:
        context: dict[str, Any] = {"status": status, "message": message, "wait": None, "until": None}
        if wait:
            seconds = int(retry_after(wait))
            context["wait"] = seconds
            context["until"] = datetime.now(UTC) + timedelta(seconds=seconds)
        return str(self.templates.env.get_template("error.html").render(context))

    def response(
        self, path: str, status: int, code: str, message: str, wait: float | None = None
    ) -> Response:
        headers = {"Retry-After": retry_after(wait)} if wait else None
        if path.startswith(API):
            return JSONResponse({"error": code, "message": message}, status_code=status, headers=headers)
        return HTMLResponse(self.page(status, message, wait), status_code=status, headers=headers)


class EventStream(StreamingResponse):
    """An event stream that gives its slot back however it ends (even before its first byte)."""

    def __init__(self, content: AsyncIterator[str], release: Any, headers: dict[str, str]) -> None:
        super().__init__(content, media_type="text/event-stream", headers=headers)
        self.release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.release()


# -- the app --------------------------------------------------------------------------------


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    store = st.Store(settings.db_url)
    service = Service(settings, store)
    templates = make_templates()
    pages = ErrorPages(templates)
    streams = StreamSlots(total=settings.max_event_streams, per_client=settings.max_streams_per_client)

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
    app.add_middleware(Guard, settings=settings, limiter=RateLimiter(settings.requests_per_minute), pages=pages)
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
    async def api_error(request: Request, exc: ApiError) -> Response:
        if request.url.path.startswith(API):
            return JSONResponse(
                {"error": exc.code, "message": exc.message}, status_code=exc.status, headers=exc.headers
            )
        wait = float(exc.headers["Retry-After"]) if "Retry-After" in exc.headers else None
        return pages.response(request.url.path, exc.status, exc.code, exc.message, wait)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        messages = {404: "There is nothing here.", 405: "That method is not allowed here."}
        message = messages.get(exc.status_code, str(exc.detail) if exc.status_code < 500 else "Something went wrong.")
        if exc.status_code == 404 and exc.detail == "no such test":
            message = "There is no test with that address (links to tests are exact; check for typos)."
        code = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "error")
        if request.url.path.startswith(API):
            return JSONResponse({"error": code, "message": message}, status_code=exc.status_code)
        return pages.response(request.url.path, exc.status_code, code, message)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        if not request.url.path.startswith(API):
            return pages.response(request.url.path, 400, "invalid-request", "That request is not valid.")
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

    @app.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse, include_in_schema=False)
    async def index(request: Request, target: str = "") -> Response:
        return index_page(request, value=target[:255])

    async def start_from_form(request: Request, text: str, port: int | None, mode: str = "probe") -> Response:
        try:
            done: Submitted = await service.submit(text, port, mode, client_of(request))
        except (UsageError, DnsError, Limited) as exc:
            error = submit_error(exc)
            message = error.message
            if isinstance(exc, Limited):
                message += f" (try again in {retry_after(exc.retry_after)} s)"
            response = index_page(request, error=message, value=text[:255], port=port or 25, status=error.status)
            response.headers.update(error.headers)
            return response
        suffix = "?reused=1" if done.reused else ""
        return RedirectResponse(f"/check/{done.row.id}{suffix}", status_code=303)

    @app.post("/check", include_in_schema=False)
    async def check_form(
        request: Request, target: Annotated[str, Form()] = "", port: Annotated[str, Form()] = "25"
    ) -> Response:
        if not target.strip():
            return index_page(request, error="Type a mail domain or a server name.", status=400)
        # The command line's own check of a port value (the option table's), one port only here.
        try:
            ports = form_port(port[:16])
        except ValueError:
            ports = ()
        if len(ports) != 1:
            message = "Choose the port from the list (25, 465 or 587)."
            return index_page(request, error=message, value=target[:255], status=400)
        return await start_from_form(request, target, ports[0])

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

    async def finished_report(check_id: str) -> tuple[st.CheckRow, Any]:
        row = await find(check_id)
        if row.report is None:
            raise StarletteHTTPException(404, "The report is not ready: the test has not finished.")
        return row, report_from_dict(row.report)

    @app.get("/check/{check_id}/report.html", include_in_schema=False)
    async def download_html(check_id: str) -> Response:
        row, report = await finished_report(check_id)
        disposition = f'attachment; filename="{download_name(row, "html")}"'
        # the file is opened from disk, away from this site: its own CSP header says no scripts
        return HTMLResponse(render_html(report), headers={"Content-Disposition": disposition})

    @app.get("/check/{check_id}/report.md", include_in_schema=False)
    async def download_markdown(check_id: str) -> Response:
        row, report = await finished_report(check_id)
        disposition = f'attachment; filename="{download_name(row, "md")}"'
        return Response(
            render_markdown(report),
            media_type="text/markdown; charset=utf-8",
            headers={"Content-Disposition": disposition},
        )

    # -- event stream -----------------------------------------------------------------------

    async def event_stream(request: Request, check_id: str) -> Response:
        row = await find(check_id)
        progress = service.progress.get(row.id)
        client = client_of(request)
        # No await between the count and the reservation: the caps hold under any load. The
        # page falls back to polling when refused, so a refusal costs the user nothing.
        full = streams.take(client)
        if full == "client":
            message = f"too many open event streams from your address (at most {settings.max_streams_per_client})"
            raise ApiError(429, "rate-limited", message, {"Retry-After": "30"})
        if full == "total":
            raise ApiError(503, "busy", "too many open event streams", {"Retry-After": "30"})

        async def events() -> AsyncIterator[str]:
            yield "retry: 3000\n\n"
            if progress is None:
                yield f"event: done\ndata: {json.dumps({'status': row.status})}\n\n"
                return
            seen = -1
            ends = time.monotonic() + STREAM_SECONDS  # the page then follows by polling
            while time.monotonic() < ends:
                if progress.version != seen:
                    seen = progress.version
                    yield f"event: progress\ndata: {json.dumps(progress.as_dict())}\n\n"
                if progress.finished:
                    yield f"event: done\ndata: {json.dumps({'status': progress.status})}\n\n"
                    return
                if not await progress.wait(seen, timeout=KEEPALIVE_SECONDS):
                    yield "event: ping\ndata: {}\n\n"  # a named event: the page sees the stream is alive
                await asyncio.sleep(0.25)  # coalesce bursts of exchanges into one event

        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return EventStream(events(), lambda: streams.give_back(client), headers)

    @app.get(
        f"{API}/checks/{{check_id}}/events",
        tags=["checks"],
        summary="Live progress as server-sent events",
        response_class=StreamingResponse,
        responses={
            200: {
                "content": {"text/event-stream": {}},
                "description": "`progress` events, `ping` every 15 s, then `done`",
            },
            404: error_answer("No such check"),
            422: error_answer("Invalid request"),
            **COMMON_ERRORS,
            429: error_answer("Too many open event streams or requests from this client (Retry-After)"),
            503: error_answer("Too many open event streams in all (Retry-After)"),
        },
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
        responses={404: error_answer("No such check"), 422: error_answer("Invalid request"), **COMMON_ERRORS},
    )
    async def api_get(check_id: str) -> CheckOut:
        return resource(await find(check_id))

    @app.get(
        f"{API}/checks",
        tags=["checks"],
        summary="History: earlier checks of one server (its addresses and port), newest first",
        response_model=HistoryOut,
        responses={
            400: error_answer("Malformed target"),
            422: error_answer("Invalid parameters, refused target or DNS failure"),
            **COMMON_ERRORS,
        },
    )
    async def api_history(request: Request, target: str, port: int = 25) -> HistoryOut:
        # Names are resolved: the history belongs to the addresses, whichever name was used.
        try:
            keys = await history_keys(target, port, resolver=settings.resolver, max_targets=settings.max_targets)
        except UsageError as exc:
            raise ApiError(400, "invalid-target", str(exc)) from None
        rows = await service.history(keys, client_of(request))
        return HistoryOut(target=keys[0], checks=[CheckSummary(**summary(r)) for r in rows])

    return app



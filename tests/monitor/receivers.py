"""Loopback receivers for alerts: an HTTP webhook endpoint and an authenticated submission server."""

from __future__ import annotations

import asyncio
import http.server
import json
import ssl
import threading
from email import message_from_bytes
from email.message import Message
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from relaycheck.testing.loopthread import LoopThread


class WebhookReceiver:
    """Records every POSTed JSON body; answers ``fail_first`` requests with 500 before 200s."""

    def __init__(self, fail_first: int = 0) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        self.fail_first = fail_first
        self.changed = threading.Condition()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = min(int(self.headers.get("Content-Length", "0")), 1 << 20)
                body = json.loads(self.rfile.read(length))
                with receiver.changed:
                    status = 500 if len(receiver.statuses) < receiver.fail_first else 200
                    receiver.statuses.append(status)
                    if status == 200:
                        receiver.bodies.append(body)
                    receiver.changed.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class SubmissionHandler:
    def __init__(self) -> None:
        self.messages: list[tuple[Envelope, Message, bool, str | None]] = []  # envelope, message, tls, login

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        message = message_from_bytes(envelope.original_content or b"")
        self.messages.append((envelope, message, session.ssl is not None, session.auth_data))
        return "250 2.0.0 Ok: queued"


class SubmissionServer(LoopThread):
    """aiosmtpd with STARTTLS (when given a context) and AUTH PLAIN/LOGIN for one user."""

    def __init__(self, tls: ssl.SSLContext | None, user: str = "alerts", password: str = "s3cret") -> None:
        super().__init__("submission")
        self.tls, self.user, self.password = tls, user, password
        self.handler = SubmissionHandler()
        self.port = 0
        self._server: asyncio.Server | None = None

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and data.login.decode() == self.user
            and data.password.decode() == self.password
        )
        return AuthResult(success=ok, auth_data=data.login.decode() if ok else None)

    def _factory(self) -> SMTP:
        return SMTP(
            self.handler,
            hostname="submission.relay.test",
            tls_context=self.tls,
            require_starttls=self.tls is not None,
            auth_required=True,
            auth_require_tls=self.tls is not None,
            authenticator=self._authenticate,
            loop=self._loop,
        )

    async def setup(self) -> None:
        self._server = await self._loop.create_server(self._factory, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def teardown(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

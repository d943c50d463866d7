"""Where ``watch`` sends alerts: a JSON webhook, an e-mail through an authenticated submission
server (STARTTLS required), or a command with the alert on its stdin.

Every channel is synchronous (``watch`` runs it in a thread), bounded in time, and fails with a
``ChannelError`` carrying a kind; ``deliver`` retries a failing channel with growing waits and
says how it went, so a failure is reported and recorded, never dropped.

Sending the alert e-mail uses the standard library's smtplib: it is an ordinary submission with
STARTTLS and AUTH, nothing like the byte-exact probe client.
"""

from __future__ import annotations

import os
import shlex
import smtplib
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from enum import StrEnum
from typing import Any, Protocol

from relaycheck.errors import UsageError
from relaycheck.monitor.payload import alert_json, alert_text

RESPONSE_CAP = 64 * 1024  # bytes of a webhook's answer read (only to finish the exchange)
OUTPUT_CAP = 4096  # bytes of a command's stderr kept for the report


class FailureKind(StrEnum):
    CONNECT = "connect"  # refused, unreachable, DNS
    TIMEOUT = "timeout"
    HTTP_STATUS = "http-status"  # the webhook answered, but not 2xx
    TLS = "tls"  # STARTTLS missing or the handshake failed
    AUTH = "auth"  # the submission server refused the login
    REFUSED = "refused"  # the submission server refused the sender or recipients
    EXIT_STATUS = "exit-status"  # the command exited non-zero
    START = "start"  # the command could not be started


class ChannelError(Exception):
    def __init__(self, kind: FailureKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class Channel(Protocol):
    @property
    def name(self) -> str: ...

    def send(self, payload: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class Webhook:
    url: str
    timeout: float = 15.0
    user_agent: str = "relaycheck"

    @property
    def name(self) -> str:
        return f"webhook {self.url}"

    def send(self, payload: dict[str, Any]) -> None:
        request = urllib.request.Request(
            self.url,
            data=alert_json(payload).encode(),
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": self.user_agent},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read(RESPONSE_CAP)
        except urllib.error.HTTPError as exc:
            raise ChannelError(FailureKind.HTTP_STATUS, f"the webhook answered {exc.code} {exc.reason}") from None
        except TimeoutError:
            raise ChannelError(FailureKind.TIMEOUT, f"no answer within {self.timeout:g} s") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, TimeoutError | socket.timeout):
                raise ChannelError(FailureKind.TIMEOUT, f"no answer within {self.timeout:g} s") from None
            raise ChannelError(FailureKind.CONNECT, f"cannot reach the webhook: {reason}") from None


def webhook(url: str) -> Webhook:
    if not url.startswith(("https://", "http://")) or any(c in url for c in " \r\n"):
        raise UsageError(f"--webhook takes an http:// or https:// URL, not {url!r}")
    return Webhook(url)


@dataclass(frozen=True)
class Mail:
    host: str
    port: int
    sender: str
    recipients: tuple[str, ...]
    user: str | None = None
    password: str | None = None
    tls_context: ssl.SSLContext | None = None  # None: the system's trust store
    timeout: float = 30.0
    helo: str | None = None

    @property
    def name(self) -> str:
        return f"mail {','.join(self.recipients)}"

    def send(self, payload: dict[str, Any]) -> None:
        message = EmailMessage()
        message["Subject"] = f"[relaycheck] {payload['summary']}"
        message["From"] = self.sender
        message["To"] = ", ".join(self.recipients)
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = make_msgid(domain=self.sender.rpartition("@")[2])
        message.set_content(alert_text(payload))
        message.add_attachment(
            alert_json(payload).encode(), maintype="application", subtype="json", filename="relaycheck-alert.json"
        )
        context = self.tls_context or ssl.create_default_context()
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout, local_hostname=self.helo) as client:
                client.ehlo()
                if not client.has_extn("starttls"):
                    raise ChannelError(FailureKind.TLS, f"{self.host}:{self.port} does not offer STARTTLS")
                client.starttls(context=context)
                client.ehlo()
                if self.user is not None:
                    client.login(self.user, self.password or "")
                client.send_message(message, from_addr=self.sender, to_addrs=list(self.recipients))
        except ChannelError:
            raise
        except smtplib.SMTPAuthenticationError as exc:
            raise ChannelError(FailureKind.AUTH, f"login refused: {exc.smtp_code} {_text(exc.smtp_error)}") from None
        except (smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
            raise ChannelError(FailureKind.REFUSED, f"the server refused the alert: {exc}") from None
        except smtplib.SMTPNotSupportedError as exc:
            raise ChannelError(FailureKind.AUTH, f"the server does not support AUTH here: {exc}") from None
        except ssl.SSLError as exc:
            raise ChannelError(
                FailureKind.TLS, f"TLS with {self.host}:{self.port} failed: {exc.reason or exc}"
            ) from None
        except TimeoutError:
            raise ChannelError(FailureKind.TIMEOUT, f"{self.host}:{self.port} did not answer in time") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise ChannelError(FailureKind.CONNECT, f"cannot send through {self.host}:{self.port}: {exc}") from None


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


@dataclass(frozen=True)
class Command:
    command: str
    timeout: float = 60.0

    @property
    def name(self) -> str:
        return f"exec {self.command}"

    def send(self, payload: dict[str, Any]) -> None:
        env_extra = {
            "RELAYCHECK_TARGET": str(payload["target"]),
            "RELAYCHECK_VERDICT": str(payload["verdict"]["after"]),
            "RELAYCHECK_SUMMARY": str(payload["summary"]),
        }
        try:
            done = subprocess.run(
                shlex.split(self.command),
                input=alert_json(payload).encode(),
                capture_output=True,
                timeout=self.timeout,
                env={**os.environ, **env_extra},
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise ChannelError(FailureKind.TIMEOUT, f"the command ran longer than {self.timeout:g} s") from None
        except OSError as exc:
            raise ChannelError(FailureKind.START, f"cannot run {self.command!r}: {exc.strerror or exc}") from None
        if done.returncode != 0:
            tail = done.stderr[-OUTPUT_CAP:].decode(errors="replace").strip().splitlines()
            last = f": {tail[-1]}" if tail else ""
            raise ChannelError(FailureKind.EXIT_STATUS, f"the command exited with {done.returncode}{last}")


def command(text: str) -> Command:
    try:
        if not shlex.split(text):
            raise ValueError("empty")
    except ValueError:
        raise UsageError(f"--exec takes a command line, not {text!r}") from None
    return Command(text)


@dataclass(frozen=True)
class Outcome:
    ok: bool
    attempts: int
    error: str | None = None
    kind: FailureKind | None = None


def deliver(channel: Channel, payload: dict[str, Any], *, attempts: int = 3, wait: float = 2.0) -> Outcome:
    """Send, retrying a failure ``attempts`` times in all with waits of wait, 2*wait, 4*wait…"""
    error: ChannelError | None = None
    for attempt in range(1, attempts + 1):
        try:
            channel.send(payload)
            return Outcome(True, attempt)
        except ChannelError as exc:
            error = exc
        if attempt < attempts and wait > 0:
            time.sleep(wait * 2 ** (attempt - 1))
    assert error is not None
    return Outcome(False, attempts, str(error), error.kind)

"""Arrival checks by polling an IMAP mailbox the operator names (``--imap URL``).

``imaps://user@imap.example.org/INBOX`` (or ``imap://`` with STARTTLS when offered); the server
certificate is verified against the system's trust store, or ``--imap-cafile``. The
password never comes from the command line: ``RELAYCHECK_IMAP_PASSWORD`` or a prompt. Test
messages found are deleted unless ``keep`` is set. imaplib is blocking, so each poll runs in a
thread; polls are spaced by ``interval`` seconds (a wait on the mailbox, not a synchronisation).
"""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import ssl
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from relaycheck.errors import ImapError, UsageError
from relaycheck.sink import TOKEN_HEADER, Arrival, parse_arrival

PASSWORD_VARIABLE = "RELAYCHECK_IMAP_PASSWORD"


@dataclass(frozen=True)
class ImapLocation:
    secure: bool  # imaps (implicit TLS) or imap (STARTTLS when offered)
    host: str
    port: int
    user: str
    mailbox: str


def parse_imap_url(url: str) -> ImapLocation:
    if not url.isprintable():  # urlsplit would silently drop CR/LF, and the user name goes into LOGIN
        raise UsageError("--imap: control characters in the URL")
    parts = urlsplit(url)
    if parts.scheme not in ("imap", "imaps"):
        raise UsageError(f"--imap needs an imap:// or imaps:// URL, not {url!r}")
    if not parts.hostname or not parts.username:
        raise UsageError(f"--imap URL must name a user and a host: imaps://user@host/INBOX, not {url!r}")
    if parts.password:
        raise UsageError(f"put the IMAP password in ${PASSWORD_VARIABLE}, not in the URL")
    try:
        port = parts.port or (993 if parts.scheme == "imaps" else 143)
    except ValueError:
        raise UsageError(f"bad port in {url!r}") from None
    mailbox = unquote(parts.path.lstrip("/")) or "INBOX"
    return ImapLocation(parts.scheme == "imaps", parts.hostname, port, unquote(parts.username), mailbox)


def imap_tls_context(cafile: str | None = None) -> ssl.SSLContext:
    """A verifying TLS context: the system's trust store, or only ``cafile`` when given (the
    mailbox server's self-signed certificate, or the private CA that signed it)."""
    try:
        return ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"--imap-cafile {cafile}: no usable certificate ({exc})") from None


class ImapWatcher:
    via = "imap"

    def __init__(
        self,
        location: ImapLocation,
        password: str,
        *,
        keep: bool = False,
        interval: float = 5.0,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.location = location
        self._password = password
        self.keep = keep
        self.interval = interval
        self.tls_context = tls_context or ssl.create_default_context()

    def _connect(self) -> imaplib.IMAP4:
        loc = self.location
        if loc.secure:
            client: imaplib.IMAP4 = imaplib.IMAP4_SSL(loc.host, loc.port, ssl_context=self.tls_context, timeout=30)
        else:
            client = imaplib.IMAP4(loc.host, loc.port, timeout=30)
            if "STARTTLS" in client.capabilities:
                client.starttls(ssl_context=self.tls_context)
        client.login(loc.user, self._password)
        status, _ = client.select(_quote(loc.mailbox))
        if status != "OK":
            raise ImapError(f"IMAP mailbox {loc.mailbox!r} cannot be opened")
        return client

    def poll(self, tokens: set[str]) -> dict[str, Arrival]:
        """One look at the mailbox (blocking): the test messages among ``tokens`` found there."""
        try:
            client = self._connect()
        except (OSError, imaplib.IMAP4.error) as exc:
            raise ImapError(f"IMAP {self.location.host}: {exc}") from None
        found: dict[str, Arrival] = {}
        try:
            for token in sorted(tokens):
                status, data = client.search(None, "HEADER", TOKEN_HEADER, token)
                if status != "OK" or not data or not data[0]:
                    continue
                for number in data[0].split():
                    status, parts = client.fetch(number.decode(), "(BODY.PEEK[HEADER])")
                    raw = next((p[1] for p in parts if isinstance(p, tuple)), b"")
                    arrival = parse_arrival(raw, peer="imap", mail_from="", rcpt_tos=())
                    if arrival is not None and arrival.token == token:
                        found[token] = arrival
                        if not self.keep:
                            client.store(number.decode(), "+FLAGS", "(\\Deleted)")
            if found and not self.keep:
                client.expunge()
        except imaplib.IMAP4.error as exc:
            raise ImapError(f"IMAP {self.location.host}: {exc}") from None
        finally:
            with contextlib.suppress(OSError, imaplib.IMAP4.error):
                client.logout()
        return found

    async def check_ready(self) -> None:
        """Log in and open the mailbox once before any test message is sent: a wrong password or
        an untrusted certificate must stop the run before it leaves messages nobody reads."""
        await asyncio.to_thread(self.poll, set())

    async def wait_for(self, tokens: set[str], timeout: float) -> dict[str, Arrival]:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        found: dict[str, Arrival] = {}
        while True:
            found.update(await asyncio.to_thread(self.poll, tokens - found.keys()))
            left = end - loop.time()
            if tokens <= found.keys() or left <= 0:
                return found
            await asyncio.sleep(min(self.interval, left))


def _quote(mailbox: str) -> str:
    return '"' + mailbox.replace("\\", "\\\\").replace('"', '\\"') + '"'

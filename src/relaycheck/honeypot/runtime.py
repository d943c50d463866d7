"""Putting a honeypot together on the running event loop: log, store, registry, listeners.

Used by the ``relaycheck honeypot`` command (after it has bound its sockets and dropped
privileges) and by tests, which run it on loopback.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from relaycheck.honeypot.deliver import ProbeDelivery, Smarthost
from relaycheck.honeypot.dropbox import DropboxRegistry
from relaycheck.honeypot.model import SessionRecord
from relaycheck.honeypot.publish import HpfeedsPublisher, HpfeedsTarget
from relaycheck.honeypot.record import SessionLog
from relaycheck.honeypot.server import Honeypot, HoneypotConfig, serve
from relaycheck.honeypot.store import MessageStore

MB = 1024 * 1024


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    config: HoneypotConfig
    disk_quota: int = 1024 * MB  # raw message bodies
    max_log: int = 1024 * MB  # sessions.jsonl before it is rotated (one old generation kept)
    smarthost: Smarthost | None = None  # set only with --deliver-probes
    max_probe_deliveries: int = 10
    hpfeeds: HpfeedsTarget | None = None
    hpfeeds_wait: float = 5.0  # seconds the start waits for the broker (the client keeps retrying after)


@dataclass
class Listener:
    sock: socket.socket
    implicit_tls: bool


@dataclass
class Running:
    honeypot: Honeypot
    servers: list[asyncio.Server]
    log: SessionLog
    tls_servers: list[asyncio.Server]
    publisher: HpfeedsPublisher | None = None

    @property
    def addresses(self) -> list[tuple[str, int, bool]]:
        """(host, port, implicit TLS) of each listener, ports as bound (port 0 resolved)."""
        found = []
        for server in self.servers:
            for sock in server.sockets:
                host, port = sock.getsockname()[:2]
                found.append((str(host), int(port), server in self.tls_servers))
        return found


async def start(
    settings: Settings,
    listeners: list[Listener],
    tls: ssl.SSLContext,
    on_record: Callable[[SessionRecord], None] | None = None,
) -> Running:
    directory = settings.data_dir
    log = SessionLog(directory, settings.max_log)
    store = MessageStore(directory, settings.disk_quota)
    delivery = None
    if settings.smarthost is not None:
        delivery = ProbeDelivery(directory, settings.smarthost, settings.max_probe_deliveries, settings.config.hostname)
    publisher = None
    if settings.hpfeeds is not None:
        publisher = HpfeedsPublisher(settings.hpfeeds, settings.config.tags)
        await publisher.wait_connected(settings.hpfeeds_wait)

    def recorded(record: SessionRecord) -> None:
        if publisher is not None:
            publisher.publish(record)
        if on_record is not None:
            on_record(record)

    honeypot = Honeypot(settings.config, log, store, DropboxRegistry(directory), delivery, recorded)
    servers = []
    tls_servers = []
    for listener in listeners:
        server = await serve(honeypot, listener.sock, implicit_tls=tls if listener.implicit_tls else None, starttls=tls)
        servers.append(server)
        if listener.implicit_tls:
            tls_servers.append(server)
    return Running(honeypot, servers, log, tls_servers, publisher)


async def stop(running: Running) -> None:
    """Stop listening, end the open sessions, write their records."""
    for server in running.servers:
        server.close()
    await running.honeypot.abort_all()
    for server in running.servers:
        await server.wait_closed()
    await running.honeypot.drain()
    running.honeypot.save_dropboxes()
    if running.publisher is not None:
        await running.publisher.close()
    running.log.close()

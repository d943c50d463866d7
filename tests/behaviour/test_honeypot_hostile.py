"""Hostile clients against the honeypot process (a child, so that its memory can be measured):
long lines, endless DATA, garbage, a flood of connections from many addresses, more messages than
the disk quota. It must survive, stay within its memory and disk bounds, and keep a clean log."""

from __future__ import annotations

import json
import resource
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .honeypot_support import Child

QUOTA_MB = 1
LOG_MB = 1
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)  # Linux
RSS_LIMIT = 200 * 1024 * 1024  # generous: the process idles at about 50 MB


@pytest.fixture
def honeypot_process(tmp_path: Path) -> Iterator[tuple[Child, int, Path]]:
    data = tmp_path / "data"
    arguments = [
        sys.executable, "-m", "relaycheck", "honeypot", "--listen", "127.0.0.1:0", "--data-dir", str(data),
        "--hostname", "mail.honeypot.test", "--delay", "0:0", "--disk-quota", str(QUOTA_MB),
        "--max-log", str(LOG_MB), "--max-message-size", str(512 * 1024), "--idle-timeout", "2",
        "--session-limit", "4", "--max-per-address", "20", "--max-sessions", "100",
    ]  # fmt: skip
    proc = subprocess.Popen(
        arguments,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    child = Child(proc)
    try:
        text = child.read_until(b"ready", 30)
        port = int(text.split(b"listening on 127.0.0.1:")[1].split(b" ")[0])
        yield child, port, data
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def connect(port: int, source: str = "127.0.0.1", timeout: float = 10) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)  # the port is chosen at connect: fast
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def reply(sock: socket.socket) -> bytes:
    """One complete SMTP reply (bounded: 64 KiB)."""
    data = b""
    while len(data) < 65536:
        chunk = sock.recv(4096)
        if not chunk:
            return data
        data += chunk
        lines = data.split(b"\r\n")
        if len(lines) > 1 and any(len(x) >= 4 and x[3:4] == b" " for x in lines[:-1]):
            return data
    return data


def command(sock: socket.socket, line: bytes) -> bytes:
    sock.sendall(line + b"\r\n")
    return reply(sock)


def until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (the socket's timeout bounds each wait)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def long_lines(port: int) -> None:
    with connect(port) as s:
        assert reply(s).startswith(b"220 ")
        assert command(s, b"EHLO " + b"a" * 1_000_000).startswith(b"500")
        assert command(s, b"EHLO client.example").startswith(b"250")
        assert command(s, b"NOOP").startswith(b"250")
    with connect(port) as s:  # 8 MB without a line end, then gone
        reply(s)
        s.sendall(b"x" * 8_000_000)


def endless_data(port: int) -> int:
    """DATA that never ends: the session limit cuts it. Returns the bytes the server took."""
    sent = 0
    line = b"y" * 998 + b"\r\n"
    block = line * 1024
    with connect(port) as s:
        reply(s)
        command(s, b"EHLO flood.example")
        command(s, b"MAIL FROM:<a@flood.example>")
        command(s, b"RCPT TO:<b@victim.example>")
        assert command(s, b"DATA").startswith(b"354")
        try:
            while sent < 2_000_000_000:
                s.sendall(block)
                sent += len(block)
        except (BrokenPipeError, ConnectionResetError):
            pass
    return sent


def garbage(port: int) -> None:
    with connect(port) as s:
        reply(s)
        junk = (b"\x00\xff\xfe\r\n", b"\n\n\n", b".\r\n", b"MAIL FROM:<\x00>\r\n", b"RCPT TO:\r\n", b"\x16\x03\x01")
        for piece in junk:
            s.sendall(piece)
        s.sendall(b"QUIT\r\n")
        until_closed(s)


def over_quota(port: int) -> None:
    for number in range(6):
        body = (f"Subject: big {number}\r\n\r\n".encode() + bytes([65 + number]) * 400_000).replace(b"\n", b"\r\n")
        body = b"\r\n".join(body[i : i + 900] for i in range(0, len(body), 900)) + b"\r\n"
        with connect(port) as s:
            reply(s)
            command(s, b"EHLO big.example")
            command(s, b"MAIL FROM:<a@big.example>")
            command(s, b"RCPT TO:<b@victim.example>")
            command(s, b"DATA")
            s.sendall(body + b".\r\n")
            assert reply(s).startswith(b"250")
            command(s, b"QUIT")


def flood(port: int, sources: int, per_source: int) -> tuple[int, int]:
    """Many connections at once from many loopback addresses; returns (greeted, refused)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, sources * per_source + 256)), hard))
    sockets = []
    greeted = refused = 0
    try:
        for n in range(sources):
            for _ in range(per_source):
                sockets.append(connect(port, f"127.0.1.{n + 1}"))
        for s in sockets:
            first = reply(s)
            if first.startswith(b"220 "):
                greeted += 1
            elif first.startswith(b"421"):
                refused += 1
    finally:
        for s in sockets:
            s.close()
    return greeted, refused


def test_hostile_clients_cannot_crash_it_or_fill_memory_and_disk(
    honeypot_process: tuple[Child, int, Path], record_property: pytest.RecordProperty
) -> None:
    child, port, data = honeypot_process
    long_lines(port)
    took = endless_data(port)
    garbage(port)
    over_quota(port)
    greeted, refused = flood(port, sources=50, per_source=30)
    with connect(port) as s:  # idle: the server hangs up after the idle timeout
        assert reply(s).startswith(b"220 ")
        assert b"421" in until_closed(s)
    with connect(port) as s:  # and it still serves a normal client
        assert reply(s).startswith(b"220 ")
        assert command(s, b"EHLO after.example").startswith(b"250")
        command(s, b"QUIT")

    peak = child.peak_rss()
    child.proc.send_signal(signal.SIGTERM)
    assert child.proc.wait(30) == 0
    assert child.proc.stderr is not None
    child.stderr += child.proc.stderr.read(1 << 20)
    assert b"Traceback" not in child.stderr, child.stderr.decode(errors="replace")

    disk = sum(p.stat().st_size for p in data.rglob("*") if p.is_file())
    stored = sum(p.stat().st_size for p in (data / "messages").rglob("*.eml"))
    records = [json.loads(line) for line in (data / "sessions.jsonl").read_bytes().splitlines()]
    for name, value in {"peak_rss_mb": peak / 2**20, "disk_kb": disk / 1024, "endless_data_mb": took / 2**20}.items():
        record_property(name, round(value, 1))
    print(f"\nhostile: peak RSS {peak / 2**20:.1f} MB, data dir {disk / 1024:.0f} KiB, "
          f"endless DATA took {took / 2**20:.0f} MB, flood greeted {greeted} refused {refused}")  # fmt: skip

    assert peak < RSS_LIMIT
    assert stored <= QUOTA_MB * 2**20
    assert disk <= (QUOTA_MB + 2 * LOG_MB) * 2**20 + 256 * 1024
    assert took > 4 * 512 * 1024  # the server kept reading past the size limit, and dropped it
    stopped = child.stderr.split(b"stopped: ")[1]
    assert b" at most " in stopped
    at_once, per_address = (int(x.split()[0]) for x in stopped.split(b" at most ")[1].split(b", "))
    assert refused > 0 and greeted >= 20
    assert at_once <= 100 and per_address <= 20  # the caps held (--max-sessions, --max-per-address)
    [endless] = [r for r in records if r["helo"] == "flood.example"]
    assert endless["end_reason"] == "session-limit"  # data kept coming: not idle, but not forever
    assert endless["transactions"][0]["data_outcome"] == "aborted"
    assert "idle-timeout" in [r["end_reason"] for r in records]
    outcomes = [t["data_outcome"] for r in records for t in r["transactions"]]
    assert outcomes.count("accepted") == 6
    assert len(list((data / "messages").rglob("*.eml"))) == 2  # the newest two of the six 400 KB bodies

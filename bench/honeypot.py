"""Benchmark: sessions per second the honeypot handles on loopback, against plain aiosmtpd.

Both servers run as child processes (one core each at most) and get the same client load:
``--clients`` concurrent connections, each running whole sessions one after another — EHLO,
MAIL, three RCPT (one a percent-hack trick), DATA with a small message, QUIT — until
``--sessions`` are done. The baseline is aiosmtpd with a handler that keeps nothing; the honeypot
runs with its jitter off (``--delay 0:0``) and records every session (JSONL, message store,
classification). Prints sessions/s for both and the honeypot/baseline ratio.

Usage: ``python bench/honeypot.py [--sessions 2000] [--clients 20]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASELINE = """
import asyncio, sys
from aiosmtpd.smtp import SMTP
class Keep:
    async def handle_DATA(self, server, session, envelope):
        return "250 2.0.0 Ok: queued"
async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(Keep(), hostname="baseline.test"), "127.0.0.1", 0)
    print(f"listening on 127.0.0.1:{server.sockets[0].getsockname()[1]} ready", file=sys.stderr, flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""

MESSAGE = (
    b"From: bot@spam.example\r\nSubject: relay test 7F000001\r\nMessage-ID: <x@spam.example>\r\n\r\n"
    + b"Hello, see https://spam.example/offer\r\n" * 20
)


def start(command: list[str]) -> tuple[subprocess.Popen[bytes], int]:
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    seen = b""
    deadline = time.monotonic() + 30
    while b"ready" not in seen:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([proc.stderr], [], [], left)[0]:
            raise SystemExit(f"server did not start: {seen.decode(errors='replace')}")
        chunk = os.read(proc.stderr.fileno(), 65536)
        if not chunk:
            raise SystemExit(f"server ended: {seen.decode(errors='replace')}")
        seen += chunk
    return proc, int(seen.split(b"listening on 127.0.0.1:")[1].split(b" ")[0])


async def session(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def reply() -> bytes:
        while True:
            line = await reader.readline()
            if len(line) < 4 or line[3:4] != b"-":
                return line

    await reply()
    for command in (
        b"EHLO bot.spam.example",
        b"MAIL FROM:<bot@spam.example>",
        b"RCPT TO:<drop@harvest.example>",
        b"RCPT TO:<a%victim.example@[127.0.0.1]>",
        b"RCPT TO:<b@victim.example>",
        b"DATA",
    ):
        writer.write(command + b"\r\n")
        await reply()
    writer.write(MESSAGE + b".\r\nQUIT\r\n")
    await reply()
    await reply()
    writer.close()
    await writer.wait_closed()


async def load(port: int, sessions: int, clients: int) -> float:
    left = sessions

    async def client() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await session(port)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return sessions / (time.perf_counter() - started)


def measure(command: list[str], sessions: int, clients: int) -> float:
    proc, port = start(command)
    try:
        return asyncio.run(load(port, sessions, clients))
    finally:
        proc.terminate()
        proc.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data:
        honeypot = [
            sys.executable, "-m", "relaycheck", "honeypot", "--listen", "127.0.0.1:0", "--data-dir", data,
            "--hostname", "mail.bench.test", "--delay", "0:0", "--max-per-address", str(args.clients * 2),
        ]  # fmt: skip
        baseline = measure([sys.executable, "-c", BASELINE], args.sessions, args.clients)
        rate = measure(honeypot, args.sessions, args.clients)
        records = sum(1 for _ in (Path(data) / "sessions.jsonl").open("rb"))
    print(f"aiosmtpd baseline: {baseline:8.0f} sessions/s")
    print(f"honeypot:          {rate:8.0f} sessions/s ({records} sessions recorded)")
    print(f"honeypot/baseline: {rate / baseline:8.2f}")


if __name__ == "__main__":
    main()

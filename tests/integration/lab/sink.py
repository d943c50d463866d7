"""The lab's receiving sink: the only next hop of every lab MTA.

An open relay in the lab can deliver nowhere else, and what it delivers is recorded here, one
JSON line per message, so a test can see that mail really went through.

Run inside the sink namespace: ``python sink.py --listen 198.18.0.4 --port 25 --record FILE``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session


class RecordingHandler:
    """aiosmtpd handler that appends each accepted message's envelope to a JSON-lines file."""

    def __init__(self, record: Path) -> None:
        self.record = record

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        entry: dict[str, Any] = {
            "peer": session.peer[0] if session.peer else None,
            "helo": session.host_name,
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "size": len(content),
            "content": content.decode("utf-8", "replace"),
        }
        # One write per line so a reader never sees half a record.
        with self.record.open("a", encoding="utf-8") as out:
            out.write(json.dumps(entry) + "\n")
        return "250 2.0.0 Ok: recorded by the lab sink"


async def serve(host: str, port: int, record: Path) -> None:
    handler = RecordingHandler(record)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="sink.lab.test", ident="relaycheck lab sink"),
        host=host,
        port=port,
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        # The lab waits for this line (lab.start_sink): create_server() has bound and is listening.
        print(f"sink listening on {host}:{port}", flush=True)
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", required=True)
    parser.add_argument("--port", type=int, default=25)
    parser.add_argument("--record", type=Path, required=True)
    args = parser.parse_args()
    args.record.touch()
    asyncio.run(serve(args.listen, args.port, args.record))


if __name__ == "__main__":
    main()

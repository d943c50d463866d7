"""Benchmark: the web service's memory under large request bodies.

Starts ``relaycheck serve`` (the Python on PYTHONPATH: run it once with the code before a change
and once after to compare), measures its resident memory at rest, then posts ``--bodies``
bodies of ``--size-mb`` MB at once — JSON to the API and/or form bodies to ``/check`` (``--kind``), half of
them chunked without a Content-Length — and reports the peak RSS while they are under way and
the RSS afterwards, with the ratio to the resting RSS measured in the same run.

    .venv/bin/python bench/web_bodies.py [--bodies 8] [--size-mb 50]
    PYTHONPATH=/path/to/old/src .venv/bin/python bench/web_bodies.py   # the baseline
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def chunks(data: bytes, size: int = 1 << 20) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bodies", type=int, default=8)
    parser.add_argument("--size-mb", type=int, default=50)
    parser.add_argument("--kind", choices=("json", "form", "both"), default="both", help="what to post")
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen(
            [sys.executable, "-m", "relaycheck", "serve", "--listen", f"127.0.0.1:{port}",
             "--db", str(Path(tmp) / "web.db"), "--rate", "100000"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=os.environ.copy(),
        )
        try:
            assert server.stderr is not None
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # wait for the readiness line, then for uvicorn
                line = server.stderr.readline().decode()
                if "Uvicorn running" in line or "Application startup complete" in line:
                    break
            httpx.get(f"http://127.0.0.1:{port}/", timeout=10)
            resting = rss_mb(server.pid)
            body = b'{"target": "' + b"a" * (args.size_mb * 1024 * 1024) + b'"}'
            form = b"target=" + b"a" * (args.size_mb * 1024 * 1024) + b"&port=25"
            answers: list[str] = []
            peak = resting
            done = threading.Event()

            def post(index: int) -> None:
                as_json = args.kind == "json" or (args.kind == "both" and index % 2 == 0)
                url = f"http://127.0.0.1:{port}" + ("/api/v1/checks" if as_json else "/check")
                content = body if as_json else form
                kind = "application/json" if as_json else "application/x-www-form-urlencoded"
                try:
                    payload = chunks(content) if index % 4 >= 2 else content  # half of them chunked
                    response = httpx.post(url, content=payload, headers={"content-type": kind}, timeout=120)
                    answers.append(str(response.status_code))
                except httpx.HTTPError as exc:
                    answers.append(type(exc).__name__)

            threads = [threading.Thread(target=post, args=(i,)) for i in range(args.bodies)]
            started = time.monotonic()
            for thread in threads:
                thread.start()

            def sample() -> None:
                nonlocal peak
                while not done.is_set():
                    peak = max(peak, rss_mb(server.pid))
                    done.wait(0.02)

            sampler = threading.Thread(target=sample)
            sampler.start()
            for thread in threads:
                thread.join()
            elapsed = time.monotonic() - started
            done.set()
            sampler.join()
            after = rss_mb(server.pid)
        finally:
            server.terminate()
            server.wait(timeout=20)
    print(f"bodies: {args.bodies} x {args.size_mb} MB ({args.kind}, half chunked) in {elapsed:.2f} s")
    print(f"answers: {', '.join(sorted(answers))}")
    print(f"RSS resting {resting:.0f} MB, peak {peak:.0f} MB ({peak / resting:.2f}x), after {after:.0f} MB "
          f"({after / resting:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

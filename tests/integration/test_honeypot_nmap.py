"""nmap's smtp-open-relay script against the honeypot on 127.0.0.1: nmap must call it an open
relay, and the honeypot must record nmap's session as a scanner named nmap.

No network namespace is needed (loopback only); nmap comes from scripts/lab-deps.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import unavailable

pytestmark = pytest.mark.integration


def _read_until(proc: subprocess.Popen[bytes], marker: bytes, timeout: float) -> bytes:
    assert proc.stderr is not None
    seen = b""
    deadline = time.monotonic() + timeout
    poller = select.poll()
    poller.register(proc.stderr.fileno(), select.POLLIN)
    while marker not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"honeypot not ready: {seen.decode(errors='replace')}"
        if poller.poll(left * 1000):
            chunk = os.read(proc.stderr.fileno(), 65536)
            assert chunk, f"honeypot ended: {seen.decode(errors='replace')}"
            seen += chunk
    return seen


@pytest.mark.parametrize("persona", ["postfix", "exchange"])
def test_nmap_smtp_open_relay_calls_the_honeypot_an_open_relay(tmp_path: Path, persona: str) -> None:
    nmap = shutil.which("nmap")
    if nmap is None:
        unavailable("nmap is not installed (scripts/lab-deps installs it)")
    command = [
        sys.executable, "-m", "relaycheck", "honeypot", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path),
        "--persona", persona, "--hostname", "mail.honeypot.test", "--delay", "0:0",
    ]  # fmt: skip
    honeypot = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        ready = _read_until(honeypot, b"ready", 30)
        port = ready.split(b"listening on 127.0.0.1:")[1].split(b" ")[0].decode()
        # -sV: the script runs on a port nmap has identified as SMTP (ours is not 25/465/587).
        scan = subprocess.run(
            [nmap, "-Pn", "-n", "-sV", "--version-light", "-p", port, "--script", "smtp-open-relay", "127.0.0.1"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        honeypot.send_signal(signal.SIGTERM)
        assert honeypot.wait(30) == 0
    assert "Server is an open relay (16/16 tests)" in scan.stdout, scan.stdout + scan.stderr

    records = [json.loads(line) for line in (tmp_path / "sessions.jsonl").read_text().splitlines()]
    relay_sessions = [r for r in records if r["transactions"]]
    assert relay_sessions, records
    assert {(r["classification"], r["tool"]) for r in relay_sessions} == {("scanner", "nmap")}
    assert {r["classification"] for r in records} == {"scanner"}
    tricks = {x["probe_id"] for r in relay_sessions for t in r["transactions"] for x in t["recipients"]}
    assert {"V03", "V12", "V20"} <= tricks  # nmap's tests, read with relaycheck's own catalogue

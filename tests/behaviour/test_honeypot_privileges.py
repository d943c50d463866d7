"""--user: the honeypot binds as root, then runs as that user for good (checked in a child process)."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import smtplib
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from .honeypot_support import Child

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root (run the suite as root)")


def test_drops_to_the_user_after_binding_and_still_records() -> None:
    nobody = pwd.getpwnam("nobody")
    parent = Path(tempfile.mkdtemp(prefix="relaycheck-honeypot-"))
    parent.chmod(0o755)  # like /var/lib: the user must reach its data directory
    data = parent / "data"
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "relaycheck", "honeypot", "--listen", "127.0.0.1:0", "--data-dir", str(data),
             "--user", "nobody", "--delay", "0:0", "--hostname", "mail.honeypot.test"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        child = Child(proc)
        try:
            ready = child.read_until(b"ready", 30)
            port = int(ready.split(b"listening on 127.0.0.1:")[1].split(b" ")[0])
            status = dict(
                line.split(":\t", 1)
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                if ":\t" in line
            )
            assert status["Uid"].split() == [str(nobody.pw_uid)] * 4  # real, effective, saved, filesystem
            assert status["Gid"].split() == [str(nobody.pw_gid)] * 4
            assert status["Groups"].strip() == ""
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
                client.starttls()
                client.ehlo()
                client.sendmail("bot@spam.example", ["drop@harvest.example"], "Subject: test 7F000001\r\n\r\nok\r\n")
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
        assert proc.stderr is not None
        errors = child.stderr + proc.stderr.read(1 << 20)
        assert b"Traceback" not in errors, errors.decode(errors="replace")
        log = data / "sessions.jsonl"
        assert log.stat().st_uid == nobody.pw_uid
        records = [json.loads(line) for line in log.read_text().splitlines()]
        assert len(records) == 1, (records, errors.decode(errors="replace"))
        record = records[0]
        assert record["classification"] == "relay-test" and record["tls_version"]
        assert all(p.stat().st_uid == nobody.pw_uid for p in data.rglob("*"))
        assert (data / "tls-key.pem").stat().st_mode & 0o077 == 0
    finally:
        shutil.rmtree(parent)

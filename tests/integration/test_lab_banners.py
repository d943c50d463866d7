"""The lab MTAs' real greetings, EHLO keywords and refusals: ground truth for the fingerprint table.

One plain SMTP conversation per server (greeting, EHLO, a relay attempt, postmaster, an unknown
local user, VRFY/EXPN/HELP) is captured verbatim from the client namespace and compared with
``tests/fixtures/banners/lab-<family>.txt``, which tests/unit/test_fingerprint_lab.py runs
``relaycheck.fingerprint.fingerprint()`` over without root. When a Debian update changes what the
MTAs say, refresh the files with ``RELAYCHECK_UPDATE_BANNERS=1`` (and review the diff).

relaycheck's own reading of the same servers: ``targets[0].hygiene.fingerprint.family`` for the
Postfix, Exim and Sendmail servers is asserted in test_lab_verdicts.py (on the runs it makes anyway), and
for OpenSMTPD here.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from relaycheck.fingerprint import FAMILY_NAMES, fingerprint
from relaycheck.model import Reply
from relaycheck.smtp.wire import ReplyParser, parse_ehlo

from .lab import EXIM_BIN, OPENSMTPD_BIN, SENDMAIL_BIN, Lab, Server
from .lab.runner import EXIT_CODES, RelaycheckRun, check_server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "banners"
UPDATE = bool(os.environ.get("RELAYCHECK_UPDATE_BANNERS"))
SENDER = "relaycheck@client.lab.test"
# family -> the lab servers whose conversations its file holds (the refusal wordings differ).
SESSIONS: dict[str, tuple[str, ...]] = {
    "postfix": ("postfix-closed", "postfix-defer", "postfix-reject-client"),
    "exim": ("exim-closed",),
    "opensmtpd": ("opensmtpd-closed",),
    "sendmail": ("sendmail-closed",),
}
# Exim's and Sendmail's greetings carry the time of day: the one part that changes between runs.
_DATE = re.compile(r"\b[A-Z][a-z]{2}, \d{1,2} [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d (?:[+-]\d{4}|[A-Z]{3,4})\b")

Step = tuple[str | None, list[str]]  # (command sent or None for the greeting, reply lines)


def conversation(lab: Lab, server: Server) -> tuple[str, ...]:
    domain = server.domain
    return (
        f"EHLO {lab.client_hostname}",
        f"MAIL FROM:<{SENDER}>",
        f"RCPT TO:<relaytest@{lab.outside_domains[0]}>",
        f"RCPT TO:<postmaster@{domain}>",
        f"RCPT TO:<rc-nouser@{domain}>",
        "RSET",
        "VRFY postmaster",
        "VRFY rc-nouser",
        "EXPN postmaster",
        "HELP",
        "NOOP",
        "QUIT",
    )


def converse(ip: str, port: int, commands: Sequence[str]) -> list[Step]:
    """Send each command and read its whole reply, verbatim (a handful of refusals: far below
    Postfix's error limits)."""
    with socket.create_connection((ip, port), timeout=15) as sock:
        reader = sock.makefile("rb")

        def reply() -> list[str]:
            lines: list[str] = []
            while True:
                raw = reader.readline(4096)
                if not raw:
                    raise ConnectionError(f"{ip}:{port} closed the connection after {lines}")
                lines.append(raw.decode("utf-8", "replace").rstrip("\r\n"))
                if lines[-1][3:4] != "-":
                    return lines

        steps: list[Step] = [(None, reply())]
        for command in commands:
            sock.sendall(command.encode("ascii") + b"\r\n")
            steps.append((command, reply()))
    return steps


def render_session(name: str, summary: str, steps: Sequence[Step]) -> str:
    lines = [f"== {name}: {summary}"]
    for sent, reply in steps:
        if sent is not None:
            lines.append(f"C: {sent}")
        lines += [f"S: {line}" for line in reply]
    return "\n".join(lines) + "\n"


def session_texts(text: str) -> dict[str, str]:
    """The sessions of a fixture file by server name (header comments left out)."""
    sessions: dict[str, str] = {}
    name = None
    for line in text.splitlines(keepends=True):
        if line.startswith("== "):
            name = line[3:].split(":", 1)[0]
            sessions[name] = ""
        if name is not None and not line.startswith("#"):
            sessions[name] += line
    return sessions


def normalized(text: str) -> str:
    return _DATE.sub("<date>", text)


def software_versions() -> dict[str, str]:
    """What the lab runs, as the programs report it (for the fixture files' header)."""

    def first(argv: list[str], pattern: str) -> str:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        match = re.search(pattern, done.stdout + done.stderr, re.MULTILINE)
        return match.group(1) if match else "unknown version"

    return {
        "postfix": first(["postconf", "-d", "-h", "mail_version"], r"^(\S+)"),
        "exim": first([str(EXIM_BIN), "-C", "/dev/null", "-bV"], r"^Exim version (\S+)"),
        "opensmtpd": first([str(OPENSMTPD_BIN), "-h"], r"^version: OpenSMTPD (\S+)"),
        "sendmail": first([str(SENDMAIL_BIN), "-d0.1", "-bt", "-C/dev/null"], r"^Version (\S+)"),
    }


def header(family: str, version: str) -> str:
    return (
        f"# Real SMTP replies of the integration lab's {FAMILY_NAMES[family]} {version} (Debian 12 package), one\n"
        "# conversation per lab server, captured verbatim from the lab's client namespace (an outside\n"
        "# address) by tests/integration/test_lab_banners.py; RELAYCHECK_UPDATE_BANNERS=1 rewrites it.\n"
        '# "C:" is what the client sent, "S:" each line the server answered.\n'
        "\n"
    )


def capture(lab: Lab, name: str) -> list[Step]:
    server = lab.server(name)
    return lab.in_client(lambda: converse(server.ip, server.port, conversation(lab, server)))


@pytest.fixture(scope="module")
def captured(lab: Lab) -> dict[str, dict[str, list[Step]]]:
    """family -> server name -> the conversation; the fixture files rewritten when asked."""
    sessions = {family: {name: capture(lab, name) for name in names} for family, names in SESSIONS.items()}
    if UPDATE:
        versions = software_versions()
        for family, by_server in sessions.items():
            body = "\n".join(
                render_session(name, lab.server(name).spec.summary, steps) for name, steps in by_server.items()
            )
            (FIXTURES / f"lab-{family}.txt").write_text(header(family, versions[family]) + body)
    return sessions


def replies_of(steps: Sequence[Step]) -> tuple[Reply, list[str], list[Reply]]:
    """Banner, EHLO keywords and every reply, parsed by relaycheck's own reply parser."""
    parser = ReplyParser()
    replies = [reply for _, lines in steps for reply in parser.feed("".join(f"{line}\r\n" for line in lines).encode())]
    ehlo = next(r for (sent, _), r in zip(steps, replies, strict=True) if sent and sent.startswith("EHLO"))
    return replies[0], list(parse_ehlo(ehlo).keywords), replies


@pytest.mark.parametrize("family", SESSIONS)
def test_fixture_file_holds_what_the_lab_says(
    lab: Lab, captured: dict[str, dict[str, list[Step]]], family: str
) -> None:
    path = FIXTURES / f"lab-{family}.txt"
    stored = session_texts(path.read_text()) if path.exists() else {}
    for name, steps in captured[family].items():
        live = render_session(name, lab.server(name).spec.summary, steps)
        assert normalized(stored.get(name, "")).rstrip() == normalized(live).rstrip(), (
            f"{path.name} is out of date for {name}: rerun with RELAYCHECK_UPDATE_BANNERS=1 and review the diff"
        )


@pytest.mark.parametrize("family", SESSIONS)
def test_fingerprint_names_the_family_from_the_live_replies(
    captured: dict[str, dict[str, list[Step]]], family: str
) -> None:
    for name, steps in captured[family].items():
        banner, keywords, replies = replies_of(steps)
        found = fingerprint(banner, keywords, replies)
        assert found.family == family, (name, found)


@pytest.fixture(scope="module")
def opensmtpd_run(lab: Lab, relaycheck_cli: None) -> RelaycheckRun:
    return check_server(lab, lab.server("opensmtpd-closed"), timeout=120)


def test_relaycheck_fingerprints_opensmtpd(opensmtpd_run: RelaycheckRun) -> None:
    fingerprint_json = opensmtpd_run.target["hygiene"]["fingerprint"]
    assert fingerprint_json["family"] == "opensmtpd", opensmtpd_run.describe()


def test_relaycheck_says_stock_opensmtpd_is_closed(opensmtpd_run: RelaycheckRun) -> None:
    assert opensmtpd_run.verdict == "closed", opensmtpd_run.describe()
    assert opensmtpd_run.exit_code == EXIT_CODES["closed"], opensmtpd_run.describe()

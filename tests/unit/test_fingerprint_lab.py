"""The fingerprint table against real replies: the integration lab's MTAs, as captured verbatim.

``tests/fixtures/banners/lab-<family>.txt`` hold whole conversations (greeting, EHLO, a relay
attempt, postmaster, an unknown user, VRFY/EXPN/HELP) with the lab's Debian 12 Postfix, Exim,
OpenSMTPD and Sendmail, written by tests/integration/test_lab_banners.py, which also checks that they still
match what the lab says. No network and no root here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from relaycheck.fingerprint import Source, banner_disclosure, fingerprint, matches
from relaycheck.model import Reply
from relaycheck.smtp.wire import ReplyParser, parse_ehlo

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "banners"
FILES = sorted(FIXTURES.glob("lab-*.txt"))
MASKED = Reply(220, ("*" * 40,))  # what an SMTP-inspecting firewall leaves of a greeting


@dataclass(frozen=True)
class Session:
    file: str
    family: str  # from the file name: lab-<family>.txt
    version: str  # the software version in the file's header (what the program itself reports)
    server: str
    banner: Reply
    ehlo_keywords: tuple[str, ...]
    replies: tuple[Reply, ...]  # every reply, the greeting and the EHLO reply included

    @property
    def id(self) -> str:
        return self.server


_HEADER_VERSION = re.compile(r"^# Real SMTP replies of the integration lab's .*? (?P<version>\S+) \(", re.MULTILINE)


def load(path: Path) -> list[Session]:
    text = path.read_text()
    header = _HEADER_VERSION.search(text)
    assert header, f"{path.name}: no version in the header"
    family = path.stem.removeprefix("lab-")
    sessions: list[Session] = []
    for block in text.split("\n== ")[1:]:
        server = block.split(":", 1)[0]
        parser = ReplyParser()
        replies: list[Reply] = []
        ehlo: Reply | None = None
        sent: str | None = None
        for line in block.splitlines()[1:]:
            if line.startswith("C: "):
                sent = line[3:]
            elif line.startswith("S: "):
                for reply in parser.feed(line[3:].encode() + b"\r\n"):
                    replies.append(reply)
                    if sent is not None and sent.upper().startswith("EHLO "):
                        ehlo = reply
        assert ehlo is not None, f"{path.name}/{server}: no EHLO reply"
        keywords = parse_ehlo(ehlo).keywords
        sessions.append(Session(path.name, family, header["version"], server, replies[0], keywords, tuple(replies)))
    return sessions


SESSIONS = [session for path in FILES for session in load(path)]
# Debian's Postfix banner ("ESMTP Postfix (Debian/GNU)") and OpenSMTPD's hide the version.
VERSION_SHOWN = {"postfix": False, "exim": True, "opensmtpd": False, "sendmail": True}


def test_every_lab_family_has_its_fixture() -> None:
    assert {s.family for s in SESSIONS} == {"postfix", "exim", "opensmtpd", "sendmail"}


@pytest.mark.parametrize("session", SESSIONS, ids=lambda s: s.id)
def test_fingerprint_names_the_family_and_version(session: Session) -> None:
    found = fingerprint(session.banner, session.ehlo_keywords, session.replies)
    assert found.family == session.family, found
    assert found.version == (session.version if VERSION_SHOWN[session.family] else None), found


@pytest.mark.parametrize("session", SESSIONS, ids=lambda s: s.id)
def test_banner_disclosure_names_the_software(session: Session) -> None:
    disclosed = banner_disclosure(session.banner)
    assert disclosed is not None
    assert disclosed.family == session.family
    assert disclosed.version == (session.version if VERSION_SHOWN[session.family] else None)


@pytest.mark.parametrize("session", SESSIONS, ids=lambda s: s.id)
def test_replies_name_the_family_behind_a_masked_banner(session: Session) -> None:
    """A middlebox rewrote the greeting: the EHLO keywords and the reply wordings still tell."""
    replies = (MASKED, *session.replies[1:])
    found = fingerprint(MASKED, session.ehlo_keywords, replies)
    assert found.family == session.family, found
    assert any("banner masked" in line for line in found.evidence), found


@pytest.mark.parametrize("session", SESSIONS, ids=lambda s: s.id)
def test_relay_refusal_is_a_clue_of_its_own(session: Session) -> None:
    """The reply to the relay attempt alone points at the right family (the refusal is what a
    relay test always sees, whatever the banner and EHLO say)."""
    refusal = session.replies[3]  # greeting, EHLO, MAIL, then RCPT to the outside address
    assert refusal.code >= 400, refusal
    clues = {m.signature.family for m in matches(None, (), (refusal,))}
    assert clues == {session.family}, (refusal, clues)


EXIM = [s for s in SESSIONS if s.family == "exim"]


@pytest.mark.parametrize("session", EXIM, ids=lambda s: s.id)
def test_exim_ehlo_keywords_are_clues(session: Session) -> None:
    assert "PIPECONNECT" in session.ehlo_keywords
    ehlo_clues = [m for m in matches(None, session.ehlo_keywords, ()) if m.signature.source is Source.EHLO]
    assert {m.signature.family for m in ehlo_clues} == {"exim"}, ehlo_clues

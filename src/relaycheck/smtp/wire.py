"""Sans-I/O SMTP codec: exact command bytes out, bounded incremental reply parsing in.

Nothing here touches a socket, so the hostile-input cases (huge lines, garbage, endless
continuation lines) are tested without a network. The caps are the tester's protection against a
server that tries to exhaust it: a reply line may not exceed ``MAX_LINE`` bytes, a whole reply
``MAX_REPLY`` bytes, whatever the server sends.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from relaycheck.errors import MalformedReply, ReplyTooLong
from relaycheck.model import Reply
from relaycheck.names import is_hostname

MAX_LINE = 4096  # RFC 5321 allows 512; real servers exceed it a little, hostile ones a lot
MAX_REPLY = 64 * 1024

_ENHANCED = re.compile(r"^([245])\.([0-9]{1,3})\.([0-9]{1,3})(?=\s|$)", re.ASCII)
_FORBIDDEN_IN_COMMAND = ("\r", "\n", "\0")


def encode_command(verb: str, argument: str | None = None) -> bytes:
    """The exact bytes of one command line.

    The argument is put on the wire verbatim (no bracket or quote rewriting: a relay tester must
    send ``RCPT TO:u@ext`` without brackets when it means to). Only CR, LF and NUL are refused,
    because they would smuggle a second command into the stream.
    """
    line = verb if argument is None else f"{verb}{argument}"
    for bad in _FORBIDDEN_IN_COMMAND:
        if bad in line:
            raise ValueError(f"SMTP command contains a forbidden character {bad!r}: {line!r}")
    return line.encode("utf-8") + b"\r\n"


def command_line(verb: str, argument: str | None = None) -> str:
    """The command as shown in transcripts (what ``encode_command`` sends, without CRLF)."""
    return encode_command(verb, argument)[:-2].decode("utf-8")


def mail_from(path: str, params: str = "") -> str:
    """``MAIL FROM:`` + path (verbatim) + optional ESMTP parameters, as a command line."""
    return f"MAIL FROM:{path}{' ' + params if params else ''}"


def rcpt_to(path: str) -> str:
    return f"RCPT TO:{path}"


def parse_enhanced(code: int, text: str) -> str | None:
    """The RFC 3463 enhanced status code at the start of ``text``, if it agrees with ``code``."""
    if text[1:2] != "." or text[:1] != _CLASS_DIGIT.get(code // 100):  # cheap test first: most lack one
        return None
    match = _ENHANCED.match(text)
    return None if match is None else ".".join(match.groups())


_CLASS_DIGIT = {2: "2", 4: "4", 5: "5"}


def _printable(raw: bytes) -> str:
    """Decode a reply line for display and storage, neutralising terminal control characters.

    Replies end up in terminals and HTML: an ESC sequence from a hostile server must not reach
    the user's terminal as such, so control characters become visible ``\\xNN`` escapes.
    """
    text = raw.decode("utf-8", errors="replace")
    if text.isascii() and text.isprintable():  # the common case, without a look at each character
        return text
    return "".join(f"\\x{ord(ch):02x}" if _unsafe(ch) else ch for ch in text)


# Bidirectional overrides reorder what a reader sees ("Trojan Source"); shown escaped too.
_BIDI_CONTROLS = frozenset(chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F))


def _unsafe(ch: str) -> bool:
    """C0, DEL and C1 control characters (terminal escapes) and bidi controls; tab is fine."""
    if ch == "\t":
        return False
    return unicodedata.category(ch) == "Cc" or ch in _BIDI_CONTROLS


# Single-line replies already parsed, by their exact bytes. A battery, and a scan of thousands
# of servers, reads "250 2.1.0 Ok" or "554 5.7.1 <u@ext>: Relay access denied" over and over;
# parsing each once saves most of the parser's work. Replies are immutable, so sharing is safe;
# the table is bounded (cleared when full) so that a hostile server cannot grow it.
_SEEN: dict[bytes, Reply] = {}
_SEEN_MAX = 4096
_SEEN_LINE = 512  # RFC 5321's line limit: longer ones are not worth keeping


@dataclass
class ReplyParser:
    """Incremental parser: ``feed`` bytes as they arrive, get complete replies back.

    Accepts CRLF and bare LF line ends (real servers send both). A line must start with three
    digits followed by ``-`` (continuation), a space, or the end of the line.
    """

    max_line: int = MAX_LINE
    max_reply: int = MAX_REPLY

    def __post_init__(self) -> None:
        self._buffer = bytearray()
        self._lines: list[str] = []
        self._code: int | None = None
        self._reply_bytes = 0

    @property
    def pending(self) -> bool:
        """True while part of a reply has been received but not its last line."""
        return bool(self._buffer) or bool(self._lines)

    def reset(self) -> None:
        """Forget buffered bytes (used after STARTTLS: pre-TLS bytes must not be trusted)."""
        self._buffer.clear()
        self._lines.clear()
        self._code = None
        self._reply_bytes = 0

    def feed(self, data: bytes) -> list[Reply]:
        buffer = self._buffer
        buffer += data
        if b"\n" not in data:  # no line ended: only the cap to check
            if len(buffer) > self.max_line:
                raise ReplyTooLong(f"reply line longer than {self.max_line} bytes")
            return []
        *complete, rest = bytes(buffer).split(b"\n")
        buffer[:] = rest
        replies: list[Reply] = []
        for raw in complete:
            if len(raw) > self.max_line:
                raise ReplyTooLong(f"reply line longer than {self.max_line} bytes")
            size = len(raw) + 1  # what the line cost on the wire, its CR and LF included
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            known = None if self._lines else _SEEN.get(raw)
            if known is not None:  # a single-line reply met before: the same immutable Reply
                self._reply_bytes = 0
                replies.append(known)
                continue
            reply = self._line(raw, size)
            if reply is not None:
                replies.append(reply)
                if len(reply.lines) == 1 and len(raw) <= _SEEN_LINE:
                    if len(_SEEN) >= _SEEN_MAX:
                        _SEEN.clear()
                    _SEEN[raw] = reply
        if len(rest) > self.max_line:
            raise ReplyTooLong(f"reply line longer than {self.max_line} bytes")
        return replies

    def _line(self, raw: bytes, size: int) -> Reply | None:
        self._reply_bytes += size
        if self._reply_bytes > self.max_reply:
            raise ReplyTooLong(f"reply longer than {self.max_reply} bytes")
        separator = raw[3:4]
        if len(raw) < 3 or not raw[:3].isdigit() or separator not in b" -":  # b"" is in: "250" alone
            raise MalformedReply(f"not an SMTP reply line: {_printable(raw[:80])!r}")
        code = int(raw[:3])
        if not 200 <= code <= 599:
            raise MalformedReply(f"reply code out of range: {code}")
        if self._code is not None and code != self._code:
            raise MalformedReply(f"reply code changed inside a multi-line reply: {code}")
        line = _printable(raw[4:])
        if separator == b"-":
            self._code = code
            self._lines.append(line)
            return None
        if self._lines:
            self._lines.append(line)
            lines = tuple(self._lines)
            self._lines = []
        else:
            lines = (line,)
        self._code = None
        self._reply_bytes = 0
        return Reply(code=code, lines=lines, enhanced=parse_enhanced(code, lines[0]))


@dataclass(frozen=True)
class Ehlo:
    """A parsed EHLO reply: the name the server gives and its extension keywords."""

    host: str | None
    keywords: tuple[str, ...]  # "PIPELINING", "SIZE 10240000", "AUTH PLAIN LOGIN", …

    def has(self, keyword: str) -> bool:
        wanted = keyword.upper()
        return any(k.split(" ", 1)[0] == wanted for k in self.keywords)


def parse_ehlo(reply: Reply) -> Ehlo:
    first = reply.lines[0].split() if reply.lines else []
    host = first[0] if first else None
    keywords = []
    for line in reply.lines[1:]:
        parts = line.split(None, 1)
        if parts:
            keywords.append(" ".join([parts[0].upper(), *parts[1:]]))
    return Ehlo(host=host, keywords=tuple(keywords))


def banner_host(reply: Reply) -> str | None:
    """The host name a greeting announces (``220 mx.example.com ESMTP …``), if it looks like one."""
    words = reply.lines[0].split() if reply.lines else []
    if not words:
        return None
    candidate = words[0]
    if "." in candidate.rstrip(".") and is_hostname(candidate):
        return candidate.rstrip(".").lower()
    return None

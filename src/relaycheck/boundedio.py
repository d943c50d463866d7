"""Every input the user gives (files, standard input, character devices, pipes) read with a bound.

``st_size`` says nothing about ``/dev/zero``, a FIFO or ``yes | relaycheck …``: the bound is on
the bytes actually read. Two shapes:

- ``read_capped``: a whole input that must fit in memory (a configuration file), refused once it
  passes the cap, and refused at once when its first block is binary;
- ``capped_lines``: an input read line by line that may be larger than memory (target lists, scan
  results); a line over the cap is skipped without being held (``LongLine``), never stored.

Problems are ``InputError`` with a kind, one line each.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import BinaryIO

from relaycheck.errors import RelaycheckError, UsageError

CHUNK = 64 * 1024
STDIN = "-"
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


class InputFault(StrEnum):
    UNREADABLE = "unreadable"  # missing, permission, a directory, an I/O error
    TOO_LARGE = "too-large"
    BINARY = "binary"
    NOT_WHAT_IT_CLAIMS = "not-what-it-claims"  # read, but nothing in it is what the command reads


class InputError(UsageError):
    """The input cannot be used at all (exit 2)."""

    def __init__(self, fault: InputFault, message: str) -> None:
        self.fault = fault
        super().__init__(message)


class UnexpectedContent(RelaycheckError):
    """The input was read, but it is not what the command reads (exit 3)."""

    def __init__(self, fault: InputFault, message: str) -> None:
        self.fault = fault
        super().__init__(message)


def display_name(name: str) -> str:
    return "standard input" if name == STDIN else shorten(name)


def shorten(text: str, limit: int = 80) -> str:
    """A user's input quoted in a message: control characters made visible, the middle of a long
    one elided (a 10 kB argument must not become a 10 kB error line)."""
    visible = text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text
    if len(visible) <= limit:
        return visible
    keep = (limit - 1) // 2
    return f"{visible[:keep]}…{visible[-keep:]}"


def size_text(count: int) -> str:
    if count >= 1024**3:
        return f"{count // 1024**3} GB"
    return f"{count // (1024 * 1024)} MB" if count >= 1024 * 1024 else f"{count // 1024} KB"


def looks_binary(block: bytes) -> bool:
    """NUL bytes in a block of text that is not UTF-16 (PowerShell's redirections are)."""
    return b"\0" in block and not block.startswith(UTF16_BOMS)


@contextmanager
def open_input(name: str) -> Iterator[BinaryIO]:
    """``name`` opened for binary reading (``-``: standard input, left open afterwards)."""
    if name == STDIN:
        stream = sys.stdin.buffer if sys.stdin is not None and hasattr(sys.stdin, "buffer") else None
        if stream is None:
            raise InputError(InputFault.UNREADABLE, "no standard input to read")
        yield stream
        return
    try:
        if stat.S_ISDIR(os.stat(name).st_mode):
            raise InputError(InputFault.UNREADABLE, f"{shorten(name)} is a directory")
        handle = open(name, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise InputError(InputFault.UNREADABLE, f"cannot read {shorten(name)}: {exc.strerror or exc}") from None
    with handle:
        yield handle


def read_capped(name: str, cap: int, *, what: str = "input", text: bool = True) -> bytes:
    """All of ``name`` (``-``: stdin), at most ``cap`` bytes; more is ``TOO_LARGE``, and with
    ``text`` a first block with NUL bytes is ``BINARY`` (nothing more is read then)."""
    parts: list[bytes] = []
    total = 0
    with open_input(name) as stream:
        while True:
            try:
                block = stream.read(min(CHUNK, cap + 1 - total))
            except OSError as exc:
                message = f"cannot read {display_name(name)}: {exc.strerror or exc}"
                raise InputError(InputFault.UNREADABLE, message) from None
            if not block:
                break
            if text and not parts and looks_binary(block):
                raise InputError(InputFault.BINARY, f"{display_name(name)} looks binary, not {what}")
            parts.append(block)
            total += len(block)
            if total > cap:
                message = f"{display_name(name)} is larger than {size_text(cap)}: too large for {what}"
                raise InputError(InputFault.TOO_LARGE, message)
    return b"".join(parts)


@dataclass(frozen=True)
class LongLine:
    """A line over the cap: skipped (its bytes were read and dropped), counted by the caller."""

    length: int


MAX_SKIPPED_LINE = 1024 * 1024 * 1024


def capped_lines(
    stream: BinaryIO, max_line: int, *, name: str = STDIN, what: str = "text"
) -> Iterator[bytes | LongLine]:
    """Lines of ``stream`` without their end of line; one over ``max_line`` bytes is a ``LongLine``.

    Memory stays near ``max_line`` + one block whatever the input: an over-long line is read and
    dropped block by block (``readline`` with a limit: the C reader does the scanning). A first
    line with NUL bytes is ``BINARY`` and a line that goes on past ``MAX_SKIPPED_LINE`` is
    ``TOO_LARGE``, so that an endless stream (``/dev/zero`` through a pipe) ends with an error
    instead of being read forever."""
    limit = max_line + 2  # the line, its "\n", and one more byte to tell "longer"
    first = True
    while True:
        line = _readline(stream, limit, name)
        if not line:
            return
        if first:
            first = False
            if looks_binary(line[:CHUNK]):
                raise InputError(InputFault.BINARY, f"{display_name(name)} looks binary, not {what}")
        if line.endswith(b"\n"):
            body = line[:-1]
            yield LongLine(len(body)) if len(body) > max_line else body.rstrip(b"\r")
            continue
        if len(line) < limit:  # the input ended without a final newline
            yield LongLine(len(line)) if len(line) > max_line else line.rstrip(b"\r")
            return
        length = len(line)  # longer than the cap: drop the rest of it
        while True:
            more = _readline(stream, CHUNK, name)
            if not more or more.endswith(b"\n"):
                yield LongLine(length + len(more.rstrip(b"\n")))
                break
            length += len(more)
            if length > MAX_SKIPPED_LINE:
                raise InputError(
                    InputFault.TOO_LARGE,
                    f"{display_name(name)} has a line longer than {size_text(MAX_SKIPPED_LINE)}, not {what}",
                )
        if not more:
            return


def _readline(stream: BinaryIO, limit: int, name: str) -> bytes:
    try:
        return stream.readline(limit)
    except OSError as exc:
        message = f"cannot read {display_name(name)}: {exc.strerror or exc}"
        raise InputError(InputFault.UNREADABLE, message) from None


def sniff(name: str, *, what: str) -> None:
    """Refuse a binary regular file or character device (``/bin/ls``, ``/dev/zero``) before a
    command starts; named pipes are checked as they are read instead (a pipe cannot be read
    twice); standard input is peeked at where it can be."""
    if name == STDIN:
        stream = getattr(sys.stdin, "buffer", None)
        peek = getattr(stream, "peek", None)
        if peek is not None:
            try:
                first = peek(CHUNK)[:CHUNK]
            except OSError:
                return  # reading it will say what is wrong
            if looks_binary(first):
                raise InputError(InputFault.BINARY, f"standard input looks binary, not {what}")
        return
    try:
        mode = os.stat(name).st_mode
    except OSError as exc:
        raise InputError(InputFault.UNREADABLE, f"cannot read {shorten(name)}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(mode):
        raise InputError(InputFault.UNREADABLE, f"{shorten(name)} is a directory")
    if not (stat.S_ISREG(mode) or stat.S_ISCHR(mode)):
        return
    with open_input(name) as handle:
        try:
            first = handle.read(CHUNK)
        except OSError as exc:
            raise InputError(InputFault.UNREADABLE, f"cannot read {shorten(name)}: {exc.strerror or exc}") from None
    if looks_binary(first):
        raise InputError(InputFault.BINARY, f"{shorten(name)} looks binary, not {what}")

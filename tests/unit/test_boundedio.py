"""The bounded reader: every line of any input comes out whole or as a ``LongLine``, whatever
the sizes the reads return; whole inputs stop at the cap; binary is refused at the first block."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relaycheck.boundedio import (
    InputError,
    InputFault,
    LongLine,
    capped_lines,
    read_capped,
    shorten,
    sniff,
)


class Trickle(io.RawIOBase):
    """A stream whose reads return the sizes given (a pipe delivering what it has)."""

    def __init__(self, data: bytes, sizes: list[int]) -> None:
        self.data, self.sizes, self.at = data, sizes or [1], 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        size = min(len(buffer), self.sizes[self.at % len(self.sizes)])
        piece = self.data[:size]
        self.data = self.data[size:]
        self.at += 1
        buffer[: len(piece)] = piece
        return len(piece)


line_bytes = st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"").replace(b"\0", b""))


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(line_bytes, max_size=12),
    cap=st.integers(min_value=0, max_value=30),
    sizes=st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=5),
    final_newline=st.booleans(),
)
def test_every_line_comes_out_whole_or_as_a_long_line(
    lines: list[bytes], cap: int, sizes: list[int], final_newline: bool
) -> None:
    data = b"\n".join(lines) + (b"\n" if final_newline and lines else b"")
    got = list(capped_lines(io.BufferedReader(Trickle(data, sizes), buffer_size=16), cap))
    expected: list[bytes | LongLine] = [LongLine(len(x)) if len(x) > cap else x.rstrip(b"\r") for x in lines]
    if lines and not final_newline and lines[-1] == b"":
        expected.pop()  # "a\n" + "" is one line, not two
    assert got == expected


def test_a_binary_first_block_is_refused_but_utf16_is_text() -> None:
    with pytest.raises(InputError) as caught:
        list(capped_lines(io.BytesIO(b"\x7fELF\0\0\0"), 100, name="x", what="a target list"))
    assert caught.value.fault is InputFault.BINARY
    assert list(capped_lines(io.BytesIO("a\n".encode("utf-16")), 100))  # a BOM, then NULs: PowerShell text


def test_read_capped_stops_at_the_cap(tmp_path: Path) -> None:
    path = tmp_path / "big"
    path.write_bytes(b"x" * 1001)
    assert read_capped(str(path), 1001) == b"x" * 1001
    with pytest.raises(InputError) as caught:
        read_capped(str(path), 1000, what="a configuration file")
    assert caught.value.fault is InputFault.TOO_LARGE


def test_sniff_refuses_binary_files_and_devices(tmp_path: Path) -> None:
    text = tmp_path / "list.txt"
    text.write_text("192.0.2.1\n")
    sniff(str(text), what="a target list")
    for name in ("/dev/zero", "/bin/ls"):
        with pytest.raises(InputError, match="looks binary, not a target list"):
            sniff(name, what="a target list")
    with pytest.raises(InputError, match="is a directory"):
        sniff(str(tmp_path), what="a target list")


@given(st.text(max_size=500))
def test_shorten_is_bounded_and_printable(text: str) -> None:
    shown = shorten(text, 80)
    assert len(shown) <= 80 and shown.isprintable()

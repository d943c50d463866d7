"""The JSONL sink: one line per record, resume with a torn last line, de-duplication, locking."""

from __future__ import annotations

import json
import pathlib

import pytest

from relaycheck.errors import UsageError
from relaycheck.scan.sink import JsonlSink


def rec(key: str, status: str = "ok", verdict: str | None = "closed") -> dict[str, object]:
    return {"key": key, "status": status, "verdict": verdict}


def lines(path: pathlib.Path) -> list[dict[str, object]]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_write_claim_and_dedupe(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "out.jsonl"
    with JsonlSink(str(path)) as sink:
        assert sink.claim("a")
        assert not sink.claim("a")  # in flight
        assert sink.write(rec("a", verdict="open"))
        assert not sink.claim("a")  # written
        assert sink.write(rec("b"))  # unclaimed (a remote chunk's record): written once
        assert not sink.write(rec("b"))
        assert sink.duplicates == 1
        assert sink.claim("c")
        sink.release("c")  # abandoned: free again
        assert sink.claim("c")
        assert (sink.by_verdict["open"], sink.by_verdict["closed"], sink.open_found) == (1, 1, 1)
    assert [r["key"] for r in lines(path)] == ["a", "b"]


def test_resume_skips_written_keys_and_cuts_a_torn_line(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "out.jsonl"
    with JsonlSink(str(path)) as sink:
        for key in ("a", "b"):
            sink.write(rec(key))
    with path.open("ab") as handle:
        handle.write(b'{"key": "c", "status": "o')  # the scan died inside this write
    with pytest.raises(UsageError, match="--resume"):
        JsonlSink(str(path))
    with JsonlSink(str(path), resume=True) as sink:
        assert sink.resumed == 2 and sink.torn_bytes == len(b'{"key": "c", "status": "o')
        assert not sink.claim("a") and sink.claim("c")
        sink.write(rec("c"))
    assert [r["key"] for r in lines(path)] == ["a", "b", "c"]  # the torn bytes are gone, "c" once


def test_resume_refuses_a_foreign_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello\n")
    with pytest.raises(UsageError, match="not a relaycheck scan record"):
        JsonlSink(str(path), resume=True)
    assert path.read_text() == "hello\n"


def test_one_writer_per_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "out.jsonl"
    with JsonlSink(str(path)), pytest.raises(UsageError, match="another relaycheck scan"):
        JsonlSink(str(path), resume=True)
    JsonlSink(str(path), resume=True).close()  # the lock went with the first sink


def test_keys_for_name(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "out.jsonl"
    with JsonlSink(str(path)) as sink:
        sink.write(rec("192.0.2.1|25|example.org"))
        sink.write(rec("192.0.2.2|25|"))
        assert sink.keys_for_name("example.org") == {"192.0.2.1|25|example.org"}
        sink.write(rec("192.0.2.3|25|example.org"))
        assert len(sink.keys_for_name("example.org")) == 2
        assert sink.keys_for_name("example.net") == set()


def test_resume_needs_a_file() -> None:
    with pytest.raises(UsageError, match="--resume needs an output file"):
        JsonlSink("-", resume=True)

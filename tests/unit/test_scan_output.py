"""The JSONL output: one line per record, resume with a torn last line, de-duplication, locking."""

from __future__ import annotations

import json
import pathlib

import pytest

from relaycheck.errors import UsageError
from relaycheck.scan.output import JsonlOutput


def rec(key: str, status: str = "ok", verdict: str | None = "closed") -> dict[str, object]:
    return {"key": key, "status": status, "verdict": verdict}


def lines(path: pathlib.Path) -> list[dict[str, object]]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_write_claim_and_dedupe(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "out.jsonl"
    with JsonlOutput(str(path)) as writer:
        assert writer.claim("a")
        assert not writer.claim("a")  # in flight
        assert writer.write(rec("a", verdict="open"))
        assert not writer.claim("a")  # written
        assert writer.write(rec("b"))  # unclaimed (a remote chunk's record): written once
        assert not writer.write(rec("b"))
        assert writer.duplicates == 1
        assert writer.claim("c")
        writer.release("c")  # abandoned: free again
        assert writer.claim("c")
        assert (writer.by_verdict["open"], writer.by_verdict["closed"], writer.open_found) == (1, 1, 1)
    assert [r["key"] for r in lines(path)] == ["a", "b"]


def test_resume_skips_written_keys_and_cuts_a_torn_line(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "out.jsonl"
    with JsonlOutput(str(path)) as writer:
        for key in ("a", "b"):
            writer.write(rec(key))
    with path.open("ab") as handle:
        handle.write(b'{"key": "c", "status": "o')  # the scan died inside this write
    with pytest.raises(UsageError, match="--resume"):
        JsonlOutput(str(path))
    with JsonlOutput(str(path), resume=True) as writer:
        assert writer.resumed == 2 and writer.torn_bytes == len(b'{"key": "c", "status": "o')
        assert not writer.claim("a") and writer.claim("c")
        writer.write(rec("c"))
    assert [r["key"] for r in lines(path)] == ["a", "b", "c"]  # the torn bytes are gone, "c" once


def test_resume_refuses_a_foreign_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello\n")
    with pytest.raises(UsageError, match="not a relaycheck scan record"):
        JsonlOutput(str(path), resume=True)
    assert path.read_text() == "hello\n"


def test_one_writer_per_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "out.jsonl"
    with JsonlOutput(str(path)), pytest.raises(UsageError, match="another relaycheck scan"):
        JsonlOutput(str(path), resume=True)
    JsonlOutput(str(path), resume=True).close()  # the lock went with the first writer


def test_keys_for_name(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "out.jsonl"
    with JsonlOutput(str(path)) as writer:
        writer.write(rec("192.0.2.1|25|example.org"))
        writer.write(rec("192.0.2.2|25|"))
        assert writer.keys_for_name("example.org") == {"192.0.2.1|25|example.org"}
        writer.write(rec("192.0.2.3|25|example.org"))
        assert len(writer.keys_for_name("example.org")) == 2
        assert writer.keys_for_name("example.net") == set()


def test_resume_needs_a_file() -> None:
    with pytest.raises(UsageError, match="--resume needs an output file"):
        JsonlOutput("-", resume=True)

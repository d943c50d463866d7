"""``relaycheck report``: counts, grouping, and escaping of hostile server strings per format."""

from __future__ import annotations

import json
import pathlib
import re

import pytest

from relaycheck.cli import main
from relaycheck.render import ReportKind, render
from relaycheck.scan.summary import load_summary, normalise

HOSTILE = '<script>alert(1)</script> | *x* \x1b[31mred "q" &amp;'


def write(path: pathlib.Path, records: list[dict[str, object]], torn: bool = False) -> None:
    text = "".join(json.dumps(r) + "\n" for r in records)
    path.write_text(text + ('{"key": "torn' if torn else ""))


def open_record(ip: str, banner: str = "220 mx ESMTP") -> dict[str, object]:
    return {
        "key": f"{ip}|25|",
        "ip": ip,
        "port": 25,
        "host": None,
        "domain": "example.org",
        "status": "ok",
        "verdict": "open",
        "confidence": "accepted-at-rcpt",
        "banner": banner,
        "findings": ["relay-domain"],
        "evidence": [
            {"probe_id": "plain", "mail_from": "<a@b.test>", "rcpt_to": "<x@outside.test>", "reply": "250 2.1.5 Ok"}
        ],
    }


RECORDS: list[dict[str, object]] = [
    open_record("192.0.2.1", banner=f"220 {HOSTILE}"),
    open_record("2001:db8::1"),
    {"key": "192.0.2.2|25|", "ip": "192.0.2.2", "port": 25, "status": "ok", "verdict": "closed"},
    {
        "key": "192.0.2.3|25|",
        "ip": "192.0.2.3",
        "port": 25,
        "status": "refused",
        "verdict": "inconclusive",
        "error": "cannot connect to 192.0.2.3 port 25: Connect call failed ('192.0.2.3', 25)",
    },
    {
        "key": "192.0.2.4|25|",
        "ip": "192.0.2.4",
        "port": 25,
        "status": "refused",
        "verdict": "inconclusive",
        "error": "cannot connect to 192.0.2.4 port 25: Connect call failed ('192.0.2.4', 25)",
    },
    {
        "key": "192.0.2.5|25|",
        "ip": "192.0.2.5",
        "port": 25,
        "status": "ok",
        "verdict": "inconclusive",
        "result": {"verdict": {"explanation": f"The server refused the session at once ({HOSTILE}). More."}},
    },
    {
        "key": "10.0.0.0/8|25|",
        "ip": "10.0.0.0/8",
        "port": 25,
        "status": "excluded",
        "verdict": None,
        "error": "excluded: Private-Use (RFC 1918)",
    },
]


def test_summary_counts_and_groups(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "r.jsonl"
    write(path, RECORDS, torn=True)
    data = load_summary(str(path)).as_dict()
    assert data["records"] == 7 and data["unreadable_lines"] == 1
    assert data["by_verdict"] == {"open": 2, "inconclusive": 3, "closed": 1}
    assert data["by_status"]["refused"] == 2
    refused = [g for g in data["errors"] if g["error"].startswith("refused")]
    assert refused[0]["count"] == 2  # both refusals in one group: addresses normalised away
    assert [e["ip"] for e in data["open_relays"]] == ["192.0.2.1", "2001:db8::1"]
    assert data["findings"] == {"relay-domain": 2}


def test_normalise() -> None:
    assert normalise("cannot connect to 192.0.2.3 port 25: Connect call failed ('192.0.2.3', 25)") == (
        "cannot connect to <ip> port <n>: Connect call failed"
    )
    assert normalise("cannot connect to 2001:db8::1 port 25") == "cannot connect to <ip> port <n>"


def test_html_is_self_contained_and_escaped(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "r.jsonl"
    write(path, RECORDS)
    page = render(ReportKind.SCAN, load_summary(str(path)), "html")
    assert "<script" not in page and "alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "\x1b" not in page and "\\x1b[31mred" in page
    assert not re.search(r"(src|href)=", page)  # no external resources, no links
    assert "Content-Security-Policy" in page


def test_markdown_escapes_table_syntax(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "r.jsonl"
    write(path, RECORDS)
    text = render(ReportKind.SCAN, load_summary(str(path)), "markdown")
    assert "<script>" not in text
    for row in (line for line in text.splitlines() if line.startswith("| ") and "refused the session" in line):
        assert row.count(" | ") == 2  # the hostile "|" did not add a column


def test_text_neutralises_terminal_escapes(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "r.jsonl"
    write(path, RECORDS)
    text = render(ReportKind.SCAN, load_summary(str(path)), "text")
    assert "\x1b" not in text and "\\x1b[31mred" in text
    assert "OPEN RELAYS (2)" in text


@pytest.mark.parametrize("fmt", ["text", "json", "markdown", "html"])
def test_report_command(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], fmt: str) -> None:
    path = tmp_path / "r.jsonl"
    write(path, RECORDS)
    (tmp_path / "r.jsonl.meta.json").write_text(
        json.dumps({"start": "2026-01-01T00:00:00+00:00", "end": None, "complete": False})
    )
    assert main(["report", str(path), "--format", fmt]) == 0
    out = capsys.readouterr().out
    if fmt == "json":
        data = json.loads(out)
        assert data["by_verdict"]["open"] == 2 and data["scan"]["complete"] is False
    else:
        assert "2026-01-01" in out


def test_report_missing_file(tmp_path: pathlib.Path) -> None:
    assert main(["report", str(tmp_path / "nope.jsonl")]) == 2

"""``relaycheck audit`` through ``relaycheck.cli.main``: exit codes, formats, stdin, usage errors."""

from __future__ import annotations

import io
import json
import shutil
import sys
from pathlib import Path

import pytest

from relaycheck.cli import main

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "audit"
Capture = pytest.CaptureFixture[str]


def fixture(name: str) -> str:
    return str(FIXTURES / name)


def stdin(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))


def test_open_relay_exits_1_with_the_conclusion_first(capsys: Capture) -> None:
    assert main(["audit", fixture("postfix/postconf-n-open.txt")]) == 1
    out = capsys.readouterr().out
    assert out.startswith(" OPEN RELAY POSSIBLE  postfix (detected)")
    assert "postfix-mynetworks-everyone" in out
    assert "postconf-n-open.txt:10" in out
    assert "Fix:" in out


def test_good_configuration_exits_0(capsys: Capture) -> None:
    assert main(["audit", fixture("postfix/debian-main.cf"), fixture("postfix/debian-master.cf")]) == 0
    assert "NO OPEN RELAY PATH" in capsys.readouterr().out


def test_nothing_understood_exits_3(capsys: Capture, tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("buy milk\ncall the ISP about the relay\n")
    assert main(["audit", "--exim", str(path)]) == 3
    out = capsys.readouterr().out
    assert "COULD NOT PARSE" in out
    assert "Could not parse line 1" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["audit", "/nonexistent/main.cf"], "cannot read /nonexistent/main.cf: no such file or directory"),
        (["audit", "--postfix", "--exim", "x"], "choose one of --postfix, --exim"),
        (["audit", "--json", "--format", "html", "x"], "--json and --format html contradict each other"),
        (["audit", "-", "-"], "'-' (standard input) can be given only once"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(argv: list[str], message: str, capsys: Capture) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == f"relaycheck: {message}"
    assert captured.out == ""


def test_unknown_kind_of_file_exits_2(capsys: Capture, tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("buy milk\n")
    assert main(["audit", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "cannot tell which mail server" in err
    assert "--postfix" in err


def test_mixed_families_exit_2(capsys: Capture) -> None:
    assert main(["audit", fixture("postfix/debian-main.cf"), fixture("opensmtpd/smtpd.conf")]) == 2
    assert "different mail servers" in capsys.readouterr().err


def test_binary_file_exits_2(capsys: Capture, tmp_path: Path) -> None:
    path = tmp_path / "access.db"
    path.write_bytes(b"\x00\x06\x15\x61" + bytes(range(256)))
    assert main(["audit", "--sendmail", str(path)]) == 2
    assert "looks binary" in capsys.readouterr().err


def test_unreadable_file_exits_2(capsys: Capture) -> None:
    # a file that exists and opens, but whose read fails (chmod does not stop root, which the tests may be)
    assert main(["audit", "/proc/self/mem"]) == 2
    assert capsys.readouterr().err == "relaycheck: cannot read /proc/self/mem: Input/output error\n"


def test_postconf_from_stdin(monkeypatch: pytest.MonkeyPatch, capsys: Capture) -> None:
    stdin(monkeypatch, (FIXTURES / "postfix/postconf-n-open.txt").read_bytes())
    assert main(["audit", "--postfix", "-", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["files"] == ["<stdin>"]
    assert report["family_detected"] is False
    assert report["findings"][0]["location"] == "<stdin>:10"


def test_stdin_is_detected_without_a_flag(monkeypatch: pytest.MonkeyPatch, capsys: Capture) -> None:
    stdin(monkeypatch, (FIXTURES / "opensmtpd/smtpd-open.conf").read_bytes())
    assert main(["audit", "-", "--format", "json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["family"] == "opensmtpd"
    assert report["family_detected"] is True


def test_json_report_shape(capsys: Capture) -> None:
    files = [fixture("exchange/receive-connectors.txt"), fixture("exchange/adpermission-default-frontend.txt")]
    assert main(["audit", "--json", *files]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["schema_version"] == 1
    assert report["kind"] == "audit"
    assert report["conclusion"] == "open-relay-possible"
    assert report["exit_code"] == 1
    assert report["summary"] == {
        "findings": 1,
        "relay_paths": 1,
        "by_severity": {"critical": 1, "high": 0, "medium": 0, "low": 0, "info": 0},
    }
    (finding,) = report["findings"]
    assert set(finding) == {"code", "severity", "title", "detail", "evidence", "location", "remediation", "opens_relay"}
    assert finding["code"] == "exchange-anonymous-relay-everyone"
    assert finding["opens_relay"] is True


@pytest.mark.parametrize(("fmt", "start"), [("markdown", "# relaycheck audit: "), ("html", "<!DOCTYPE html>")])
def test_other_formats(fmt: str, start: str, capsys: Capture) -> None:
    assert main(["audit", "--format", fmt, fixture("sendmail/sendmail-promiscuous.mc")]) == 1
    out = capsys.readouterr().out
    assert out.startswith(start)
    assert "sendmail-promiscuous-relay" in out


def test_exchange_export_in_utf16_from_windows_powershell(tmp_path: Path, capsys: Capture) -> None:
    text = (FIXTURES / "exchange/externally-secured.txt").read_text()
    path = tmp_path / "connectors.txt"
    path.write_bytes(text.replace("\n", "\r\n").encode("utf-16"))  # `> file` in Windows PowerShell 5.1
    assert main(["audit", str(path)]) == 1
    assert "exchange-externally-secured-everyone" in capsys.readouterr().out


def test_exim_split_directory(capsys: Capture) -> None:
    assert main(["audit", fixture("exim/conf.d")]) == 0
    out = capsys.readouterr().out
    assert "NO OPEN RELAY PATH  exim (detected)" in out


def test_empty_directory_exits_2(tmp_path: Path, capsys: Capture) -> None:
    assert main(["audit", str(tmp_path)]) == 2
    assert "contains no configuration files" in capsys.readouterr().err


def test_postfix_tables_named_in_main_cf_are_read(tmp_path: Path, capsys: Capture) -> None:
    shutil.copytree(FIXTURES / "postfix/sender-access", tmp_path / "postfix")
    assert main(["audit", "--json", str(tmp_path / "postfix/main.cf")]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["files"] == [str(tmp_path / "postfix/main.cf"), str(tmp_path / "postfix/sender_access")]
    assert [f["code"] for f in report["findings"]] == ["postfix-sender-access-permits"]
    # --no-tables: the table stays unaudited, which is worth a look but not a relay path
    assert main(["audit", "--json", "--no-tables", str(tmp_path / "postfix/main.cf")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [f["code"] for f in report["findings"]] == ["postfix-access-table-unverified"]


def test_verbose_lists_every_unparsed_line(tmp_path: Path, capsys: Capture) -> None:
    path = tmp_path / "main.cf"
    settings = "".join(f"smtpd_banner_{i} = x\n" for i in range(8))
    path.write_text("compatibility_level = 3.6\n" + settings + "".join(f"junk line {i}\n" for i in range(8)))
    assert main(["audit", str(path)]) == 0
    assert "… and 3 more unparsed line(s)" in capsys.readouterr().out
    assert main(["audit", "-v", str(path)]) == 0
    assert capsys.readouterr().out.count("Could not parse line") == 8


def test_a_file_that_is_mostly_not_a_configuration_is_exit_3_with_the_reason(
    tmp_path: Path, capsys: Capture
) -> None:
    path = tmp_path / "notes.md"
    path.write_text("# Notes\n\nmynetworks = 127.0.0.0/8\n" + "".join(f"Some prose, line {i}.\n" for i in range(20)))
    assert main(["audit", "--postfix", str(path)]) == 3
    out = capsys.readouterr().out
    assert "COULD NOT PARSE" in out and "could not be parsed, 1 could" in out
    assert "NO OPEN RELAY" not in out


def test_help_lists_the_family_flags(capsys: Capture) -> None:
    assert main(["audit", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--postfix", "--exim", "--exchange", "--sendmail", "--opensmtpd", "--format"):
        assert flag in out


def test_postfix_directory_reads_main_and_master_only(tmp_path: Path, capsys: Capture) -> None:
    etc = tmp_path / "postfix"
    etc.mkdir()
    shutil.copy(FIXTURES / "postfix/postconf-n-open.txt", etc / "main.cf")
    shutil.copy(FIXTURES / "postfix/debian-master.cf", etc / "master.cf")
    (etc / "main.cf.proto").write_text("# mynetworks = 0.0.0.0/0\nthis is documentation\n")
    (etc / "post-install").write_text("#!/bin/sh\nexit 0\n")
    assert main(["audit", "--json", str(etc)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["files"] == [str(etc / "main.cf"), str(etc / "master.cf")]
    assert not any(f["code"] == "unparsed-line" for f in report["findings"])


@pytest.mark.parametrize(("split", "used"), [("false", "exim4.conf.template"), ("true", "conf.d")])
def test_exim4_directory_follows_dc_use_split_config(split: str, used: str, tmp_path: Path, capsys: Capture) -> None:
    etc = tmp_path / "exim4"
    shutil.copytree(FIXTURES / "exim/conf.d", etc / "conf.d")
    shutil.copy(FIXTURES / "exim/exim4.conf.template", etc / "exim4.conf.template")
    debconf = (FIXTURES / "exim/update-exim4.conf.conf.open-nets").read_text()
    (etc / "update-exim4.conf.conf").write_text(
        debconf.replace("dc_use_split_config='false'", f"dc_use_split_config='{split}'")
    )
    assert main(["audit", "--json", str(etc)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["files"][0] == str(etc / "update-exim4.conf.conf")
    assert all(used in name for name in report["files"][1:])
    assert [f["code"] for f in report["findings"]] == ["exim-relay-from-any"]

"""The command line through ``main(argv)``: output, JSON schema, exit codes, clear errors."""

from __future__ import annotations

import json
import re
import socket

import pytest

from relaycheck.cli import main
from relaycheck.model import SCHEMA_VERSION
from relaycheck.testing.dnsserver import DnsServerThread

from .conftest import ServerFactory

Capture = pytest.CaptureFixture[str]

COMMON = [
    "--ext-recipient", "relaytest@outside-a.test",
    "--ext-recipient", "relaytest@outside-b.test",
    "--local-domain", "relay.test",
    "--helo", "client.relaycheck.test",
    "--no-ptr", "--no-dnsbl",
]  # fmt: skip


def test_open_relay_exits_1_with_verdict_first(smtp_server: ServerFactory, capsys: Capture) -> None:
    server = smtp_server("open")
    assert main(["check", server.address, *COMMON]) == 1
    out = capsys.readouterr().out
    assert out.lstrip().startswith("OPEN RELAY")
    assert "RCPT TO:<relaytest@outside-a.test>" in out or "<relaytest@outside-a.test>" in out


def test_closed_server_exits_0(smtp_server: ServerFactory, capsys: Capture) -> None:
    assert main(["check", smtp_server("closed").address, *COMMON]) == 0
    assert "CLOSED" in capsys.readouterr().out


def test_inconclusive_exits_3(smtp_server: ServerFactory, capsys: Capture) -> None:
    assert main(["check", smtp_server("reject-everything").address, *COMMON]) == 3
    assert "INCONCLUSIVE" in capsys.readouterr().out


def test_several_targets_any_open_exits_1(smtp_server: ServerFactory, capsys: Capture) -> None:
    targets = [smtp_server("closed").address, smtp_server("null-sender-only").address]
    assert main(["check", *targets, *COMMON, "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert [t["verdict"]["verdict"] for t in data["targets"]] == ["closed", "open"]
    assert data["summary"] == {"open": 1, "closed": 1, "inconclusive": 0, "problems": 0, "exit_code": 1}


def test_json_report_schema(smtp_server: ServerFactory, capsys: Capture) -> None:
    assert main(["check", smtp_server("percent-only").address, *COMMON, "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["schema_version"] == SCHEMA_VERSION
    assert set(data) >= {"schema_version", "tool", "started", "duration_s", "mode", "summary", "problems", "targets"}
    target = data["targets"][0]
    assert set(target) >= {
        "target", "verdict", "error", "tls_required", "server", "connections", "round_trips",
        "duration_s", "observations", "findings", "transcripts",
    }  # fmt: skip
    assert set(target["target"]) == {"host", "port", "transport", "address", "domain", "mx_preference"}
    assert set(target["verdict"]) == {"verdict", "confidence", "explanation", "evidence", "advice"}
    obs = target["observations"][0]
    assert set(obs) >= {"probe_id", "kind", "mail_from", "rcpt_to", "outcome", "stage", "reply", "reason"}
    assert set(obs["reply"]) == {"code", "enhanced", "text", "lines"}
    accepted = {o["probe_id"] for o in target["observations"] if o["outcome"] == "accepted" and o["kind"] == "relay"}
    assert accepted == {"V12", "V13", "V14", "V15"}


def test_verbose_shows_transcripts(smtp_server: ServerFactory, capsys: Capture) -> None:
    main(["check", smtp_server("closed").address, *COMMON, "-v"])
    out = capsys.readouterr().out
    assert "C: EHLO client.relaycheck.test" in out
    assert "S: 554 5.7.1" in out


def test_hostile_banner_markup_is_not_interpreted(smtp_server: ServerFactory, capsys: Capture) -> None:
    server = smtp_server("closed", banner="[bold red]pwned[/] \x1b[31m")
    main(["check", server.address, *COMMON])
    out = capsys.readouterr().out
    assert "[bold red]pwned[/]" in out  # shown literally, not as markup
    assert "\x1b[31m" not in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["check", "bad_host!"], "not a host name"),
        (["check", "mx.example.com:0"], "bad port"),
        (["check", "[2001:db8::1"], "expected"),
        (["check", "127.0.0.1", "--ext-recipient", "nobody"], "not a mail address"),
        (["check", "127.0.0.1", "--retry-budget", "-1"], "retry-budget"),
        (["check"], "Missing argument"),
        (["frobnicate"], "No such command"),
    ],
)
def test_usage_errors_exit_2_with_one_clear_line(argv: list[str], message: str, capsys: Capture) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.splitlines()) == 1 and err.startswith("relaycheck: "), err


def test_unreachable_target_exits_3_with_explanation(capsys: Capture) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        assert main(["check", f"127.0.0.1:{port}", *COMMON]) == 3
    out = capsys.readouterr().out
    assert "cannot connect" in out and "Traceback" not in out


def test_the_kind_of_failure_is_in_the_json_report(capsys: Capture) -> None:
    with socket.socket() as sock:  # bound, not listening: the connection is refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        assert main(["check", f"127.0.0.1:{port}", *COMMON, "--json"]) == 3
    [target] = json.loads(capsys.readouterr().out)["targets"]
    assert (target["error_kind"], target["verdict"]["verdict"]) == ("refused", "inconclusive")


def test_domain_is_expanded_through_mx_and_every_mx_tested(
    smtp_server: ServerFactory, capsys: Capture
) -> None:
    closed = smtp_server("closed")
    smtp_server("open", host="127.0.0.2", port=closed.port)
    records = {
        ("relay.test", "MX"): ["10 mx1.relay.test.", "20 mx2.relay.test."],
        ("mx1.relay.test", "A"): ["127.0.0.1"],
        ("mx2.relay.test", "A"): ["127.0.0.2"],
    }
    with DnsServerThread(records) as dns:
        code = main(["check", "relay.test", "--port", str(closed.port), "--resolver", dns.address, *COMMON, "--json"])
    assert code == 1
    targets = json.loads(capsys.readouterr().out)["targets"]
    assert [(t["target"]["host"], t["target"]["address"], t["target"]["domain"]) for t in targets] == [
        ("mx1.relay.test", "127.0.0.1", "relay.test"),
        ("mx2.relay.test", "127.0.0.2", "relay.test"),
    ]
    assert [t["verdict"]["verdict"] for t in targets] == ["closed", "open"]


def test_name_without_mx_falls_back_to_its_address(smtp_server: ServerFactory, capsys: Capture) -> None:
    server = smtp_server("closed")
    with DnsServerThread({("mail.relay.test", "A"): ["127.0.0.1"]}) as dns:
        code = main(["check", "mail.relay.test", "--port", str(server.port), "--resolver", dns.address, *COMMON])
    assert code == 0
    assert "mail.relay.test (127.0.0.1)" in capsys.readouterr().out


def test_null_mx_and_nxdomain_are_explained(capsys: Capture) -> None:
    records = {("nullmx.test", "MX"): ["0 ."], ("nomail.test", "A"): ["127.0.0.1"]}
    with DnsServerThread(records) as dns:
        assert main(["check", "nullmx.test", "missing.test", "--resolver", dns.address, *COMMON]) == 3
    out = capsys.readouterr().out
    assert "null MX" in out
    assert "missing.test" in out and "NXDOMAIN" in out


def test_demo_shows_open_closed_and_inconclusive(capsys: Capture) -> None:
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "OPEN RELAY" in out and "CLOSED" in out and "INCONCLUSIVE" in out
    assert "every verdict as expected" in out


def test_no_arguments_runs_the_demo(capsys: Capture) -> None:
    assert main([]) == 0
    assert "relaycheck demo" in capsys.readouterr().out


@pytest.mark.parametrize("fmt", ["markdown", "html"])
def test_shareable_formats(fmt: str, smtp_server: ServerFactory, capsys: Capture) -> None:
    server = smtp_server("open", banner="mx.relay.test <script>alert(1)</script> ESMTP")
    assert main(["check", server.address, *COMMON, "--format", fmt]) == 1
    out = capsys.readouterr().out
    assert "OPEN RELAY" in out.upper()
    # server text is escaped (in Markdown, code fences show it literally, which is safe)
    outside_code = re.sub(r"(?ms)^(`{3,}|~{3,}).*?^\1", "", out) if fmt == "markdown" else out
    assert "<script>alert(1)</script>" not in outside_code
    if fmt == "html":
        assert out.lstrip().lower().startswith("<!doctype html") and "<script" not in out.lower()


def test_demo_shows_hygiene_findings_from_its_own_dns(capsys: Capture) -> None:
    assert main(["demo", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    open_relay = data["targets"][0]
    assert open_relay["hygiene"]["ptr_names"] == ["mx1.relay.test"]
    assert open_relay["hygiene"]["fcrdns"] is True
    assert "dnsbl-listed" in {f["code"] for f in open_relay["findings"]}
    assert "postconf" in open_relay["verdict"]["advice"]  # the fix for the MTA it looks like


def test_probes_per_connection_spreads_the_battery(smtp_server: ServerFactory, capsys: Capture) -> None:
    server = smtp_server("closed")
    connections = {}
    for per_connection in ("9", "1"):
        args = ["check", server.address, *COMMON, "--no-tls-check", "--no-vrfy", "--json"]
        assert main([*args, "--probes-per-connection", per_connection]) == 0
        connections[per_connection] = json.loads(capsys.readouterr().out)["targets"][0]["connections"]
    assert connections["1"] > connections["9"]

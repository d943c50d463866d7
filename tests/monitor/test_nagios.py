"""``relaycheck check --format nagios``: exit codes, the status line and perfdata by the guidelines."""

from __future__ import annotations

import socket

import pytest

from relaycheck.cli import main
from relaycheck.testing.dnsserver import DnsServerThread

from ..behaviour.conftest import ServerFactory
from .perfdata import parse_status

Capture = pytest.CaptureFixture[str]

COMMON = [
    "--ext-recipient", "relaytest@outside-a.test",
    "--ext-recipient", "relaytest@outside-b.test",
    "--local-domain", "relay.test",
    "--helo", "client.relaycheck.test",
    "--no-ptr", "--no-dnsbl", "--format", "nagios",
]  # fmt: skip


def run(argv: list[str], capsys: Capture) -> tuple[int, str, str, dict[str, tuple[str, str, list[str]]], list[str]]:
    code = main(argv)
    captured = capsys.readouterr()
    first, *rest = captured.out.split("\n")
    state, text, perf = parse_status(first)
    assert "Traceback" not in captured.out + captured.err
    return code, state, text, perf, rest


def test_open_relay_is_critical_with_accepted_probes_in_perfdata(smtp_server: ServerFactory, capsys: Capture) -> None:
    server = smtp_server("open")
    code, state, text, perf, rest = run(["check", server.address, *COMMON], capsys)
    assert (code, state) == (2, "CRITICAL")
    accepted, uom, fields = perf["accepted"]
    assert int(accepted) >= 2 and uom == ""
    assert fields[:2] == ["", "1"]  # no warning threshold; one accepted relay probe is critical
    assert fields[2] == "0" and int(fields[3]) >= int(accepted)
    assert f"127.0.0.1:{server.port} is an open relay ({accepted} of {fields[3]} probes accepted)" in text
    assert perf["time"][1] == "s" and float(perf["time"][0]) > 0
    long_output = "\n".join(rest)
    assert "[CRITICAL]" in long_output and "accepted V" in long_output and "relaytest@outside-a.test" in long_output


def test_closed_server_is_ok_with_zero_accepted(smtp_server: ServerFactory, capsys: Capture) -> None:
    code, state, text, perf, _ = run(["check", smtp_server("closed").address, *COMMON], capsys)
    assert (code, state) == (0, "OK")
    assert perf["accepted"][0] == "0" and int(perf["accepted"][2][3]) > 0
    assert "not an open relay" in text


def test_inconclusive_is_warning(smtp_server: ServerFactory, capsys: Capture) -> None:
    code, state, text, _, _ = run(["check", smtp_server("reject-everything").address, *COMMON], capsys)
    assert (code, state) == (1, "WARNING")
    assert "inconclusive" in text


def test_unreachable_is_warning_with_the_reason(capsys: Capture) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        code, state, text, perf, _ = run(["check", f"127.0.0.1:{port}", *COMMON], capsys)
    assert (code, state) == (1, "WARNING")
    assert "could not be tested" in text
    assert perf["accepted"][0] == "0"


def test_findings_raise_warning_only_when_asked(smtp_server: ServerFactory, capsys: Capture) -> None:
    server = smtp_server("closed", vrfy_enabled=True)
    code, state, _, _, rest = run(["check", server.address, *COMMON], capsys)
    assert (code, state) == (0, "OK")
    severities = {line.split()[1] for line in rest if line.startswith("  finding ")}
    assert severities, "the closed server should have at least one finding for this test to mean anything"
    code, state, text, _, rest = run(["check", server.address, *COMMON, "--warn-severity", "info"], capsys)
    assert (code, state) == (1, "WARNING")
    assert "findings:" in text and any("(warning)" in line for line in rest)


def test_every_target_of_a_domain_counts_and_the_worst_wins(smtp_server: ServerFactory, capsys: Capture) -> None:
    closed = smtp_server("closed")
    smtp_server("open", host="127.0.0.2", port=closed.port)
    records = {
        ("relay.test", "MX"): ["10 mx1.relay.test.", "20 mx2.relay.test."],
        ("mx1.relay.test", "A"): ["127.0.0.1"],
        ("mx2.relay.test", "A"): ["127.0.0.2"],
    }
    with DnsServerThread(records) as dns:
        argv = ["check", "relay.test", "--port", str(closed.port), "--resolver", dns.address, *COMMON]
        code, state, text, perf, rest = run(argv, capsys)
    assert (code, state) == (2, "CRITICAL")
    assert text.startswith("1 open, 1 closed, 0 inconclusive of 2 targets: mx2.relay.test:")
    assert perf["targets"][0] == "2" and perf["open"][0] == "1"
    assert perf[f"mx1.relay.test:{closed.port}_accepted"][0] == "0"
    assert int(perf[f"mx2.relay.test:{closed.port}_accepted"][0]) >= 1
    assert rest[0].startswith("[CRITICAL] mx2.relay.test")  # the worst first in the long output


@pytest.mark.parametrize(
    "argv",
    [
        ["check", "bad_host!", "--format", "nagios"],
        ["check", "127.0.0.1", "--format", "nagios", "--port", "0"],
        ["check", "--format=nagios", "127.0.0.1", "--warn-severity", "loud"],
        ["check", "--format", "nagios"],
    ],
)
def test_bad_arguments_are_unknown_on_stdout(argv: list[str], capsys: Capture) -> None:
    assert main(argv) == 3
    out = capsys.readouterr().out
    assert out.startswith("RELAY UNKNOWN - ") and out.count("\n") == 1
    parse_status(out.rstrip("\n"))


def test_warn_severity_without_nagios_is_a_usage_error(capsys: Capture) -> None:
    assert main(["check", "127.0.0.1", "--warn-severity", "high"]) == 2
    assert "--warn-severity is for --format nagios" in capsys.readouterr().err


def test_internal_error_is_unknown(monkeypatch: pytest.MonkeyPatch, capsys: Capture) -> None:
    import relaycheck.cli

    async def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(relaycheck.cli, "check", broken)
    assert main(["check", "127.0.0.1", "--format", "nagios", "--no-dnsbl"]) == 3
    out = capsys.readouterr().out
    assert out.startswith("RELAY UNKNOWN - internal error: RuntimeError: boom")

"""The honeypot on loopback: relaycheck's own check calls it an open relay and names its persona;
a simulated spammer's relay test and campaign are classified and linked; nothing is delivered."""

from __future__ import annotations

import json
import smtplib
import ssl
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from relaycheck.cli import main
from relaycheck.honeypot.personas import PERSONAS
from relaycheck.model import VerdictKind

from .conftest import NO_DNS, run_check
from .honeypot_support import NO_DELAY, HoneypotThread, jsonl, make_settings

Capture = pytest.CaptureFixture[str]

CHECK_OPTIONS = [
    "--ext-recipient", "relaytest@outside-a.test",
    "--ext-recipient", "relaytest@outside-b.test",
    "--local-domain", "honeypot.test",
    "--helo", "client.relaycheck.test",
    "--no-ptr", "--no-dnsbl",
]  # fmt: skip


@pytest.fixture
def honeypot(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[HoneypotThread]:
    persona = getattr(request, "param", "postfix")
    thread = HoneypotThread(make_settings(tmp_path, persona, tags={"site": "lab"})).start()
    yield thread
    thread.stop()


@pytest.mark.parametrize("honeypot", sorted(PERSONAS), indirect=True)
def test_relaycheck_calls_the_honeypot_an_open_relay_and_names_the_persona(
    honeypot: HoneypotThread, tmp_path: Path, capsys: Capture
) -> None:
    persona = honeypot.settings.config.persona.name
    report = run_check(honeypot.address, local_domain="honeypot.test", hygiene=NO_DNS)
    target = report.targets[0]
    assert target.verdict.kind is VerdictKind.OPEN
    assert target.hygiene is not None and target.hygiene.fingerprint is not None
    assert target.hygiene.fingerprint.family == persona, target.hygiene.fingerprint

    # --exhaustive: every trick and the STARTTLS battery reach the honeypot (the run above stopped
    # once the relay was proven)
    assert main(["check", honeypot.address, *CHECK_OPTIONS, "--exhaustive"]) == 1
    out = capsys.readouterr().out
    assert out.lstrip().startswith("OPEN RELAY")
    assert f"server software: {persona}" in out

    sessions = len(honeypot.records)
    honeypot.stop()  # every record written and flushed
    records = jsonl(tmp_path)
    assert len(records) == sessions > 0
    assert {r["classification"] for r in records} == {"scanner"}
    assert {r["tool"] for r in records} == {"relaycheck"}, [(r["tool"], r["commands"]) for r in records]
    assert {r["persona"] for r in records} == {persona}
    assert all(r["site"] == "lab" and r["sensor"] == "test-sensor" for r in records)
    tricks = {x["probe_id"] for r in records for t in r["transactions"] for x in t["recipients"]}
    assert {"V01", "V12", "V20"} <= tricks  # the tester's own probes, recognised by its own catalogue
    assert any(r["tls_version"] for r in records)  # the STARTTLS battery ran
    assert not list((tmp_path / "messages").rglob("*.eml"))  # probe mode never sends a message


RELAY_TEST = (
    "From: bot <bot@spam.example>\r\n"
    "To: drop@harvest.example\r\n"
    "Subject: test 7F000001\r\n"
    "Message-ID: <1@spam.example>\r\n"
    "\r\n"
    "relay ok\r\n"
)
CAMPAIGN = (
    "From: Offers <offers@spam.example>\r\n"
    "Subject: Cheap watches, this week only\r\n"
    "Message-ID: <2@spam.example>\r\n"
    "MIME-Version: 1.0\r\n"
    'Content-Type: multipart/mixed; boundary="b"\r\n'
    "\r\n"
    "--b\r\n"
    "Content-Type: text/plain\r\n"
    "\r\n"
    "Buy now at https://watches.spam.example/buy?id=7 before they are gone. Genuine replicas, fast shipping.\r\n"
    "--b\r\n"
    'Content-Type: application/octet-stream; name="invoice.zip"\r\n'
    "Content-Disposition: attachment; filename=invoice.zip\r\n"
    "Content-Transfer-Encoding: base64\r\n"
    "\r\n"
    "UEsDBAoAAAAAAA==\r\n"
    "--b--\r\n"
)


def send(port: int, sender: str, recipients: list[str], message: str, helo: str = "bot.spam.example") -> None:
    with smtplib.SMTP("127.0.0.1", port, local_hostname=helo, timeout=10) as client:
        refused = client.sendmail(sender, recipients, message)
    assert refused == {}


def test_simulated_spammer_relay_test_then_campaign(honeypot: HoneypotThread, tmp_path: Path, capsys: Capture) -> None:
    send(honeypot.port, "bot@spam.example", ["drop@harvest.example"], RELAY_TEST)
    test = honeypot.wait_records(1)[0]
    victims = [f"user{n}@victim{n % 7}.example" for n in range(49)]
    send(honeypot.port, "offers@spam.example", [*victims[:20], "drop@harvest.example", *victims[20:]], CAMPAIGN)
    campaign = honeypot.wait_records(2)[1]

    assert test.classification == "relay-test"
    message = test.transactions[0].message
    assert message is not None and message.relay_test and not message.delivered
    assert "hex address 7F000001" in message.mentions
    assert message.subject == "test 7F000001" and message.message_id == "<1@spam.example>"
    assert [r.scope for r in test.transactions[0].recipients] == ["relay"]

    assert campaign.classification == "spam-run"
    assert campaign.dropboxes == ["drop@harvest.example"]
    assert campaign.linked_sessions == [test.session]
    recipients = campaign.transactions[0].recipients
    assert len(recipients) == 50
    assert [r.address for r in recipients if r.dropbox] == ["<drop@harvest.example>"]
    facts = campaign.transactions[0].message
    assert facts is not None and not facts.relay_test and not facts.delivered
    assert facts.urls == ["https://watches.spam.example/buy?id=7"]
    assert [(a.name, a.size) for a in facts.attachments] == [("invoice.zip", 10)]
    assert facts.fuzzy_hash.count(":") == 2  # ssdeep's blocksize:hash:hash

    honeypot.stop()
    assert not (tmp_path / "deliveries.jsonl").exists()  # nothing was offered for delivery
    assert len(list((tmp_path / "messages").rglob("*.eml"))) == 2  # both kept as evidence
    registry = json.loads((tmp_path / "dropboxes.json").read_text())["dropboxes"]
    assert [(b["address"], b["tests"], b["campaigns"]) for b in registry] == [
        ("drop@harvest.example", [test.session], [campaign.session])
    ]

    assert main(["honeypot", "report", str(tmp_path), "--since", "1h", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["by_classification"]["relay-test"] == 1 and report["by_classification"]["spam-run"] == 1
    assert [(d["address"], d["tests"], d["campaigns"]) for d in report["dropboxes"]] == [("drop@harvest.example", 1, 1)]
    assert report["campaigns"][0]["recipients"] == 50
    assert main(["honeypot", "blocklist", str(tmp_path), "--since", "24h"]) == 0
    listed = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("#")]
    assert listed == ["127.0.0.1"]


def test_auth_is_offered_only_after_starttls_and_refused(honeypot: HoneypotThread, tmp_path: Path) -> None:
    tls = ssl.create_default_context()
    tls.check_hostname = False
    tls.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP("127.0.0.1", honeypot.port, local_hostname="stuffer.example", timeout=10) as client:
        client.ehlo()
        assert not client.has_extn("auth")
        client.starttls(context=tls)
        client.ehlo()
        assert client.has_extn("auth")
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            client.login("admin", "hunter2")
        assert refused.value.smtp_code == 535
    record = honeypot.wait_records(1)[0]
    assert record.classification == "auth-attack"
    assert [(a.user, a.password, a.accepted) for a in record.auth][-1] == ("admin", "hunter2", False)
    assert record.tls_version is not None and record.tls_version.startswith("TLS")


@pytest.mark.parametrize("honeypot", sorted(PERSONAS), indirect=True)
def test_each_persona_speaks_its_mta_s_words(honeypot: HoneypotThread) -> None:
    persona = honeypot.settings.config.persona
    with smtplib.SMTP("127.0.0.1", honeypot.port, local_hostname="client.example", timeout=10) as client:
        code, greeting = client.ehlo()
        assert code == 250
        keywords = [line.split()[0].upper() for line in greeting.decode().splitlines()[1:]]
        offered = [k.split()[0] for k in persona.ehlo_keywords if not k.startswith("AUTH")]
        assert keywords == offered  # the MTA's own order, AUTH held back until TLS
        assert client.docmd("VRFY", "root") == tuple_of(persona.vrfy, address="root")
        assert client.docmd("EXPN", "staff")[0] == int(persona.expn[:3])
        assert client.docmd("NOOP") == tuple_of(persona.noop)
        assert client.docmd("RCPT", "TO:<x@y.example>") == tuple_of(persona.need_mail)
    assert honeypot.wait_records(1)[0].persona == persona.name


def tuple_of(reply: str, **slots: str) -> tuple[int, bytes]:
    code, _, text = reply.format(**{"hostname": "", "address": "", **slots}).partition(" ")
    return int(code), text.encode()


def test_replies_come_after_a_human_looking_delay(tmp_path: Path) -> None:
    """Honeypot detectors flag a banner that comes within 5 ms; ours waits --delay first."""
    settings = make_settings(tmp_path, limits=replace(NO_DELAY, delay=(0.2, 0.3)))
    with HoneypotThread(settings) as honeypot:
        started = time.monotonic()
        with smtplib.SMTP("127.0.0.1", honeypot.port, timeout=10) as client:
            greeted = time.monotonic()
            client.noop()
            answered = time.monotonic()
    assert greeted - started >= 0.2 and answered - greeted >= 0.2


def test_a_tool_s_untraced_connection_is_named_after_its_parallel_ones(honeypot: HoneypotThread) -> None:
    """relaycheck checks STARTTLS on a connection of its own that carries none of its traces; it
    ends while the client's other connection is open, and is named once that one names the tool."""
    with smtplib.SMTP("127.0.0.1", honeypot.port, local_hostname="ops.example.net", timeout=10) as named:
        with smtplib.SMTP("127.0.0.1", honeypot.port, local_hostname="ops.example.net", timeout=10) as plain:
            plain.ehlo()
        named.ehlo()
        named.docmd("VRFY", "rc-nouser-0123456789@honeypot.test")
    first, second = honeypot.wait_records(2)
    assert (first.tool, second.tool) == ("relaycheck", "relaycheck")
    assert second.commands == ["EHLO ops.example.net", "QUIT"]
    assert second.reasons[-1].startswith("same client as a relaycheck session")


def test_implicit_tls_listener(honeypot: HoneypotThread) -> None:
    tls = ssl.create_default_context()
    tls.check_hostname = False
    tls.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP_SSL("127.0.0.1", honeypot.tls_port, context=tls, timeout=10) as client:
        code, _ = client.noop()
        assert code == 250
    record = honeypot.wait_records(1)[0]
    assert record.listener == "tls" and record.tls_version is not None


def test_accept_any_records_the_credentials(tmp_path: Path) -> None:
    with HoneypotThread(make_settings(tmp_path, auth_accept_any=True)) as honeypot:
        tls = ssl.create_default_context()
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
        with smtplib.SMTP("127.0.0.1", honeypot.port, timeout=10) as client:
            client.starttls(context=tls)
            client.login("info@victim.example", "Summer2026!")
            client.sendmail("info@victim.example", ["target@elsewhere.example"], "Subject: hi\r\n\r\nbuy\r\n")
        record = honeypot.wait_records(1)[0]
    assert [(a.user, a.password, a.accepted) for a in record.auth] == [("info@victim.example", "Summer2026!", True)]
    assert record.classification == "spam-run"

"""The honeypot's pure parts: reading envelopes with the catalogue, classification, the log that is
never torn, the store's quota, the drop-box registry, report and blocklist output, the command's
usage errors."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relaycheck.catalogue import Slots, load_catalogue, plan_probes
from relaycheck.catalogue.analysis import Scope, ServerNames, analyse_recipient
from relaycheck.cli import main
from relaycheck.honeypot.blocklist import entries, render_plain, render_rbldnsd
from relaycheck.honeypot.classify import Identity, classify, is_relay_test, mentions
from relaycheck.honeypot.dropbox import DropboxRegistry
from relaycheck.honeypot.message import message_facts
from relaycheck.honeypot.model import MessageFacts, Recipient, SessionRecord, Transaction
from relaycheck.honeypot.record import MAX_LINE, SessionLog, read_records, record_line
from relaycheck.honeypot.report import render_html, render_markdown, render_text, summarise
from relaycheck.honeypot.store import MessageStore
from relaycheck.model import ProbeKind

NAMES = ServerNames(frozenset({"mail.honeypot.test", "honeypot.test"}), frozenset({"[192.0.2.25]"}))
LABEL = st.from_regex(r"[a-z][a-z0-9]{0,10}", fullmatch=True)


@settings(max_examples=60, deadline=None)
@given(user=LABEL, ext=st.tuples(LABEL, LABEL), sender=st.tuples(LABEL, LABEL))
def test_every_relay_probe_the_tester_sends_is_read_back_as_that_trick(
    user: str, ext: tuple[str, str], sender: tuple[str, str]
) -> None:
    outside = f"{ext[0]}.{ext[1]}-out.example"
    slots = Slots(
        outside=(f"{user}@{outside}",),
        sender_ext=f"{sender[0]}@{sender[1]}.sender.example",
        local_domain="honeypot.test",
        host="mail.honeypot.test",
        ip_literal="[192.0.2.25]",
        random_user="rc-nouser-0123456789",
    )
    specs = {s.id: s for s in load_catalogue()}
    for probe in plan_probes(slots):
        analysis = analyse_recipient(probe.mail_from, probe.rcpt_to, NAMES)
        if probe.kind is ProbeKind.CONTROL:
            assert analysis.scope is Scope.LOCAL, probe
            continue
        assert analysis.scope is Scope.RELAY, probe
        assert analysis.probe_id is not None
        found = specs[analysis.probe_id]
        # the same trick: the entry read back has the recipient template the tester filled
        assert found.rcpt == specs[probe.id.rstrip("bc")].rcpt, (probe, analysis)
        assert analysis.outside_domain == outside


@pytest.mark.parametrize(
    ("mail", "rcpt", "scope", "probe"),
    [
        ("<a@b.example>", "<postmaster@honeypot.test>", Scope.LOCAL, None),
        ("<a@b.example> SIZE=10", "<x@gmail.example> NOTIFY=NEVER", Scope.RELAY, "V01"),
        ("<>", "<x@gmail.example>", Scope.RELAY, "V03"),
        ("<a@b.example>", "<x%gmail.example@[192.0.2.25]>", Scope.RELAY, "V12"),
        ("<a@b.example>", "<x%gmail.example@[198.51.100.1]>", Scope.RELAY, None),  # not our literal
        ("<a@b.example>", "<@mail.honeypot.test:x@gmail.example>", Scope.RELAY, "V21"),
        ("<a@b.example>", "<gmail.example!x>", Scope.RELAY, "V22"),
        ("<a@b.example>", "<>", Scope.INVALID, None),
    ],
)
def test_received_recipients(mail: str, rcpt: str, scope: Scope, probe: str | None) -> None:
    analysis = analyse_recipient(mail, rcpt, NAMES)
    assert (analysis.scope, analysis.probe_id) == (scope, probe)


IDENTITY = Identity(("192.168.0.5",), ("mail.example.org",), 25)


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("Relay test C0A80005", ["hex address C0A80005"]),
        ("relay c0a80005:25 ok", ["hex address C0A80005"]),
        ("id C0A800050019", ["hex address C0A80005"]),
        ("via 192.168.0.5:25", ["address 192.168.0.5"]),
        ("host 192.168.0.55 and 10.192.168.0.5", []),
        ("C0A800051", []),
        ("test from mail.example.org", ["name mail.example.org"]),
        ("see www.mail.example.org.evil", []),
    ],
)
def test_relay_test_marks(text: str, found: list[str]) -> None:
    assert mentions(text, IDENTITY) == found


def _facts(**changes: object) -> MessageFacts:
    facts, _ = message_facts(b"Subject: x\r\n\r\nbody\r\n")
    for key, value in changes.items():
        setattr(facts, key, value)
    return facts


def _record(**changes: object) -> SessionRecord:
    record = SessionRecord(
        1, "s1", "sensor", "postfix", "t0", "t1", 0.1, "198.51.100.7", 4000, "192.0.2.25", 25, "plain"
    )
    for key, value in changes.items():
        setattr(record, key, value)
    return record


def _relay(address: str = "<x@gmail.example>") -> Recipient:
    return Recipient(address, "relay", "V01", "classic", "gmail.example")


def test_classification_rules() -> None:
    test_message = _facts(mentions=["hex address C0A80005"])
    assert is_relay_test(test_message, 1) and not is_relay_test(test_message, 6)
    test_message.relay_test = True
    relay_test = _record(transactions=[Transaction("<a@b.example>", [_relay()], message=test_message)])
    assert classify(relay_test)[0] == "relay-test"
    spam = _record(transactions=[Transaction("<a@b.example>", [_relay()] * 3, message=_facts())])
    assert classify(spam)[0] == "spam-run"
    scan = _record(helo="nmap.scanme.org", transactions=[Transaction("<>", [_relay("<relaytest@nmap.scanme.org>")])])
    assert classify(scan)[:2] == ("scanner", "nmap")
    msf_probe = _facts(headers=0, size=12)
    msf = _record(helo="X", transactions=[Transaction("<a@b.example>", [_relay()], message=msf_probe)])
    assert classify(msf)[:2] == ("scanner", "metasploit")
    banner_grab = _record()
    assert classify(banner_grab)[:2] == ("scanner", None)
    local = _record(
        transactions=[
            Transaction("<a@b.example>", [Recipient("<u@honeypot.test>", "local", None, None, None)], message=_facts())
        ]
    )
    assert classify(local)[0] == "other"


def test_a_record_is_never_longer_than_the_cap() -> None:
    huge = [Transaction("<a@b>", [_relay("<" + "x" * 500 + "@gmail.example>")] * 100) for _ in range(20)]
    line = record_line(_record(transactions=huge, commands=["RCPT TO:<" + "y" * 500 + ">"] * 200))
    assert len(line) <= MAX_LINE and line.endswith(b"\n")
    data = json.loads(line)
    assert data["truncated"] is True and data["transactions_dropped"] > 0


def test_the_log_is_not_torn_when_the_disk_fills(tmp_path: Path) -> None:
    """With the file size limited (as a full disk would), a record that does not fit is cut back
    entirely: the file holds only whole lines, and later records still go in whole."""
    script = textwrap.dedent(
        f"""
        import resource, signal
        from pathlib import Path
        from relaycheck.honeypot.record import SessionLog
        from relaycheck.honeypot.model import SessionRecord
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1500, 1500))
        log = SessionLog(Path({str(tmp_path)!r}))
        results = []
        for n in range(8):
            r = SessionRecord(1, f"s{{n}}", "x", "postfix", "t", "t", 0.0, "192.0.2.1", 1, "192.0.2.2", 25, "plain")
            r.commands = ["NOOP " + "z" * (50 + 40 * n)]
            results.append(log.write(r))
        print(results, log.failed)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True).stdout
    lines = (tmp_path / "sessions.jsonl").read_bytes().split(b"\n")
    assert lines[-1] == b""
    parsed = [json.loads(line) for line in lines[:-1]]
    assert 0 < len(parsed) < 8 and "False" in out  # some did not fit, and none was left half-written
    assert [r["session"] for r in parsed] == [f"s{n}" for n in range(len(parsed))]


def test_read_records_skips_partial_and_foreign_lines(tmp_path: Path) -> None:
    log = SessionLog(tmp_path)
    log.write(_record(end="2026-01-01T10:00:00+00:00"))
    log.close()
    with open(tmp_path / "sessions.jsonl", "ab") as file:
        file.write(b"not json\n[1,2]\n" + b"x" * (MAX_LINE + 5000) + b'\n{"session": "half"')
    assert [r["session"] for r in read_records(tmp_path)] == ["s1"]
    since = datetime(2026, 1, 1, 11, tzinfo=UTC)
    assert list(read_records(tmp_path, since)) == []


def test_the_store_prunes_the_oldest_bodies_first(tmp_path: Path) -> None:
    store = MessageStore(tmp_path, quota_bytes=250)
    for n in range(4):
        assert store.put(f"{n:064x}", bytes([n]) * 100)
    assert store.put("f" * 64, b"x" * 300) is False  # larger than the quota: not kept
    kept = sorted(p.stem for p in (tmp_path / "messages").rglob("*.eml"))
    assert kept == [f"{2:064x}", f"{3:064x}"] and store.used == 200 and store.pruned == 2
    assert MessageStore(tmp_path, quota_bytes=250).used == 200  # the index is rebuilt from disk


def test_the_dropbox_registry_persists(tmp_path: Path) -> None:
    registry = DropboxRegistry(tmp_path)
    registry.add_test("<Drop@Harvest.example>", session="t1", source="198.51.100.7", when="2026-01-01T00:00:00")
    registry.save()
    again = DropboxRegistry(tmp_path)
    box = again.add_campaign("drop@harvest.example", session="c1", when="2026-01-02T00:00:00")
    assert box is not None and (box.tests, box.campaigns, box.sources) == (["t1"], ["c1"], ["198.51.100.7"])
    (tmp_path / "dropboxes.json").write_text("{broken")
    assert DropboxRegistry(tmp_path).entries == {}


def _row(ip: str, kind: str, end: datetime, subject: str = "hello") -> dict[str, object]:
    message = {"relay_test": kind == "relay-test", "subject": subject, "fuzzy_hash": "3:abc:def", "urls": []}
    return {
        "client_ip": ip,
        "classification": kind,
        "end": end.isoformat(),
        "tool": "nmap" if kind == "scanner" else None,
        "auth": [{"user": "admin", "password": "<pw>", "mechanism": "LOGIN"}] if kind == "auth-attack" else [],
        "dropboxes": [],
        "transactions": [{"recipients": [{"address": "<d@x.example>", "scope": "relay"}], "message": message}],
    }


def test_blocklist_lists_relayers_and_testers_with_expiry() -> None:
    now = datetime(2026, 1, 2, tzinfo=UTC)
    rows = [
        _row("198.51.100.7", "relay-test", now - timedelta(hours=2)),
        _row("2001:db8::5", "spam-run", now - timedelta(hours=1)),
        _row("192.0.2.9", "auth-attack", now),
        _row("192.0.2.10", "scanner", now),
    ]
    listed = entries(rows, timedelta(hours=24))
    assert [e.address for e in listed] == ["192.0.2.10", "198.51.100.7", "2001:db8::5"]
    assert listed[1].expires == now + timedelta(hours=22)
    plain = render_plain(listed, timedelta(hours=24), now)
    assert [x for x in plain.splitlines() if not x.startswith("#")] == ["192.0.2.10", "198.51.100.7", "2001:db8::5"]
    zone = render_rbldnsd(listed, timedelta(hours=24), now).splitlines()
    assert "$DATASET ip4set @" in zone and "$DATASET ip6trie @" in zone
    assert zone.index("$DATASET ip4set @") < zone.index("198.51.100.7") < zone.index("$DATASET ip6trie @")
    assert all(" " not in x for x in zone if x and x[0].isdigit())  # no inline comments: they would be TXT


def test_report_formats_escape_what_clients_sent() -> None:
    now = datetime(2026, 1, 2, tzinfo=UTC)
    rows = [
        _row("198.51.100.7", "spam-run", now, subject="<script>alert(1)</script>"),
        _row("198.51.100.8", "auth-attack", now),
        _row("198.51.100.9", "relay-test", now - timedelta(hours=3)),
    ]
    summary = summarise(rows, now - timedelta(days=1), now)
    assert summary.by_classification["spam-run"] == 1 and summary.campaigns[0].messages == 1
    assert [d.address for d in summary.dropboxes] == ["d@x.example"]
    page = render_html(summary)
    assert "<script" not in page and "&lt;script&gt;" in page
    assert "<svg" in page and "&lt;pw&gt;" in page
    assert "| LOGIN | admin | &lt;pw&gt; | 1 |" in render_markdown(summary)  # escaped: a password is untrusted text
    assert "198.51.100.7" in render_text(summary)


def test_a_missing_extra_is_one_line_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The command line's one extras mechanism decides, from the installed distributions.
    monkeypatch.setattr("relaycheck.extras.missing_distributions", lambda extra: ["ppdeep"])
    for argv in (
        ["honeypot", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path)],
        ["honeypot", "report", "."],
        ["honeypot", "blocklist", str(tmp_path)],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err == "relaycheck: 'honeypot' needs the honeypot extra: pip install 'relaycheck[honeypot]'\n"


RUN = ["honeypot", "--listen", "127.0.0.1:0", "--data-dir", "/tmp/x"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["honeypot"], "give at least one --listen"),
        (["honeypot", "--listen", "127.0.0.1", "--data-dir", "/tmp/x"], "HOST:PORT"),
        (["honeypot", "--listen", "127.0.0.1:0"], "--data-dir is required"),
        ([*RUN, "--deliver-probes"], "--smarthost"),
        ([*RUN, "--tag", "bad"], "KEY=VALUE"),
        ([*RUN, "--hpfeeds", "127.0.0.1:1"], "--hpfeeds-ident"),
        ([*RUN, "--smarthost", "127.0.0.1:25"], "never relays"),
        (["honeypot", "report", "/nonexistent/honeypot"], "not a honeypot data directory"),
        (["honeypot", "blocklist", ".", "--since", "soon"], "--since takes"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_campaigns_group_variants_of_one_message_by_fuzzy_hash() -> None:
    """Spam personalised per recipient (name, tracking URL) is one campaign; other text is not."""
    rng = random.Random(7)
    words = [f"w{n}" for n in range(3000)]
    body = " ".join(rng.choice(words) for _ in range(1500))
    other = " ".join(rng.choice(words) for _ in range(1500))
    now = datetime(2026, 1, 2, tzinfo=UTC)
    rows = []
    texts = [f"Dear {name}, {body} http://t.example/{name}" for name in ("Alice", "Bob", "Carol")] + [other]
    for number, text in enumerate(texts):
        facts, _ = message_facts(f"Subject: s{number}\r\n\r\n{text}\r\n".encode())
        row = _row(f"198.51.100.{number}", "spam-run", now)
        row["transactions"][0]["message"] = {"fuzzy_hash": facts.fuzzy_hash, "subject": facts.subject, "urls": []}
        rows.append(row)
    campaigns = summarise(rows, now - timedelta(days=1), now).campaigns
    assert [(c.messages, c.subjects) for c in campaigns] == [(3, ["s0", "s1", "s2"]), (1, ["s3"])]

"""``relaycheck watch`` and ``history``: a loopback server whose relay policy the test flips between
runs; alerts only on a change, through a webhook, an authenticated STARTTLS submission server and
a command; a failing channel is retried, reported and tried again; ``history`` marks the change."""

from __future__ import annotations

import json
import ssl
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from relaycheck.cli import main
from relaycheck.testing.servers import BEHAVIOURS, ServerThread

from ..behaviour.conftest import ServerFactory
from .receivers import SubmissionServer, WebhookReceiver

Capture = pytest.CaptureFixture[str]

CHECK = [
    "--ext-recipient", "relaytest@outside-a.test",
    "--ext-recipient", "relaytest@outside-b.test",
    "--local-domain", "relay.test", "--helo", "client.relaycheck.test",
    "--no-ptr", "--no-dnsbl", "--jitter", "0", "--alert-retry-wait", "0",
]  # fmt: skip


def flip(server: ServerThread, behaviour: str) -> None:
    """New connections get the other relay policy (the server keeps its address and port)."""
    server.behaviour = BEHAVIOURS[behaviour]
    server.handler.behaviour = BEHAVIOURS[behaviour]


def watch(server: ServerThread, db: Path, *extra: str) -> int:
    return main(["watch", server.address, "--once", "--db", str(db), *CHECK, *extra])


def test_one_webhook_on_the_verdict_change_none_without_change(
    smtp_server: ServerFactory, tmp_path: Path, capsys: Capture
) -> None:
    server = smtp_server("closed")
    db = tmp_path / "history.db"
    with WebhookReceiver() as hook:
        assert watch(server, db, "--webhook", hook.url) == 0  # the first run: nothing to compare with
        assert watch(server, db, "--webhook", hook.url) == 0  # no change
        assert hook.statuses == []
        flip(server, "open")
        assert watch(server, db, "--webhook", hook.url) == 1  # check's exit code: open relay
        assert watch(server, db, "--webhook", hook.url) == 1  # still open: the same state, no second alert
        assert len(hook.bodies) == 1
    alert = hook.bodies[0]
    assert (alert["schema"], alert["schema_version"], alert["event"]) == ("relaycheck.alert", 1, "change")
    assert alert["target"] == f"127.0.0.1:{server.port}"
    assert alert["verdict"] == {"before": "closed", "after": "open"} and alert["open_relay"] is True
    kinds = {c["kind"] for c in alert["changes"]}
    assert {"verdict", "accepted-probes"} <= kinds
    verdict = next(c for c in alert["changes"] if c["kind"] == "verdict")
    assert (verdict["before"], verdict["after"]) == ("closed", "open")
    assert alert["before"]["verdict"] == "closed" and alert["after"]["exit_code"] == 1
    out = capsys.readouterr().out
    assert "(first run)" in out and "(no change)" in out and "closed -> open: CHANGED" in out


def test_a_failing_webhook_is_retried_reported_and_delivered_next_round(
    smtp_server: ServerFactory, tmp_path: Path, capsys: Capture
) -> None:
    server = smtp_server("closed")
    db = tmp_path / "history.db"
    with WebhookReceiver(fail_first=2) as hook:
        watch(server, db, "--webhook", hook.url)
        flip(server, "open")
        capsys.readouterr()
        assert watch(server, db, "--webhook", hook.url, "--alert-retries", "2") == 1
        assert hook.statuses == [500, 500] and hook.bodies == []
        err = capsys.readouterr().err
        assert "failed after 2 attempt(s): the webhook answered 500" in err and "tried again" in err
        watch(server, db, "--webhook", hook.url)  # same state as the failed alert's: sent now
        assert hook.statuses == [500, 500, 200]
        assert hook.bodies[0]["verdict"] == {"before": "closed", "after": "open"}
        watch(server, db, "--webhook", hook.url)
        assert len(hook.bodies) == 1
    capsys.readouterr()
    assert main(["history", server.address, "--db", str(db), "--format", "json"]) == 0
    alerts = json.loads(capsys.readouterr().out)["alerts"]
    assert [a["status"] for a in alerts] == ["sent", "failed"]


def test_a_change_back_before_the_channel_heard_of_it_is_not_announced(
    smtp_server: ServerFactory, tmp_path: Path
) -> None:
    """closed -> open (alert fails) -> closed: the channel last heard "closed", so nothing to say."""
    server = smtp_server("closed")
    db = tmp_path / "history.db"
    with WebhookReceiver(fail_first=1) as hook:
        watch(server, db, "--webhook", hook.url)
        flip(server, "open")
        watch(server, db, "--webhook", hook.url, "--alert-retries", "1")
        flip(server, "closed")
        watch(server, db, "--webhook", hook.url)
        assert hook.statuses == [500]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def submission(ca: trustme.CA) -> Iterator[SubmissionServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    with SubmissionServer(context) as server:
        yield server


def test_mail_alert_through_authenticated_starttls_submission(
    smtp_server: ServerFactory, submission: SubmissionServer, ca: trustme.CA, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    cafile = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    monkeypatch.setenv("RELAYCHECK_SMTP_PASSWORD", "s3cret")
    mail = ["--mail-to", "admin@relay.test", "--mail-from", "watch@relay.test", "--smtp-server",
            f"127.0.0.1:{submission.port}", "--smtp-user", "alerts", "--smtp-cafile", str(cafile)]  # fmt: skip
    server = smtp_server("closed")
    db = tmp_path / "history.db"
    watch(server, db, *mail)
    flip(server, "open")
    assert watch(server, db, *mail) == 1
    assert len(submission.handler.messages) == 1
    envelope, message, tls, login = submission.handler.messages[0]
    assert tls and login == "alerts"
    assert envelope.mail_from == "watch@relay.test" and envelope.rcpt_tos == ["admin@relay.test"]
    assert "closed -> open" in message["Subject"]
    parts = {p.get_content_type(): p for p in message.walk()}
    body = parts["text/plain"].get_payload(decode=True).decode()
    assert "verdict closed -> open" in body
    attached = json.loads(parts["application/json"].get_payload(decode=True))
    assert attached["verdict"] == {"before": "closed", "after": "open"}


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_mail_alert_refuses_a_server_without_starttls(
    smtp_server: ServerFactory, tmp_path: Path, capsys: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELAYCHECK_SMTP_PASSWORD", "s3cret")
    with SubmissionServer(None) as plain:
        mail = ["--mail-to", "admin@relay.test", "--smtp-server", f"127.0.0.1:{plain.port}", "--smtp-user",
                "alerts@relay.test", "--alert-retries", "1"]  # fmt: skip
        server = smtp_server("closed")
        db = tmp_path / "history.db"
        watch(server, db, *mail)
        flip(server, "open")
        watch(server, db, *mail)
        assert plain.handler.messages == []  # the password never went over clear text
    assert "does not offer STARTTLS" in capsys.readouterr().err


def test_exec_gets_the_alert_on_stdin(smtp_server: ServerFactory, tmp_path: Path) -> None:
    out = tmp_path / "alert.json"
    script = tmp_path / "save.py"
    script.write_text(
        f"import os, sys\nopen({str(out)!r}, 'w').write(os.environ['RELAYCHECK_VERDICT'] + '\\n' + sys.stdin.read())\n"
    )
    command = f"{sys.executable} {script}"
    server = smtp_server("open")
    db = tmp_path / "history.db"
    watch(server, db, "--exec", command)
    assert not out.exists()
    flip(server, "closed")
    assert watch(server, db, "--exec", command) == 0
    verdict, _, body = out.read_text().partition("\n")
    assert verdict == "closed"
    assert json.loads(body)["verdict"] == {"before": "open", "after": "closed"}


def test_history_marks_the_change(smtp_server: ServerFactory, tmp_path: Path, capsys: Capture) -> None:
    server = smtp_server("closed")
    db = tmp_path / "history.db"
    watch(server, db)
    watch(server, db)
    flip(server, "open")
    watch(server, db)
    capsys.readouterr()
    assert main(["history", server.address, "--db", str(db), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["total_runs"] == 3
    assert [(r["verdict"], r["changed"], r["source"]) for r in data["runs"]] == [
        ("open", True, "watch"), ("closed", False, "watch"), ("closed", False, "watch"),
    ]  # fmt: skip
    assert main(["history", server.address, "--db", str(db)]) == 0
    text = capsys.readouterr().out
    assert "OPEN" in text and "CHANGED" in text and "verdict closed -> open" in text
    assert main(["history", server.address, "--db", str(db), "--format", "html"]) == 0
    page = capsys.readouterr().out
    assert '<tr class="changed">' in page and "verdict closed -&gt; open" in page


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["watch", "127.0.0.1", "--once", "--every", "1h"], "--once runs one round"),
        (["watch", "127.0.0.1", "--every", "10s"], "at least 60 s"),
        (["watch", "127.0.0.1", "--once", "--webhook", "ftp://x"], "http:// or https://"),
        (["watch", "127.0.0.1", "--once", "--mail-to", "a@b.test"], "--smtp-server"),
        (
            ["watch", "127.0.0.1", "--once", "--mail-to", "a@b.test", "--smtp-server", "127.0.0.1", "--smtp-user", "u"],
            "RELAYCHECK_SMTP_PASSWORD",
        ),
        (["history", "127.0.0.1", "--db", "/nonexistent/h.db"], "no history database"),
    ],
)
def test_usage_errors(argv: list[str], message: str, tmp_path: Path, capsys: Capture,
                      monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.delenv("RELAYCHECK_SMTP_PASSWORD", raising=False)
    if argv[0] == "watch":
        argv = [*argv, "--db", str(tmp_path / "h.db")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_exit_on_change_ends_after_the_first_round_with_a_change(smtp_server: ServerFactory, tmp_path: Path) -> None:
    import asyncio

    from relaycheck.api import CheckOptions
    from relaycheck.history.store import Store
    from relaycheck.monitor.watch import RunResult, Watcher, WatchSettings, jobs, watch_loop

    from ..behaviour.conftest import BASE

    server = smtp_server("closed")
    options = CheckOptions(engine=BASE)
    store = Store(str(tmp_path / "history.db"))
    rounds: list[list[RunResult]] = []

    def after(results: list[RunResult]) -> None:
        rounds.append(results)
        if len(rounds) == 2:  # two rounds without a change, then the server opens
            flip(server, "open")

    lines: list[str] = []
    watcher = Watcher(store, WatchSettings(check=options, jitter=0), log=lines.append, warn=lines.append)
    try:
        code = asyncio.run(
            watch_loop(watcher, jobs([server.address], options), interval=0, exit_on_change=True, after_round=after)
        )
    finally:
        store.close()
    assert code == 1 and len(rounds) == 3
    assert [bool(r[0].changes) for r in rounds] == [False, False, True]
    assert rounds[2][0].row.verdict == "open" and any("CHANGED" in line for line in lines)


def test_a_running_watch_stops_cleanly_on_sigterm(smtp_server: ServerFactory, tmp_path: Path) -> None:
    import os
    import signal
    import subprocess

    server = smtp_server("closed")
    process = subprocess.Popen(
        [sys.executable, "-m", "relaycheck", "watch", server.address, "--every", "1h",
         "--db", str(tmp_path / "h.db"), *CHECK],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        assert process.stdout is not None and process.stderr is not None
        line = process.stdout.readline()  # the first round's line: now it waits an hour
        assert "(first run)" in line, line
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        err = process.stderr.read()
        assert "stopped" in err and "Traceback" not in err
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

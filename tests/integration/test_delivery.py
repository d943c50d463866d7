"""Delivery mode (``relaycheck check --confirm``) end to end against real Postfix and Dovecot.

The lab's delivery servers (lab.EXTRA_SERVERS) send confirm.lab.test to its MX, the client
namespace, where relaycheck's own ``--sink 198.18.0.2:25`` listens, and imap.lab.test over LMTP
into the lab's Dovecot, which relaycheck then reads with ``--imap``. Each mailbox serves one run,
so what arrived can be counted exactly.

Every run happens once, in the module fixture: the runs with relaycheck's sink one after the
other (they share the client's port 25), the IMAP runs alongside them; each takes a second or
two. What the runs prove, besides the verdicts:

* each message Postfix queued from the client is one a report accounts for (the "queued as" id
  of an accepted probe's test message), with one recipient; Postfix delivered every one of them
  to the confirm address and nowhere else; nothing was queued for a probe the server refused;
* the IMAP mailbox holds the test messages afterwards only with ``--imap-keep``.
"""

from __future__ import annotations

import email
import imaplib
import re
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

import pytest

from relaycheck.cli import main
from relaycheck.imap import ImapError, ImapLocation, ImapWatcher, imap_tls_context

from ..waiting import wait_for
from .lab import (
    IMAP_PORT,
    IMAPS_PORT,
    Lab,
    PostfixDelivery,
    PostfixMessage,
    postfix_deliveries,
    postfix_queued,
)
from .lab.runner import EXIT_CODES, RelaycheckRun, run_relaycheck

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

CONFIRM_TIMEOUT = 60  # a run waits this long only when a message never arrives
SINK_PORT = 25  # the confirm domain's MX is the client: relaycheck's sink must be on port 25
TOKEN_HEADER = "X-Relaycheck-Token"
QUEUED_AS = re.compile(r"queued as (?P<qid>[0-9A-F]+)")

OPEN = "postfix-confirm-open"
PARTIAL = "postfix-confirm-partial"
CLOSED = "postfix-confirm-closed"
# Mailboxes, one per IMAP run (lab.IMAP_USERS).
DELETE_BOX, KEEP_BOX, UNTRUSTED_BOX = "rcuser", "rcuser2", "rcuser3"


@dataclass(frozen=True)
class Case:
    id: str
    server: str
    imap_user: str | None = None  # None: relaycheck's own sink on the client
    imaps: bool = False  # implicit TLS (993) instead of STARTTLS (143)
    keep: bool = False
    trust_lab_ca: bool = True


# Each line runs in this order, the lines at once. The first line shares the sink's port; it also
# holds the one run without a report (untrusted), alone on its server while it runs, so what it
# made Postfix queue is told from the others by when it was logged.
SCHEDULE: tuple[tuple[Case, ...], ...] = (
    (
        Case("sink-open", OPEN),
        Case("sink-partial", PARTIAL),
        Case("sink-closed", CLOSED),
        Case("imap-untrusted", PARTIAL, imap_user=UNTRUSTED_BOX, trust_lab_ca=False),
    ),
    (Case("imap-delete", OPEN, imap_user=DELETE_BOX),),
    (Case("imaps-keep", OPEN, imap_user=KEEP_BOX, imaps=True, keep=True),),
)
CASES = tuple(case for line in SCHEDULE for case in line)
REPORTED = [c for c in CASES if c.trust_lab_ca]


@dataclass(frozen=True)
class DeliveryRun:
    case: Case
    confirm: str
    run: RelaycheckRun
    # The server's Postfix log while the run lasted, the messages it queued from the client then,
    # and what Postfix did with them. Other runs against the same server at the same time show
    # up here too: the report's queue ids say which messages are this run's.
    log: str
    queued: list[PostfixMessage]
    deliveries: list[PostfixDelivery]

    @property
    def queue_ids(self) -> list[str]:
        return sorted(m.qid for m in self.queued)

    def own(self) -> list[PostfixMessage]:
        """The queued messages this run's report accounts for."""
        return [m for m in self.queued if m.qid in self.reported_messages()]

    @property
    def observations(self) -> list[dict[str, Any]]:
        return list(self.run.target["observations"])

    def accepted_relay_probes(self) -> list[dict[str, Any]]:
        return [o for o in self.observations if o["kind"] == "relay" and o["outcome"] == "accepted"]

    def messaged(self) -> list[dict[str, Any]]:
        """The accepted probes that got a test message: one per path family (plain or trick, clear
        text or TLS), never one per accepted probe."""
        sent = [o for o in self.accepted_relay_probes() if o.get("delivery")]
        families = [(o["tls"], o["local_part_trick"]) for o in sent]
        assert len(families) == len(set(families)), self.describe()
        return sent

    def reported_messages(self) -> dict[str, dict[str, Any]]:
        """Queue id -> observation, for every probe whose test message the server took."""
        sent = {}
        for obs in self.observations:
            final = (obs.get("delivery") or {}).get("final_reply") or {}
            match = QUEUED_AS.search(str(final.get("text", "")))
            if match and final.get("code") == 250:
                sent[match["qid"]] = obs
        return sent

    def describe(self) -> str:
        lines = [self.run.describe(), f"queued: {self.queued}"]
        lines += [f"  {d}" for d in self.deliveries]
        return "\n".join(lines)


def _argv(lab: Lab, case: Case, confirm: str) -> list[str]:
    argv = ["--confirm", confirm, "--confirm-timeout", str(CONFIRM_TIMEOUT)]
    if case.imap_user is None:
        return [*argv, "--sink", f"{lab.client_ip}:{SINK_PORT}"]
    scheme, port = ("imaps", IMAPS_PORT) if case.imaps else ("imap", IMAP_PORT)
    argv += ["--imap", f"{scheme}://{case.imap_user}@{lab.dovecot.ip}:{port}/INBOX"]
    if case.trust_lab_ca:
        argv += ["--imap-cafile", str(lab.dovecot.cafile)]
    return [*argv, "--imap-keep"] if case.keep else argv


def _settled_deliveries(lab: Lab, case: Case, since: int, queued: list[PostfixMessage]) -> list[PostfixDelivery]:
    """Postfix's delivery lines for ``queued``, once each has a final one (sent or bounced).

    The sink or the mailbox may see a message a moment before Postfix logs its delivery.
    """
    server = lab.server(case.server)
    ids = {m.qid for m in queued}
    found: list[PostfixDelivery] = []

    def settled() -> bool:
        found[:] = [d for d in postfix_deliveries(server.read_log(since)) if d.qid in ids]
        return {d.qid for d in found if d.status != "deferred"} >= ids

    wait_for(settled, time.monotonic() + 30, server.log_path)
    return found


def _run(lab: Lab, case: Case) -> DeliveryRun:
    server = lab.server(case.server)
    confirm = f"relaytest@{lab.confirm_domain}" if case.imap_user is None else lab.dovecot.address(case.imap_user)
    since = server.log_size()
    run = run_relaycheck(
        lab,
        server.ip,
        local_domain=server.domain,
        extra=_argv(lab, case, confirm),
        env={"RELAYCHECK_IMAP_PASSWORD": lab.dovecot.password},
        timeout=CONFIRM_TIMEOUT + 120,
    )
    log = server.settled_log(since)
    queued = postfix_queued(log, lab.client_ip)
    return DeliveryRun(case, confirm, run, log, queued, _settled_deliveries(lab, case, since, queued))


@pytest.fixture(scope="module")
def runs(lab: Lab, relaycheck_cli: None) -> dict[str, DeliveryRun]:
    def line(cases: tuple[Case, ...]) -> list[DeliveryRun]:
        return [_run(lab, case) for case in cases]

    with ThreadPoolExecutor(max_workers=len(SCHEDULE)) as pool:
        done = [run for runs in pool.map(line, SCHEDULE) for run in runs]
    return {run.case.id: run for run in done}


def _mailbox(lab: Lab, user: str) -> list[Message]:
    """The headers of every message in ``user``'s INBOX (read-only, nothing is changed)."""

    def read() -> list[Message]:
        context = ssl.create_default_context(cafile=str(lab.dovecot.cafile))
        with imaplib.IMAP4(lab.dovecot.ip, IMAP_PORT, timeout=15) as client:
            client.starttls(ssl_context=context)
            client.login(user, lab.dovecot.password)
            client.select("INBOX", readonly=True)
            _, data = client.search(None, "ALL")
            messages = []
            for number in data[0].split():
                _, parts = client.fetch(number.decode(), "(BODY.PEEK[HEADER])")
                raw = next(p[1] for p in parts if isinstance(p, tuple))
                messages.append(email.message_from_bytes(raw))
            return messages

    return lab.in_client(read)


def _tokens(run: DeliveryRun) -> set[str]:
    return {o["delivery"]["token"] for o in run.observations if o.get("delivery")}


# ---- relaycheck's own sink -------------------------------------------------------------------


def test_open_postfix_is_confirmed_through_relaycheck_sink(lab: Lab, runs: dict[str, DeliveryRun]) -> None:
    done = runs["sink-open"]
    server = lab.server(OPEN)
    assert done.run.verdict == "open", done.describe()
    assert done.run.target["verdict"]["confidence"] == "confirmed", done.describe()
    assert done.run.exit_code == EXIT_CODES["open"], done.describe()
    assert done.run.report["mode"] == "delivery", done.describe()
    accepted = done.messaged()
    assert accepted, done.describe()
    for obs in accepted:
        delivery = obs["delivery"]
        assert delivery["state"] == "confirmed", (obs["probe_id"], done.describe())
        assert delivery["arrived_via"] == "sink", obs
        # The path: received by the Postfix under test from the client, nothing before it.
        assert any(f"by {server.hostname} (Postfix)" in r for r in delivery["received"]), delivery
        assert any(f"[{lab.client_ip}]" in r for r in delivery["received"]), delivery


def test_closed_postfix_sends_nothing(lab: Lab, runs: dict[str, DeliveryRun]) -> None:
    done = runs["sink-closed"]
    assert done.run.verdict == "closed", done.describe()
    assert done.run.exit_code == EXIT_CODES["closed"], done.describe()
    assert done.accepted_relay_probes() == [], done.describe()
    assert [o for o in done.observations if o.get("delivery")] == [], done.describe()
    assert done.queued == [], done.describe()  # no message was ever handed to the server
    assert done.deliveries == [], done.describe()


def test_partial_relay_gets_one_message_per_path_family_and_none_for_refused(
    lab: Lab, runs: dict[str, DeliveryRun]
) -> None:
    """postfix-confirm-partial relays for senders in its own domain only: some probes pass, the
    others are refused, and only the ones that passed got a test message, one per path family."""
    done = runs["sink-partial"]
    domain = lab.server(PARTIAL).domain
    assert done.run.verdict == "open", done.describe()
    assert done.run.target["verdict"]["confidence"] == "confirmed", done.describe()
    accepted = done.messaged()
    refused = [o for o in done.observations if o["kind"] == "relay" and o["outcome"] != "accepted"]
    assert accepted and refused, done.describe()
    # As Postfix saw the senders: its own domain, given or appended to a bare "<relaycheck>".
    assert all(m.sender.endswith(f"@{domain}") or m.sender.endswith(f".{domain}") for m in done.queued), done.describe()
    assert all(o.get("delivery") is None for o in refused), done.describe()
    assert all(o["delivery"]["state"] == "confirmed" for o in accepted), done.describe()
    messages = done.reported_messages()
    assert sorted(messages) == done.queue_ids, done.describe()  # alone on its server: all queued
    assert {m["probe_id"] for m in messages.values()} == {o["probe_id"] for o in accepted}, done.describe()


@pytest.mark.parametrize("server", [OPEN, PARTIAL, CLOSED])
def test_every_queued_message_is_one_the_reports_account_for(runs: dict[str, DeliveryRun], server: str) -> None:
    """Postfix's own log: no message from the client but the runs' reported test messages."""
    ran = [runs[c.id] for c in REPORTED if c.server == server]
    queued = {m.qid for done in ran for m in done.queued}
    reported = {qid for done in ran for qid in done.reported_messages()}
    assert queued == reported, "\n".join(done.describe() for done in ran)


@pytest.mark.parametrize("case", REPORTED, ids=lambda c: c.id)
def test_every_message_went_to_the_confirm_address_only(lab: Lab, runs: dict[str, DeliveryRun], case: Case) -> None:
    """Each test message of the run: queued once with one recipient, delivered once, to the
    confirm address, through the lab's route for that domain."""
    done = runs[case.id]
    own = done.own()
    assert sorted(m.qid for m in own) == sorted(done.reported_messages()), done.describe()
    assert all(m.recipients == 1 for m in own), done.describe()
    deliveries = [d for d in done.deliveries if d.qid in done.reported_messages()]
    assert sorted(d.qid for d in deliveries) == sorted(m.qid for m in own), done.describe()
    hop = f"[{lab.client_ip}]:{SINK_PORT}" if case.imap_user is None else f"[{lab.dovecot.ip}]:24"
    for delivery in deliveries:
        assert delivery.to == done.confirm, done.describe()
        assert delivery.status == "sent", done.describe()
        assert delivery.relay.endswith(hop), done.describe()
        if delivery.orig_to:  # a rewritten probe address: a form of the confirm address
            local, _, domain = done.confirm.partition("@")
            assert local in delivery.orig_to and domain in delivery.orig_to, done.describe()


def test_recording_sink_got_no_test_message(lab: Lab, runs: dict[str, DeliveryRun]) -> None:
    """The lab's catch-all next hop (every other domain) saw none of the runs' messages."""
    leaked = [m for m in lab.sink_messages() if TOKEN_HEADER.lower() in str(m["content"]).lower()]
    assert leaked == [], leaked


# ---- IMAP: Dovecot, delivered by Postfix over LMTP --------------------------------------------


def test_imap_confirms_and_deletes_the_test_messages(lab: Lab, runs: dict[str, DeliveryRun]) -> None:
    done = runs["imap-delete"]
    assert done.run.verdict == "open", done.describe()
    assert done.run.target["verdict"]["confidence"] == "confirmed", done.describe()
    accepted = done.messaged()
    assert accepted, done.describe()
    for obs in accepted:
        delivery = obs["delivery"]
        assert delivery["state"] == "confirmed", (obs["probe_id"], done.describe())
        assert delivery["arrived_via"] == "imap", obs
        # Newest first: Dovecot's LMTP, then the Postfix under test.
        assert f"by {lab.dovecot.hostname} with LMTP" in delivery["received"][0], delivery
        assert any(f"by {lab.server(OPEN).hostname} (Postfix)" in r for r in delivery["received"]), delivery
    # Delivered (Postfix says sent to Dovecot, relaycheck saw each), then deleted.
    assert len(done.own()) == len(accepted), done.describe()
    assert _mailbox(lab, DELETE_BOX) == []


def test_imap_keep_leaves_each_test_message_once(lab: Lab, runs: dict[str, DeliveryRun]) -> None:
    done = runs["imaps-keep"]
    assert done.run.target["verdict"]["confidence"] == "confirmed", done.describe()
    kept = _mailbox(lab, KEEP_BOX)
    tokens = [str(m[TOKEN_HEADER]).strip() for m in kept]
    assert sorted(tokens) == sorted(_tokens(done)), done.describe()
    for message in kept:
        assert message["Delivered-To"] == done.confirm, message
        assert message["To"] == f"<{done.confirm}>", message


def test_imap_without_the_lab_ca_refuses_the_self_signed_certificate(lab: Lab) -> None:
    """relaycheck verifies the IMAP server's certificate; --imap-cafile is how to trust the lab's."""
    location = ImapLocation(False, lab.dovecot.ip, IMAP_PORT, DELETE_BOX, "INBOX")
    system = ImapWatcher(location, lab.dovecot.password, tls_context=imap_tls_context())
    with pytest.raises(ImapError, match="CERTIFICATE_VERIFY_FAILED"):
        lab.in_client(lambda: system.poll({"rc-000000000000000000000000"}))
    lab_ca = ImapWatcher(location, lab.dovecot.password, tls_context=imap_tls_context(str(lab.dovecot.cafile)))
    assert lab.in_client(lambda: lab_ca.poll({"rc-000000000000000000000000"})) == {}


def test_unreadable_mailbox_is_found_out_before_any_message_is_sent(lab: Lab, runs: dict[str, DeliveryRun]) -> None:
    done = runs["imap-untrusted"]
    assert "CERTIFICATE_VERIFY_FAILED" in done.run.stderr, done.describe()
    assert done.queued == [], f"{len(_mailbox(lab, UNTRUSTED_BOX))} test messages left in the mailbox\n" + (
        done.describe()
    )


# ---- --imap-cafile usage (no lab needed) -----------------------------------------------------


def test_imap_cafile_needs_imap(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cafile = tmp_path / "ca.pem"
    cafile.write_text("")
    code = main(
        ["check", "127.0.0.1", "--confirm", "a@b.example", "--sink", "127.0.0.1:0", "--imap-cafile", str(cafile)]
    )
    assert code == 2
    assert "--imap-cafile is for --imap" in capsys.readouterr().err


def test_imap_cafile_without_a_certificate_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cafile = tmp_path / "ca.pem"
    cafile.write_text("not a certificate\n")
    monkeypatch.setenv("RELAYCHECK_IMAP_PASSWORD", "x")
    argv = ["check", "127.0.0.1", "--confirm", "a@b.example", "--imap", "imaps://a@127.0.0.1/INBOX"]
    code = main([*argv, "--imap-cafile", str(cafile)])
    assert code == 2
    assert f"--imap-cafile {cafile}: no usable certificate" in capsys.readouterr().err

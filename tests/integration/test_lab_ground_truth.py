"""The lab's ground truth, proven without relaycheck.

A plain smtplib conversation from the client namespace shows each server's raw reply to an
outside recipient and to postmaster; open relays are shown to really deliver (to the sink, the
only place they can). If these fail, the lab is wrong, not relaycheck. (One exception: the
greylisting test lets relaycheck's retry do the waiting, see there; its verdicts are not used.)
"""

from __future__ import annotations

import contextlib
import email
import imaplib
import re
import smtplib
import ssl
import subprocess
import time
import uuid
from dataclasses import dataclass

import dns.exception
import dns.resolver
import pytest

from ..waiting import wait_for
from .lab import (
    ALL_SERVERS,
    GREYLIST_DELAY_S,
    IMAP_PORT,
    SERVERS,
    Lab,
    Server,
    ServerSpec,
    file_size,
    read_from,
)
from .lab.runner import run_relaycheck

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

Reply = tuple[int, str]


def _unique_sender(lab: Lab, domain: str | None = None) -> str:
    # A fresh sender per conversation: a new greylisting triplet, and a token to find.
    return f"gt-{uuid.uuid4().hex[:12]}@{domain or lab.client_hostname}"


def _lab_tls_context() -> ssl.SSLContext:
    # The lab's certificate is self-signed: the point here is the relay policy, not PKI.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _reply(pair: tuple[int, bytes]) -> Reply:
    return pair[0], pair[1].decode("utf-8", "replace")


@dataclass(frozen=True)
class Conversation:
    mail_before_tls: Reply | None
    mail: Reply
    # MAIL FROM:<> when the sender was refused: the transaction the RCPT replies belong to.
    null_sender: Reply | None
    outside: Reply
    postmaster: Reply


def _open_session(lab: Lab, server: Server) -> smtplib.SMTP:
    smtp = smtplib.SMTP(server.ip, server.port, local_hostname=lab.client_hostname, timeout=15)
    smtp.ehlo()
    return smtp


def _converse(lab: Lab, server: Server, sender: str) -> Conversation:
    """EHLO, [MAIL; RSET; STARTTLS; EHLO], MAIL, [MAIL FROM:<>], RCPT outside, RCPT postmaster, QUIT."""
    with _open_session(lab, server) as smtp:
        before_tls = None
        if server.spec.tls_required:
            before_tls = _reply(smtp.mail(sender))
            smtp.rset()
            smtp.starttls(context=_lab_tls_context())
            smtp.ehlo()
        mail = _reply(smtp.mail(sender))
        null_sender = None if mail[0] == 250 else _reply(smtp.mail(""))
        outside = _reply(smtp.rcpt(f"relaytest@{lab.outside_domains[0]}"))
        postmaster = _reply(smtp.rcpt(f"postmaster@{server.domain}"))
    return Conversation(before_tls, mail, null_sender, outside, postmaster)


@pytest.mark.parametrize("spec", ALL_SERVERS, ids=[s.name for s in ALL_SERVERS])
def test_raw_rcpt_replies(lab: Lab, spec: ServerSpec) -> None:
    server = lab.server(spec.name)
    talk = lab.in_client(lambda: _converse(lab, server, _unique_sender(lab)))
    assert talk.mail[0] == spec.outside_mail, talk
    if spec.outside_mail != 250:
        assert talk.null_sender is not None, talk
        assert talk.null_sender[0] == 250, talk
    assert talk.outside[0] == spec.outside_rcpt, talk
    assert spec.outside_text in talk.outside[1], talk
    assert talk.postmaster[0] == spec.postmaster_rcpt, talk


REFUSED_AT_DATA = [s for s in ALL_SERVERS if s.outside_data is not None]


@pytest.mark.parametrize("spec", REFUSED_AT_DATA, ids=[s.name for s in REFUSED_AT_DATA])
def test_relay_accepted_at_rcpt_is_refused_at_data(lab: Lab, spec: ServerSpec) -> None:
    """The relay decision is made after RCPT: the outside recipient is accepted, DATA is not."""
    server = lab.server(spec.name)

    def talk() -> tuple[Reply, Reply]:
        with _open_session(lab, server) as smtp:
            smtp.mail(_unique_sender(lab))
            rcpt = _reply(smtp.rcpt(f"relaytest@{lab.outside_domains[0]}"))
            return rcpt, _reply(smtp.docmd("DATA"))

    rcpt, data = lab.in_client(talk)
    assert rcpt[0] == 250, rcpt
    assert data[0] == spec.outside_data, data


CONNECTION_LIMITED = [s for s in ALL_SERVERS if s.max_connections is not None]


@pytest.mark.parametrize("spec", CONNECTION_LIMITED, ids=[s.name for s in CONNECTION_LIMITED])
def test_connection_over_the_per_client_limit_gets_421(lab: Lab, spec: ServerSpec) -> None:
    server = lab.server(spec.name)
    assert spec.max_connections is not None

    def talk() -> tuple[list[Reply], Reply]:
        with contextlib.ExitStack() as held:
            greetings = []
            for _ in range(spec.max_connections or 0):
                smtp = held.enter_context(smtplib.SMTP(local_hostname=lab.client_hostname, timeout=15))
                greetings.append(_reply(smtp.connect(server.ip, server.port)))
                greetings.append(_reply(smtp.noop()))  # the session is up, not merely queued
            with pytest.raises(smtplib.SMTPConnectError) as refused:
                smtplib.SMTP(server.ip, server.port, local_hostname=lab.client_hostname, timeout=15)
            return greetings, (refused.value.smtp_code, refused.value.smtp_error.decode())

    greetings, over = lab.in_client(talk)
    assert all(code in {220, 250} for code, _ in greetings), greetings
    assert over[0] == 421, over
    assert "too many" in over[1].lower(), over


STARTTLS_FAILING = [s for s in ALL_SERVERS if s.starttls_failure is not None]


@pytest.mark.parametrize("spec", STARTTLS_FAILING, ids=[s.name for s in STARTTLS_FAILING])
def test_starttls_is_offered_and_fails(lab: Lab, spec: ServerSpec) -> None:
    """STARTTLS is advertised; it is refused (454) or the handshake after 220 fails, while the
    plaintext session works."""
    server = lab.server(spec.name)

    def talk() -> tuple[bool, Reply, BaseException]:
        with _open_session(lab, server) as smtp:
            advertised = smtp.has_extn("starttls")
            mail = _reply(smtp.mail(_unique_sender(lab)))
            smtp.rset()
            try:
                smtp.starttls(context=_lab_tls_context())
            except (smtplib.SMTPResponseException, ssl.SSLError, ConnectionResetError) as exc:
                # a failed handshake reaches the client as a TLS alert or, as often, as a reset
                smtp.close()
                return advertised, mail, exc
        raise AssertionError("STARTTLS succeeded")

    advertised, mail, failure = lab.in_client(talk)
    assert advertised
    assert mail[0] == 250, mail
    if spec.starttls_failure == "454":
        assert isinstance(failure, smtplib.SMTPResponseException), failure
        assert failure.smtp_code == 454, failure
    else:
        assert isinstance(failure, ssl.SSLError | ConnectionResetError), failure


def test_tls_required_server_refuses_mail_before_starttls(lab: Lab) -> None:
    server = lab.server("postfix-tls-required")
    talk = lab.in_client(lambda: _converse(lab, server, _unique_sender(lab)))
    assert talk.mail_before_tls == (530, "5.7.0 Must issue a STARTTLS command first")


def test_greylisting_clears_after_the_delay(lab: Lab, relaycheck_cli: None) -> None:
    """postgrey answers 450 first, then lets the same triplet through: open behind it.

    Nothing in the lab announces that the greylisting delay has run out: it is time on postgrey's
    clock. So the retrying is left to relaycheck's greylisting retry (--retry-budget), run with
    this conversation's sender: its classic probe (V01: MAIL FROM the --sender, RCPT
    relaytest@<first outside domain>) is this very triplet, which it retries until postgrey lets
    it through and logs so ("action=pass, reason=triplet found"). Once relaycheck has exited and
    that line is there, the same conversation with smtplib must be accepted.
    """
    server = lab.server("postfix-greylist")
    sender = _unique_sender(lab)
    recipient = f"relaytest@{lab.outside_domains[0]}"
    since = file_size(server.postgrey_log)
    first = lab.in_client(lambda: _converse(lab, server, sender))
    assert first.outside[0] == 450, first
    started = time.monotonic()
    retrying = run_relaycheck(
        lab,
        server.ip,
        local_domain=server.domain,
        retry_budget=GREYLIST_DELAY_S + 30,
        extra=["--sender", sender],
        timeout=120,
    )
    passed = re.compile(
        rf"^action=pass, reason=triplet found,.* sender={re.escape(sender)}, recipient={re.escape(recipient)}$",
        re.MULTILINE,
    )

    def triplet_passed() -> bool:
        return passed.search(read_from(server.postgrey_log, since)) is not None

    assert wait_for(triplet_passed, time.monotonic() + 10, server.postgrey_log), retrying.describe()
    retried = lab.in_client(lambda: _converse(lab, server, sender))
    assert retried.outside[0] == 250, retried
    # postgrey counts whole seconds, so a triplet may pass a little over DELAY-1 s after it was
    # first seen; relaycheck's other --sender triplets are new, so it cannot exit before one
    # retry wait (1 s) after its first battery, which keeps this run above DELAY-0.5 s.
    assert time.monotonic() - started >= GREYLIST_DELAY_S - 0.5


def _send_message(lab: Lab, server: Server, sender: str, token: str) -> None:
    with _open_session(lab, server) as smtp:
        if server.spec.tls_required:
            smtp.starttls(context=_lab_tls_context())
            smtp.ehlo()
        message = f"Subject: lab relay check {token}\r\n\r\n{token}\r\n"
        smtp.sendmail(sender, [f"relaytest@{lab.outside_domains[1]}"], message)


OPEN_WITHOUT_RETRY = [s for s in SERVERS if s.expected == "open"]


@pytest.mark.parametrize("spec", OPEN_WITHOUT_RETRY, ids=[s.name for s in OPEN_WITHOUT_RETRY])
def test_open_relay_delivers_to_the_sink(lab: Lab, spec: ServerSpec) -> None:
    server = lab.server(spec.name)
    token = uuid.uuid4().hex
    sender = _unique_sender(lab, server.domain if spec.relays_for_local_sender else None)
    lab.in_client(lambda: _send_message(lab, server, sender, token))

    def arrived() -> bool:
        return any(token in str(m["content"]) for m in lab.sink_messages())

    assert wait_for(arrived, time.monotonic() + 30, lab.sink_record), "message never arrived"
    delivered = [m for m in lab.sink_messages() if token in str(m["content"])]
    assert delivered[0]["peer"] == server.ip
    assert delivered[0]["rcpt_tos"] == [f"relaytest@{lab.outside_domains[1]}"]


# A mailbox no relaycheck test counts (lab.IMAP_USERS).
GROUND_TRUTH_BOX = "rcuser4"


def _take_from_mailbox(lab: Lab, user: str, token: str) -> tuple[list[str], list[email.message.Message]]:
    """Log in as the lab's IMAP clients must (STARTTLS, the lab's certificate), return the
    capabilities offered before TLS and the messages carrying ``token``, and delete those."""
    context = ssl.create_default_context(cafile=str(lab.dovecot.cafile))
    with imaplib.IMAP4(lab.dovecot.ip, IMAP_PORT, timeout=15) as client:
        before_tls = list(client.capabilities)
        client.starttls(ssl_context=context)
        client.login(user, lab.dovecot.password)
        client.select("INBOX")
        _, data = client.search(None, "SUBJECT", token)
        found = []
        for number in data[0].split():
            _, parts = client.fetch(number.decode(), "(BODY.PEEK[HEADER])")
            found.append(email.message_from_bytes(next(p[1] for p in parts if isinstance(p, tuple))))
            client.store(number.decode(), "+FLAGS", "(\\Deleted)")
        client.expunge()
    return before_tls, found


def test_postfix_delivers_the_imap_domain_into_dovecot(lab: Lab) -> None:
    """postfix-confirm-open -> LMTP -> Dovecot's Maildir -> IMAP, with plain smtplib/imaplib."""
    server = lab.server("postfix-confirm-open")
    token = uuid.uuid4().hex
    address = lab.dovecot.address(GROUND_TRUTH_BOX)

    def send() -> None:
        with _open_session(lab, server) as smtp:
            smtp.sendmail(_unique_sender(lab), [address], f"Subject: lab imap check {token}\r\n\r\n{token}\r\n")

    lab.in_client(send)
    taken: list[tuple[list[str], list[email.message.Message]]] = []

    def arrived() -> bool:
        taken.append(lab.in_client(lambda: _take_from_mailbox(lab, GROUND_TRUTH_BOX, token)))
        return bool(taken[-1][1])

    # Postfix logs the LMTP hand-over to Dovecot: look at the mailbox each time its log changes
    assert wait_for(arrived, time.monotonic() + 30, server.log_path), "message never reached the mailbox"
    before_tls, messages = taken[-1]
    assert "LOGINDISABLED" in before_tls  # no password in clear text: STARTTLS first
    assert len(messages) == 1
    assert messages[0]["Delivered-To"] == address
    assert f"by {lab.dovecot.hostname} with LMTP" in str(messages[0]["Received"])


def _resolve(lab: Lab, name: str, rdtype: str) -> list[str]:
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [lab.dns_ip]
    resolver.lifetime = 5
    return sorted(r.to_text() for r in resolver.resolve(name, rdtype))


def test_lab_dns_serves_the_lab_zone(lab: Lab) -> None:
    server = lab.server("postfix-closed")
    ptr = f"{'.'.join(reversed(server.ip.split('.')))}.in-addr.arpa"
    client_ptr = f"{'.'.join(reversed(lab.client_ip.split('.')))}.in-addr.arpa"
    answers = lab.in_client(
        lambda: {
            "mx": _resolve(lab, server.domain, "MX"),
            "a": _resolve(lab, server.hostname, "A"),
            "ptr": _resolve(lab, ptr, "PTR"),
            "client_ptr": _resolve(lab, client_ptr, "PTR"),
            "outside": [_resolve(lab, d, "MX") for d in lab.outside_domains],
        }
    )
    assert answers == {
        "mx": [f"10 {server.hostname}."],
        "a": [server.ip],
        "ptr": [f"{server.hostname}."],
        "client_ptr": [f"{lab.client_hostname}."],
        "outside": [["10 sink.lab.test."]] * len(lab.outside_domains),
    }


def test_lab_dns_routes_the_confirmation_domains(lab: Lab) -> None:
    """confirm.lab.test's MX is the client (relaycheck's sink), imap.lab.test's is Dovecot."""
    answers = lab.in_client(
        lambda: {
            "confirm": _resolve(lab, lab.confirm_domain, "MX"),
            "imap": _resolve(lab, lab.dovecot.domain, "MX"),
            "dovecot": _resolve(lab, lab.dovecot.hostname, "A"),
        }
    )
    assert answers == {
        "confirm": [f"10 {lab.client_hostname}."],
        "imap": [f"10 {lab.dovecot.hostname}."],
        "dovecot": [lab.dovecot.ip],
    }


def test_lab_dns_has_no_upstream(lab: Lab) -> None:
    # A name outside the lab is refused, not forwarded: no query can leave the machine.
    with pytest.raises(dns.exception.DNSException):
        lab.in_client(lambda: _resolve(lab, "example.com", "A"))


def test_no_namespace_has_a_route_out(lab: Lab) -> None:
    namespaces = [lab.client_ns, lab.dns_ns, lab.sink_ns, lab.dovecot.namespace]
    for namespace in [*namespaces, *(s.namespace for s in lab.servers.values())]:
        routes = subprocess.run(
            ["ip", "-n", namespace, "route", "show", "default"], capture_output=True, text=True, check=True
        ).stdout
        assert routes.strip() == "", (namespace, routes)

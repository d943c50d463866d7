"""The lab's mail servers: how each is configured and the truth about its relay behaviour."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ...waiting import wait_for
from .logs import file_size, read_from
from .topology import (
    CLIENT_IP,
    CONFIRM_DOMAIN,
    DOVECOT_IP,
    GREYLIST_DELAY_S,
    IMAP_DOMAIN,
    LAB_ZONE,
    LMTP_PORT,
    POSTGREY_PORT,
    SMTP_PORT,
)

Verdict = Literal["open", "closed", "inconclusive"]
Mta = Literal["postfix", "exim", "opensmtpd", "sendmail"]


@dataclass(frozen=True)
class ServerSpec:
    """One lab mail server: how it is configured and what the truth about it is.

    ``outside_mail`` is the raw MAIL reply code an outside sender (at the client's domain) gets;
    when it is refused, the null sender's transaction is the one the RCPT codes are about.
    ``outside_rcpt`` / ``postmaster_rcpt`` are the raw RCPT reply codes an untrusted client gets
    for an outside recipient and for postmaster@<its domain> (after STARTTLS when
    ``tls_required``; on the first attempt for a greylisting server).
    """

    name: str
    mta: Mta
    expected: Verdict
    summary: str
    outside_rcpt: int
    outside_text: str  # a fragment of that reply's text
    postmaster_rcpt: int
    outside_mail: int = 250
    # Relays only for senders that claim the server's own domain (the ground truth sends so).
    relays_for_local_sender: bool = False
    # Why relaycheck's verdict misses ``expected`` today (an engine rule not yet built); the
    # verdict tests expect a failure then, without insisting on it. Empty: no known gap.
    engine_gap: str = ""
    # Why relaycheck's battery runs into Postfix's soft error limit on this server today (the
    # error-sleep test expects a failure then, without insisting). Empty: it must not.
    error_limit_gap: str = ""
    postfix: Mapping[str, str] = field(default_factory=dict)
    # Extra files for the Postfix config directory (lookup tables named in ``postfix``).
    postfix_files: Mapping[str, str] = field(default_factory=dict)
    # Extra master.cf services (e.g. the lmtp client of the delivery servers).
    postfix_services: str = ""
    exim_relay_from_hosts: str = "127.0.0.1"
    # Which Exim ACL refuses outside recipients: the stock RCPT ACL, or the predata ACL (run at
    # DATA) behind a RCPT ACL that accepts everything.
    exim_relay_decision: Literal["rcpt", "predata"] = "rcpt"
    # More Exim main options (name -> value).
    exim_options: Mapping[str, str] = field(default_factory=dict)
    # relaycheck options the ground truth needs (a relay refused at DATA needs --data-probe).
    check_args: tuple[str, ...] = ()
    # The raw reply to DATA after an accepted outside recipient, when the server refuses there.
    outside_data: int | None = None
    # Connections one client may hold at once; the next one is greeted with 421.
    max_connections: int | None = None
    # How STARTTLS (advertised) fails: "454" refused, "handshake" 220 then no TLS session.
    starttls_failure: Literal["454", "handshake"] | None = None

    @property
    def offers_tls(self) -> bool:
        """Postfix with STARTTLS on: the lab gives it a certificate (unless its settings say otherwise)."""
        return self.postfix.get("smtpd_tls_security_level") in {"may", "encrypt"}

    tls_required: bool = False
    greylist: bool = False
    # Verdict when relaycheck may retry 4xx long enough for the greylisting to clear.
    expected_with_retry: Verdict | None = None
    # sendmail.mc lines after the stock ones (FEATUREs), without the trailing dnl.
    sendmail_mc: tuple[str, ...] = ()
    # False: Sendmail resolves names from its own hosts file only (a split-horizon resolver that
    # does not know the outside world), so it cannot resolve an outside sender's domain.
    sendmail_dns: bool = True


DEBIAN_RELAY_RESTRICTIONS = "permit_mynetworks permit_sasl_authenticated reject_unauth_destination"

# Sendmail's refusal idiom: "550 5.7.1 <rcpt>... Relaying denied" (plus " IP name lookup failed
# [ip]" when the client's address has no name it can resolve).
SENDMAIL_RELAY_DENIED = "Relaying denied"
# Engine rules not built yet (see ServerSpec.engine_gap).
SENDER_REFUSED_GAP = (
    "the outside sender is refused at MAIL; relaycheck does not yet re-run the battery with the "
    "null sender and local-domain senders"
)
CONNECTION_LIMIT_GAP = (
    "a per-client connection limit answers 421; relaycheck does not yet back off to fewer "
    "connections and finish the battery on the ones that work"
)
REFUSED_SENDER_ERRORS_GAP = (
    "every MAIL with the outside sender is refused and counts as an smtpd error; relaycheck keeps "
    "sending that sender in one session until smtpd_soft_error_limit slows every reply down"
)
STARTTLS_REFUSED_GAP = (
    "STARTTLS is refused (454); relaycheck does not yet judge from the plaintext battery and "
    "report the TLS battery as not run"
)

SERVERS: tuple[ServerSpec, ...] = (
    ServerSpec(
        "postfix-closed",
        "postfix",
        "closed",
        "Debian defaults: mynetworks 127.0.0.0/8, reject_unauth_destination",
        outside_rcpt=554,
        outside_text="5.7.1 <relaytest@outside-a.test>: Relay access denied",
        postmaster_rcpt=250,
        postfix={"smtpd_relay_restrictions": DEBIAN_RELAY_RESTRICTIONS},
    ),
    ServerSpec(
        "postfix-defer",
        "postfix",
        "closed",
        "stock defer_unauth_destination: 454 4.7.1 Relay access denied",
        outside_rcpt=454,
        outside_text="4.7.1 <relaytest@outside-a.test>: Relay access denied",
        postmaster_rcpt=250,
        postfix={"smtpd_relay_restrictions": ("permit_mynetworks permit_sasl_authenticated defer_unauth_destination")},
    ),
    ServerSpec(
        "postfix-open-mynetworks",
        "postfix",
        "open",
        "mynetworks = 0.0.0.0/0: every client is trusted",
        outside_rcpt=250,
        outside_text="2.1.5 Ok",
        postmaster_rcpt=250,
        postfix={"mynetworks": "0.0.0.0/0"},
    ),
    ServerSpec(
        "postfix-open-restrictions",
        "postfix",
        "open",
        "relay allowed for any recipient: check_recipient_access with /./ OK",
        outside_rcpt=250,
        outside_text="2.1.5 Ok",
        postmaster_rcpt=250,
        # Postfix refuses to start smtpd when no reject_unauth_destination (or similar) is
        # reachable in the relay/recipient restrictions ("specify at least one working
        # instance"), so a bare `permit` cannot be configured. The classic real-world mistake
        # that passes that check: an access table answering OK for every recipient, before
        # reject_unauth_destination.
        postfix={
            "smtpd_relay_restrictions": (
                "permit_mynetworks permit_sasl_authenticated"
                " check_recipient_access regexp:$config_directory/relay_recipients"
                " reject_unauth_destination"
            )
        },
        postfix_files={"relay_recipients": "/./ OK\n"},
    ),
    ServerSpec(
        "postfix-tls-required",
        "postfix",
        "open",
        "smtpd_tls_security_level = encrypt; mynetworks = 0.0.0.0/0 (relays after STARTTLS)",
        outside_rcpt=250,
        outside_text="2.1.5 Ok",
        postmaster_rcpt=250,
        postfix={"mynetworks": "0.0.0.0/0", "smtpd_tls_security_level": "encrypt"},
        tls_required=True,
    ),
    ServerSpec(
        "postfix-greylist",
        "postfix",
        "inconclusive",
        f"mynetworks = 0.0.0.0/0 behind postgrey --delay={GREYLIST_DELAY_S}",
        outside_rcpt=450,
        outside_text="4.2.0 <relaytest@outside-a.test>: Recipient address rejected: Greylisted",
        # Debian's /etc/postgrey/whitelist_recipients lets postmaster@ and abuse@ through.
        postmaster_rcpt=250,
        postfix={
            "mynetworks": "0.0.0.0/0",
            "smtpd_recipient_restrictions": (f"check_policy_service inet:127.0.0.1:{POSTGREY_PORT}"),
        },
        greylist=True,
        expected_with_retry="open",
    ),
    ServerSpec(
        "postfix-reject-client",
        "postfix",
        "inconclusive",
        "smtpd_client_restrictions = reject: refuses everyone, postmaster included",
        outside_rcpt=554,
        outside_text="5.7.1 <client.lab.test[198.18.0.2]>: Client host rejected: Access denied",
        postmaster_rcpt=554,
        postfix={"smtpd_client_restrictions": "reject"},
    ),
    ServerSpec(
        "postfix-closed-connlimit",
        "postfix",
        "closed",
        "Debian defaults with smtpd_client_connection_count_limit = 1: anvil answers a second "
        "connection at once with 421",
        outside_rcpt=554,
        outside_text="5.7.1 <relaytest@outside-a.test>: Relay access denied",
        postmaster_rcpt=250,
        postfix={"smtpd_relay_restrictions": DEBIAN_RELAY_RESTRICTIONS, "smtpd_client_connection_count_limit": "1"},
        max_connections=1,
        engine_gap=CONNECTION_LIMIT_GAP,
    ),
    ServerSpec(
        "postfix-closed-tls-454",
        "postfix",
        "closed",
        "Debian defaults, STARTTLS offered but its certificate missing: 454 4.7.0 TLS not available",
        outside_rcpt=554,
        outside_text="5.7.1 <relaytest@outside-a.test>: Relay access denied",
        postmaster_rcpt=250,
        postfix={
            "smtpd_relay_restrictions": DEBIAN_RELAY_RESTRICTIONS,
            "smtpd_tls_security_level": "may",
            "smtpd_tls_cert_file": "$config_directory/missing-cert.pem",
            "smtpd_tls_key_file": "$config_directory/missing-key.pem",
        },
        starttls_failure="454",
        engine_gap=STARTTLS_REFUSED_GAP,
    ),
    ServerSpec(
        "postfix-open-tls-handshake",
        "postfix",
        "open",
        "mynetworks = 0.0.0.0/0; STARTTLS offered with every TLS 1.2 cipher excluded and TLS 1.3 "
        "off: 220, then no cipher in common, the handshake fails",
        outside_rcpt=250,
        outside_text="2.1.5 Ok",
        postmaster_rcpt=250,
        postfix={
            "mynetworks": "0.0.0.0/0",
            "smtpd_tls_security_level": "may",
            "smtpd_tls_protocols": "!SSLv2, !SSLv3, !TLSv1.3",
            "smtpd_tls_exclude_ciphers": "ALL",
        },
        starttls_failure="handshake",
    ),
    ServerSpec(
        "postfix-closed-sender-refused",
        "postfix",
        "closed",
        "Debian defaults; outside senders refused at MAIL (smtpd_delay_reject = no, check_sender_access)",
        outside_mail=554,
        outside_rcpt=554,
        outside_text="5.7.1 <relaytest@outside-a.test>: Relay access denied",
        postmaster_rcpt=250,
        postfix={
            "smtpd_relay_restrictions": DEBIAN_RELAY_RESTRICTIONS,
            "smtpd_delay_reject": "no",
            "smtpd_sender_restrictions": "check_sender_access regexp:$config_directory/refused_senders",
        },
        postfix_files={"refused_senders": "/@(client\\.lab|outside-[ab])\\.test$/ REJECT\n"},
        engine_gap=SENDER_REFUSED_GAP,
        error_limit_gap=REFUSED_SENDER_ERRORS_GAP,
    ),
    ServerSpec(
        "exim-closed",
        "exim",
        "closed",
        "Exim default acl_check_rcpt, relay_from_hosts = 127.0.0.1",
        outside_rcpt=550,
        outside_text="relay not permitted",
        postmaster_rcpt=250,
        exim_relay_from_hosts="127.0.0.1",
    ),
    ServerSpec(
        "exim-open",
        "exim",
        "open",
        "Exim default acl_check_rcpt, relay_from_hosts = 0.0.0.0/0",
        outside_rcpt=250,
        outside_text="Accepted",
        postmaster_rcpt=250,
        exim_relay_from_hosts="0.0.0.0/0",
    ),
    ServerSpec(
        "exim-closed-connlimit",
        "exim",
        "closed",
        "Exim default acl_check_rcpt with smtp_accept_max_per_host = 1: a second connection at once gets 421",
        outside_rcpt=550,
        outside_text="relay not permitted",
        postmaster_rcpt=250,
        exim_options={"smtp_accept_max_per_host": "1"},
        max_connections=1,
        engine_gap=CONNECTION_LIMIT_GAP,
    ),
    ServerSpec(
        "exim-closed-predata",
        "exim",
        "closed",
        "acl_check_rcpt accepts every recipient; acl_smtp_predata refuses outside recipients at DATA",
        outside_rcpt=250,
        outside_text="Accepted",
        postmaster_rcpt=250,
        exim_relay_decision="predata",
        check_args=("--data-probe",),
        outside_data=550,
    ),
    ServerSpec(
        "sendmail-closed",
        "sendmail",
        "closed",
        "Sendmail's stock generic-linux.mc: relays for local clients only",
        outside_rcpt=550,
        outside_text=SENDMAIL_RELAY_DENIED,
        postmaster_rcpt=250,
    ),
    ServerSpec(
        "sendmail-closed-nodns",
        "sendmail",
        "closed",
        "stock generic-linux.mc behind a resolver that knows only the server's own names: "
        "check_mail refuses every outside sender (553 5.1.8), the null sender gets 'Relaying denied'",
        outside_mail=553,
        outside_rcpt=550,
        outside_text=SENDMAIL_RELAY_DENIED,
        postmaster_rcpt=250,
        sendmail_dns=False,
        engine_gap=SENDER_REFUSED_GAP,
    ),
    ServerSpec(
        "sendmail-open-promiscuous",
        "sendmail",
        "open",
        "FEATURE(`promiscuous_relay'): relays for anyone",
        outside_rcpt=250,
        outside_text="Recipient ok",
        postmaster_rcpt=250,
        sendmail_mc=("FEATURE(`promiscuous_relay')",),
    ),
    ServerSpec(
        "sendmail-relay-local-from",
        "sendmail",
        "open",
        "FEATURE(`relay_local_from'): relays when the sender claims the server's domain (spoofable)",
        outside_rcpt=550,
        outside_text=SENDMAIL_RELAY_DENIED,
        postmaster_rcpt=250,
        relays_for_local_sender=True,
        sendmail_mc=("FEATURE(`relay_local_from')",),
    ),
)

# Where the delivery servers send the confirmation domains (transport(5), texthash: no postmap):
# confirm.lab.test to its MX (the client, relaycheck's own sink), imap.lab.test over LMTP to
# Dovecot. Every other non-local domain goes to the relayhost, the recording sink.
DELIVERY_TRANSPORT = f"{CONFIRM_DOMAIN} smtp:{CONFIRM_DOMAIN}\n{IMAP_DOMAIN} lmtp:inet:[{DOVECOT_IP}]:{LMTP_PORT}\n"
DELIVERY_POSTFIX = {"transport_maps": "texthash:$config_directory/transport"}
LMTP_SERVICE = "lmtp      unix  -       -       n       -       -       lmtp\n"

# Servers that are not part of the verdict/audit/ground-truth catalogue above: the delivery
# confirmation targets and the OpenSMTPD whose real banner feeds the fingerprint table. They come
# after SERVERS, so every SERVERS entry keeps its address.
EXTRA_SERVERS: tuple[ServerSpec, ...] = (
    ServerSpec(
        "postfix-confirm-open",
        "postfix",
        "open",
        "mynetworks = 0.0.0.0/0; confirm.lab.test to its MX (relaycheck's sink), imap.lab.test to Dovecot",
        outside_rcpt=250,
        outside_text="2.1.5 Ok",
        postmaster_rcpt=250,
        postfix={"mynetworks": "0.0.0.0/0", **DELIVERY_POSTFIX},
        postfix_files={"transport": DELIVERY_TRANSPORT},
        postfix_services=LMTP_SERVICE,
    ),
    ServerSpec(
        "postfix-confirm-partial",
        "postfix",
        "open",
        "relays for senders in its own domain (check_sender_access before reject_unauth_destination): "
        "the classic spoofable rule, so only some probes pass",
        outside_rcpt=554,
        outside_text="5.7.1 <relaytest@outside-a.test>: Relay access denied",
        postmaster_rcpt=250,
        postfix={
            "smtpd_relay_restrictions": (
                "permit_mynetworks permit_sasl_authenticated"
                " check_sender_access texthash:$config_directory/relay_senders"
                " reject_unauth_destination"
            ),
            **DELIVERY_POSTFIX,
        },
        postfix_files={"transport": DELIVERY_TRANSPORT, "relay_senders": f"postfix-confirm-partial.{LAB_ZONE} OK\n"},
        postfix_services=LMTP_SERVICE,
    ),
    ServerSpec(
        "postfix-confirm-closed",
        "postfix",
        "closed",
        "Debian defaults, with the same transports as postfix-confirm-open",
        outside_rcpt=554,
        outside_text="5.7.1 <relaytest@outside-a.test>: Relay access denied",
        postmaster_rcpt=250,
        postfix={"smtpd_relay_restrictions": DEBIAN_RELAY_RESTRICTIONS, **DELIVERY_POSTFIX},
        postfix_files={"transport": DELIVERY_TRANSPORT},
        postfix_services=LMTP_SERVICE,
    ),
    ServerSpec(
        "opensmtpd-closed",
        "opensmtpd",
        "closed",
        "Debian's stock smtpd.conf rules: its own domain delivered locally, relaying from local only",
        outside_rcpt=550,
        outside_text="Invalid recipient",
        postmaster_rcpt=250,
    ),
)
ALL_SERVERS = (*SERVERS, *EXTRA_SERVERS)


@dataclass(frozen=True)
class Server:
    """A running lab server: where it is and what is expected of it."""

    spec: ServerSpec
    namespace: str
    ip: str
    workdir: Path
    port: int = SMTP_PORT

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def domain(self) -> str:
        """The mail domain the server is the MX of (in its mydestination / local_domains)."""
        return f"{self.spec.name}.{LAB_ZONE}"

    @property
    def hostname(self) -> str:
        return f"mx.{self.domain}"

    @property
    def expected(self) -> Verdict:
        return self.spec.expected

    @property
    def log_path(self) -> Path:
        if self.spec.mta == "postfix":
            return self.workdir / "postfix.log"
        if self.spec.mta == "opensmtpd":
            return self.workdir / "smtpd.out"  # smtpd -d logs to stderr
        if self.spec.mta == "sendmail":
            return self.workdir / "sendmail.out"  # syslog only: what it says on stderr at start-up
        return self.workdir / "log" / "mainlog"

    def startup_failure(self) -> str | None:
        """The MTA's own fatal/panic log line, if it logged one (e.g. smtpd refusing a config)."""
        logs = [self.log_path]
        if self.spec.mta == "exim":
            logs.append(self.workdir / "log" / "paniclog")
        for log in logs:
            text = log.read_text(errors="replace") if log.exists() else ""
            for line in text.splitlines():
                if " fatal: " in line or " panic: " in line or log.name == "paniclog" or line.startswith("fatal"):
                    return f"{self.name}: {line}"
        return None

    @property
    def postgrey_log(self) -> Path:
        """postgrey's output (greylisting servers): its startup and one line per decision."""
        return self.workdir / "postgrey.out"

    def log_size(self) -> int:
        """Current log length: pass it to ``read_log(since=...)`` to see one run's lines."""
        return file_size(self.log_path)

    def settled_log(self, since: int, client_ip: str = CLIENT_IP, timeout: float = 60) -> str:
        """The log since ``since``, once Postfix has logged every session of ``client_ip`` closed.

        A client can exit before smtpd logs the disconnect (it need not wait for the reply to
        QUIT, which error sleeps delay), and the disconnect line carries the session's error
        counts. Exim logs each rejection as it happens: its log is returned as is.
        """
        if self.spec.mta != "postfix":
            return self.read_log(since)
        opened = re.compile(rf"smtpd\[\d+\]: connect from \S*\[{re.escape(client_ip)}\]")
        closed = re.compile(rf"smtpd\[\d+\]: disconnect from \S*\[{re.escape(client_ip)}\]")
        text = [""]

        def settled() -> bool:
            text[0] = self.read_log(since)
            return len(opened.findall(text[0])) <= len(closed.findall(text[0]))

        wait_for(settled, time.monotonic() + timeout, self.log_path)
        return text[0]

    def read_log(self, since: int = 0) -> str:
        return read_from(self.log_path, since)

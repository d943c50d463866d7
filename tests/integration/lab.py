"""A lab of real MTAs in network namespaces, for relaycheck's integration tests and benchmarks.

Topology (all in 198.18.0.0/24, inside the 198.18.0.0/15 benchmarking range; no default route
anywhere, so nothing can leave the machine):

    <prefix>-br       a bridge; every other namespace hangs off it through a veth pair
    <prefix>-client   198.18.0.2  where relaycheck runs: an outside address no server trusts
    <prefix>-dns      198.18.0.3  dnsmasq, no upstream, serving lab.test and the outside domains
    <prefix>-sink     198.18.0.4  aiosmtpd recording sink, the next hop of every lab MTA
    <prefix>-dovecot  198.18.0.5  Dovecot: IMAP (STARTTLS on 143, TLS on 993) and LMTP (24) for
                                  a few mailbox users; the lab's Postfix delivers imap.lab.test there
    <prefix>-<name>   198.18.0.10+ one namespace per mail server (SERVERS, then EXTRA_SERVERS)

Delivery confirmation (relaycheck ``--confirm``): the EXTRA_SERVERS Postfix instances send
confirm.lab.test to its MX, which is the client (where relaycheck's own ``--sink
198.18.0.2:25`` listens), and imap.lab.test over LMTP into the Dovecot mailbox. Every other
non-local domain still goes to the recording sink; nothing can leave the lab.

Every namespace gets /etc/netns/<ns>/resolv.conf pointing at the lab DNS, so anything started
with ``ip netns exec`` (the MTAs' reverse lookups, relaycheck's PTR/MX/DNSBL lookups) asks the
lab's dnsmasq and never a real resolver.

Use as a library (tests' conftest, bench/vs_nmap.py): ``with start_lab() as lab: ...``, or run
this file as root to bring the lab up by hand until Ctrl-C.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

from ..waiting import wait_for

T = TypeVar("T")
Verdict = Literal["open", "closed", "inconclusive"]

LAB_CACHE = Path(os.environ.get("RELAYCHECK_LAB_CACHE", "/var/cache/relaycheck-lab"))
EXIM_BIN = LAB_CACHE / "exim/usr/sbin/exim4"
OPENSMTPD_BIN = LAB_CACHE / "opensmtpd/usr/sbin/smtpd"
DOVECOT = "/usr/sbin/dovecot"
UNSHARE = "/usr/bin/unshare"
POSTFIX_MASTER = Path("/usr/lib/postfix/sbin/master")
POSTFIX = "/usr/sbin/postfix"
POSTGREY = "/usr/sbin/postgrey"
DNSMASQ = "/usr/sbin/dnsmasq"
OPENSSL = "/usr/bin/openssl"
SINK_SCRIPT = Path(__file__).with_name("sink.py")

NAMESPACE_PREFIX = "rclab"
NET = "198.18.0"
PREFIX_LEN = 24
CLIENT_IP = f"{NET}.2"
DNS_IP = f"{NET}.3"
SINK_IP = f"{NET}.4"
DOVECOT_IP = f"{NET}.5"
FIRST_SERVER_HOST = 10
LAB_ZONE = "lab.test"
CLIENT_HOSTNAME = f"client.{LAB_ZONE}"
SINK_HOSTNAME = f"sink.{LAB_ZONE}"
DOVECOT_HOSTNAME = f"dovecot.{LAB_ZONE}"
# Delivery-confirmation domains: MX = the client (relaycheck's --sink), and Dovecot's mailbox.
CONFIRM_DOMAIN = f"confirm.{LAB_ZONE}"
IMAP_DOMAIN = f"imap.{LAB_ZONE}"
# Dovecot mailboxes, one per test that must count exactly what reached it.
IMAP_USERS = ("rcuser", "rcuser2", "rcuser3", "rcuser4")
IMAP_PORT = 143
IMAPS_PORT = 993
LMTP_PORT = 24
# Relay probes go to these; no lab server handles them, their MX is the sink so they resolve.
OUTSIDE_DOMAINS = ("outside-a.test", "outside-b.test")
POSTGREY_PORT = 10023
GREYLIST_DELAY_S = 2
SMTP_PORT = 25

# Postfix's defaults, kept on purpose: relaycheck is meant to stay under them.
POSTFIX_SOFT_ERROR_LIMIT = 10
POSTFIX_HARD_ERROR_LIMIT = 20


# --------------------------------------------------------------------------------------------
# Server catalogue: configuration and ground truth
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerSpec:
    """One lab mail server: how it is configured and what the truth about it is.

    ``outside_rcpt`` / ``postmaster_rcpt`` are the raw RCPT reply codes an untrusted client gets
    for an outside recipient and for postmaster@<its domain> (after STARTTLS when
    ``tls_required``; on the first attempt for a greylisting server).
    """

    name: str
    mta: Literal["postfix", "exim", "opensmtpd"]
    expected: Verdict
    summary: str
    outside_rcpt: int
    outside_text: str  # a fragment of that reply's text
    postmaster_rcpt: int
    postfix: Mapping[str, str] = field(default_factory=dict)
    # Extra files for the Postfix config directory (lookup tables named in ``postfix``).
    postfix_files: Mapping[str, str] = field(default_factory=dict)
    # Extra master.cf services (e.g. the lmtp client of the delivery servers).
    postfix_services: str = ""
    exim_relay_from_hosts: str = "127.0.0.1"
    tls_required: bool = False
    greylist: bool = False
    # Verdict when relaycheck may retry 4xx long enough for the greylisting to clear.
    expected_with_retry: Verdict | None = None


DEBIAN_RELAY_RESTRICTIONS = "permit_mynetworks permit_sasl_authenticated reject_unauth_destination"

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


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def read_from(path: Path, offset: int = 0) -> str:
    """What ``path`` holds past ``offset`` (nothing when it does not exist yet)."""
    try:
        with path.open("rb") as log:
            log.seek(offset)
            return log.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


# --------------------------------------------------------------------------------------------
# Postfix log analysis: did a client trip the error limits?
# --------------------------------------------------------------------------------------------

_DISCONNECT = re.compile(r"disconnect from \S*\[(?P<ip>[^\]]+)\](?P<counts>.*) commands=(?P<ok>\d+)(?:/(?P<all>\d+))?")


def _session_slept(failed: int, quit_sent: bool) -> bool:
    """Whether Postfix delayed a reply in a session with ``failed`` refused commands.

    smtpd counts an error after replying to a refused command, and sleeps
    smtpd_error_sleep_time before *every* reply once the count has reached
    smtpd_soft_error_limit. So the reply to any command after the limit-th refusal is delayed:
    certainly when more commands were refused, and when the session went on to QUIT (QUIT
    comes last). A client that hangs up right after the limit-th refusal escapes the sleep.
    """
    limit = POSTFIX_SOFT_ERROR_LIMIT
    return failed > limit or (failed == limit and quit_sent)


@dataclass(frozen=True)
class PostfixErrorStats:
    """What a Postfix log says about one client's sessions.

    Postfix does not log its error sleeps; they are inferred from each session's disconnect
    summary (``... quit=1 commands=ok/total``). At smtpd_hard_error_limit it drops the client
    and logs "too many errors after <command>".
    """

    sessions: int
    max_failed_commands: int
    error_sleep_sessions: int
    too_many_errors: int

    @property
    def error_sleeps(self) -> bool:
        return self.error_sleep_sessions > 0


def postfix_error_stats(log_text: str, client_ip: str = CLIENT_IP) -> PostfixErrorStats:
    sessions = max_failed = slept = too_many = 0
    for line in log_text.splitlines():
        if f"[{client_ip}]" not in line:
            continue
        if "too many errors" in line:
            too_many += 1
        match = _DISCONNECT.search(line)
        if match and match["ip"] == client_ip:
            sessions += 1
            ok = int(match["ok"])
            failed = int(match["all"]) - ok if match["all"] else 0
            max_failed = max(max_failed, failed)
            slept += _session_slept(failed, " quit=" in match["counts"])
    return PostfixErrorStats(sessions, max_failed, slept, too_many)


# smtpd logs "client=" once a recipient is accepted, message or not; qmgr's "from=" line
# appears only for a message that was really queued, with its number of recipients.
_CLIENT = re.compile(r"smtpd\[\d+\]: (?P<qid>[0-9A-F]+): client=\S*\[(?P<ip>[^\]]+)\]")
_QUEUED = re.compile(r"qmgr\[\d+\]: (?P<qid>[0-9A-F]+): from=<(?P<sender>[^>]*)>, size=\d+, nrcpt=(?P<nrcpt>\d+)")
_DELIVERED = re.compile(
    r"postfix/(?P<agent>[a-z]+)\[\d+\]: (?P<qid>[0-9A-F]+): to=<(?P<to>[^>]*)>"
    r"(?:, orig_to=<(?P<orig_to>[^>]*)>)?, relay=(?P<relay>[^,]+),.* status=(?P<status>[a-z]+)"
)


@dataclass(frozen=True)
class PostfixDelivery:
    """One delivery attempt Postfix logged: which message, to whom, through which next hop."""

    qid: str
    agent: str  # smtp, lmtp, discard, error, ...
    to: str
    orig_to: str | None  # the recipient as the client gave it, when Postfix rewrote it
    relay: str  # e.g. client.lab.test[198.18.0.2]:25
    status: str  # sent, deferred, bounced


@dataclass(frozen=True)
class PostfixMessage:
    qid: str
    sender: str
    recipients: int


def postfix_queued(log_text: str, client_ip: str = CLIENT_IP) -> list[PostfixMessage]:
    """The messages Postfix queued from ``client_ip``: everything that client made it send."""
    from_client = {m["qid"] for m in _CLIENT.finditer(log_text) if m["ip"] == client_ip}
    return [
        PostfixMessage(m["qid"], m["sender"], int(m["nrcpt"]))
        for m in _QUEUED.finditer(log_text)
        if m["qid"] in from_client
    ]


def postfix_deliveries(log_text: str) -> list[PostfixDelivery]:
    return [
        PostfixDelivery(m["qid"], m["agent"], m["to"], m["orig_to"], m["relay"], m["status"])
        for m in _DELIVERED.finditer(log_text)
    ]


# --------------------------------------------------------------------------------------------
# Prerequisites
# --------------------------------------------------------------------------------------------


def missing_prerequisite() -> str | None:
    """One line saying why the lab cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "integration lab needs root (network namespaces, MTAs on port 25)"
    if shutil.which("ip") is None:
        return "integration lab needs iproute2 (`ip netns`)"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return f"`ip netns` unavailable: {probe.stderr.strip()}"
    needed = (
        POSTFIX_MASTER,
        Path(POSTFIX),
        Path(POSTGREY),
        Path(DNSMASQ),
        Path(OPENSSL),
        EXIM_BIN,
        OPENSMTPD_BIN,
        Path(DOVECOT),
        Path(UNSHARE),
    )
    absent = [str(path) for path in needed if not path.exists()]
    if absent:
        return f"integration lab packages missing ({', '.join(absent)}): run scripts/lab-deps"
    return None


# --------------------------------------------------------------------------------------------
# Network namespaces
# --------------------------------------------------------------------------------------------

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def in_netns(namespace: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` on a fresh thread that has joined ``namespace``'s network stack.

    setns(CLONE_NEWNET) affects only the calling thread, so the test process itself stays in
    the host namespace; sockets made by ``fn`` live in ``namespace``.
    """
    outcome: list[T] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            with open(f"/run/netns/{namespace}", "rb") as handle:
                if _libc.setns(handle.fileno(), _CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({namespace}): {os.strerror(err)}")
            outcome.append(fn())
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=target, name=f"netns:{namespace}", daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]


def _ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True, text=True)


def _netns_list() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    return [line.split()[0] for line in out.stdout.splitlines() if line.strip()]


def _kill_namespace_pids(namespace: str) -> None:
    out = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True, check=False)
    for pid in out.stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


def _delete_namespace(namespace: str) -> None:
    _kill_namespace_pids(namespace)
    subprocess.run(["ip", "netns", "del", namespace], capture_output=True, check=False)
    shutil.rmtree(Path("/etc/netns") / namespace, ignore_errors=True)


def cleanup_stale_labs() -> list[str]:
    """Remove what labs whose owning process is gone (a SIGKILLed run) left behind: their
    namespaces, the processes still running in them, and their files."""
    pattern = re.compile(rf"^{NAMESPACE_PREFIX}-(\d+)-")

    def orphaned(name: str) -> bool:
        match = pattern.match(name)
        return match is not None and not Path(f"/proc/{match[1]}").exists()

    removed = [ns for ns in _netns_list() if orphaned(ns)]
    for namespace in removed:
        _delete_namespace(namespace)
    for leftover in Path(tempfile.gettempdir()).glob(f"{NAMESPACE_PREFIX}-*"):
        if orphaned(leftover.name) and leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
    return removed


@dataclass
class Network:
    """Namespaces on one bridge; created and deleted as a whole."""

    prefix: str
    bridge_ns: str
    namespaces: list[str] = field(default_factory=list)

    def add_node(self, namespace: str, ip: str) -> None:
        index = len(self.namespaces)
        self._add_namespace(namespace)
        self.namespaces.append(namespace)
        veth = f"v{index}"
        _ip("-n", self.bridge_ns, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", namespace)
        _ip("-n", self.bridge_ns, "link", "set", veth, "master", "br0", "up")
        _ip("-n", namespace, "addr", "add", f"{ip}/{PREFIX_LEN}", "dev", "eth0")
        _ip("-n", namespace, "link", "set", "eth0", "up")
        # No default route: the connected /24 is all a lab node can reach.

    def create_bridge(self) -> None:
        self._add_namespace(self.bridge_ns)
        _ip("-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.bridge_ns, "link", "set", "br0", "up")

    def _add_namespace(self, namespace: str) -> None:
        _ip("netns", "add", namespace)
        _ip("-n", namespace, "link", "set", "lo", "up")
        etc = Path("/etc/netns") / namespace
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "resolv.conf").write_text(f"nameserver {DNS_IP}\noptions timeout:1 attempts:1\n")

    def delete(self) -> None:
        for namespace in [*self.namespaces, self.bridge_ns]:
            _delete_namespace(namespace)
        self.namespaces.clear()


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


def _no_failure() -> str | None:
    return None


@dataclass(frozen=True)
class Readiness:
    """The line a daemon writes to ``log`` once it accepts connections: what the lab waits for.

    Only text past ``since`` counts, the log's length when the daemon was started, so that a
    restarted daemon (postgrey, appending to the same file) is not taken for ready on the line of
    its previous run.
    """

    log: Path
    line: re.Pattern[str]
    since: int

    @classmethod
    def starting_now(cls, log: Path, line: str) -> Readiness:
        return cls(log, re.compile(line, re.MULTILINE), file_size(log))

    def seen(self) -> bool:
        return self.line.search(read_from(self.log, self.since)) is not None


@dataclass(frozen=True)
class Endpoint:
    """Where a daemon is reached from, for the one connection that proves it ready."""

    namespace: str  # connect from here
    ip: str
    port: int
    banner: bytes | None = None  # the greeting must start with it (SMTP, LMTP: b"220")


@dataclass
class ManagedProcess:
    name: str
    popen: subprocess.Popen[bytes]
    output: Path
    ready: Readiness

    def alive(self) -> bool:
        return self.popen.poll() is None

    def check_running(self, failure: Callable[[], str | None] = _no_failure) -> None:
        """Raise RuntimeError, with the daemon's own words, when it has exited or ``failure()``
        names a fatal error it logged (Postfix's master outlives an smtpd that dies)."""
        problem = failure()
        if problem:
            raise RuntimeError(problem)
        if not self.alive():
            last = read_from(self.output).strip().splitlines()[-5:]
            raise RuntimeError(
                f"{self.name} exited with status {self.popen.returncode} while starting: "
                + (" | ".join(last) or f"nothing in {self.output}")
            )

    @contextlib.contextmanager
    def exit_event(self) -> Iterator[list[int]]:
        """A pidfd of the daemon: readable once it has exited, which ends any wait on it."""
        try:
            pidfd = os.pidfd_open(self.popen.pid)
        except ProcessLookupError:  # already exited and reaped: check_running() says so
            yield []
            return
        try:
            yield [pidfd]
        finally:
            os.close(pidfd)

    def wait_ready(self, deadline: float, failure: Callable[[], str | None] = _no_failure) -> None:
        """Block until the daemon logs its readiness line: woken by each change to its log and by
        its exit, never by a clock. TimeoutError at ``deadline`` (time.monotonic())."""

        def ready() -> bool:
            self.check_running(failure)
            return self.ready.seen()

        with self.exit_event() as exited:
            if not wait_for(ready, deadline, self.ready.log, fds=exited):
                raise TimeoutError(f"{self.name}: {self.ready.line.pattern!r} never appeared in {self.ready.log}")

    def connect_once(
        self, endpoint: Endpoint, deadline: float, failure: Callable[[], str | None] = _no_failure
    ) -> None:
        """One connection to the daemon, once it has said it listens: no retry, a refusal is an
        error. With a banner, the greeting is awaited on the socket, the daemon's log and its exit
        (an MTA starts its SMTP server per connection, and that one may die on its
        configuration); then QUIT, so that the server logs a clean, error-free session."""
        where = f"{self.name} at {endpoint.ip}:{endpoint.port} from {endpoint.namespace}"
        timeout = max(0.1, deadline - time.monotonic())
        address = (endpoint.ip, endpoint.port)
        sock = in_netns(endpoint.namespace, lambda: socket.create_connection(address, timeout=timeout))
        with sock:
            if endpoint.banner is None:
                return
            greeting = self._greeting(sock, where, deadline, failure)
            if not greeting.startswith(endpoint.banner):
                raise ConnectionError(f"{where}: unexpected greeting {greeting!r}")
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            sock.sendall(b"QUIT\r\n")
            reply = b""
            while b"\n" not in reply:  # each recv blocks until the reply's bytes arrive
                chunk = sock.recv(4096)
                if not chunk:
                    break
                reply += chunk

    def _greeting(self, sock: socket.socket, where: str, deadline: float, failure: Callable[[], str | None]) -> bytes:
        received = bytearray()
        sock.setblocking(False)

        def complete() -> bool:
            self.check_running(failure)
            try:
                chunk = sock.recv(4096)
            except BlockingIOError:
                return False
            if not chunk:
                raise ConnectionError(f"{where}: connection closed before the greeting ({bytes(received)!r})")
            received.extend(chunk)
            # Whole greeting: the last line is complete and not a continuation ("220-...").
            last = bytes(received).rstrip(b"\r\n").rpartition(b"\n")[2]
            return received.endswith(b"\n") and last[3:4] != b"-"

        with self.exit_event() as exited:
            if not wait_for(complete, deadline, self.ready.log, fds=[sock.fileno(), *exited]):
                raise TimeoutError(f"{where}: no greeting ({bytes(received)!r})")
        return bytes(received)

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM the whole process group (MTAs fork workers), SIGKILL what is left."""
        pgid = self.popen.pid  # started with start_new_session: the leader's pid is the pgid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=grace)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=grace)


def wait_until_ready(
    process: ManagedProcess,
    deadline: float,
    *endpoints: Endpoint,
    failure: Callable[[], str | None] = _no_failure,
) -> None:
    """The daemon's readiness line, then one connection to each endpoint to confirm it."""
    process.wait_ready(deadline, failure)
    for endpoint in endpoints:
        process.connect_once(endpoint, deadline, failure)


def spawn(name: str, namespace: str, argv: Sequence[str], output: Path, ready: Readiness) -> ManagedProcess:
    """Start a daemon in ``namespace``, in the foreground (its pid is the daemon's: ``ip netns
    exec`` and the shells before it exec), stdout and stderr appended to ``output``."""
    with output.open("ab") as out:
        popen = subprocess.Popen(
            ["ip", "netns", "exec", namespace, *argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return ManagedProcess(name, popen, output, ready)


def run_in(namespace: str, argv: Sequence[str], timeout: float = 60) -> str:
    """Run a setup command inside ``namespace``; raise with its output if it fails."""
    done = subprocess.run(
        ["ip", "netns", "exec", namespace, *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} in {namespace} failed: {done.stdout}{done.stderr}")
    return done.stdout


# --------------------------------------------------------------------------------------------
# Postfix
# --------------------------------------------------------------------------------------------

# chroot off everywhere (the per-instance queue has no chroot jail set up); "local" delivers to
# discard so nothing is ever written to a host mailbox; postlog feeds maillog_file.
POSTFIX_MASTER_CF = """\
smtp      inet  n       -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def postfix_main_cf(server: Server, lab_root: Path) -> dict[str, str]:
    work = server.workdir
    params = {
        "compatibility_level": "3.6",
        "queue_directory": str(work / "spool"),
        "data_directory": str(work / "data"),
        "maillog_file": str(server.log_path),
        "maillog_file_prefixes": str(lab_root),
        "inet_interfaces": server.ip,
        "inet_protocols": "ipv4",
        "myhostname": server.hostname,
        "mydomain": server.domain,
        "myorigin": "$mydomain",
        "mydestination": "$myhostname, $mydomain, localhost",
        "mynetworks": "127.0.0.0/8",
        "smtpd_relay_restrictions": DEBIAN_RELAY_RESTRICTIONS,
        "smtpd_banner": "$myhostname ESMTP $mail_name (Debian/GNU)",
        # Local users: the accounts in passwd plus the RFC 5321 role addresses; every other
        # local part gets "550 5.1.1 User unknown in local recipient table".
        "alias_maps": "",
        "alias_database": "",
        "local_recipient_maps": ("proxy:unix:passwd.byname texthash:$config_directory/local_recipients"),
        # The sink is the only next hop: an open relay can deliver nowhere else.
        "relayhost": f"[{SINK_IP}]:{SMTP_PORT}",
        "smtp_tls_security_level": "none",
        "biff": "no",
        "append_dot_mydomain": "no",
        "readme_directory": "no",
    }
    if server.spec.tls_required:
        params["smtpd_tls_cert_file"] = str(work / "tls/cert.pem")
        params["smtpd_tls_key_file"] = str(work / "tls/key.pem")
    params.update(server.spec.postfix)
    return params


def prepare_postfix(server: Server, lab_root: Path) -> None:
    work = server.workdir
    for sub in ("etc", "spool", "data", "tls"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    shutil.chown(work / "data", "postfix")
    main_cf = "".join(f"{k} = {v}\n" for k, v in postfix_main_cf(server, lab_root).items())
    (work / "etc/main.cf").write_text(main_cf)
    (work / "etc/master.cf").write_text(POSTFIX_MASTER_CF + server.spec.postfix_services)
    (work / "etc/local_recipients").write_text("postmaster root\nabuse root\n")
    for name, content in server.spec.postfix_files.items():
        (work / "etc" / name).write_text(content)
    if server.spec.tls_required:
        make_self_signed_cert(server.hostname, work / "tls")
    # `postfix check` creates the queue directories with the right owners and validates the
    # configuration; inside the namespace, so inet_interfaces resolves to a local address.
    run_in(server.namespace, [POSTFIX, "-c", str(work / "etc"), "check"])


def start_postfix(server: Server) -> ManagedProcess:
    # master -d stays in the foreground (postfix start-fg only does that as PID 1).
    argv = [str(POSTFIX_MASTER), "-d", "-c", str(server.workdir / "etc")]
    # master logs "daemon started" after master_config(), which has bound and listen()ed every
    # inet service of master.cf; smtpd itself is started per connection, so the lab's one
    # connection after this line sees it greet.
    ready = Readiness.starting_now(server.log_path, r"postfix/master\[\d+\]: daemon started")
    return spawn(f"postfix:{server.name}", server.namespace, argv, server.workdir / "master.out", ready)


def make_self_signed_cert(hostname: str, directory: Path, ip: str | None = None) -> None:
    names = f"DNS:{hostname}" + (f",IP:{ip}" if ip else "")
    subprocess.run(
        [
            OPENSSL,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "7",
            "-subj",
            f"/CN={hostname}",
            "-addext",
            f"subjectAltName={names}",
            "-keyout",
            str(directory / "key.pem"),
            "-out",
            str(directory / "cert.pem"),
        ],
        check=True,
        capture_output=True,
    )
    (directory / "key.pem").chmod(0o600)


def start_postgrey(server: Server) -> ManagedProcess:
    dbdir = server.workdir / "postgrey"
    shutil.rmtree(dbdir, ignore_errors=True)
    dbdir.mkdir(parents=True)
    shutil.chown(dbdir, "postgrey")
    argv = [
        POSTGREY,
        f"--inet=127.0.0.1:{POSTGREY_PORT}",
        f"--delay={GREYLIST_DELAY_S}",
        f"--dbdir={dbdir}",
        # Never whitelist the client after a few passes: every run must meet the greylist.
        "--auto-whitelist-clients=0",
    ]
    # Net::Server logs "Binding to TCP port ..." before bind(), and "Setting uid to ..." after
    # bind() and listen() (post_bind gives up root, which the lab runs it as).
    ready = Readiness.starting_now(server.postgrey_log, r"^Setting uid to ")
    return spawn(f"postgrey:{server.name}", server.namespace, argv, server.postgrey_log, ready)


# --------------------------------------------------------------------------------------------
# Exim
# --------------------------------------------------------------------------------------------

# Exim's shipped default acl_check_rcpt (as in Debian's and upstream's "configure"), routers
# that send every non-local domain to the lab sink, and local domains to :blackhole:.
EXIM_CONF = """\
primary_hostname = {hostname}
# The unpacked binary is not at the compiled-in /usr/sbin/exim4: re-execs for delivery need it.
exim_path = {exim_path}
domainlist local_domains = @ : {domain}
domainlist relay_to_domains =
hostlist relay_from_hosts = {relay_from_hosts}
local_interfaces = {ip}
daemon_smtp_ports = {port}
spool_directory = {work}/spool
log_file_path = {work}/log/%slog
pid_file_path = {work}/exim.pid
keep_environment =
host_lookup = *
rfc1413_hosts =
rfc1413_query_timeout = 0s
tls_advertise_hosts =
never_users = root
smtp_banner = $smtp_active_hostname ESMTP Exim $version_number $tod_full
acl_smtp_rcpt = acl_check_rcpt

begin acl

acl_check_rcpt:
  accept  hosts = :
  deny    domains       = +local_domains
          local_parts   = ^[.] : ^.*[@%!/|]
          message       = Restricted characters in address
  deny    domains       = !+local_domains
          local_parts   = ^[./|] : ^.*[@%!] : ^.*/\\\\.\\\\./
          message       = Restricted characters in address
  accept  local_parts   = postmaster
          domains       = +local_domains
  require verify        = sender
  accept  hosts         = +relay_from_hosts
          control       = submission
  accept  authenticated = *
          control       = submission
  require message       = relay not permitted
          domains       = +local_domains : +relay_to_domains
  require verify        = recipient
  accept

begin routers

to_sink:
  driver = manualroute
  domains = ! +local_domains
  transport = remote_smtp
  route_list = * {sink_ip}
  no_more

local_aliases:
  driver = redirect
  domains = +local_domains
  local_parts = postmaster : abuse : root
  data = :blackhole:

begin transports

remote_smtp:
  driver = smtp
  port = {sink_port}

begin retry

*   *   F,2h,15m

begin rewrite
"""


def prepare_exim(server: Server) -> None:
    work = server.workdir
    for sub in ("spool", "log"):
        (work / sub).mkdir(parents=True, exist_ok=True)
        shutil.chown(work / sub, "Debian-exim", "Debian-exim")
    conf = EXIM_CONF.format(
        hostname=server.hostname,
        exim_path=EXIM_BIN,
        domain=server.domain,
        relay_from_hosts=server.spec.exim_relay_from_hosts,
        ip=server.ip,
        port=server.port,
        work=work,
        sink_ip=SINK_IP,
        sink_port=SMTP_PORT,
    )
    config = work / "exim.conf"
    config.write_text(conf)
    config.chmod(0o644)  # re-executed Exim processes run as Debian-exim and re-read it
    # -bV parses the whole configuration: fail here with Exim's message, not at first connect.
    run_in(server.namespace, [str(EXIM_BIN), "-C", str(config), "-bV"])


def start_exim(server: Server) -> ManagedProcess:
    # -bdf: daemon in the foreground; root may use -C with any file.
    argv = [str(EXIM_BIN), "-C", str(server.workdir / "exim.conf"), "-bdf"]
    # daemon_go() binds and listen()s on every address first, then writes its pid file and
    # logs "daemon started ... listening for SMTP on [ip]:port" to the mainlog.
    ready = Readiness.starting_now(server.log_path, r"daemon started: pid=\d+, .*listening for SMTP on ")
    return spawn(f"exim:{server.name}", server.namespace, argv, server.workdir / "exim.out", ready)


# --------------------------------------------------------------------------------------------
# OpenSMTPD
# --------------------------------------------------------------------------------------------

# Debian's stock smtpd.conf rules (local delivery for the server's own domain, relaying only for
# local clients), listening on the lab address; relayed mail would go to the lab sink. The local
# action is never reached: the lab only ever probes OpenSMTPD up to RCPT.
OPENSMTPD_CONF = """\
table aliases file:{work}/aliases
listen on {ip} port {port} hostname {hostname}
action "local" maildir "{work}/maildir/%{{user.username}}" alias <aliases> user nobody
action "relay" relay host smtp://{sink_ip}:{sink_port}
match from any for domain "{domain}" action "local"
match from local for any action "relay"
"""

# The places Debian's smtpd writes to are compiled in (/var/spool/smtpd, its chroot
# /var/lib/opensmtpd/empty, /run/smtpd.sock): a private mount namespace puts lab directories
# there, so nothing is written on the host.
OPENSMTPD_PRIVATE_DIRS = ("/var/spool", "/var/lib", "/run")


def prepare_opensmtpd(server: Server) -> None:
    work = server.workdir
    for private in OPENSMTPD_PRIVATE_DIRS:
        (work / "root" / private.lstrip("/")).mkdir(parents=True, exist_ok=True)
    chroot = work / "root/var/lib/opensmtpd/empty"
    chroot.mkdir(parents=True, exist_ok=True)
    (work / "aliases").write_text("postmaster: root\nabuse: root\n")
    conf = OPENSMTPD_CONF.format(
        work=work,
        ip=server.ip,
        port=server.port,
        hostname=server.hostname,
        domain=server.domain,
        sink_ip=SINK_IP,
        sink_port=SMTP_PORT,
    )
    (work / "smtpd.conf").write_text(conf)
    run_in(server.namespace, [str(OPENSMTPD_BIN), "-n", "-f", str(work / "smtpd.conf")])


def start_opensmtpd(server: Server) -> ManagedProcess:
    root = server.workdir / "root"
    binds = " && ".join(f'mount --bind "$1{d}" {d}' for d in OPENSMTPD_PRIVATE_DIRS)
    argv = [
        UNSHARE,
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        f'{binds} && exec "$2" -d -v -f "$3"',
        "sh",
        str(root),
        str(OPENSMTPD_BIN),
        str(server.workdir / "smtpd.conf"),
    ]
    # Nothing at the default log level follows listen(): the pony process logs "smtp: listen on"
    # just before listen() and "will accept at most N clients" just after, both at debug level,
    # hence -v above (and its pid file is written earlier still, by the parent).
    ready = Readiness.starting_now(server.log_path, r"^debug: smtp: will accept at most \d+ clients")
    return spawn(f"opensmtpd:{server.name}", server.namespace, argv, server.log_path, ready)


# --------------------------------------------------------------------------------------------
# Dovecot: the IMAP mailbox of the delivery-confirmation tests
# --------------------------------------------------------------------------------------------

# IMAP_USERS (passwd-file for both passdb and userdb, all mail as nobody), Maildir, TLS required
# for logins (STARTTLS on 143, implicit TLS on 993) with a self-signed certificate, and LMTP on
# port 24 for the lab's Postfix. auth_username_format %Ln: "rcuser@imap.lab.test" (LMTP) and
# "rcuser" (IMAP login) are the same mailbox.
DOVECOT_CONF = """\
instance_name = {instance}
hostname = {hostname}
base_dir = {work}/run
state_dir = {work}/state
listen = {ip}
protocols = imap lmtp
log_path = {work}/dovecot.log
ssl = required
ssl_cert = <{work}/tls/cert.pem
ssl_key = <{work}/tls/key.pem
auth_mechanisms = plain login
auth_username_format = %Ln
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {work}/users
}}
userdb {{
  driver = passwd-file
  args = {work}/users
}}
mail_location = maildir:~/Maildir
service imap-login {{
  inet_listener imap {{
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = {imaps_port}
    ssl = yes
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    port = {lmtp_port}
  }}
}}
"""
MAIL_USER = "nobody"  # owns the Maildir: no account of its own needed for one lab mailbox


@dataclass(frozen=True)
class Dovecot:
    namespace: str
    workdir: Path
    password: str
    ip: str = DOVECOT_IP
    hostname: str = DOVECOT_HOSTNAME
    users: tuple[str, ...] = IMAP_USERS
    domain: str = IMAP_DOMAIN

    def address(self, user: str) -> str:
        return f"{user}@{self.domain}"

    @property
    def cafile(self) -> Path:
        """The self-signed certificate: the one trust anchor an IMAP client needs."""
        return self.workdir / "tls/cert.pem"

    @property
    def config(self) -> Path:
        return self.workdir / "dovecot.conf"

    @property
    def log_path(self) -> Path:
        return self.workdir / "dovecot.log"  # log_path in DOVECOT_CONF

    def home(self, user: str) -> Path:
        return self.workdir / "home" / user


def prepare_dovecot(dovecot: Dovecot) -> None:
    work = dovecot.workdir
    for sub in ("run", "state", "tls", "home"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    mail_user = pwd.getpwnam(MAIL_USER)
    entries = []
    for user in dovecot.users:
        home = dovecot.home(user)
        home.mkdir(exist_ok=True)
        os.chown(home, mail_user.pw_uid, mail_user.pw_gid)
        entries.append(f"{user}:{{PLAIN}}{dovecot.password}:{mail_user.pw_uid}:{mail_user.pw_gid}::{home}::\n")
    users = work / "users"
    users.write_text("".join(entries))
    users.chmod(0o640)
    shutil.chown(users, "root", "dovecot")  # read by the auth process, which runs as dovecot
    make_self_signed_cert(dovecot.hostname, work / "tls", ip=dovecot.ip)
    dovecot.config.write_text(
        DOVECOT_CONF.format(
            instance=dovecot.namespace,
            hostname=dovecot.hostname,
            work=work,
            ip=dovecot.ip,
            imap_port=IMAP_PORT,
            imaps_port=IMAPS_PORT,
            lmtp_port=LMTP_PORT,
        )
    )


def start_dovecot(dovecot: Dovecot) -> ManagedProcess:
    argv = [DOVECOT, "-c", str(dovecot.config), "-F"]
    # The master binds and listen()s on every service's sockets (services_listen) before
    # main_init() logs "starting up"; imap-login and lmtp are started per connection.
    ready = Readiness.starting_now(dovecot.log_path, r"master: Info: Dovecot v\S+ .*starting up")
    return spawn("dovecot", dovecot.namespace, argv, dovecot.workdir / "dovecot.out", ready)


# --------------------------------------------------------------------------------------------
# DNS and sink
# --------------------------------------------------------------------------------------------


def dnsmasq_argv(servers: Sequence[Server]) -> list[str]:
    argv = [
        DNSMASQ,
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",  # no upstream: names outside the lab are refused
        "--no-hosts",
        "--no-poll",
        "--pid-file",  # no argument: no pid file
        f"--listen-address={DNS_IP}",
        "--bind-interfaces",
        "--log-facility=-",
        "--log-queries",
        "--local=/test/",
        f"--local=/{'.'.join(reversed(NET.split('.')[:2]))}.in-addr.arpa/",
        # host-record gives A and PTR in one go.
        f"--host-record={CLIENT_HOSTNAME},{CLIENT_IP}",
        f"--host-record=dns.{LAB_ZONE},{DNS_IP}",
        f"--host-record={SINK_HOSTNAME},{SINK_IP}",
        f"--host-record={DOVECOT_HOSTNAME},{DOVECOT_IP}",
        # Mail for the confirm domain goes to the client, where relaycheck's own sink listens.
        f"--mx-host={CONFIRM_DOMAIN},{CLIENT_HOSTNAME},10",
        f"--mx-host={IMAP_DOMAIN},{DOVECOT_HOSTNAME},10",
    ]
    argv += [f"--mx-host={domain},{SINK_HOSTNAME},10" for domain in OUTSIDE_DOMAINS]
    for server in servers:
        argv.append(f"--host-record={server.hostname},{server.ip}")
        argv.append(f"--mx-host={server.domain},{server.hostname},10")
    return argv


def start_dnsmasq(namespace: str, servers: Sequence[Server], output: Path) -> ManagedProcess:
    # dnsmasq creates its UDP and TCP listeners (bind, listen) before it logs "started".
    ready = Readiness.starting_now(output, r"dnsmasq\[\d+\]: started, version ")
    return spawn("dnsmasq", namespace, dnsmasq_argv(servers), output, ready)


def start_sink(namespace: str, record: Path, output: Path) -> ManagedProcess:
    argv = [sys.executable, str(SINK_SCRIPT), "--listen", SINK_IP, "--port", str(SMTP_PORT), "--record", str(record)]
    # sink.py prints this once its server is listening.
    ready = Readiness.starting_now(output, r"^sink listening on ")
    return spawn("sink", namespace, argv, output, ready)


# --------------------------------------------------------------------------------------------
# The lab
# --------------------------------------------------------------------------------------------


@dataclass
class Lab:
    root: Path
    network: Network
    client_ns: str
    dns_ns: str
    sink_ns: str
    servers: dict[str, Server]
    dovecot: Dovecot
    processes: dict[str, ManagedProcess] = field(default_factory=dict)
    setup_seconds: float = 0.0

    client_ip: str = CLIENT_IP
    dns_ip: str = DNS_IP
    sink_ip: str = SINK_IP
    client_hostname: str = CLIENT_HOSTNAME
    outside_domains: tuple[str, ...] = OUTSIDE_DOMAINS
    confirm_domain: str = CONFIRM_DOMAIN

    def server(self, name: str) -> Server:
        return self.servers[name]

    @property
    def sink_record(self) -> Path:
        return self.root / "sink.jsonl"

    def sink_messages(self) -> list[dict[str, object]]:
        if not self.sink_record.exists():
            return []
        lines = self.sink_record.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def client_argv(self, argv: Sequence[str]) -> list[str]:
        """Prefix ``argv`` so it runs in the client namespace (with the lab's resolv.conf)."""
        return ["ip", "netns", "exec", self.client_ns, *argv]

    def in_client(self, fn: Callable[[], T]) -> T:
        return in_netns(self.client_ns, fn)

    def reset_greylist(self, name: str, timeout: float = 30) -> None:
        """Restart a server's postgrey with an empty database: every triplet is new again."""
        server = self.servers[name]
        key = f"postgrey:{name}"
        self.processes.pop(key).stop()
        self.processes[key] = process = start_postgrey(server)
        endpoint = Endpoint(server.namespace, "127.0.0.1", POSTGREY_PORT)
        wait_until_ready(process, time.monotonic() + timeout, endpoint)

    def dead_processes(self) -> list[str]:
        return [name for name, proc in self.processes.items() if not proc.alive()]

    def teardown(self, keep_files: bool = False) -> None:
        procs = list(self.processes.values())
        # Stop in parallel: each stop may wait out a grace period.
        with ThreadPoolExecutor(max_workers=max(1, len(procs))) as pool:
            list(pool.map(lambda proc: proc.stop(), procs))
        self.processes.clear()
        self.network.delete()
        if not keep_files:
            shutil.rmtree(self.root, ignore_errors=True)


def _allocate_servers(prefix: str, root: Path, specs: Sequence[ServerSpec]) -> dict[str, Server]:
    servers = {}
    for index, spec in enumerate(specs):
        servers[spec.name] = Server(
            spec=spec,
            namespace=f"{prefix}-{spec.name}",
            ip=f"{NET}.{FIRST_SERVER_HOST + index}",
            workdir=root / spec.name,
        )
    return servers


PREPARE: dict[str, Callable[[Server, Path], None]] = {
    "postfix": prepare_postfix,
    "exim": lambda server, _root: prepare_exim(server),
    "opensmtpd": lambda server, _root: prepare_opensmtpd(server),
}
START: dict[str, Callable[[Server], ManagedProcess]] = {
    "postfix": start_postfix,
    "exim": start_exim,
    "opensmtpd": start_opensmtpd,
}


def _build(lab: Lab, deadline: float) -> None:
    net = lab.network
    net.create_bridge()
    net.add_node(lab.client_ns, CLIENT_IP)
    net.add_node(lab.dns_ns, DNS_IP)
    net.add_node(lab.sink_ns, SINK_IP)
    net.add_node(lab.dovecot.namespace, DOVECOT_IP)
    for server in lab.servers.values():
        net.add_node(server.namespace, server.ip)

    servers = list(lab.servers.values())
    with ThreadPoolExecutor(max_workers=8) as pool:
        # Config files, certificates and `postfix check` per server, concurrently.
        prepared = [pool.submit(PREPARE[s.spec.mta], s, lab.root) for s in servers]
        prepared.append(pool.submit(prepare_dovecot, lab.dovecot))
        procs = lab.processes
        procs["dns"] = start_dnsmasq(lab.dns_ns, servers, lab.root / "dns.out")
        procs["sink"] = start_sink(lab.sink_ns, lab.sink_record, lab.root / "sink.out")
        for future in prepared:
            future.result()
        for server in servers:
            if server.spec.greylist:
                procs[f"postgrey:{server.name}"] = start_postgrey(server)
            procs[f"mta:{server.name}"] = START[server.spec.mta](server)
        procs["dovecot"] = start_dovecot(lab.dovecot)

    client = lab.client_ns
    waits: list[tuple[ManagedProcess, list[Endpoint], Callable[[], str | None]]] = [
        (procs["dns"], [Endpoint(client, DNS_IP, 53)], _no_failure),
        (procs["sink"], [Endpoint(client, SINK_IP, SMTP_PORT, banner=b"220")], _no_failure),
        (
            procs["dovecot"],
            [Endpoint(client, DOVECOT_IP, LMTP_PORT, banner=b"220"), Endpoint(client, DOVECOT_IP, IMAP_PORT)],
            _no_failure,
        ),
    ]
    for server in servers:
        if server.spec.greylist:
            policy = Endpoint(server.namespace, "127.0.0.1", POSTGREY_PORT)
            waits.append((procs[f"postgrey:{server.name}"], [policy], _no_failure))
        endpoint = Endpoint(client, server.ip, server.port, banner=b"220")
        waits.append((procs[f"mta:{server.name}"], [endpoint], server.startup_failure))
    # One thread per daemon, each blocked on that daemon's own events.
    with ThreadPoolExecutor(max_workers=len(waits)) as pool:
        futures = [
            pool.submit(wait_until_ready, process, deadline, *endpoints, failure=failure)
            for process, endpoints, failure in waits
        ]
        for future in futures:
            future.result()


@contextlib.contextmanager
def start_lab(
    specs: Sequence[ServerSpec] = ALL_SERVERS,
    *,
    setup_timeout: float = 120,
    keep_files: bool | None = None,
) -> Iterator[Lab]:
    """Bring the lab up, yield it, and tear everything down afterwards, whatever happened.

    ``keep_files`` (default: env RELAYCHECK_LAB_KEEP set) keeps configs and logs for debugging.
    """
    reason = missing_prerequisite()
    if reason:
        raise RuntimeError(reason)
    if keep_files is None:
        keep_files = bool(os.environ.get("RELAYCHECK_LAB_KEEP"))
    cleanup_stale_labs()
    started = time.monotonic()
    prefix = f"{NAMESPACE_PREFIX}-{os.getpid()}"
    root = Path(tempfile.mkdtemp(prefix=f"{prefix}-"))
    root.chmod(0o755)  # postfix and Debian-exim must traverse it
    lab = Lab(
        root=root,
        network=Network(prefix=prefix, bridge_ns=f"{prefix}-br"),
        client_ns=f"{prefix}-client",
        dns_ns=f"{prefix}-dns",
        sink_ns=f"{prefix}-sink",
        servers=_allocate_servers(prefix, root, specs),
        dovecot=Dovecot(f"{prefix}-dovecot", root / "dovecot", password=secrets.token_urlsafe(12)),
    )
    try:
        _build(lab, started + setup_timeout)
        lab.setup_seconds = time.monotonic() - started
        yield lab
    finally:
        lab.teardown(keep_files=keep_files)


def main() -> None:
    """Bring the lab up by hand and keep it until Ctrl-C / SIGTERM."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with start_lab(keep_files=True) as lab:
        print(f"lab up in {lab.setup_seconds:.1f}s, files in {lab.root}")
        print(f"client {lab.client_ns} {lab.client_ip}; dns {lab.dns_ip}; sink {lab.sink_ip}")
        dovecot = lab.dovecot
        users = ", ".join(dovecot.address(user) for user in dovecot.users)
        print(f"dovecot {dovecot.ip}: {users}; password {dovecot.password}; CA {dovecot.cafile}")
        for server in lab.servers.values():
            print(f"  {server.name:26} {server.ip:13} {server.namespace:40} {server.expected}")
        print("Ctrl-C to tear down")
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()


if __name__ == "__main__":
    main()

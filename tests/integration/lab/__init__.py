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

One module per concern:

    specs        the servers (configuration knobs and ground truth) and a running Server
    topology     addresses, names, ports;  paths: where the programs are
    netns        namespaces and the bridge;  processes: daemons, readiness events, stop
    logs         reading logs from an offset; Postfix's log analysed
    postfix exim opensmtpd sendmail dovecot services   config templates and start-up per daemon
    core         the Lab: prerequisites, bring-up, teardown
    runner       the relaycheck CLI run from the client namespace, its JSON report read

Use as a library (the tests' conftest, bench/vs_nmap.py): ``with start_lab() as lab: ...``, or
``python -m tests.integration.lab`` as root to bring the lab up by hand until Ctrl-C.
"""

from __future__ import annotations

from .core import Lab, missing_prerequisite, start_lab
from .exim import EXIM_CONF, exim_conf
from .logs import (
    PostfixDelivery,
    PostfixMessage,
    file_size,
    postfix_deliveries,
    postfix_error_stats,
    postfix_queued,
    read_from,
)
from .paths import EXIM_BIN, OPENSMTPD_BIN, SENDMAIL_BIN
from .postfix import POSTFIX_MASTER_CF, postfix_main_cf
from .sendmail import sendmail_mc
from .specs import ALL_SERVERS, EXTRA_SERVERS, SERVERS, Server, ServerSpec, Verdict
from .topology import FIRST_SERVER_HOST, GREYLIST_DELAY_S, IMAP_PORT, IMAPS_PORT, NET, SINK_IP, SMTP_PORT

__all__ = [
    "ALL_SERVERS",
    "EXIM_BIN",
    "EXIM_CONF",
    "EXTRA_SERVERS",
    "FIRST_SERVER_HOST",
    "GREYLIST_DELAY_S",
    "IMAPS_PORT",
    "IMAP_PORT",
    "NET",
    "OPENSMTPD_BIN",
    "POSTFIX_MASTER_CF",
    "SENDMAIL_BIN",
    "SERVERS",
    "SINK_IP",
    "SMTP_PORT",
    "Lab",
    "PostfixDelivery",
    "PostfixMessage",
    "Server",
    "ServerSpec",
    "Verdict",
    "exim_conf",
    "file_size",
    "missing_prerequisite",
    "postfix_deliveries",
    "postfix_error_stats",
    "postfix_main_cf",
    "postfix_queued",
    "read_from",
    "sendmail_mc",
    "start_lab",
]

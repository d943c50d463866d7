"""The lab as a whole: prerequisites, bring-up (concurrent, event-based waits) and teardown."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .dovecot import Dovecot, prepare_dovecot, start_dovecot
from .exim import prepare_exim, start_exim
from .netns import Network, T, cleanup_stale_labs, in_netns
from .opensmtpd import prepare_opensmtpd, start_opensmtpd
from .paths import (
    DNSMASQ,
    DOVECOT,
    EXIM_BIN,
    M4,
    OPENSMTPD_BIN,
    OPENSSL,
    POSTFIX,
    POSTFIX_MASTER,
    POSTGREY,
    SENDMAIL_BIN,
    SENDMAIL_CF_DIR,
    STRACE,
    UNSHARE,
)
from .postfix import prepare_postfix, start_postfix, start_postgrey
from .processes import Endpoint, ManagedProcess, no_failure, wait_until_ready
from .sendmail import prepare_sendmail, start_sendmail
from .services import start_dnsmasq, start_sink
from .specs import ALL_SERVERS, Server, ServerSpec
from .topology import (
    CLIENT_HOSTNAME,
    CLIENT_IP,
    CONFIRM_DOMAIN,
    DNS_IP,
    DOVECOT_IP,
    FIRST_SERVER_HOST,
    IMAP_PORT,
    LMTP_PORT,
    NAMESPACE_PREFIX,
    NET,
    OUTSIDE_DOMAINS,
    POSTGREY_PORT,
    SINK_IP,
    SMTP_PORT,
)


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
        SENDMAIL_BIN,
        SENDMAIL_CF_DIR / "m4/cf.m4",
        Path(M4),
        Path(STRACE),
    )
    absent = [str(path) for path in needed if not path.exists()]
    if absent:
        return f"integration lab packages missing ({', '.join(absent)}): run scripts/lab-deps"
    return None


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
    "sendmail": lambda server, _root: prepare_sendmail(server),
}
START: dict[str, Callable[[Server], ManagedProcess]] = {
    "postfix": start_postfix,
    "exim": start_exim,
    "opensmtpd": start_opensmtpd,
    "sendmail": start_sendmail,
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
        (procs["dns"], [Endpoint(client, DNS_IP, 53)], no_failure),
        (procs["sink"], [Endpoint(client, SINK_IP, SMTP_PORT, banner=b"220")], no_failure),
        (
            procs["dovecot"],
            [Endpoint(client, DOVECOT_IP, LMTP_PORT, banner=b"220"), Endpoint(client, DOVECOT_IP, IMAP_PORT)],
            no_failure,
        ),
    ]
    for server in servers:
        if server.spec.greylist:
            policy = Endpoint(server.namespace, "127.0.0.1", POSTGREY_PORT)
            waits.append((procs[f"postgrey:{server.name}"], [policy], no_failure))
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

"""A tiny authoritative DNS server on loopback UDP, built with dnspython, for tests and the demo.

Records are given as ``{(name, type): [rdata text, …]}``; names not in the table get NXDOMAIN,
known names with another type get an empty answer (NOERROR/NODATA), as a real server would. A
wildcard owner (``*.wild.test``) answers for every name below ``wild.test`` that the table does
not name itself (RFC 4592, without the finer points of closest encloser and empty non-terminals).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterable, Mapping, Sequence

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

Records = Mapping[tuple[str, str], Sequence[str]]


class DnsServerThread:
    def __init__(self, records: Records, host: str = "127.0.0.1", servfail: Iterable[str] = ()) -> None:
        """``servfail``: names answered SERVFAIL (a broken or unreachable authoritative server)."""
        self.servfail = {n.rstrip(".").lower() for n in servfail}
        self.records = {(n.rstrip(".").lower(), t.upper()): list(v) for (n, t), v in records.items()}
        self.names = {n for n, _ in self.records}
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        self._sock.bind((host, 0))
        self.host = host
        self.port: int = self._sock.getsockname()[1]
        self.queries: list[tuple[str, str]] = []
        self._thread = threading.Thread(target=self._serve, name="dns", daemon=True)
        self._stopping = False

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def answer(self, wire: bytes) -> bytes:
        query = dns.message.from_wire(wire)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        question = query.question[0]
        name = question.name.to_text().rstrip(".").lower()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        self.queries.append((name, rdtype))
        if name in self.servfail:
            response.set_rcode(dns.rcode.SERVFAIL)
            return bytes(response.to_wire())
        name = self._owner(name)
        if name not in self.names:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif (name, rdtype) in self.records:
            rrset = dns.rrset.from_text_list(
                question.name, 300, dns.rdataclass.IN, question.rdtype, self.records[(name, rdtype)]
            )
            response.answer.append(rrset)
        return bytes(response.to_wire())

    def _owner(self, name: str) -> str:
        """The table's owner name for ``name``: itself, or the nearest wildcard above it."""
        if name in self.names:
            return name
        labels = name.split(".")
        for start in range(1, len(labels)):
            wildcard = "*." + ".".join(labels[start:])
            if wildcard in self.names:
                return wildcard
        return name

    def _serve(self) -> None:
        while not self._stopping:
            try:
                wire, peer = self._sock.recvfrom(4096)
            except OSError:
                return
            if self._stopping:
                return
            try:
                self._sock.sendto(self.answer(wire), peer)
            except (dns.exception.DNSException, IndexError, OSError):
                continue  # a malformed query gets no answer, like a real server under attack

    def __enter__(self) -> DnsServerThread:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping = True
        # A blocked recvfrom is not woken by close(): send ourselves an empty datagram instead.
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as waker:
            waker.sendto(b"", (self.host, self.port))
        self._thread.join(timeout=5)
        self._sock.close()


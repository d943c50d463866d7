"""Suite-wide safety fence (DEVELOPERS.md, network safety): in-process tests may only talk to
loopback or to the lab's 198.18.0.0/15 addresses. A test that would reach anything else fails
at once instead of sending a packet — this guards against bugs in target parsing, not behaviour.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from typing import Any

import pytest

ALLOWED = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"), ipaddress.ip_network("198.18.0.0/15"))


def _check(address: Any) -> None:
    if isinstance(address, tuple) and address:
        try:
            ip = ipaddress.ip_address(str(address[0]).split("%", 1)[0])
        except ValueError:
            raise AssertionError(f"test tried to connect to a name, not an address: {address!r}") from None
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if not any(ip in net for net in ALLOWED):
            raise AssertionError(f"network safety: a test tried to reach {ip}, outside loopback/the lab")


class _FencedSocket(socket.socket):
    def connect(self, address: Any) -> None:
        _check(address)
        super().connect(address)

    def connect_ex(self, address: Any) -> int:
        _check(address)
        return super().connect_ex(address)

    def sendto(self, data: Any, *args: Any) -> int:
        _check(args[-1])
        return super().sendto(data, *args)  # type: ignore[call-overload,no-any-return]


@pytest.fixture(autouse=True)
def network_fence(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(socket, "socket", _FencedSocket)
    yield

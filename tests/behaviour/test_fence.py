"""The suite's network fence itself: a connection outside loopback/the lab fails before any packet."""

from __future__ import annotations

import socket

import pytest


def test_fence_refuses_addresses_outside_loopback_and_lab() -> None:
    with socket.socket() as sock, pytest.raises(AssertionError, match="network safety"):
        sock.connect(("192.0.2.1", 25))


def test_fence_allows_loopback() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        with socket.socket() as sock:
            sock.connect(listener.getsockname())

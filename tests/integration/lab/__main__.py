"""Bring the lab up by hand (as root) and keep it until Ctrl-C: ``python -m tests.integration.lab``."""

from __future__ import annotations

import contextlib
import signal
import threading

from .core import start_lab


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

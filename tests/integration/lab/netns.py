"""Network namespaces: one bridge, one namespace per lab node, and threads that join them."""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from .topology import DNS_IP, NAMESPACE_PREFIX, PREFIX_LEN

T = TypeVar("T")

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

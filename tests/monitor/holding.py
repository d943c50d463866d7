"""A TCP server that accepts connections and says nothing until the test releases them: a check
against it is "running" for exactly as long as the test wants, without a sleep anywhere."""

from __future__ import annotations

import socket
import threading
from types import TracebackType


class HoldingServer:
    def __init__(self, host: str = "127.0.0.1", changed: threading.Condition | None = None) -> None:
        self._sock = socket.socket()
        self._sock.bind((host, 0))
        self._sock.listen(64)
        self.port: int = self._sock.getsockname()[1]
        self.connections = 0
        self.changed = changed or threading.Condition()  # shared by several servers: wait on them all
        self.release = threading.Event()
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self.changed:
                self.connections += 1
                self.changed.notify_all()
            if self.release.is_set():
                conn.close()
            else:
                self._held.append(conn)

    def wait_for(self, connections: int, timeout: float = 30.0) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: self.connections >= connections, timeout)

    def let_go(self) -> None:
        self.release.set()
        for conn in self._held:
            conn.close()

    def __enter__(self) -> HoldingServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.let_go()
        self._sock.close()

"""The Prometheus exporter on its own loop in a thread, for its tests and its benchmark."""

from __future__ import annotations

import urllib.error
import urllib.request

from relaycheck.monitor.exporter import Exporter, ExporterSettings
from relaycheck.testing.loopthread import LoopThread


class ExporterThread(LoopThread):
    """``with ExporterThread(settings) as ex:`` serves on 127.0.0.1:``ex.port`` until the block ends."""

    def __init__(self, settings: ExporterSettings) -> None:
        super().__init__("exporter")
        self.exporter = Exporter(settings)
        self.port = 0

    async def setup(self) -> None:
        server = await self.exporter.start("127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]

    async def teardown(self) -> None:
        await self.exporter.stop()

    def get(self, path: str, headers: dict[str, str] | None = None, timeout: float = 60) -> tuple[int, str]:
        """GET ``path``: the status and the body, error statuses included."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

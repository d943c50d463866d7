"""What the operator decides about the exporter (``relaycheck exporter`` options map onto these;
a leaf, so that the command's --help needs neither prometheus-client nor the server)."""

from __future__ import annotations

from dataclasses import dataclass, field

from relaycheck.options import EngineOptions
from relaycheck.web.settings import DEFAULT_PORTS

__all__ = ["DEFAULT_PORTS", "ExporterSettings"]


@dataclass(frozen=True)
class ExporterSettings:
    engine: EngineOptions = field(default_factory=EngineOptions)
    allow_private: bool = False
    ports: tuple[int, ...] = DEFAULT_PORTS
    resolver: str | None = None
    cache_ttl: float = 300.0  # seconds a target's result is reused
    max_checks: int = 2  # checks running at once
    max_waiting: int = 16  # checks waiting for a slot; beyond: 503
    check_timeout: float = 120.0  # longest wait for a result within one scrape
    max_targets: int = 10  # addresses per check (MX expansion is capped)
    targets_at_once: int = 4  # addresses of one check tested concurrently
    max_connections: int = 256  # open HTTP connections

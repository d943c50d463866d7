"""What the operator decides about the web service (``relaycheck serve`` options map onto these)."""

from __future__ import annotations

from dataclasses import dataclass, field

from relaycheck.engine import EngineOptions

DEFAULT_PORTS = (25, 465, 587)


def web_engine_options() -> EngineOptions:
    """Probe mode with a per-target deadline that suits a waiting browser, and a retry budget
    for deferred probes: greylisting usually clears within 1-5 minutes, and a web user cannot
    be told to come back with a command-line option."""
    return EngineOptions(deadline=120.0, command_timeout=20.0, greeting_timeout=20.0, retry_budget=300.0)


@dataclass(frozen=True)
class Settings:
    db_url: str = "relaycheck-web.db"  # a SQLite file, or any SQLAlchemy URL
    allow_private: bool = False  # labs and internal use: test loopback/private addresses too
    resolver: str | None = None  # IP[:PORT] of the DNS server to ask; None: the system's
    ports: tuple[int, ...] = DEFAULT_PORTS  # the only ports a check may connect to
    engine: EngineOptions = field(default_factory=web_engine_options)
    allow_data_probe: bool = False  # let API clients ask for mode "data-probe" (DATA, hang up on 354)
    max_targets: int = 10  # addresses tested per check (MX expansion is capped)
    targets_at_once: int = 4  # addresses of one check tested concurrently
    # Abuse controls
    requests_per_minute: int = 60  # per client address (IPv6: per /64); static files not counted
    max_running_per_client: int = 2  # checks running at once started by one client address
    max_running: int = 10  # checks running at once in this process
    cooldown: float = 300.0  # seconds before the same address and port may be tested again
    trusted_proxies: tuple[str, ...] = ()  # peers whose X-Forwarded-For is believed
    max_event_streams: int = 200  # open server-sent-event connections at once
    max_streams_per_client: int = 8  # of those, per client address (a few tabs; pages fall back to polling)
    max_body_bytes: int = 16_384  # request bodies (a form post or a JSON check request is ~100 bytes)
    body_seconds: float = 20.0  # longest wait for a whole request body
    # Pages
    refresh_seconds: int = 3  # progress page reload interval without JavaScript
    history_length: int = 20  # earlier tests shown per target (a history page's length)
    public_history: bool = False  # everyone sees every test of a target; off: a client sees its own

    @property
    def retry_budget(self) -> float:
        """Seconds deferred probes are retried (the engine's budget: ``serve --retry-budget``)."""
        return self.engine.retry_budget

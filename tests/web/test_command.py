"""``relaycheck serve``: options become the app's settings; uvicorn is started with them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import uvicorn
from click.testing import CliRunner

from relaycheck.cli import cli
from relaycheck.web.settings import Settings


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Capture what would be served instead of serving it."""
    seen: dict[str, Any] = {}

    def run(app: Any, **kwargs: Any) -> None:
        seen["settings"] = app.state.settings
        seen.update(kwargs)

    monkeypatch.setattr(uvicorn, "run", run)
    return seen


def test_serve_defaults_are_safe_for_the_internet(started: dict[str, Any], tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["serve", "--db", str(tmp_path / "web.db")])
    assert result.exit_code == 0, result.output
    settings: Settings = started["settings"]
    assert (started["host"], started["port"]) == ("127.0.0.1", 8025)
    assert started["proxy_headers"] is False  # client addresses: only --trusted-proxy decides
    assert settings.allow_private is False
    assert settings.ports == (25, 465, 587)
    assert settings.allow_data_probe is False and settings.engine.data_probe is False
    assert getattr(settings.engine, "confirm_address", None) is None
    assert settings.trusted_proxies == ()
    assert settings.retry_budget == 300 and settings.max_body_bytes <= 65536
    assert (tmp_path / "web.db").exists()


def test_serve_options_map_onto_settings(started: dict[str, Any], tmp_path: Path) -> None:
    args = [
        "serve", "--listen", "[::1]:9000", "--db", f"sqlite:///{tmp_path / 'x.db'}", "--allow-private",
        "--allow-port", "2525", "--resolver", "127.0.0.1:5353", "--rate", "10", "--max-per-client", "1",
        "--max-running", "3", "--cooldown", "60", "--trusted-proxy", "10.0.0.0/8", "--helo", "probe.example.net",
        "--ext-recipient", "a@one.example", "--ext-recipient", "b@two.example", "--allow-data-probe",
        "--retry-budget", "90", "--max-streams-per-client", "3",
    ]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    settings: Settings = started["settings"]
    assert (started["host"], started["port"]) == ("::1", 9000)
    assert settings.allow_private and settings.allow_data_probe
    assert settings.ports == (25, 465, 587, 2525)
    assert settings.resolver == "127.0.0.1:5353"
    assert (settings.requests_per_minute, settings.max_running_per_client, settings.max_running) == (10, 1, 3)
    assert settings.cooldown == 60 and settings.trusted_proxies == ("10.0.0.0/8",)
    assert settings.engine.helo == "probe.example.net"
    assert settings.engine.ext_recipients == ("a@one.example", "b@two.example")
    assert settings.retry_budget == 90 and settings.max_streams_per_client == 3
    assert "--allow-private" in result.output


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--listen", "127.0.0.1:http"], "bad port"),
        (["--trusted-proxy", "proxy.example"], "not an address or network"),
        (["--ext-recipient", "nobody"], "not a mail address"),
        (["--allow-port", "70000"], "70000"),
    ],
)
def test_serve_refuses_bad_options(started: dict[str, Any], args: list[str], words: str) -> None:
    result = CliRunner().invoke(cli, ["serve", *args])
    assert result.exit_code == 2
    assert words in result.output
    assert "settings" not in started

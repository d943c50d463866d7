"""The one option table: every entry is wired to a real field, commands share meanings, and the
objects built from it keep the dataclasses' defaults for what was not given."""

from __future__ import annotations

import dataclasses

import pytest
from click.testing import CliRunner

from relaycheck.cli import cli
from relaycheck.errors import UsageError
from relaycheck.monitor.settings import ExporterSettings
from relaycheck.options import CheckOptions, EngineOptions, HygieneOptions
from relaycheck.options.table import COMMANDS, OPTIONS, build_check
from relaycheck.scan.command import scan_base
from relaycheck.scan.runner import ScanConfig
from relaycheck.web.settings import Settings

SECTION_TYPES: dict[str, type] = {
    "hygiene": HygieneOptions,
    "engine": EngineOptions,
    "check": CheckOptions,
    "scan": ScanConfig,
    "web": Settings,
    "exporter": ExporterSettings,
}
USED = {name for names in COMMANDS.values() for name in names}


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_every_entry_sets_real_fields_and_is_used(name: str) -> None:
    option = OPTIONS[name]
    for path in option.to:
        section, _, field_name = path.partition(".")
        assert field_name in {f.name for f in dataclasses.fields(SECTION_TYPES[section])}, path
    assert name in USED, f"{name} is in the table but no command offers it"
    assert option.default is None or not option.to, "a dataclass field holds this default already"


def test_nothing_given_is_the_dataclasses_defaults() -> None:
    assert build_check({name: None for name in OPTIONS}) == CheckOptions()
    assert build_check({}, scan_base().check) == scan_base().check


def test_dnsbl_zone_replaces_the_list_and_turns_lookups_on_in_check_and_scan() -> None:
    for base in (CheckOptions(), scan_base().check):
        hygiene = build_check({"dnsbl_zones": ("mirror.example",)}, base).engine.hygiene
        assert hygiene.dnsbl and hygiene.dnsbl_zones == ("mirror.example",)
    assert build_check({}, scan_base().check).engine.hygiene.dnsbl is False
    assert build_check({"dnsbl": True}, scan_base().check).engine.hygiene.dnsbl is True
    with pytest.raises(UsageError, match="--no-dnsbl"):
        build_check({"dnsbl": False, "dnsbl_zones": ("mirror.example",)})


@pytest.mark.parametrize(
    ("values", "port", "ports"),
    [
        ({"port": (465,)}, 465, None),
        ({"port": (25, 587)}, 25, (25, 587)),
        ({"all_ports": (25, 465, 587)}, 25, (25, 465, 587)),
        ({"port": (2525,), "all_ports": (25, 465, 587)}, 25, (25, 465, 587)),
    ],
)
def test_port_is_one_port_or_a_list(values: dict[str, object], port: int, ports: tuple[int, ...] | None) -> None:
    check = build_check(values)
    assert (check.port, check.ports) == (port, ports)


def test_timeouts_connect_never_waits_longer_than_a_step() -> None:
    engine = build_check({"timeout": 3.0}).engine
    assert (engine.command_timeout, engine.greeting_timeout, engine.connect_timeout) == (3.0, 3.0, 3.0)
    engine = build_check({"timeout": 60.0, "connect_timeout": 20.0}).engine
    assert engine.connect_timeout == 20.0


@pytest.mark.parametrize("command", ["check", "scan"])
@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--port", "25,x"], "port numbers separated by commas"),
        (["-p", "0"], "from 1 to 65535"),
        (["--sender", "nobody"], "not a mail address"),
        (["--ext-recipient", "a@b.example", "--ext-recipient", "x y@c.example"], "not a mail address"),
        (["--transport", "smoke"], "smoke"),
    ],
)
def test_shared_options_refuse_the_same_bad_values(command: str, args: list[str], words: str) -> None:
    result = CliRunner().invoke(cli, [command, "192.0.2.1", *args])
    assert result.exit_code == 2
    assert words in result.output


def test_help_shows_the_dataclass_defaults_per_command() -> None:
    check_help = CliRunner().invoke(cli, ["check", "--help"], terminal_width=200).output
    scan_help = CliRunner().invoke(cli, ["scan", "--help"], terminal_width=200).output
    # one option, one meaning; the default is each command's own (scans keep targets short)
    assert "Whole-target budget (plus --retry-budget).  [default: 300.0]" in check_help
    assert "Whole-target budget (plus --retry-budget).  [default: 120.0]" in scan_help
    for text in (check_help, scan_help):
        assert "Per-step timeout (greeting, each reply).  [default: 30.0]" in text
        assert "--dnsbl / --no-dnsbl" in text


@pytest.mark.parametrize("text", ["٣", "²5", "25,٤٦٥", "123456", ""])
def test_a_port_is_ascii_digits_on_the_command_line_and_in_the_web_form(text: str) -> None:
    from relaycheck.options.table import checker

    with pytest.raises(ValueError):
        checker("port")(text)

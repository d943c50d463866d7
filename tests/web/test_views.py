"""Presentation helpers: advice phrased for the web, names in both forms, durations, and what
people paste into the box (generated inputs)."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import relaycheck
from relaycheck.model import Target
from relaycheck.web.guard import address_key, understand
from relaycheck.web.views import _OPTION, WEB_ADVICE, duration, for_the_web

PACKAGE = Path(relaycheck.__file__).parent


def strings_in(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings_in(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings_in(v)]
    return []


def texts_shown_to_users() -> list[str]:
    """Every string literal of the modules that write verdicts and live findings (f-string
    parts too; docstrings, which only maintainers read, left out), and every fix text (the per-MTA
    remediation data)."""
    found: list[str] = []
    modules = [PACKAGE / "verdict.py", PACKAGE / "engine.py"]
    modules += [p for p in (PACKAGE / "findings.py", PACKAGE / "findings" / "hygiene.py") if p.exists()]
    for path in modules:
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
        }
        found += [
            n.value for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings
        ]  # fmt: skip
    for data in (PACKAGE / "findings" / "fixes.toml", PACKAGE / "remediation" / "texts.toml"):
        if data.exists():
            found += strings_in(tomllib.loads(data.read_text()))
    return found


def test_every_command_line_option_in_advice_has_a_web_phrasing() -> None:
    named = {option for text in texts_shown_to_users() for option in _OPTION.findall(text)}
    assert named, "the verdict texts name no option at all: the test looks in the wrong place"
    assert named <= set(WEB_ADVICE), named - set(WEB_ADVICE)


@pytest.mark.parametrize("text", [t for t in texts_shown_to_users() if _OPTION.search(t)])
def test_advice_on_the_web_names_no_command_line_option(text: str) -> None:
    shown = for_the_web(text, 300)
    assert not _OPTION.search(shown), shown
    assert shown  # something useful is left


def test_what_was_seen_is_kept_when_the_option_is_replaced() -> None:
    shown = for_the_web(
        "This was judged from the reply to RCPT; a server can still accept and then discard or bounce: "
        "run with --confirm ADDRESS to prove delivery.",
        300,
    )
    assert shown.startswith("This was judged from the reply to RCPT; a server can still accept and then discard")
    assert "Only a delivery test proves" in shown
    assert "retried the deferred attempts for 5 min" in for_the_web("Test again with --retry-budget 300.", 300)


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0.0004, "under 1 ms"), (0.04, "40 ms"), (0.4, "0.4 s"), (12.3, "12 s"), (300, "5 min"), (75, "1 min 15 s")],
)
def test_durations_are_never_a_misleading_zero(seconds: float, shown: str) -> None:
    assert duration(seconds) == shown


LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
HOST = st.lists(LABEL, min_size=1, max_size=4).map(lambda labels: ".".join([*labels, "example"]))
LOCAL = st.from_regex(r"[A-Za-z0-9._%+-]{1,20}", fullmatch=True)
PATH = st.from_regex(r"(/[A-Za-z0-9._~-]{0,12}){0,3}(\?[a-z]=[a-z0-9]{0,5})?", fullmatch=True)


@given(host=HOST, scheme=st.sampled_from(["http", "https", "smtp", "HTTPS"]), path=PATH)
def test_urls_give_their_host(host: str, scheme: str, path: str) -> None:
    assert understand(f"  {scheme}://{host}{path} ") == host


@given(host=HOST, local=LOCAL, form=st.sampled_from(["{a}", "<{a}>", "Name <{a}>", "mailto:{a}", "mailto:{a}?x=y"]))
def test_mail_addresses_give_their_domain(host: str, local: str, form: str) -> None:
    assert understand(form.format(a=f"{local}@{host}")) == host


@given(v4=st.ip_addresses(v=4), port=st.integers(1, 65535), host=HOST)
def test_one_key_for_every_spelling_of_an_ipv4_address(v4: object, port: int, host: str) -> None:
    plain = address_key([Target(host=host, port=port, address=str(v4))])
    mapped = address_key([Target(host="other." + host, port=port, address=f"::ffff:{v4}")])
    expanded = address_key([Target(host=str(v4), port=port, address=f"0:0:0:0:0:ffff:{v4}")])
    assert plain == mapped == expanded == f"{v4}:{port}"


@given(addresses=st.lists(st.ip_addresses(v=6), min_size=1, max_size=10, unique=True))
def test_keys_of_address_sets_ignore_order_and_stay_within_the_column(addresses: list[object]) -> None:
    targets = [Target(host="mx.example", address=str(a)) for a in addresses]
    key = address_key(targets)
    assert key == address_key(list(reversed(targets)))
    assert len(key) <= 300
    assert re.fullmatch(r"[\[\]0-9a-f:. …]+", key)

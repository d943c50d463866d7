"""The web UI in a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright).

The SMTP servers are aiosmtpd behaviour servers on loopback; the app runs with --allow-private.
To watch the progress page deterministically, a test freezes the SMTP server's event loop: the
check connects (the kernel queues the connection) and waits for the greeting until the test
releases the server.
"""

from __future__ import annotations

import re
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import pytest
import trustme
from playwright.sync_api import ConsoleMessage, Page, expect

from relaycheck.testing.servers import ServerThread

from .conftest import ENGINE, SilentServer, SmtpFactory, WebFactory

PAYLOAD = (
    '<script>window.pwned=1;document.title="pwned"</script>'
    "<img src=x onerror=\"window.pwned=2;document.title='pwned'\">"
)


@contextmanager
def frozen(server: ServerThread) -> Iterator[threading.Event]:
    """Block the server's event loop until the yielded event is set (always set on exit)."""
    blocked, release = threading.Event(), threading.Event()

    def block() -> None:
        blocked.set()
        release.wait(timeout=60)

    server._loop.call_soon_threadsafe(block)  # the server's own loop, run by its thread
    assert blocked.wait(timeout=10)
    try:
        yield release
    finally:
        release.set()


CONSOLE_ERRORS: dict[int, list[str]] = {}  # id(page) -> its console errors


@pytest.fixture
def page(browser: Any) -> Iterator[Page]:
    """A fresh browser context per test; console errors (CSP violations included) are collected."""
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    errors = CONSOLE_ERRORS.setdefault(id(page), [])

    def console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    page.on("console", console)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("dialog", lambda dialog: errors.append(f"dialog: {dialog.message}"))
    yield page
    context.close()
    del CONSOLE_ERRORS[id(page)]


def console_errors(page: Page) -> list[str]:
    return CONSOLE_ERRORS[id(page)]


def test_end_to_end_open_relay_with_live_progress(page: Page, web: WebFactory, smtp: SmtpFactory) -> None:
    server = smtp("open")
    app = web(ports=(25, 465, 587, server.port))
    page.goto(f"{app.url}/")
    expect(page).to_have_title(re.compile("open relay"))
    with frozen(server) as release:
        page.get_by_label("Mail domain or server").fill(server.address)
        page.get_by_role("button", name="Test", exact=True).click()
        page.wait_for_url(re.compile(r"/check/[A-Za-z0-9_-]+$"))
        expect(page.locator("h1")).to_have_text(f"Testing {server.address}…")
        # the event stream is connected and delivered progress: the target is being tested
        expect(page.locator("[data-events]")).to_have_attribute("data-live", "on")
        expect(page.locator(".target-progress [data-role=state]")).to_have_text("testing…")
        expect(page.get_by_role("status")).to_contain_text("probes answered")
        release.set()
    # the live page reloads itself into the result when the stream says done
    expect(page.locator("h1[data-verdict]")).to_have_text("Open relay", timeout=15_000)
    assert re.search(r"/check/[A-Za-z0-9_-]+$", page.url)
    expect(page.locator(".verdict .lead")).to_contain_text("accepted mail for outside recipients")
    expect(page.locator("table.probes tr.outcome-bad").first).to_contain_text("accepted")
    expect(page.locator("table.probes")).to_contain_text("RCPT TO:<relaytest@outside-a.test>")
    transcript = page.locator("details.transcript")
    expect(transcript.locator("pre").first).to_be_hidden()
    transcript.locator("summary").click()
    expect(transcript.locator("pre").first).to_contain_text("C: RCPT TO:<relaytest@outside-a.test>")
    expect(transcript.locator("pre").first).to_contain_text("S: 250")
    # re-test is disabled during the cooldown, with a live countdown
    retest = page.locator("button[data-retest-at]")
    expect(retest).to_be_disabled()
    expect(retest).to_have_text(re.compile(r"Test again in \d+ min \d+ s"))
    assert console_errors(page) == []


def test_without_javascript_the_progress_page_refreshes_itself(
    browser: Any, web: WebFactory, smtp: SmtpFactory
) -> None:
    server = smtp("open")
    app = web(ports=(25, server.port), refresh_seconds=1)
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    try:
        page.goto(f"{app.url}/")
        with frozen(server) as release:
            page.fill("#target", server.address)
            page.click("button[type=submit]")
            page.wait_for_url(re.compile(r"/check/[A-Za-z0-9_-]+$"))
            expect(page.locator("h1")).to_contain_text("Testing")
            expect(page.locator("[data-events]")).not_to_have_attribute("data-live", "on")  # no script ran
            release.set()
        expect(page.locator("h1[data-verdict]")).to_have_text("Open relay", timeout=10_000)
        expect(page.locator("button[data-retest-at]")).to_have_text(re.compile(r"Test again after .* UTC"))
    finally:
        context.close()


def test_hostile_banner_and_replies_are_shown_as_text_never_run(
    page: Page, web: WebFactory, smtp: SmtpFactory
) -> None:
    # the certificate's common name is a payload too (x509 names are at most 64 characters)
    cert_payload = "<img src=x onerror=window.pwned=4>"
    cert = trustme.CA().issue_cert("mx.relay.test", common_name=cert_payload)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(tls)
    server = smtp(
        "closed",
        tls=tls,
        banner=f"mx.relay.test ESMTP {PAYLOAD}",
        deny_reply="554 5.7.1 <{rcpt}>: Relay access denied " + PAYLOAD,
    )
    app = web(ports=(25, server.port))
    done = app.run(server.address)
    assert done["verdict"] == "closed"
    assert cert_payload in done["report"]["targets"][0]["hygiene"]["tls"]["cert_subject"]
    page.goto(f"{app.url}/check/{done['id']}")
    expect(page.locator("h1[data-verdict]")).to_have_text("Not an open relay")
    expect(page.locator(".facts")).to_contain_text(f"220 mx.relay.test ESMTP {PAYLOAD}")
    expect(page.locator(".facts")).to_contain_text(cert_payload)
    expect(page.locator("table.probes")).to_contain_text("Relay access denied <script>window.pwned=1")
    for details in page.locator("details.transcript summary").all():
        details.click()
    expect(page.locator("details.transcript pre.smtp").first).to_contain_text(f"S: 220 mx.relay.test ESMTP {PAYLOAD}")
    assert page.evaluate("typeof window.pwned") == "undefined"
    assert "pwned" not in page.title()
    assert page.locator("img").count() == 0  # the <img onerror> is text, not an element
    assert page.locator("main script").count() == 0
    assert console_errors(page) == []


def test_hostile_banner_on_the_live_progress_page(page: Page, web: WebFactory) -> None:
    greeting = f"220 mx.relay.test ESMTP {PAYLOAD}\r\n".encode()
    with SilentServer(greeting=greeting) as server:  # greets, then never answers EHLO
        app = web(ports=(25, server.port), engine=replace(ENGINE, command_timeout=60.0))
        created = app.create(server.address).json()
        page.goto(f"{app.url}/check/{created['id']}")
        expect(page.locator(".lines li").first).to_contain_text("greeting: 220 mx.relay.test ESMTP <script>")
        expect(page.locator("[data-events]")).to_have_attribute("data-live", "on")
        assert page.evaluate("typeof window.pwned") == "undefined"
        # the server goes away: the check ends, and the page turns into the result by itself
        server.hang_up()
        expect(page.locator("h1[data-verdict]")).to_have_text("Inconclusive", timeout=15_000)
        page.locator("details.transcript summary").first.click()
        expect(page.locator("pre.smtp").first).to_contain_text(f"S: 220 mx.relay.test ESMTP {PAYLOAD}")
        assert page.evaluate("typeof window.pwned") == "undefined"
        assert "pwned" not in page.title()
        assert page.locator("img").count() == 0
        assert console_errors(page) == []


def test_readable_on_a_phone(browser: Any, web: WebFactory, smtp: SmtpFactory) -> None:
    """390 px wide (a common phone): no sideways scrolling, the verdict first, tables as cards."""
    server = smtp("open")
    app = web(ports=(25, server.port))
    done = app.run(server.address)
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True)
    page = context.new_page()
    try:
        page.goto(f"{app.url}/")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.goto(f"{app.url}/check/{done['id']}")
        expect(page.locator("h1[data-verdict]")).to_be_in_viewport()
        page.locator("details.transcript summary").first.click()  # long SMTP lines wrap, too
        page.locator("details.probes-details summary").first.click()
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        box = page.locator("table.probes thead").bounding_box()
        assert box is None or box["x"] < 0  # the column headings are off screen: each cell has a label
        first_label = page.evaluate(
            "getComputedStyle(document.querySelector('table.probes td'), '::before').content"
        )
        assert first_label == '"Probe"'
    finally:
        context.close()

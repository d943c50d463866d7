"""The web UI in a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright).

Also the UI under abuse and in daily use: pages that recover when event streams are refused or
the service goes away, the summary-first result page, report downloads, the greylisting wait
shown live, and WCAG contrast of the focus ring and the input borders (computed from the
rendered styles).

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
from pathlib import Path
from typing import Any

import pytest
import trustme
from playwright.sync_api import ConsoleMessage, Page, expect

from relaycheck.testing.servers import ServerThread

from .conftest import ENGINE, DnsFactory, SilentServer, SmtpFactory, WebFactory

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


# -- under abuse and in daily use -----------------------------------------------------------------


def test_refused_event_stream_falls_back_to_polling_and_shows_the_result(
    page: Page, web: WebFactory, smtp: SmtpFactory
) -> None:
    server = smtp("open")
    app = web(ports=(25, server.port), max_event_streams=0)  # every stream refused: 503 busy
    with frozen(server) as release:
        created = app.create(server.address).json()
        page.goto(f"{app.url}/check/{created['id']}")
        expect(page.locator("[data-events]")).to_have_attribute("data-live", "polling")
        release.set()
    expect(page.locator("h1[data-verdict]")).to_have_text("Open relay", timeout=20_000)


def test_progress_page_says_when_the_service_is_gone(page: Page, web: WebFactory) -> None:
    with SilentServer(greeting=b"220 mx.relay.test ESMTP\r\n") as server:  # greets, then never answers
        app = web(ports=(25, server.port), engine=replace(ENGINE, command_timeout=60.0))
        created = app.create(server.address).json()
        page.goto(f"{app.url}/check/{created['id']}")
        expect(page.locator("[data-events]")).to_have_attribute("data-live", "on")
        app.live.stop()  # the relaycheck service goes away under the open page
        lost = page.locator("#connection")
        expect(lost).to_be_visible(timeout=20_000)
        expect(lost).to_contain_text("not answering")
        expect(page.locator("[data-events]")).to_have_attribute("data-live", "polling")


def two_servers(web: WebFactory, smtp: SmtpFactory, dns_server: DnsFactory) -> tuple[Any, dict[str, Any]]:
    """A domain with two MX hosts, one open and one closed: the result of its check."""
    open_relay = smtp("open", host="127.0.0.1")
    smtp("closed", host="127.0.0.2", port=open_relay.port)
    records = {
        ("relay.test", "MX"): ["10 mx1.relay.test.", "20 mx2.relay.test."],
        ("mx1.relay.test", "A"): ["127.0.0.1"],
        ("mx2.relay.test", "A"): ["127.0.0.2"],
    }
    app = web(records=records, ports=(25, open_relay.port))
    return app, app.run("relay.test", port=open_relay.port)


def test_result_page_leads_with_the_summary_and_folds_the_evidence(
    page: Page, web: WebFactory, smtp: SmtpFactory, dns_server: DnsFactory
) -> None:
    app, done = two_servers(web, smtp, dns_server)
    page.goto(f"{app.url}/check/{done['id']}")
    servers = page.locator("article.target")
    expect(servers).to_have_count(2)
    first, second = servers.nth(0), servers.nth(1)
    expect(first.locator(".badge")).to_have_text("Open relay")
    expect(second.locator(".badge")).to_have_text("Not open")
    # the key evidence and the fix are on the page; the probe table and transcripts are folded
    expect(first.locator(".key-evidence")).to_be_visible()
    expect(first.locator(".key-evidence")).to_contain_text(re.compile(r"RCPT TO:<relaytest@outside-\w\.test>"))
    expect(first.locator(".key-evidence")).to_contain_text("S: 250")
    expect(second.locator(".key-evidence")).to_contain_text("Relay access denied")
    expect(first.locator(".advice")).to_be_visible()
    expect(first.locator(".advice")).to_contain_text("What to do")
    for folded in ("table.probes", "details.transcript pre"):
        for index in range(2):
            expect(servers.nth(index).locator(folded).first).to_be_hidden()
    # the whole answer is on one short page (it was ~9,000 px with everything open)
    assert page.evaluate("document.documentElement.scrollHeight") < 3000
    first.locator("details.probes-details summary").click()
    expect(first.locator("table.probes")).to_be_visible()
    expect(first.locator("table.probes tr.outcome-bad").first).to_contain_text("accepted")
    assert console_errors(page) == []


def test_folded_evidence_opens_without_javascript(
    browser: Any, web: WebFactory, smtp: SmtpFactory, dns_server: DnsFactory
) -> None:
    app, done = two_servers(web, smtp, dns_server)
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        page.goto(f"{app.url}/check/{done['id']}")
        table = page.locator("table.probes").first
        expect(table).to_be_hidden()
        page.locator("details.probes-details summary").first.click()
        expect(table).to_be_visible()
        page.locator("details.transcript summary").first.click()
        expect(page.locator("details.transcript pre.smtp").first).to_contain_text("C: EHLO")
    finally:
        context.close()


def test_printed_result_is_the_summary_without_the_site_chrome(
    page: Page, web: WebFactory, smtp: SmtpFactory, dns_server: DnsFactory
) -> None:
    app, done = two_servers(web, smtp, dns_server)
    page.goto(f"{app.url}/check/{done['id']}")
    page.emulate_media(media="print")
    for chrome in ("header.site", "footer.site", ".actions"):
        expect(page.locator(chrome).first).to_be_hidden()
    expect(page.locator("h1[data-verdict]")).to_be_visible()
    expect(page.locator(".key-evidence").first).to_be_visible()
    pdf = page.pdf()  # printing itself works (Chromium's print path, with the print stylesheet)
    assert pdf.startswith(b"%PDF")


def test_reports_download_as_html_and_markdown(
    page: Page, web: WebFactory, smtp: SmtpFactory, dns_server: DnsFactory, tmp_path: Path
) -> None:
    app, done = two_servers(web, smtp, dns_server)
    page.goto(f"{app.url}/check/{done['id']}")
    texts: dict[str, str] = {}
    for label, suffix in (("Download report (HTML)", ".html"), ("Download report (Markdown)", ".md")):
        with page.expect_download() as info:
            page.get_by_role("link", name=label).click()
        download = info.value
        assert download.suggested_filename.startswith("relaycheck-relay.test-")
        assert download.suggested_filename.endswith(suffix)
        saved = tmp_path / download.suggested_filename
        download.save_as(saved)
        texts[suffix] = saved.read_text()
    for text in texts.values():
        assert "mx1.relay.test" in text and "mx2.relay.test" in text
        assert "relaytest@outside-a.test" in text  # the evidence
    assert texts[".html"].lower().startswith("<!doctype html>")
    assert "RCPT TO:&lt;relaytest@outside-a.test&gt;" in texts[".html"]  # escaped, as in the CLI's report
    assert texts[".md"].startswith("#")


def test_greylisting_retries_are_shown_live_and_the_server_concludes(
    page: Page, web: WebFactory, smtp: SmtpFactory
) -> None:
    server = smtp("greylisting", greylist_delay=4.0)
    app = web(ports=(25, server.port), engine=replace(ENGINE, retry_budget=120))
    created = app.create(server.address).json()
    page.goto(f"{app.url}/check/{created['id']}")
    retry = page.locator(".target-progress [data-role=retry]")
    expect(retry).to_be_visible(timeout=20_000)
    expect(retry).to_contain_text(re.compile(r"Greylisted: \d+ probes? deferred"))
    expect(retry).to_contain_text(re.compile(r"Retry \d+"))
    expect(retry).to_contain_text("keeps retrying until")
    expect(page.get_by_role("status").first).to_contain_text("greylisting")
    # the greylisting clears within the budget: the page turns into the verdict by itself
    expect(page.locator("h1[data-verdict]")).to_have_text("Open relay", timeout=60_000)
    page.locator("details.probes-details summary").first.click()
    expect(page.locator("table.probes .attempts").first).to_contain_text(re.compile(r"after \d+ attempts"))
    assert not re.search(r"--[a-z]", page.locator("main").inner_text())
    assert console_errors(page) == []


CONTRAST = """
([selector, property]) => {
  function rgb(text) { return text.match(/[\\d.]+/g).slice(0, 3).map(Number); }
  function luminance([r, g, b]) {
    const c = [r, g, b].map(v => v / 255).map(v => v <= 0.04045 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4);
    return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
  }
  function background(element) {
    for (let e = element.parentElement; e; e = e.parentElement) {
      const colour = getComputedStyle(e).backgroundColor;
      if (!/rgba\\(.*, 0\\)$/.test(colour) && colour !== "transparent") { return colour; }
    }
    return "rgb(255, 255, 255)";
  }
  const element = document.querySelector(selector);
  const a = luminance(rgb(getComputedStyle(element)[property]));
  const b = luminance(rgb(background(element)));
  return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
}
"""


def test_focus_ring_and_input_borders_have_3_to_1_contrast(page: Page, web: WebFactory) -> None:
    app = web()
    page.goto(f"{app.url}/")
    page.keyboard.press("Tab")  # the skip link
    page.keyboard.press("Tab")  # the brand link
    page.keyboard.press("Tab")  # the input (keyboard focus: :focus-visible)
    page.locator("#target").focus()
    expect(page.locator("#target")).to_be_focused()
    assert page.evaluate("getComputedStyle(document.querySelector('#target')).outlineStyle") == "solid"
    assert page.evaluate("parseFloat(getComputedStyle(document.querySelector('#target')).outlineWidth)") >= 2
    ring = page.evaluate(CONTRAST, ["#target", "outlineColor"])
    border = page.evaluate(CONTRAST, ["#port", "borderTopColor"])
    assert ring >= 3.0, ring
    assert border >= 3.0, border
    button = page.evaluate(CONTRAST, ["form.check button", "backgroundColor"])
    assert button >= 3.0, button

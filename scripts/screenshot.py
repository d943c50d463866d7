#!/usr/bin/env python3
"""Take the README's screenshot of a result page: docs/screenshot-result.png.

Everything is local: a loopback DNS server publishes two MX hosts for ``relay.test`` (one an
open relay, one closed, both aiosmtpd behaviour servers on loopback), ``relaycheck serve``'s app
runs with --allow-private in a thread, and Debian's Chromium (/usr/bin/chromium) renders the
result page through Playwright. The servers use port 25 on 127.0.2.x when they can bind it
(root), so the picture shows the usual port.

    .venv/bin/python scripts/screenshot.py                     # docs/screenshot-result.png
    .venv/bin/python scripts/screenshot.py --width 390 --out /tmp/phone.png --full-page
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/support: the live server is test tooling
from relaycheck.testing.dnsserver import DnsServerThread
from relaycheck.testing.servers import ServerThread
from relaycheck.web import Settings, create_app
from relaycheck.web.settings import web_engine_options
from tests.support.live import LiveServer

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
ROOT = Path(__file__).resolve().parent.parent


def start(behaviour: str, host: str, port: int) -> ServerThread:
    """A behaviour server on port 25 when we may bind it (root, port free), else on any port."""
    try:
        return ServerThread(behaviour, host=host, port=port).start()
    except OSError:
        return ServerThread(behaviour, host=host, port=0).start()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshot-result.png")
    parser.add_argument("--width", type=int, default=1100)
    parser.add_argument("--height", type=int, default=1000)
    parser.add_argument("--full-page", action="store_true", help="the whole page, not one screen")
    parser.add_argument("--open-details", action="store_true", help="expand the first transcript")
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        print(f"screenshot: {CHROMIUM} is missing (apt-get install chromium)", file=sys.stderr)
        return 2

    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        open_relay = start("open", "127.0.2.1", 25)
        stack.callback(open_relay.stop)
        port = open_relay.port
        closed = start("closed", "127.0.2.2", port)
        stack.callback(closed.stop)
        records = {
            ("relay.test", "MX"): ["10 mx1.relay.test.", "20 mx2.relay.test."],
            ("mx1.relay.test", "A"): ["127.0.2.1"],
            ("mx2.relay.test", "A"): ["127.0.2.2"],
        }
        with DnsServerThread(records) as dns:
            engine = replace(web_engine_options(), helo="relaycheck.example.net")
            settings = Settings(
                db_url=str(Path(tmp) / "web.db"),
                allow_private=True,
                resolver=dns.address,
                ports=(25, 465, 587, port),
                engine=engine,
            )
            with LiveServer(create_app(settings)) as live, sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": args.width, "height": args.height})
                page.goto(f"{live.url}/")
                page.fill("#target", "relay.test")
                if port != 25:
                    page.select_option("#port", str(port))
                page.click("button[type=submit]")
                page.wait_for_selector("h1[data-verdict]", timeout=30_000)
                if args.open_details:
                    page.click("details.transcript summary >> nth=0")
                args.out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(args.out), full_page=args.full_page)
                height = page.evaluate("document.documentElement.scrollHeight")
                browser.close()
    print(f"screenshot: wrote {args.out} (the page is {height} px tall at {args.width} px wide)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

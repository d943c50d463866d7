"""Abuse controls: requests per minute, running tests per client and in total, one running test per
target, the cooldown, and client identity behind a trusted proxy.

Checks of a ``SilentServer`` (it accepts and never greets) stay running for the whole test, so
the limits are met deterministically; the app cancels them when it stops.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

import httpx
import pytest

from relaycheck.web.limits import RateLimiter, client_key

from .conftest import SilentServer, SmtpFactory, WebFactory, client_for


def test_requests_per_minute_per_client_get_429_with_retry_after(web: WebFactory) -> None:
    app = web(requests_per_minute=5)
    assert [app.client.get("/").status_code for _ in range(5)] == [200] * 5
    page = app.client.get("/")
    assert page.status_code == 429
    assert 1 <= int(page.headers["retry-after"]) <= 12  # one request comes back every 12 s
    assert page.headers["content-type"].startswith("text/html")
    assert "Too many requests" in page.text and 'class="site"' in page.text  # inside the site layout
    assert f"Try again in {page.headers['retry-after']} second" in page.text  # with the wait
    api = app.client.get("/api/v1/checks", params={"target": "example.com"})
    assert api.status_code == 429 and api.json()["error"] == "rate-limited"
    assert "retry-after" in api.headers
    assert app.client.get("/static/style.css").status_code == 200  # assets are not counted
    with client_for(app, "127.0.0.2") as other:  # another client address has its own budget
        assert other.get("/").status_code == 200


def test_running_tests_per_client_are_limited(web: WebFactory) -> None:
    with SilentServer() as first, SilentServer() as second:
        app = web(ports=(25, first.port, second.port), max_running_per_client=1)
        assert app.create(first.address).status_code == 202
        refused = app.create(second.address)
        assert refused.status_code == 429
        assert refused.json()["error"] == "rate-limited"
        assert int(refused.headers["retry-after"]) >= 1
        with client_for(app, "127.0.0.2") as other:
            assert other.post("/api/v1/checks", json={"target": second.address}).status_code == 202


def test_running_tests_in_total_are_limited(web: WebFactory) -> None:
    with SilentServer() as first, SilentServer() as second:
        app = web(ports=(25, first.port, second.port), max_running=1)
        assert app.create(first.address).status_code == 202
        with client_for(app, "127.0.0.2") as other:
            busy = other.post("/api/v1/checks", json={"target": second.address})
        assert busy.status_code == 503
        assert busy.json()["error"] == "busy"
        assert int(busy.headers["retry-after"]) >= 1


def test_one_running_test_per_target_is_shared(web: WebFactory) -> None:
    with SilentServer() as server:
        app = web(ports=(25, server.port), max_running_per_client=1)
        first = app.create(server.address)
        assert first.status_code == 202
        again = app.create(server.address)
        assert again.status_code == 200
        assert again.json()["reused"] is True and again.json()["id"] == first.json()["id"]
        assert again.json()["status"] in ("queued", "running")
        # joining does not count against anybody's limit, and another client joins too
        with client_for(app, "127.0.0.2") as other:
            joined = other.post("/api/v1/checks", json={"target": server.address})
        assert joined.json()["id"] == first.json()["id"]


def test_simultaneous_requests_for_one_target_start_one_test(web: WebFactory) -> None:
    with SilentServer() as server:
        records = {("mail.relay.test", "A"): ["127.0.0.1"]}
        app = web(records=records, ports=(25, server.port), max_running_per_client=10)
        answers: list[httpx.Response] = []
        gate = threading.Barrier(6)

        def ask() -> None:
            with client_for(app, "127.0.0.1") as client:
                gate.wait()
                answers.append(client.post("/api/v1/checks", json={"target": f"mail.relay.test:{server.port}"}))

        threads = [threading.Thread(target=ask) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert len({a.json()["id"] for a in answers}) == 1
        assert sorted(a.status_code for a in answers) == [200] * 5 + [202]


def test_a_recent_result_is_returned_during_the_cooldown(web: WebFactory, smtp: SmtpFactory) -> None:
    server = smtp("open")
    app = web(ports=(25, server.port), cooldown=300)
    done = app.run(server.address)
    again = app.create(server.address)
    assert again.status_code == 200 and again.json()["reused"] is True
    assert again.json()["id"] == done["id"] and again.json()["status"] == "done"
    finished = datetime.fromisoformat(done["finished"])
    retest_after = datetime.fromisoformat(again.json()["retest_after"])
    assert retest_after - finished == timedelta(seconds=300)

    page = app.client.get(f"/check/{done['id']}").text
    assert "disabled data-retest-at=" in page
    retest = app.client.post(f"/check/{done['id']}/retest")
    assert retest.status_code == 303 and retest.headers["location"] == f"/check/{done['id']}?reused=1"


def test_retest_after_the_cooldown_starts_a_new_test(web: WebFactory, smtp: SmtpFactory) -> None:
    server = smtp("closed")
    app = web(ports=(25, server.port), cooldown=0)
    done = app.run(server.address)
    assert done["retest_after"] is None
    page = app.client.get(f"/check/{done['id']}").text
    assert "data-retest-at" not in page
    retest = app.client.post(f"/check/{done['id']}/retest")
    assert retest.status_code == 303 and retest.headers["location"] != f"/check/{done['id']}"
    new_id = retest.headers["location"].rsplit("/", 1)[1]
    app.wait(new_id)
    page = app.client.get(f"/check/{new_id}").text
    assert f"Earlier tests of this server <span class=\"sub\">({server.address})</span>" in page  # same server
    assert f'<a href="/check/{done["id"]}">view</a>' in page and "this test" in page


def test_forwarded_for_is_believed_only_from_a_trusted_proxy(web: WebFactory) -> None:
    proxied = web(trusted_proxies=("127.0.0.1",), requests_per_minute=2)
    first = {"X-Forwarded-For": "198.51.100.7"}
    assert [proxied.client.get("/", headers=first).status_code for _ in range(3)] == [200, 200, 429]
    assert proxied.client.get("/", headers={"X-Forwarded-For": "198.51.100.8"}).status_code == 200
    # a client cannot pick its own identity: only the hop the proxy appended counts
    spoofed = {"X-Forwarded-For": "203.0.113.99, 198.51.100.7"}
    assert proxied.client.get("/", headers=spoofed).status_code == 429

    direct = web(requests_per_minute=2)  # no trusted proxy: the header is ignored
    statuses = [direct.client.get("/", headers={"X-Forwarded-For": f"198.51.100.{n}"}).status_code for n in range(3)]
    assert statuses == [200, 200, 429]


@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted", "key"),
    [
        ("192.0.2.1", None, (), "192.0.2.1"),
        ("192.0.2.1", "198.51.100.7", (), "192.0.2.1"),
        ("10.0.0.2", "198.51.100.7", ("10.0.0.0/8",), "198.51.100.7"),
        ("10.0.0.2", "1.1.1.1, 198.51.100.7, 10.0.0.3", ("10.0.0.0/8",), "198.51.100.7"),
        ("2001:db8:1:2:3:4:5:6", None, (), "2001:db8:1:2::/64"),
        ("2001:db8:1:2::99", None, (), "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.1", None, (), "192.0.2.1"),
    ],
)
def test_client_key(peer: str, forwarded: str | None, trusted: tuple[str, ...], key: str) -> None:
    assert client_key(peer, forwarded, trusted) == key


def test_rate_limiter_refills_continuously() -> None:
    now = [1000.0]
    limiter = RateLimiter(6, clock=lambda: now[0])  # one request every 10 s, bursts of 6
    assert [limiter.take("a") for _ in range(6)] == [0.0] * 6
    assert limiter.take("a") == pytest.approx(10.0)
    assert limiter.take("b") == 0.0
    now[0] += 10.0
    assert limiter.take("a") == 0.0
    assert limiter.take("a") == pytest.approx(10.0)

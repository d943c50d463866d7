"""Abuse and daily-use gaps of the web service, over HTTP against a live loopback server:
body cap, per-address cooldown, posts from other sites, bad ports, stream caps, IDN and pasted
URLs or addresses, OpenAPI error bodies, web-phrased advice."""

from __future__ import annotations

import logging
import re
import select
import socket
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from relaycheck.web.guard import understand

from .conftest import ENGINE, SilentServer, SmtpFactory, WebFactory, client_for, sse_events

BIG = 50 * 1024 * 1024


def raw_request(url: str, head: str, body_parts: list[bytes]) -> bytes:
    """Send ``head`` and then ``body_parts`` on one socket, stop sending as soon as the server
    answers, and return what it answered (the server must answer before the body is complete)."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(head.encode())
        pending = b"".join(body_parts[:1])
        rest = iter(body_parts[1:])
        while pending:
            readable, writable, _ = select.select([sock], [sock], [], 10)  # the deadline
            assert readable or writable, "the server neither answered nor read"
            if readable:
                break
            try:
                sent = sock.send(pending)
            except (BrokenPipeError, ConnectionResetError):
                break
            pending = pending[sent:] or next(rest, b"")
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)  # the socket timeout is the deadline
            if not chunk:
                break
            answer += chunk
        return answer


@pytest.mark.parametrize(("path", "kind"), [("/api/v1/checks", "application/json"), ("/check", "text/html")])
def test_large_bodies_are_refused_before_they_are_read(web: WebFactory, path: str, kind: str) -> None:
    app = web(max_body_bytes=4096)
    host = f"Host: {urlsplit(app.url).netloc}\r\n"
    # announced: refused at once, although not one byte of the body was sent
    announced = raw_request(
        app.url, f"POST {path} HTTP/1.1\r\n{host}Content-Type: application/json\r\nContent-Length: {BIG}\r\n\r\n", []
    )
    assert announced.startswith(b"HTTP/1.1 413 ")
    assert f"content-type: {kind}".encode() in announced.lower()
    # chunked, no Content-Length: refused once the cap is passed, long before the end
    chunk = b"2000\r\n" + b"x" * 0x2000 + b"\r\n"
    chunked = raw_request(
        app.url,
        f"POST {path} HTTP/1.1\r\n{host}Content-Type: application/x-www-form-urlencoded\r\n"
        "Transfer-Encoding: chunked\r\n\r\n",
        [chunk] * (BIG // 0x2000),  # never finished with the closing 0-chunk
    )
    assert chunked.startswith(b"HTTP/1.1 413 ")
    # a body under the cap still works
    assert app.client.post("/api/v1/checks", json={"target": "x" * 300}).status_code == 422


def test_a_body_that_trickles_is_cut_off(web: WebFactory) -> None:
    app = web(body_seconds=0.5)
    host = f"Host: {urlsplit(app.url).netloc}\r\n"
    head = f"POST /api/v1/checks HTTP/1.1\r\n{host}Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    answer = raw_request(app.url, head + '{"target": ', [])  # 11 of 100 bytes, then nothing
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b"content-type: application/json" in answer.lower()


def test_one_cooldown_and_history_per_address_whatever_the_name(
    web: WebFactory, smtp: SmtpFactory, caplog: pytest.LogCaptureFixture
) -> None:
    server = smtp("closed")
    records = {
        ("alias1.relay.test", "A"): ["127.0.0.1"],
        ("alias2.relay.test", "A"): ["127.0.0.1"],
        ("*.wild.relay.test", "A"): ["127.0.0.1"],  # a wildcard record: any name below it
    }
    app = web(records=records, ports=(25, server.port), cooldown=300)
    first = app.run(f"alias1.relay.test:{server.port}")
    assert first["target"] == f"127.0.0.1:{server.port}"
    for other in (
        f"alias2.relay.test:{server.port}",
        f"anything.wild.relay.test:{server.port}",
        f"something-else.wild.relay.test:{server.port}",
        f"[::ffff:127.0.0.1]:{server.port}",
        f"127.0.0.1:{server.port}",
    ):
        again = app.create(other)
        assert again.status_code == 200, (other, again.text)
        assert again.json()["reused"] is True and again.json()["id"] == first["id"], other
    history = app.client.get("/api/v1/checks", params={"target": f"alias2.relay.test:{server.port}"}).json()
    assert history["target"] == f"127.0.0.1:{server.port}"
    assert [c["id"] for c in history["checks"]] == [first["id"]]
    timeline = app.client.get("/api/v1/history", params={"target": f"x.wild.relay.test:{server.port}"}).json()
    assert timeline["target"] == f"127.0.0.1:{server.port}"
    assert [r["id"] for r in timeline["runs"]] == [first["id"]]


def test_a_domain_leaves_out_an_address_tested_moments_ago(web: WebFactory, smtp: SmtpFactory) -> None:
    one = smtp("closed", host="127.0.0.1")
    two = smtp("closed", host="127.0.0.2", port=one.port)
    records = {
        ("relay.test", "MX"): ["10 mx1.relay.test.", "20 mx2.relay.test."],
        ("mx1.relay.test", "A"): ["127.0.0.1"],
        ("mx2.relay.test", "A"): ["127.0.0.2"],
    }
    app = web(records=records, ports=(25, one.port), cooldown=300)
    single = app.run(f"mx1.relay.test:{one.port}")
    domain = app.run("relay.test", port=one.port)
    assert domain["id"] != single["id"]
    assert [t["address"] for t in domain["plan"]["targets"]] == ["127.0.0.2"]
    problems = domain["plan"]["problems"]
    assert len(problems) == 1 and "was tested moments ago" in problems[0]["problem"]
    assert problems[0]["input"] == "mx1.relay.test"
    assert two.port == one.port


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Referer": "http://evil.example/form.html"},
        {"Sec-Fetch-Site": "same-site", "Origin": "http://evil.relay.test"},
        {"Sec-Fetch-Site": "cross-site"},
    ],
)
def test_posts_from_other_sites_are_refused(web: WebFactory, headers: dict[str, str]) -> None:
    app = web()
    form = app.client.post("/check", data={"target": "example.com", "port": "25"}, headers=headers)
    assert form.status_code == 403 and 'class="site"' in form.text
    api = app.client.post("/api/v1/checks", json={"target": "example.com"}, headers=headers)
    assert api.status_code == 403 and api.json() == {"error": "forbidden", "message": api.json()["message"]}


def test_posts_from_our_own_pages_are_accepted(web: WebFactory, smtp: SmtpFactory) -> None:
    server = smtp("open")
    app = web(ports=(25, server.port))
    own = app.url
    for headers in ({"Origin": own}, {"Referer": f"{own}/"}, {"Sec-Fetch-Site": "same-origin", "Origin": own}, {}):
        posted = app.client.post("/check", data={"target": server.address, "port": "25"}, headers=headers)
        assert posted.status_code == 303, (headers, posted.text)


@pytest.mark.parametrize("port", ["²", "٣", "25x", "-25", "99999999"])
def test_a_bad_port_in_the_form_is_a_clear_400(
    web: WebFactory, port: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = web()
    with caplog.at_level(logging.ERROR, logger="relaycheck.web"):
        response = app.client.post("/check", data={"target": "example.com", "port": port})
    assert response.status_code == 400
    assert "Choose the port from the list" in response.text
    assert 'value="example.com"' in response.text  # what was typed is kept
    assert not [r for r in caplog.records if r.name == "relaycheck.web"]  # nothing unexpected happened


def test_event_streams_are_capped_per_client_and_in_all(web: WebFactory) -> None:
    with SilentServer() as server:
        app = web(ports=(25, server.port), max_streams_per_client=2, max_event_streams=3)
        check_id = app.create(server.address).json()["id"]
        url = f"/api/v1/checks/{check_id}/events"
        with app.client.stream("GET", url) as a, app.client.stream("GET", url) as b:
            assert a.status_code == b.status_code == 200
            third = app.client.get(url)
            assert third.status_code == 429 and third.json()["error"] == "rate-limited"
            assert "retry-after" in third.headers
            with client_for(app, "127.0.0.2") as other, other.stream("GET", url) as c:
                assert c.status_code == 200  # another client still gets one
                with client_for(app, "127.0.0.3") as late:
                    full = late.get(url)
                assert full.status_code == 503 and full.json()["error"] == "busy"
        # the page's fallback: the check resource answers whatever the streams do
        assert app.client.get(f"/api/v1/checks/{check_id}").json()["status"] in ("queued", "running")


def test_finished_streams_give_their_slots_back(web: WebFactory, smtp: SmtpFactory) -> None:
    server = smtp("closed")
    app = web(ports=(25, server.port), max_streams_per_client=1, max_event_streams=1)
    done = app.run(server.address)
    for _ in range(3):  # each ends with "done" and frees the only slot for the next
        answer = app.client.get(f"/api/v1/checks/{done['id']}/events")
        assert answer.status_code == 200 and "event: done" in answer.text


@pytest.mark.parametrize(
    ("pasted", "understood"),
    [
        ("https://mail.example.com/owa/", "mail.example.com"),
        ("smtp://mx.example.com:587", "mx.example.com:587"),
        ("postmaster@example.com", "example.com"),
        ("Postmaster <postmaster@example.com>", "example.com"),
        ("mailto:postmaster@example.com?subject=hi", "example.com"),
        ("example.com/some/path", "example.com"),
        ("  example.com  ", "example.com"),
        ("[2001:db8::1]:25", "[2001:db8::1]:25"),
        ("192.0.2.1", "192.0.2.1"),
    ],
)
def test_urls_and_mail_addresses_are_understood(pasted: str, understood: str) -> None:
    assert understand(pasted) == understood


def test_idn_names_are_accepted_and_shown_in_both_forms(web: WebFactory, smtp: SmtpFactory) -> None:
    server = smtp("closed")
    records = {
        ("xn--bcher-kva.test", "MX"): ["10 mx.xn--bcher-kva.test."],
        ("mx.xn--bcher-kva.test", "A"): ["127.0.0.1"],
    }
    app = web(records=records, ports=(25, server.port))
    done = app.run("https://bücher.test/", port=server.port)
    assert done["input"] == "bücher.test"
    assert [t["host"] for t in done["plan"]["targets"]] == ["mx.xn--bcher-kva.test"]
    page = app.client.get(f"/check/{done['id']}").text
    assert "bücher.test (xn--bcher-kva.test)" in page
    assert "mx.bücher.test (mx.xn--bcher-kva.test)" in page
    # the mail address of the same domain is the same server: the recent result
    again = app.create("postmaster@bücher.test", port=server.port)
    assert again.json()["id"] == done["id"]


def test_openapi_error_schemas_match_the_real_error_bodies(web: WebFactory) -> None:
    app = web(max_body_bytes=1024)
    document = app.client.get("/api/v1/openapi.json").json()
    assert "HTTPValidationError" not in document.get("components", {}).get("schemas", {})
    error_schema = document["components"]["schemas"]["ErrorOut"]
    assert set(error_schema["properties"]) == {"error", "message"}
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            for status, answer in operation["responses"].items():
                if int(status) >= 400:
                    ref = answer["content"]["application/json"]["schema"]["$ref"]
                    assert ref.endswith("/ErrorOut"), (method, path, status)
            assert "429" in operation["responses"], (method, path)
    real: list[httpx.Response] = [
        app.client.get("/api/v1/checks/nosuchcheck"),  # 404
        app.client.post("/api/v1/checks", json={"target": ""}),  # 422 validation
        app.client.post("/api/v1/checks", json={"target": "not a host!"}),  # 400
        app.client.post("/api/v1/checks", content=b"{" + b" " * 2000 + b"}"),  # 413
        app.client.post("/api/v1/checks", json={"target": "example.com"}, headers={"Origin": "http://x.test"}),
        app.client.get("/api/v1/checks", params={"target": "example.com", "port": "x"}),  # 422
    ]
    assert [r.status_code for r in real] == [404, 422, 400, 413, 403, 422]
    for response in real:
        body: Any = response.json()
        assert set(body) == {"error", "message"} and all(isinstance(v, str) for v in body.values())


def test_head_of_the_home_page_is_200(web: WebFactory) -> None:
    app = web()
    head = app.client.head("/")
    assert head.status_code == 200 and head.headers["content-type"].startswith("text/html")
    assert head.content == b""


def test_greylisted_server_concludes_and_no_command_line_advice_is_shown(
    web: WebFactory, smtp: SmtpFactory
) -> None:
    # greylisting that outlasts the (short) budget: inconclusive, advice phrased for the web
    stubborn = smtp("greylisting", greylist_delay=3600.0)
    app = web(ports=(25, stubborn.port), engine=replace(ENGINE, retry_budget=1.5))
    check_id = app.create(stubborn.address).json()["id"]
    events = sse_events(app.client.get(f"/api/v1/checks/{check_id}/events").text)
    waits = [t["retry"] for name, data in events if name == "progress" for t in data["targets"] if t["retry"]]
    assert waits, "the live progress never showed the greylisting wait"
    assert waits[0]["attempt"] == 1 and waits[0]["deferred"] > 0 and waits[0]["wait_s"] > 0
    assert set(waits[0]) == {"attempt", "deferred", "wait_s", "at", "budget_ends"}
    done = app.client.get(f"/api/v1/checks/{check_id}").json()
    assert done["verdict"] == "inconclusive"
    target = done["report"]["targets"][0]
    assert any(o["attempts"] > 1 for o in target["observations"])  # the service retried by itself
    page = app.client.get(f"/check/{done['id']}").text
    assert not re.search(r"--[a-z]", page), re.findall(r".{60}--[a-z].{40}", page)
    assert "The service already retried the deferred attempts for 1.5 s" in page
    # greylisting that clears within the budget: the server concludes (an open relay here)
    clears = smtp("greylisting", greylist_delay=0.5)
    app2 = web(ports=(25, clears.port), engine=replace(ENGINE, retry_budget=60))
    assert app2.run(clears.address)["verdict"] == "open"


def test_result_page_says_what_took_how_long_and_counts_the_real_probes(web: WebFactory, smtp: SmtpFactory) -> None:
    server = smtp("closed")
    app = web(ports=(25, server.port))
    check_id = app.create(server.address).json()["id"]
    events = sse_events(app.client.get(f"/api/v1/checks/{check_id}/events").text)
    last_progress = [data for name, data in events if name == "progress"][-1]["targets"][0]
    done = app.client.get(f"/api/v1/checks/{check_id}").json()
    count = len(done["report"]["targets"][0]["observations"])
    assert last_progress["state"] == "done"
    assert last_progress["done"] == last_progress["expected"] == count  # not the estimate
    page = app.client.get(f"/check/{check_id}").text
    took = re.search(r"<dt>Took</dt><dd>([^<]+)</dd>", page)
    assert took is not None and took.group(1) != "0.0 s"
    assert re.fullmatch(r"\d+ ms|\d+(\.\d)? s|under 1 ms", took.group(1))
    assert f"all {count} probes" in page

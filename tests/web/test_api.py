"""The JSON API and the no-JavaScript page flow, over HTTP against a live loopback server."""

from __future__ import annotations

import asyncio
import re
import threading
from typing import Any

import pytest

from relaycheck.api import CheckOptions, check
from relaycheck.model import SCHEMA_VERSION
from relaycheck.render.json import report_dict
from relaycheck.web.runner import web_options

from .conftest import ENGINE, DnsFactory, SilentServer, SmtpFactory, WebFactory, sse_events


def keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: keys(v) for k, v in value.items() if isinstance(v, dict | list)} | {"": sorted(value)}
    if isinstance(value, list):
        return [keys(value[0])] if value else []
    return None


def test_check_lifecycle_and_report_in_the_cli_schema(web: WebFactory, smtp: SmtpFactory) -> None:
    server = smtp("open")
    app = web(ports=(25, 465, 587, server.port))
    created = app.create(server.address)
    assert created.status_code == 202
    body = created.json()
    assert created.headers["location"] == f"/api/v1/checks/{body['id']}"
    assert body["status"] in ("queued", "running")
    assert body["reused"] is False
    assert body["report"] is None
    assert [t["address"] for t in body["plan"]["targets"]] == ["127.0.0.1"]

    done = app.wait(body["id"])
    assert done["status"] == "done"
    assert done["verdict"] == "open"
    report = done["report"]
    assert report["schema_version"] == SCHEMA_VERSION
    assert report["mode"] == "probe"
    assert report["targets"][0]["verdict"]["verdict"] == "open"

    # The same report as `relaycheck check --json` (api.check + render.json) for the same server.
    options = CheckOptions(engine=web_options(app.settings, data_probe=False))
    result: list[dict[str, Any]] = []
    thread = threading.Thread(target=lambda: result.append(report_dict(asyncio.run(check(server.address, options)))))
    thread.start()
    thread.join(timeout=30)
    cli = result[0]
    assert keys(report) == keys(cli)
    ours, theirs = report["targets"][0], cli["targets"][0]
    assert ours["target"] == theirs["target"]
    assert [(o["probe_id"], o["outcome"]) for o in ours["observations"]] == [
        (o["probe_id"], o["outcome"]) for o in theirs["observations"]
    ]


def test_event_stream_reports_progress_per_target_then_done(web: WebFactory, smtp: SmtpFactory) -> None:
    server = smtp("closed")
    app = web(ports=(25, server.port))
    check_id = app.create(server.address).json()["id"]
    stream = app.client.get(f"/api/v1/checks/{check_id}/events")
    assert stream.headers["x-accel-buffering"] == "no"
    events = sse_events(stream.text)
    assert events[-1] == ("done", {"status": "done"})
    progress = [data for name, data in events if name == "progress"]
    # progress arrives coalesced; the last one before done shows the finished target and its verdict
    last = progress[-1]["targets"][0]
    assert last["state"] == "done" and last["verdict"] == "closed"
    assert last["done"] == last["expected"] > 20
    assert last["lines"] and all(isinstance(line, str) for line in last["lines"])  # the latest exchanges
    # a finished check's stream says done at once
    assert sse_events(app.client.get(f"/api/v1/checks/{check_id}/events").text) == [("done", {"status": "done"})]


def test_history_lists_checks_of_the_same_target_newest_first(web: WebFactory, smtp: SmtpFactory) -> None:
    server = smtp("closed")
    app = web(ports=(25, server.port), cooldown=0)
    first = app.run(server.address)
    second = app.run(server.address)
    assert first["id"] != second["id"]
    history = app.client.get("/api/v1/checks", params={"target": server.address}).json()
    assert history["target"] == server.address
    assert [c["id"] for c in history["checks"]] == [second["id"], first["id"]]
    assert {c["verdict"] for c in history["checks"]} == {"closed"}
    assert "report" not in history["checks"][0]
    # another target has its own (empty) history
    other = app.client.get("/api/v1/checks", params={"target": "127.0.0.1", "port": 25}).json()
    assert other == {"target": "127.0.0.1:25", "checks": []}


def test_domain_is_expanded_through_mx_and_each_mx_tested(
    web: WebFactory, smtp: SmtpFactory
) -> None:
    relay = smtp("open", host="127.0.0.1")
    closed = smtp("closed", host="127.0.0.2", port=relay.port)
    assert closed.port == relay.port
    records = {
        ("relay.test", "MX"): ["10 mx1.relay.test.", "20 mx2.relay.test."],
        ("mx1.relay.test", "A"): ["127.0.0.1"],
        ("mx2.relay.test", "A"): ["127.0.0.2"],
    }
    app = web(records=records, ports=(25, relay.port))
    done = app.run("relay.test", port=relay.port)
    assert done["verdict"] == "open"
    targets = [
        (t["target"]["host"], t["target"]["address"], t["verdict"]["verdict"]) for t in done["report"]["targets"]
    ]
    assert targets == [("mx1.relay.test", "127.0.0.1", "open"), ("mx2.relay.test", "127.0.0.2", "closed")]
    assert done["report"]["summary"]["exit_code"] == 1


def test_the_name_is_resolved_once_and_the_checked_address_is_connected(
    web: WebFactory, smtp: SmtpFactory, dns_server: DnsFactory
) -> None:
    """DNS rebinding: the second answer must not matter, the engine never asks again."""
    server = smtp("closed", host="127.0.0.1")
    resolver = dns_server({("mail.relay.test", "A"): ["127.0.0.1"]})
    app = web(dns=resolver, ports=(25, server.port))
    created = app.create(f"mail.relay.test:{server.port}").json()
    resolver.records[("mail.relay.test", "A")] = ["127.0.0.3"]  # the rebinding answer
    done = app.wait(created["id"])
    assert done["report"]["targets"][0]["target"]["address"] == "127.0.0.1"
    assert done["verdict"] == "closed"
    assert resolver.queries.count(("mail.relay.test", "A")) == 1


@pytest.mark.parametrize(
    ("target", "status", "code", "words"),
    [
        ("", 422, "invalid-request", "target"),
        ("not a host!", 400, "invalid-target", "not a host name"),
        ("example..com", 400, "invalid-target", "not a host name"),
        ("missing.test", 422, "dns", "no such"),
        ("nullmx.test", 422, "dns", "null MX"),
    ],
)
def test_bad_targets_get_clear_errors(web: WebFactory, target: str, status: int, code: str, words: str) -> None:
    app = web(records={("nullmx.test", "MX"): ["0 ."]})
    response = app.create(target)
    assert response.status_code == status, response.text
    assert response.json()["error"] == code
    assert words.lower() in response.json()["message"].lower()


def test_data_probe_mode_only_when_the_operator_enables_it(web: WebFactory, smtp: SmtpFactory) -> None:
    server = smtp("open")
    off = web(ports=(25, server.port))
    refused = off.create(server.address, mode="data-probe")
    assert refused.status_code == 403
    assert refused.json()["error"] == "forbidden"
    assert off.create(server.address, mode="confirm").status_code == 422  # no delivery mode at all

    on = web(ports=(25, server.port), allow_data_probe=True)
    done = on.run(server.address, mode="data-probe")
    assert done["report"]["mode"] == "data-probe"
    accepted = [o for o in done["report"]["targets"][0]["observations"] if o["data_reply"]]
    assert accepted and all(o["data_reply"]["code"] == 354 for o in accepted)


def test_web_checks_run_in_probe_mode_only(web: WebFactory) -> None:
    from dataclasses import replace

    from relaycheck.web.settings import Settings

    risky = replace(
        ENGINE,
        data_probe=True,
        confirm_address="me@example.org",
        hygiene=replace(ENGINE.hygiene, auth_bypass=True),
    )
    settings = Settings(engine=risky, resolver="127.0.0.1:5353")
    options = web_options(settings, data_probe=True)
    assert options.data_probe is False  # the operator did not allow it
    assert options.confirm_address is None and options.hygiene.auth_bypass is False
    assert options.resolver == "127.0.0.1:5353"  # PTR/DNSBL lookups use the service's resolver
    assert web_options(replace(settings, allow_data_probe=True), data_probe=True).data_probe is True
    assert web_options(replace(settings, allow_data_probe=True), data_probe=False).data_probe is False


def test_unknown_check_is_404_in_json_and_html(web: WebFactory) -> None:
    app = web()
    api = app.client.get("/api/v1/checks/doesnotexist1")
    assert api.status_code == 404 and api.json()["error"] == "not-found"
    page = app.client.get("/check/doesnotexist1")
    assert page.status_code == 404 and "no test with that address" in page.text
    assert app.client.get("/check/..%2F..%2Fetc").status_code == 404


def test_errors_never_show_a_traceback(web: WebFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    app = web()

    def broken(*_args: Any) -> None:
        raise RuntimeError("secret internal detail /etc/relaycheck")

    monkeypatch.setattr(app.service.store, "get", broken)
    for path in ("/check/abcdefgh", "/api/v1/checks/abcdefgh"):
        response = app.client.get(path)
        assert response.status_code == 500
        assert "Traceback" not in response.text and "secret internal detail" not in response.text
        assert "went wrong" in response.text
        assert "script-src 'self'" in response.headers["content-security-policy"]


def test_security_headers_and_no_inline_script(web: WebFactory, smtp: SmtpFactory) -> None:
    server = smtp("closed")
    app = web(ports=(25, server.port))
    done = app.run(server.address)
    for path in ("/", f"/check/{done['id']}", "/api/v1/checks/" + done["id"], "/nothing-here"):
        response = app.client.get(path)
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "default-src 'none'" in csp
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        if response.headers["content-type"].startswith("text/html"):
            html = response.text
            assert not re.search(r"<script(?![^>]*\bsrc=)", html), "inline script"
            assert not re.search(r"\son[a-z]+\s*=", html), "inline event handler"
            assert not re.search(r"\sstyle\s*=", html), "inline style"
            assert not re.search(r"(src|href)=\"(https?:)?//", html), "something loaded from elsewhere"
    assert app.client.get("/static/live.js").headers["content-type"].startswith("text/javascript")


def test_form_flow_without_javascript(web: WebFactory, smtp: SmtpFactory) -> None:
    server = smtp("open")
    app = web(ports=(25, 465, 587, server.port), refresh_seconds=2)
    index = app.client.get("/")
    assert 'name="target"' in index.text and '<option value="465"' in index.text
    posted = app.client.post("/check", data={"target": server.address, "port": "25"})
    assert posted.status_code == 303
    location = posted.headers["location"]
    assert re.fullmatch(r"/check/[A-Za-z0-9_-]+", location)
    app.wait(location.rsplit("/", 1)[1])
    result = app.client.get(location).text
    assert 'data-verdict="open"' in result and "Open relay" in result
    assert "<details" in result and "Full SMTP transcript" in result
    assert "MAIL FROM:&lt;" in result  # transcripts escaped, shown as text

    again = app.client.post("/check", data={"target": server.address, "port": "25"})
    assert again.status_code == 303 and again.headers["location"] == location + "?reused=1"
    assert "this is that result" in app.client.get(again.headers["location"]).text


def test_progress_page_refreshes_itself_without_javascript(web: WebFactory) -> None:
    with SilentServer(greeting=b"220 mx.relay.test ESMTP\r\n") as server:  # greets, then never answers
        app = web(ports=(25, server.port), refresh_seconds=2)
        check_id = app.create(server.address).json()["id"]
        page = app.client.get(f"/check/{check_id}").text
    assert '<noscript><meta http-equiv="refresh" content="2"></noscript>' in page
    assert f"<h1>Testing {server.address}…</h1>" in page
    assert 'role="status" aria-live="polite"' in page
    assert f'data-events="/api/v1/checks/{check_id}/events"' in page
    assert page.count('class="target-progress') == 1 and f"{server.address}</span>" in page
    assert re.search(r'<progress data-role="bar" max="\d+" value="\d+"', page)
    assert "data-verdict" not in page


def test_form_errors_are_shown_next_to_the_field(web: WebFactory) -> None:
    app = web(allow_private=False)
    response = app.client.post("/check", data={"target": "<b>127.0.0.1</b>", "port": "25"})
    assert response.status_code == 400
    assert 'role="alert"' in response.text and 'aria-invalid="true"' in response.text
    assert "&lt;b&gt;127.0.0.1&lt;/b&gt;" in response.text and "<b>127" not in response.text
    refused = app.client.post("/check", data={"target": "127.0.0.1", "port": "25"})
    assert refused.status_code == 422 and "Loopback (RFC 1122)" in refused.text
    wrong_port = app.client.post("/check", data={"target": "example.com", "port": "2525"})
    assert wrong_port.status_code == 422 and "port 2525 is not tested" in wrong_port.text


def test_cross_site_form_posts_are_refused(web: WebFactory) -> None:
    app = web()
    response = app.client.post("/check", data={"target": "example.com"}, headers={"Sec-Fetch-Site": "cross-site"})
    assert response.status_code == 403


def test_checks_left_running_by_a_dead_process_are_marked_interrupted(web: WebFactory, tmp_path: Any) -> None:
    from relaycheck.web.store import Store

    db = tmp_path / "shared.db"
    store = Store(str(db))
    row = store.create(target="mx.example.com:25", given="mx.example.com", port=25, mode="probe", plan={"targets": []})
    store.close()
    app = web(db_url=str(db))
    resource = app.client.get(f"/api/v1/checks/{row.id}").json()
    assert resource["status"] == "error"
    assert "restarted" in resource["error"]


def test_openapi_document_describes_the_api(web: WebFactory) -> None:
    app = web()
    response = app.client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    assert spec["openapi"].startswith("3.")
    paths = spec["paths"]
    assert set(paths) == {
        "/api/v1/checks", "/api/v1/checks/{check_id}", "/api/v1/checks/{check_id}/events", "/api/v1/history",
    }  # fmt: skip
    create = paths["/api/v1/checks"]["post"]
    assert {"200", "202", "400", "403", "422", "429", "503"} <= set(create["responses"])
    assert create["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/CheckRequest")
    assert "get" in paths["/api/v1/checks"] and "get" in paths["/api/v1/checks/{check_id}"]
    schemas = spec["components"]["schemas"]
    assert {"CheckRequest", "CheckOut", "CheckSummary", "HistoryOut", "ErrorOut"} <= set(schemas)
    request = schemas["CheckRequest"]["properties"]
    assert request["mode"]["enum"] == ["probe", "data-probe"]
    # no documentation pages that would load scripts from a CDN
    assert app.client.get("/docs").status_code == 404
    assert app.client.get("/redoc").status_code == 404

"""The web history: a target's timeline page by page with the changes marked, from the store
``watch`` shares; a client sees only its own tests unless the operator makes history public."""

from __future__ import annotations

from relaycheck.history.store import Store
from relaycheck.testing.servers import BEHAVIOURS, ServerThread

from .conftest import SmtpFactory, WebFactory, client_for


def flip(server: ServerThread, behaviour: str) -> None:
    server.behaviour = BEHAVIOURS[behaviour]
    server.handler.behaviour = BEHAVIOURS[behaviour]


def test_timeline_pages_with_the_change_marked(web: WebFactory, smtp: SmtpFactory) -> None:
    server = smtp("closed")
    app = web(ports=(25, server.port), cooldown=0, history_length=2)
    first, second = app.run(server.address), app.run(server.address)
    flip(server, "open")
    third = app.run(server.address)
    page1 = app.client.get("/api/v1/history", params={"target": server.address}).json()
    assert (page1["total"], page1["pages"], page1["page"], page1["scope"]) == (3, 2, 1, "client")
    assert [r["id"] for r in page1["runs"]] == [third["id"], second["id"]]
    newest, older = page1["runs"]
    assert newest["changed"] and older["changed"] is False  # compared with the run on the next page
    verdict = next(c for c in newest["changes"] if c["kind"] == "verdict")
    assert (verdict["before"], verdict["after"]) == ("closed", "open")
    page2 = app.client.get("/api/v1/history", params={"target": server.address, "page": 2}).json()
    assert [r["id"] for r in page2["runs"]] == [first["id"]] and page2["runs"][0]["changed"] is False
    html = app.client.get("/history", params={"target": server.address})
    assert html.status_code == 200
    assert html.text.count('class="timeline-entry changed"') == 1 and "Changed" in html.text
    assert 'rel="next"' in html.text and "Page 1 of 2" in html.text
    assert "verdict closed -&gt; open" in html.text


def test_a_client_sees_only_its_own_tests(web: WebFactory, smtp: SmtpFactory) -> None:
    server = smtp("closed")
    app = web(ports=(25, server.port), cooldown=0)
    mine = app.run(server.address)
    with client_for(app, "127.0.0.2") as other:
        timeline = other.get("/api/v1/history", params={"target": server.address}).json()
        assert (timeline["total"], timeline["runs"]) == (0, [])
        assert other.get("/api/v1/checks", params={"target": server.address}).json()["checks"] == []
        assert "You have not tested" in other.get("/history", params={"target": server.address}).text
        assert other.get(f"/api/v1/checks/{mine['id']}").status_code == 200  # a permalink still works
    own = app.client.get("/api/v1/history", params={"target": server.address}).json()
    assert [r["id"] for r in own["runs"]] == [mine["id"]]


def test_public_history_shows_every_test_and_watch_runs(web: WebFactory, smtp: SmtpFactory) -> None:
    server = smtp("closed")
    app = web(ports=(25, server.port), cooldown=0, public_history=True)
    done = app.run(server.address)
    store = Store(app.settings.db_url)
    try:
        report = dict(done["report"])
        store.record(
            target=done["target"], given=server.address, port=server.port, mode="probe", plan={},
            verdict="closed", report=report, source="watch",
        )  # fmt: skip
    finally:
        store.close()
    with client_for(app, "127.0.0.2") as other:
        timeline = other.get("/api/v1/history", params={"target": server.address}).json()
        page = other.get("/history", params={"target": server.address}).text
    assert timeline["scope"] == "public" and timeline["total"] == 2
    assert [r["source"] for r in timeline["runs"]] == ["watch", "web"]
    assert "scheduled (watch)" in page


def test_a_names_history_holds_watch_runs_of_the_name_and_web_checks_of_its_address(
    web: WebFactory, smtp: SmtpFactory
) -> None:
    # The web keys a check by the addresses it tested, watch keys a run by the name it follows
    # (so that an MX address change is a change, not a new history): one timeline shows both.
    server = smtp("closed")
    records = {("history.test", "MX"): ["10 mx.history.test."], ("mx.history.test", "A"): [server.host]}
    app = web(records=records, ports=(25, server.port), cooldown=0, public_history=True)
    done = app.run("history.test", port=server.port)
    assert done["target"] == f"{server.host}:{server.port}"
    store = Store(app.settings.db_url)
    try:
        store.record(
            target=f"history.test:{server.port}", given="history.test", port=server.port, mode="probe",
            plan={}, verdict="closed", report=dict(done["report"]), source="watch",
        )  # fmt: skip
    finally:
        store.close()
    by_name = app.client.get("/api/v1/history", params={"target": "history.test", "port": server.port}).json()
    assert [r["source"] for r in by_name["runs"]] == ["watch", "web"]
    by_address = app.client.get("/api/v1/history", params={"target": server.host, "port": server.port}).json()
    assert [r["source"] for r in by_address["runs"]] == ["web"]  # the address alone names no watched name
    checks = app.client.get("/api/v1/checks", params={"target": "history.test", "port": server.port}).json()
    assert len(checks["checks"]) == 2


def test_bad_history_requests(web: WebFactory) -> None:
    app = web()
    assert app.client.get("/api/v1/history", params={"target": "bad_host!"}).status_code == 400
    assert app.client.get("/api/v1/history", params={"target": "a.test", "page": 0}).status_code == 400
    assert app.client.get("/history").status_code == 400
    assert app.client.get("/history", params={"target": "a.test", "port": "x"}).status_code == 400

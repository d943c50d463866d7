"""Change detection between two stored reports (pure), and the store's upgrade of older databases."""

from __future__ import annotations

import copy
import sqlite3
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from relaycheck.history.changes import ChangeKind, diff, state_digest
from relaycheck.history.store import Store


def report(**target: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "target": {"host": "mx.relay.test", "address": "192.0.2.1", "port": 25, "transport": "plain"},
        "verdict": {"verdict": "closed"},
        "error": None,
        "observations": [{"probe_id": "V01", "kind": "relay", "outcome": "rejected-policy"}],
        "findings": [{"code": "vrfy-enabled"}],
        "hygiene": {
            "fingerprint": {"family": "postfix", "version": "3.7"},
            "tls": {"cert_sha256": "aa", "not_after": "2027-01-30T00:00:00+00:00"},
        },
    }
    base.update(target)
    return {"started": "2026-12-01T00:00:00+00:00", "duration_s": 1.0, "targets": [base]}


def kinds(before: dict[str, Any], after: dict[str, Any]) -> set[ChangeKind]:
    return {c.kind for c in diff(before, after)}


def test_same_state_no_change_whatever_the_timing() -> None:
    a, b = report(), report()
    b["duration_s"] = 9.0
    b["targets"][0]["duration_s"] = 3.0
    assert diff(a, b) == [] and state_digest(a) == state_digest(b)
    assert diff(None, a) == []


def test_each_kind_of_change() -> None:
    base = report()
    opened = report(
        verdict={"verdict": "open"}, observations=[{"probe_id": "V01", "kind": "relay", "outcome": "accepted"}]
    )
    assert kinds(base, opened) == {ChangeKind.VERDICT, ChangeKind.ACCEPTED_PROBES}
    assert kinds(base, report(findings=[])) == {ChangeKind.FINDINGS}
    hygiene = copy.deepcopy(base["targets"][0]["hygiene"])
    hygiene["fingerprint"]["version"] = "3.8"
    assert kinds(base, report(hygiene=hygiene)) == {ChangeKind.MTA}
    hygiene = copy.deepcopy(base["targets"][0]["hygiene"])
    hygiene["tls"]["cert_sha256"] = "bb"
    assert kinds(base, report(hygiene=hygiene)) == {ChangeKind.TLS_CERTIFICATE}
    down = report(error="cannot connect", verdict={"verdict": "inconclusive"}, observations=[], findings=[])
    assert kinds(base, down) == {ChangeKind.REACHABILITY, ChangeKind.VERDICT}  # nothing else is compared
    moved = report(target={"host": "mx.relay.test", "address": "192.0.2.2", "port": 25, "transport": "plain"})
    assert kinds(base, moved) == {ChangeKind.ENDPOINT}


def test_expiry_crossing_21_days_is_a_change_once() -> None:
    early = report()  # expires 60 days after the run
    late = report()
    late["started"] = "2027-01-10T00:00:00+00:00"  # 20 days before expiry
    later = report()
    later["started"] = "2027-01-11T00:00:00+00:00"
    assert kinds(early, late) == {ChangeKind.TLS_EXPIRY}
    assert diff(late, later) == [] and state_digest(late) == state_digest(later)


@given(st.sampled_from(["open", "closed", "inconclusive"]), st.sampled_from(["open", "closed", "inconclusive"]))
def test_verdict_change_iff_verdicts_differ(a: str, b: str) -> None:
    before, after = report(verdict={"verdict": a}), report(verdict={"verdict": b})
    assert (ChangeKind.VERDICT in kinds(before, after)) == (a != b)
    assert (state_digest(before) == state_digest(after)) == (a == b)


def test_an_older_database_gets_the_new_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:  # the web UI's table before watch existed
        conn.execute(
            "CREATE TABLE checks (id VARCHAR(32) PRIMARY KEY, target VARCHAR(300) NOT NULL,"
            " input VARCHAR(300) NOT NULL, port INTEGER NOT NULL, mode VARCHAR(16) NOT NULL,"
            " created DATETIME NOT NULL, finished DATETIME,"
            " status VARCHAR(16) NOT NULL, verdict VARCHAR(16), plan TEXT NOT NULL, report TEXT, error TEXT)"
        )
        conn.execute(
            "INSERT INTO checks VALUES ('old1', 'mx.relay.test:25', 'mx.relay.test', 25, 'probe',"
            " '2026-11-01 10:00:00', NULL, 'done', 'closed', '{}', NULL, NULL)"
        )
    store = Store(str(path))
    try:
        old = store.get("old1")
        assert old is not None and (old.source, old.client) == ("web", None)
        store.create(target="mx.relay.test:25", given="mx.relay.test", port=25, mode="probe", plan={}, client="c1")
        assert store.count("mx.relay.test:25") == 2 and store.count("mx.relay.test:25", client="c1") == 1
    finally:
        store.close()


@st.composite
def stored_reports(draw: st.DrawFn) -> dict[str, Any]:
    reachable = draw(st.booleans())
    cert = draw(st.sampled_from([None, "aa", "bb"]))
    expiry = draw(st.sampled_from(["2026-12-10T00:00:00+00:00", "2027-06-01T00:00:00+00:00"]))  # soon, or not
    target: dict[str, Any] = {
        "target": {"host": "mx.relay.test", "address": draw(st.sampled_from(["192.0.2.1", "192.0.2.2"])), "port": 25},
        "verdict": {"verdict": draw(st.sampled_from(["open", "closed", "inconclusive"]))},
        "error": None if reachable else "cannot connect",
        "observations": [
            {"probe_id": p, "kind": "relay", "outcome": "accepted"}
            for p in draw(st.sets(st.sampled_from(["V01", "V02"]))) if reachable
        ],
        "findings": [{"code": c} for c in draw(st.sets(st.sampled_from(["vrfy-enabled", "no-starttls"]))) if reachable],
        "hygiene": None if not reachable else {
            "fingerprint": {"family": draw(st.sampled_from(["postfix", "exim", "unknown"])), "version": None},
            "tls": None if cert is None else {
                "cert_sha256": cert, "not_after": expiry,
            },
        },
    }  # fmt: skip
    return {"started": "2026-12-01T00:00:00+00:00", "targets": [target]}


@given(stored_reports(), stored_reports())
def test_a_different_state_always_has_a_change_to_tell(before: dict[str, Any], after: dict[str, Any]) -> None:
    """An alert goes out when the digests differ: it must then have something to say, and equal
    digests mean nothing changed."""
    assert (state_digest(before) != state_digest(after)) == bool(diff(before, after))

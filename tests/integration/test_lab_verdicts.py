"""relaycheck's verdicts against real MTAs whose relay behaviour is known (lab.SERVERS).

All runs happen at once in the session's ``batch`` fixture (verdict_runs.py, shared with
test_audit_agreement), and each test then asserts on its part.
"""

from __future__ import annotations

import pytest
from _pytest.mark import ParameterSet

from .lab import SERVERS, Lab, postfix_error_stats
from .lab.runner import EXIT_CODES
from .verdict_runs import CASES, DOMAIN_CASE, POSTFIX_SERVERS, Batch, Case

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def _error_limit_param(name: str) -> ParameterSet:
    """A Postfix server, expected to trip the error limits (without insisting) while the engine
    rule that would spare it is not built."""
    gap = next(s.error_limit_gap for s in SERVERS if s.name == name)
    return pytest.param(name, id=name, marks=[pytest.mark.xfail(strict=False, reason=gap)] if gap else [])


def _verdict_param(case: Case) -> ParameterSet:
    """The case, expected to fail (without insisting) while its engine rule is not built."""
    marks = [pytest.mark.xfail(strict=False, reason=case.engine_gap)] if case.engine_gap else []
    return pytest.param(case, id=case.id, marks=marks)


@pytest.mark.parametrize("case", [_verdict_param(c) for c in CASES])
def test_verdict_matches_ground_truth(lab: Lab, batch: Batch, case: Case) -> None:
    run = batch.runs[case.id]
    assert run.verdict == case.expected, run.describe()
    assert run.exit_code == EXIT_CODES[case.expected], run.describe()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_report_names_the_server_tested(lab: Lab, batch: Batch, case: Case) -> None:
    run = batch.runs[case.id]
    assert run.report["schema_version"] == 1, run.describe()
    target = run.target["target"]
    assert target["address"] == lab.server(case.server).ip, run.describe()
    assert target["port"] == 25, run.describe()
    assert run.target["connections"] >= 1, run.describe()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_fingerprint_names_the_mta(lab: Lab, batch: Batch, case: Case) -> None:
    """The hygiene section names the lab server's real MTA (its banner, EHLO and refusals)."""
    run = batch.runs[case.id]
    assert run.target["hygiene"]["fingerprint"]["family"] == lab.server(case.server).spec.mta, run.describe()


def test_tls_required_is_reported(batch: Batch) -> None:
    assert batch.runs["postfix-tls-required"].target["tls_required"] is True
    assert batch.runs["postfix-closed"].target["tls_required"] is False


def test_domain_is_tested_through_its_mx(lab: Lab, batch: Batch) -> None:
    """`check postfix-closed.lab.test --resolver <lab dns>`: MX lookup, then the MX's address."""
    run = batch.runs[DOMAIN_CASE]
    closed = lab.server("postfix-closed")
    assert run.target["target"]["address"] == closed.ip, run.describe()
    assert run.verdict == "closed", run.describe()
    assert run.exit_code == EXIT_CODES["closed"], run.describe()


@pytest.mark.parametrize("name", POSTFIX_SERVERS)
def test_postfix_never_disconnects_for_too_many_errors(lab: Lab, batch: Batch, name: str) -> None:
    stats = postfix_error_stats(batch.postfix_logs[name], lab.client_ip)
    assert stats.sessions >= 1, f"no session from {lab.client_ip} in {name}'s log"
    assert stats.too_many_errors == 0, stats


@pytest.mark.parametrize("name", [_error_limit_param(n) for n in POSTFIX_SERVERS])
def test_postfix_error_sleeps_are_never_triggered(lab: Lab, batch: Batch, name: str) -> None:
    """No session reaches smtpd_soft_error_limit refusals and carries on: no tarpit delays."""
    stats = postfix_error_stats(batch.postfix_logs[name], lab.client_ip)
    assert stats.error_sleep_sessions == 0, stats

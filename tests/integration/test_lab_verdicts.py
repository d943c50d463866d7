"""relaycheck's verdicts against real MTAs whose relay behaviour is known (lab.SERVERS).

The CLI runs from the lab's client namespace, an outside address no server trusts, exactly as
a user would run it: ``python -m relaycheck check <ip> --json --ext-recipient ... --local-domain
<domain> --helo client.lab.test``. All runs of the module happen at once in the ``batch``
fixture (they are independent servers), and each test then asserts on its part.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

import pytest
from _pytest.mark import ParameterSet

from .lab import (
    SERVERS,
    Lab,
    Verdict,
    postfix_error_stats,
)
from .lab.runner import EXIT_CODES, RelaycheckRun, check_server, run_relaycheck

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

# Enough for postgrey's 2 s delay plus relaycheck's back-off, small enough to keep the suite fast.
GREYLIST_RETRY_BUDGET = 30
DOMAIN_CASE = "domain:postfix-closed"


@dataclass(frozen=True)
class Case:
    id: str
    server: str
    expected: Verdict
    retry_budget: int | None = None
    engine_gap: str = ""  # see ServerSpec.engine_gap


CASES: tuple[Case, ...] = (
    *(Case(s.name, s.name, s.expected, 0 if s.greylist else None, s.engine_gap) for s in SERVERS),
    *(
        Case(f"{s.name}-retry", s.name, s.expected_with_retry, GREYLIST_RETRY_BUDGET)
        for s in SERVERS
        if s.expected_with_retry
    ),
)


def _verdict_param(case: Case) -> ParameterSet:
    """The case, expected to fail (without insisting) while its engine rule is not built."""
    marks = [pytest.mark.xfail(strict=False, reason=case.engine_gap)] if case.engine_gap else []
    return pytest.param(case, id=case.id, marks=marks)


POSTFIX_SERVERS = [s.name for s in SERVERS if s.mta == "postfix"]


def _error_limit_param(name: str) -> ParameterSet:
    """A Postfix server, expected to trip the error limits (without insisting) while the engine
    rule that would spare it is not built."""
    spec = next(s for s in SERVERS if s.name == name)
    gap = spec.engine_gap if spec.gap_trips_error_limit else ""
    return pytest.param(name, id=name, marks=[pytest.mark.xfail(strict=False, reason=gap)] if gap else [])


@dataclass(frozen=True)
class Batch:
    runs: dict[str, RelaycheckRun]
    # Each Postfix server's log lines written while the batch ran.
    postfix_logs: dict[str, str]


def _run_case(lab: Lab, case: Case) -> RelaycheckRun:
    server = lab.server(case.server)
    if server.spec.greylist:
        # Fresh postgrey database: the run meets the greylisting whatever ran before it.
        lab.reset_greylist(server.name)
    return check_server(lab, server, retry_budget=case.retry_budget, timeout=300)


def _run_greylist_cases(lab: Lab, cases: list[Case]) -> dict[str, RelaycheckRun]:
    # One after the other: concurrent runs would share (and pre-clear) greylisting triplets.
    return {case.id: _run_case(lab, case) for case in cases}


@pytest.fixture(scope="module")
def batch(lab: Lab, relaycheck_cli: None) -> Batch:
    offsets = {name: lab.server(name).log_size() for name in POSTFIX_SERVERS}
    greylisted = [c for c in CASES if lab.server(c.server).spec.greylist]
    jobs: dict[str, Callable[[], dict[str, RelaycheckRun]]] = {
        "greylist": partial(_run_greylist_cases, lab, greylisted),
        DOMAIN_CASE: lambda: {
            DOMAIN_CASE: run_relaycheck(lab, lab.server("postfix-closed").domain, resolver=lab.dns_ip, timeout=300)
        },
    }
    for case in CASES:
        if case not in greylisted:
            jobs[case.id] = partial(lambda c: {c.id: _run_case(lab, c)}, case)
    # Two cores: a handful of concurrent relaycheck processes is plenty.
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(job) for job in jobs.values()]
        runs = {k: v for future in futures for k, v in future.result().items()}
    logs = {name: lab.server(name).settled_log(since) for name, since in offsets.items()}
    return Batch(runs, logs)


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

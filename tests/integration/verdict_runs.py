"""relaycheck run once against every lab server of the verdict catalogue (lab.SERVERS), for the
tests that judge its verdicts (test_lab_verdicts) and compare them with the auditor's
(test_audit_agreement): one session-wide batch, so no server is checked twice for the same question.

The CLI runs from the lab's client namespace, an outside address no server trusts, exactly as
a user would run it: ``python -m relaycheck check <ip> --json --ext-recipient ... --local-domain
<domain> --helo client.lab.test`` (plus the options a server's ground truth needs).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

from .lab import SERVERS, Lab, ServerSpec, Verdict
from .lab.runner import RelaycheckRun, check_server, run_relaycheck

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
POSTFIX_SERVERS = [s.name for s in SERVERS if s.mta == "postfix"]


def case_id(spec: ServerSpec) -> str:
    """The case whose verdict is the server's truth: after the greylisting has cleared, if any."""
    return f"{spec.name}-retry" if spec.expected_with_retry else spec.name


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


def run_batch(lab: Lab) -> Batch:
    """Every case at once (independent servers), greylisting ones one after the other."""
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

"""The offline auditor and the live tester agree on the lab's real MTAs (lab.SERVERS).

Two layers:

* ``test_lab_configuration_agrees_with_ground_truth`` needs no root: it writes each lab server's
  configuration exactly as the lab generates it (``postfix_main_cf``, ``POSTFIX_MASTER_CF`` and
  the server's lookup tables, ``exim_conf`` or ``sendmail_mc``) into a temporary directory and
  runs ``relaycheck audit`` on it, as an admin would on the server.
* ``test_audit_agrees_with_live_verdict`` brings the lab up (root, Debian packages), audits the
  files the running MTAs were started with, takes relaycheck's verdict on each server from the
  session's runs (verdict_runs.py: ``relaycheck check`` from the client namespace, with the
  options the server's ground truth needs), and asserts that the two agree.

Agreement: the audit says ``open-relay-possible`` exactly when the live verdict is ``open``. A
live ``inconclusive`` is a server that refuses the tester itself (every client, postmaster
included): its configuration must show no relay path, unless it only defers (greylisting), in
which case the verdict after retrying (``expected_with_retry``) is the one to agree with.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _pytest.mark import ParameterSet

from relaycheck.cli import main

from .lab import (
    FIRST_SERVER_HOST,
    NET,
    POSTFIX_MASTER_CF,
    SERVERS,
    Lab,
    Server,
    ServerSpec,
    exim_conf,
    postfix_main_cf,
    sendmail_mc,
)
from .lab.runner import RelaycheckRun
from .verdict_runs import Batch, case_id

AUDIT_EXIT = {"open": 1, "closed": 0, "inconclusive": 0}


def expected_audit_exit(spec: ServerSpec) -> int:
    return AUDIT_EXIT[spec.expected_with_retry or spec.expected]


def write_configuration(server: Server, lab_root: Path) -> list[Path]:
    """The server's configuration files as the lab writes them (prepare_postfix / prepare_exim /
    prepare_sendmail, without the chown and the MTA's own check); returns the files to audit."""
    work = server.workdir
    if server.spec.mta == "postfix":
        etc = work / "etc"
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in postfix_main_cf(server, lab_root).items()))
        (etc / "master.cf").write_text(POSTFIX_MASTER_CF)
        for name, content in server.spec.postfix_files.items():
            (etc / name).write_text(content)
        return audited_files(server)
    work.mkdir(parents=True, exist_ok=True)
    if server.spec.mta == "sendmail":
        (work / "sendmail.mc").write_text(sendmail_mc(server))
        return audited_files(server)
    (work / "exim.conf").write_text(exim_conf(server))
    return audited_files(server)


def audited_files(server: Server) -> list[Path]:
    """What an admin would hand to the auditor: main.cf and master.cf (the tables they name are
    found by the auditor itself), Exim's one configuration file, or Sendmail's sendmail.mc."""
    if server.spec.mta == "postfix":
        return [server.workdir / "etc/main.cf", server.workdir / "etc/master.cf"]
    if server.spec.mta == "sendmail":
        return [server.workdir / "sendmail.mc"]
    return [server.workdir / "exim.conf"]


def run_audit(files: list[Path], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, object]]:
    code = main(["audit", "--json", *map(str, files)])
    captured = capsys.readouterr()
    assert captured.err == "", captured.err
    return code, json.loads(captured.out)


def describe(report: dict[str, object]) -> str:
    findings = report.get("findings")
    codes = [f"{f['code']} at {f['location']}" for f in findings] if isinstance(findings, list) else []
    return f"{report.get('conclusion')}: {report.get('explanation')} findings: {codes}"


@pytest.mark.parametrize("spec", SERVERS, ids=[s.name for s in SERVERS])
def test_lab_configuration_agrees_with_ground_truth(
    spec: ServerSpec, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    index = SERVERS.index(spec)
    server = Server(spec, f"offline-{spec.name}", f"{NET}.{FIRST_SERVER_HOST + index}", tmp_path / spec.name)
    code, report = run_audit(write_configuration(server, tmp_path), capsys)
    assert report["family"] == spec.mta
    assert code == expected_audit_exit(spec), describe(report)


# ---- against the running lab ---------------------------------------------------------------


@pytest.fixture(scope="module")
def live_runs(batch: Batch) -> dict[str, RelaycheckRun]:
    """The session's relaycheck runs (verdict_runs.py): for a greylisting server, the one whose
    retry budget let the greylisting clear."""
    return {spec.name: batch.runs[case_id(spec)] for spec in SERVERS}


def _live_param(spec: ServerSpec) -> ParameterSet:
    """The server, expected to fail (without insisting) while its engine rule is not built."""
    marks = [pytest.mark.xfail(strict=False, reason=spec.engine_gap)] if spec.engine_gap else []
    return pytest.param(spec, id=spec.name, marks=marks)


@pytest.mark.integration
@pytest.mark.timeout(900)
@pytest.mark.parametrize("spec", [_live_param(s) for s in SERVERS])
def test_audit_agrees_with_live_verdict(
    lab: Lab, live_runs: dict[str, RelaycheckRun], spec: ServerSpec, capsys: pytest.CaptureFixture[str]
) -> None:
    run = live_runs[spec.name]
    live = run.verdict
    assert live == (spec.expected_with_retry or spec.expected), run.describe()
    code, report = run_audit(audited_files(lab.server(spec.name)), capsys)
    audit_open = report["conclusion"] == "open-relay-possible"
    assert audit_open == (live == "open"), f"live: {live}\n{run.describe()}\naudit: {describe(report)}"
    assert code == AUDIT_EXIT[live], describe(report)

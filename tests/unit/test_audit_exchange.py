"""Exchange auditor: Get-ReceiveConnector | Format-List dumps, Get-ADPermission output, ConvertTo-Json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from relaycheck.audit import AuditReport, Conclusion, Family, SourceFile, audit_sources

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "audit"
OPEN, CLOSED = Conclusion.OPEN_RELAY_POSSIBLE, Conclusion.NO_OPEN_RELAY_PATH


def audit(*names: str) -> AuditReport:
    return audit_sources([SourceFile(n, (FIXTURES / n).read_text()) for n in names], Family.EXCHANGE)


def audit_text(*texts: str) -> AuditReport:
    return audit_sources([SourceFile(f"dump{i}.txt", t) for i, t in enumerate(texts)], Family.EXCHANGE)


def codes(report: AuditReport) -> set[str]:
    return {f.code for f in report.findings}


CASES = [
    (["exchange/receive-connectors.txt"], CLOSED, set()),
    (
        ["exchange/receive-connectors.txt", "exchange/adpermission-default-frontend.txt"],
        OPEN,
        {"exchange-anonymous-relay-everyone"},
    ),
    (["exchange/relay-lan.txt", "exchange/adpermission-relay.txt"], CLOSED, {"exchange-anonymous-relay-range"}),
    (["exchange/relay-public.txt", "exchange/adpermission-relay.txt"], OPEN, {"exchange-anonymous-relay-wide"}),
    (["exchange/relay-public.txt"], CLOSED, {"exchange-anonymous-users-relay-connector"}),
    (["exchange/externally-secured.txt"], OPEN, {"exchange-externally-secured-everyone"}),
    (["exchange/anonymous-users-relay.txt"], CLOSED, {"exchange-anonymous-users-relay-connector"}),
    (["exchange/adpermission-default-frontend.txt"], CLOSED, {"exchange-anonymous-relay-unverified"}),
    (
        ["exchange/connectors.json"],
        OPEN,
        {"exchange-externally-secured-everyone", "exchange-anonymous-users-relay-connector"},
    ),
    (
        ["exchange/connectors.json", "exchange/adpermission.json"],
        OPEN,
        {"exchange-externally-secured-everyone", "exchange-anonymous-relay-range"},
    ),
]


@pytest.mark.parametrize(("files", "conclusion", "expected"), CASES, ids=[" + ".join(c[0]) for c in CASES])
def test_fixture(files: list[str], conclusion: Conclusion, expected: set[str]) -> None:
    report = audit(*files)
    assert report.conclusion is conclusion, report.explanation
    assert codes(report) == expected


def test_default_frontend_with_anonymous_relay_is_critical_and_located() -> None:
    report = audit("exchange/receive-connectors.txt", "exchange/adpermission-default-frontend.txt")
    (found,) = report.findings
    assert found.severity == "critical"
    assert found.location == "exchange/receive-connectors.txt:186"  # its RemoteIPRanges line
    assert "0.0.0.0-255.255.255.255" in found.evidence[0]
    assert any("ms-Exch-SMTP-Accept-Any-Recipient" in e for e in found.evidence)
    assert "Remove-ADPermission" in (found.remediation or "")


def test_json_flags_are_decoded() -> None:
    report = audit("exchange/connectors.json")
    secured = next(f for f in report.findings if f.code == "exchange-externally-secured-everyone")
    assert "Fax Gateway" in secured.detail
    assert secured.location == "exchange/connectors.json:115"


CONNECTOR = """
AuthMechanism   : Tls
Enabled         : {enabled}
PermissionGroups: AnonymousUsers
RemoteIPRanges  : {{0.0.0.0-255.255.255.255}}
Identity        : EX01\\Relay
"""
GRANT = """
Identity       : EX01\\Relay
User           : NT AUTHORITY\\ANONYMOUS LOGON
Deny           : {deny}
ExtendedRights : {{ms-Exch-SMTP-Accept-Any-Recipient}}
"""


def test_disabled_connector_is_ignored() -> None:
    report = audit_text(CONNECTOR.format(enabled="False"), GRANT.format(deny="False"))
    assert report.conclusion is CLOSED


def test_deny_entry_is_not_a_grant() -> None:
    report = audit_text(CONNECTOR.format(enabled="True"), GRANT.format(deny="True"))
    assert report.conclusion is CLOSED
    assert codes(report) == set()  # the permission data rules the relay out


def test_grant_for_another_user_is_not_anonymous() -> None:
    grant = GRANT.format(deny="False").replace("NT AUTHORITY\\ANONYMOUS LOGON", "CORP\\svc-scanner")
    assert audit_text(CONNECTOR.format(enabled="True"), grant).conclusion is CLOSED


def test_netmask_range_form() -> None:
    connector = CONNECTOR.format(enabled="True").replace("0.0.0.0-255.255.255.255", "81.20.0.0(255.255.0.0)")
    report = audit_text(connector, GRANT.format(deny="False"))
    assert codes(report) == {"exchange-anonymous-relay-wide"}


def test_single_host_relay_connector_is_fine() -> None:
    connector = CONNECTOR.format(enabled="True").replace("0.0.0.0-255.255.255.255", "192.168.20.15, 203.0.113.7")
    assert audit_text(connector, GRANT.format(deny="False")).findings == ()


def test_json_with_value_wrapper_and_string_enums() -> None:
    data = {
        "value": [
            {
                "Identity": "EX01\\Open",
                "Name": "Open",
                "AuthMechanism": "Tls, ExternalAuthoritative",
                "PermissionGroups": "ExchangeServers",
                "RemoteIPRanges": ["0.0.0.0-255.255.255.255"],
            }
        ],
        "Count": 1,
    }
    report = audit_text(json.dumps(data))
    assert codes(report) == {"exchange-externally-secured-everyone"}


def test_prompt_lines_are_skipped_and_other_text_is_unparsed() -> None:
    connector = CONNECTOR.format(enabled="True").replace("0.0.0.0-255.255.255.255", "192.168.20.15")
    report = audit_text("PS C:\\> Get-ReceiveConnector | fl\n" + connector + "garbage here\n")
    assert [(f.code, f.location) for f in report.findings] == [("unparsed-line", "dump0.txt:8")]


def test_format_list_of_something_else_is_could_not_parse() -> None:
    report = audit_text("Name : foo\nStatus : Running\n")
    assert report.conclusion is Conclusion.COULD_NOT_PARSE

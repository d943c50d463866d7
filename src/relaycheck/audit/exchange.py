"""Exchange: ``Get-ReceiveConnector | Format-List`` text, ``… | ConvertTo-Json``, and the
``Get-ADPermission`` output that shows who holds ``ms-Exch-SMTP-Accept-Any-Recipient``.

A receive connector relays for anonymous clients when NT AUTHORITY\\ANONYMOUS LOGON holds
ms-Exch-SMTP-Accept-Any-Recipient on it, and for every client when its AuthMechanism includes
ExternalAuthoritative (the connection counts as an authenticated Exchange server). Who "every
client" is depends on RemoteIPRanges: the default 0.0.0.0-255.255.255.255 is the whole Internet.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from relaycheck.audit import netclass
from relaycheck.audit.model import FamilyResult, Line, SourceFile
from relaycheck.audit.netclass import Width
from relaycheck.audit.rules import finding, unparsed
from relaycheck.model import Finding

ACCEPT_ANY_RECIPIENT = "ms-exch-smtp-accept-any-recipient"
ANONYMOUS = "anonymous logon"
# Exchange's [Flags] enums as ConvertTo-Json writes them (numbers) in Windows PowerShell 5.1.
PERMISSION_GROUPS = {
    1: "AnonymousUsers",
    2: "ExchangeUsers",
    4: "ExchangeServers",
    8: "ExchangeLegacyServers",
    16: "Partners",
    32: "Custom",
}
AUTH_MECHANISMS = {
    1: "Tls",
    2: "Integrated",
    4: "BasicAuth",
    8: "BasicAuthRequireTLS",
    16: "ExchangeServer",
    32: "ExternalAuthoritative",
}
_FIELD = re.compile(r"^([A-Za-z][A-Za-z0-9_.-]*)\s*:\s?(.*)$")
_RELAY_NAME = re.compile(r"relay|anonym|smtp[ -]?relay|app|printer|scanner", re.IGNORECASE)


@dataclass
class Record:
    fields: dict[str, tuple[str, Line]] = field(default_factory=dict)
    first: Line | None = None

    def get(self, name: str) -> str | None:
        for key, (value, _) in self.fields.items():
            if key.lower() == name.lower():
                return value
        return None

    def line(self, name: str) -> Line | None:
        for key, (_, line) in self.fields.items():
            if key.lower() == name.lower():
                return line
        return self.first


@dataclass
class Parsed:
    records: list[Record] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    understood: int = 0


# ---- Format-List text ----------------------------------------------------------------------


def _format_list(source: SourceFile, parsed: Parsed) -> None:
    record = Record()
    last_key: str | None = None
    for number, raw in enumerate(source.text.splitlines(), start=1):
        line = Line(source.name, number, raw)
        if not raw.strip():
            if record.fields:
                parsed.records.append(record)
            record, last_key = Record(), None
            continue
        if raw[:1].isspace() and last_key is not None:  # Format-List wraps long values
            value, first = record.fields[last_key]
            record.fields[last_key] = (value + raw.strip(), first)
            continue
        match = _FIELD.match(raw.rstrip())
        if match and not raw.lstrip().startswith(("PS ", "[PS]")):
            key = match.group(1)
            record.fields[key] = (match.group(2).strip(), line)
            record.first = record.first or line
            last_key = key
            parsed.understood += 1
            continue
        if raw.strip().startswith(("PS ", "[PS]", "---", "#")):
            continue  # a prompt, a table rule or a comment pasted along with the output
        parsed.findings.append(unparsed(line, "expected 'Name : value' (Format-List output)"))
    if record.fields:
        parsed.records.append(record)


# ---- JSON ----------------------------------------------------------------------------------


def _flatten(value: Any) -> str:
    """A JSON value as the text Format-List would show."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, str | int | float):
        return str(value)
    if isinstance(value, list):
        return "{" + ", ".join(_flatten(v) for v in value) + "}"
    if isinstance(value, dict):
        for key in ("RawIdentity", "Expression", "Name", "IPAddressToString", "value", "Value"):
            if key in value and isinstance(value[key], str):
                return str(value[key])
        low, high = value.get("LowerBound"), value.get("UpperBound")
        if low is not None and high is not None:
            return f"{_flatten(low)}-{_flatten(high)}"
        return json.dumps(value, sort_keys=True)[:200]
    return str(value)


def _flags(value: Any, names: dict[int, str]) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return ", ".join(name for bit, name in names.items() if value & bit)
    if isinstance(value, dict) and "value" in value:
        return _flags(value["value"], names)
    return _flatten(value)


def _json_objects(data: Any) -> Iterator[dict[str, Any]]:
    if isinstance(data, dict):
        if "value" in data and isinstance(data["value"], list) and len(data) <= 2:
            yield from _json_objects(data["value"])  # {"value": [...], "Count": n}
        else:
            yield data
    elif isinstance(data, list):
        for item in data:
            yield from _json_objects(item)


def _json(source: SourceFile, parsed: Parsed) -> bool:
    text = source.text.lstrip("\ufeff")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return False
    position = 0
    for obj in _json_objects(data):
        record = Record()
        name = obj.get("Name") or obj.get("Identity")
        anchor = json.dumps(_flatten(name)) if name is not None else None
        found = text.find(anchor, position) if anchor else -1
        if found >= 0:
            position = found + 1
        number = text.count("\n", 0, max(found, position, 0)) + 1
        line = Line(source.name, number, text.splitlines()[number - 1] if text.splitlines() else "")
        for key, value in obj.items():
            if key == "PermissionGroups":
                shown = _flags(value, PERMISSION_GROUPS)
            elif key == "AuthMechanism":
                shown = _flags(value, AUTH_MECHANISMS)
            else:
                shown = _flatten(value)
            record.fields[str(key)] = (shown, line)
        record.first = line
        if record.fields:
            parsed.records.append(record)
            parsed.understood += 1
    return True


# ---- judging -------------------------------------------------------------------------------


def _items(value: str) -> list[str]:
    return [i.strip() for i in value.strip().strip("{}").split(",") if i.strip()]


def _range_networks(item: str) -> list[netclass.IPNetwork] | None:
    mask = re.match(r"^([0-9.]+)\(([0-9.]+)\)$", item)  # 192.168.1.0(255.255.255.0)
    if mask:
        return netclass.parse_range(f"{mask.group(1)}/{mask.group(2)}")
    return netclass.parse_range(item)


@dataclass(frozen=True)
class Connector:
    record: Record
    identity: str
    keys: frozenset[str]


def _connector(record: Record) -> Connector:
    identity = record.get("Identity") or record.get("Name") or "(unnamed connector)"
    name = record.get("Name") or identity.rpartition("\\")[2]
    server = record.get("Server") or identity.rpartition("\\")[0]
    keys = {identity.lower(), name.lower()}
    if server:
        keys.add(f"{server}\\{name}".lower())
    return Connector(record, identity, frozenset(keys))


def _is_permission(record: Record) -> bool:
    return record.get("ExtendedRights") is not None and record.get("RemoteIPRanges") is None


def _grants_anonymous_relay(record: Record) -> bool:
    rights = (record.get("ExtendedRights") or "").lower()
    user = record.get("User")
    deny = (record.get("Deny") or "false").strip().lower() == "true"
    # The reference command filters on the user and prints only Identity, ExtendedRights.
    anonymous = user is None or ANONYMOUS in user.lower()
    return ACCEPT_ANY_RECIPIENT in rights and anonymous and not deny


def _judge_ranges(record: Record) -> tuple[netclass.Judged, list[str]]:
    value = record.get("RemoteIPRanges") or ""
    members: list[tuple[str, netclass.IPNetwork]] = []
    unknown: list[str] = []
    for item in _items(value):
        networks = _range_networks(item)
        if networks is None:
            unknown.append(item)
            continue
        members.extend((item, n) for n in networks)
    judged = netclass.judge(members)
    internal_range = any(
        netclass.width_of_network(n) is Width.NONE and n.num_addresses > 1 and n.prefixlen > 0 for _, n in members
    )
    if judged.width <= Width.HOST and internal_range:
        wide = next(w for w, n in members if n.num_addresses > 1)
        return netclass.Judged(Width.OUTSIDE_RANGE, wide), unknown
    return judged, unknown


def _connector_findings(connector: Connector, anonymous_grant: Record | None, has_permissions: bool) -> list[Finding]:
    record = connector.record
    if (record.get("Enabled") or "true").strip().lower() == "false":
        return []
    if record.get("RemoteIPRanges") is None:
        return []
    judged, _unknown = _judge_ranges(record)
    ranges_line = record.line("RemoteIPRanges")
    lines = tuple(x for x in (ranges_line, record.line("Identity")) if x is not None)
    ranges = record.get("RemoteIPRanges") or ""
    where = f"Connector '{connector.identity}', RemoteIPRanges {ranges}."
    findings: list[Finding] = []
    if anonymous_grant is not None:
        grant_line = anonymous_grant.line("ExtendedRights")
        grant_lines = (*lines, *((grant_line,) if grant_line else ()))
        anonymous = ("exchange-anonymous-relay-everyone", "exchange-anonymous-relay-wide",
                     "exchange-anonymous-relay-range")
        code = netclass.code_for_width(judged.width, anonymous)
        if code:
            findings.append(finding(code, where, *grant_lines))
    mechanisms = (record.get("AuthMechanism") or "").lower()
    if "externalauthoritative" in mechanisms:
        secured = ("exchange-externally-secured-everyone", "exchange-externally-secured-wide",
                   "exchange-externally-secured-range")
        code = netclass.code_for_width(judged.width, secured)
        auth_line = record.line("AuthMechanism")
        if code:
            findings.append(finding(code, where, *lines, *((auth_line,) if auth_line else ())))
    groups = (record.get("PermissionGroups") or "").lower()
    relay_like = bool(_RELAY_NAME.search(connector.identity)) or anonymous_grant is not None
    if (
        "anonymoususers" in groups
        and relay_like
        and anonymous_grant is None
        and not has_permissions
        and judged.width >= Width.OUTSIDE_RANGE
    ):
        groups_line = record.line("PermissionGroups")
        findings.append(
            finding(
                "exchange-anonymous-users-relay-connector",
                f"{where} No Get-ADPermission output was given to confirm or rule out the relay permission.",
                *lines,
                *((groups_line,) if groups_line else ()),
            )
        )
    return findings


def audit(sources: Sequence[SourceFile]) -> FamilyResult:
    parsed = Parsed()
    for source in sources:
        if source.text.lstrip("\ufeff \r\n\t")[:1] in {"[", "{"} and _json(source, parsed):
            continue
        _format_list(source, parsed)
    connectors = [_connector(r) for r in parsed.records if not _is_permission(r)]
    permissions = [r for r in parsed.records if _is_permission(r)]
    findings: list[Finding] = list(parsed.findings)
    grants = [p for p in permissions if _grants_anonymous_relay(p)]
    matched: set[int] = set()
    for connector in connectors:
        grant = None
        for index, permission in enumerate(grants):
            identity = (permission.get("Identity") or "").lower()
            if identity in connector.keys or identity.rpartition("\\")[2] in connector.keys:
                grant = permission
                matched.add(index)
                break
        findings.extend(_connector_findings(connector, grant, bool(permissions)))
    for index, permission in enumerate(grants):
        if index not in matched:
            line = permission.line("ExtendedRights")
            identity = permission.get("Identity") or "(unknown)"
            findings.append(
                finding(
                    "exchange-anonymous-relay-unverified",
                    f"Connector '{identity}': its RemoteIPRanges were not in the input.",
                    *((line,) if line else ()),
                )
            )
    relevant = [c for c in connectors if c.record.get("RemoteIPRanges") is not None]
    summary = (
        f"Exchange: {len(relevant)} receive connector(s) and {len(permissions)} permission entr(y/ies) read; "
        "anonymous relay (ms-Exch-SMTP-Accept-Any-Recipient for ANONYMOUS LOGON) and ExternalAuthoritative "
        "connectors were judged by the width of their RemoteIPRanges."
    )
    understood = parsed.understood if (relevant or permissions) else 0
    return FamilyResult(tuple(findings), understood, summary)

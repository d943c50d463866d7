"""Sendmail: sendmail.mc FEATUREs, the access map source (``/etc/mail/access``) and relay-domains.

Sendmail relays for a client when a FEATURE switches the checks off or loosens them, or when
the access map answers RELAY for the client's address or name (``Connect:`` or untagged keys),
the sender (``From:``, with FEATURE(`relay_mail_from')) or the recipient domain (``To:``).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from relaycheck.audit import netclass
from relaycheck.audit.model import FamilyResult, Line, SourceFile
from relaycheck.audit.netclass import Width
from relaycheck.audit.rules import dedupe, finding, unparsed
from relaycheck.model import Finding

_FEATURE = re.compile(r"FEATURE\(\s*[`'\"]?([A-Za-z_]+)['\"]?\s*(?:,\s*([^)]*))?\)")
_MACRO_CALL = re.compile(
    r"^\s*[A-Z_][A-Za-z0-9_]*\s*\(|^\s*(?:define|undefine|include|divert|dnl|ifdef|ifelse)\b|^\s*(?:LOCAL_\w+|MAILER_DEFINITIONS)\s*$"
)
_ACCESS_LINE = re.compile(r"^(?:([A-Za-z]+):)?(\S+)\s+(.+)$")
_DNL = re.compile(r"\bdnl\b.*$")
FEATURE_RULES = {
    "promiscuous_relay": "sendmail-promiscuous-relay",
    "relay_local_from": "sendmail-relay-local-from",
    "relay_mail_from": "sendmail-relay-mail-from",
    "loose_relay_check": "sendmail-loose-relay-check",
    "relay_entire_domain": "sendmail-relay-entire-domain",
    "relay_based_on_mx": "sendmail-relay-based-on-mx",
}
KNOWN_TAGS = {
    "connect",
    "from",
    "to",
    "spam",
    "greetpause",
    "clientrate",
    "clientconn",
    "srv_features",
    "try_tls",
    "tls_clt",
    "tls_srv",
    "tls_rcpt",
    "compat",
    "auth",
    "mail",
}


@dataclass
class SendmailConfig:
    # lower-case name -> (name as written, arguments, line)
    features: dict[str, tuple[str, str, Line]] = field(default_factory=dict)
    mc_given: bool = False
    relay_entries: list[tuple[str, str, Line]] = field(default_factory=list)  # (tag, key, line) answering RELAY
    relay_domains: list[tuple[str, Line]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    understood: int = 0


def _kind(source: SourceFile) -> str:
    base = posixpath.basename(source.name).lower()
    if base.endswith(".mc"):
        return "mc"
    if base.endswith(".cf"):
        return "cf"
    if base in {"relay-domains", "relay_domains"}:
        return "relay-domains"
    if base.startswith("access"):
        return "access"
    if re.search(r"^\s*(?:FEATURE|OSTYPE|DOMAIN|MAILER)\s*\(", source.text, re.MULTILINE):
        return "mc"
    return "access"


def _parse_mc(source: SourceFile, config: SendmailConfig) -> None:
    config.mc_given = True
    for number, raw in enumerate(source.text.splitlines(), start=1):
        line = Line(source.name, number, raw)
        text = _DNL.sub("", raw).strip()
        if not text or text.startswith("#"):
            continue
        found = False
        for match in _FEATURE.finditer(text):
            config.features[match.group(1).lower()] = (match.group(1), (match.group(2) or "").strip(), line)
            found = True
        if found or _MACRO_CALL.match(text) or text.startswith(("')", "`")):
            config.understood += 1
            continue
        config.findings.append(unparsed(line, "not an m4 macro call"))


def _parse_access(source: SourceFile, config: SendmailConfig) -> None:
    for number, raw in enumerate(source.text.splitlines(), start=1):
        line = Line(source.name, number, raw)
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        match = _ACCESS_LINE.match(text)
        tag = (match.group(1) or "").lower() if match else ""
        if match is None or (tag and tag not in KNOWN_TAGS):
            config.findings.append(unparsed(line, "expected 'key value' (e.g. 'Connect:192.168.1 RELAY')"))
            continue
        config.understood += 1
        if match.group(3).split()[0].upper() == "RELAY":
            config.relay_entries.append((tag, match.group(2), line))


def _parse_relay_domains(source: SourceFile, config: SendmailConfig) -> None:
    for number, raw in enumerate(source.text.splitlines(), start=1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        line = Line(source.name, number, raw)
        if len(text.split()) != 1:
            config.findings.append(unparsed(line, "expected one host, domain or network per line"))
            continue
        config.understood += 1
        config.relay_domains.append((text, line))


def parse(sources: Sequence[SourceFile]) -> SendmailConfig:
    config = SendmailConfig()
    for source in sources:
        kind = _kind(source)
        if kind == "mc":
            _parse_mc(source, config)
        elif kind == "cf":
            first = Line(source.name, 1, source.text.splitlines()[0] if source.text else "")
            config.findings.append(
                unparsed(first, "sendmail.cf is generated: audit sendmail.mc and the access source instead")
            )
        elif kind == "relay-domains":
            _parse_relay_domains(source, config)
        else:
            _parse_access(source, config)
    return config


def _network(key: str) -> netclass.IPNetwork | None:
    if key.lower().startswith("ipv6:"):
        return netclass.ipv6_prefix(key[5:])
    return netclass.sendmail_prefix(key) or netclass.parse_network(key)


def _is_tld(key: str) -> bool:
    return netclass.is_tld(key)


def _host_key_findings(key: str, line: Line, what: str, findings: list[Finding]) -> None:
    net = _network(key)
    if net is not None:
        width = netclass.width_of_network(net)
        if width >= Width.OUTSIDE_WIDE:
            findings.append(finding("sendmail-access-relay-wide", f"{what} '{key}' is {net}.", line))
        elif width is Width.OUTSIDE_RANGE:
            findings.append(finding("sendmail-access-relay-range", f"{what} '{key}' is {net}.", line))
        return
    if _is_tld(key):
        findings.append(
            finding("sendmail-access-relay-wide", f"{what} '{key}' matches every host under .{key.lstrip('.')}.", line)
        )


def audit(sources: Sequence[SourceFile]) -> FamilyResult:
    config = parse(sources)
    findings: list[Finding] = list(config.findings)
    for name, code in FEATURE_RULES.items():
        if name in config.features:
            written, args, line = config.features[name]
            detail = f"FEATURE(`{written}'{', ' + args if args else ''}) is enabled."
            findings.append(finding(code, detail, line))
    relay_mail_from = "relay_mail_from" in config.features
    for tag, key, line in config.relay_entries:
        if tag in {"", "connect"}:
            _host_key_findings(key, line, "Connect:" if tag else "The key", findings)
        if tag == "from" or (tag == "" and "@" in key and relay_mail_from):
            if config.mc_given and not relay_mail_from:
                findings.append(finding("sendmail-access-from-relay-inert", f"From:{key} RELAY.", line))
            else:
                findings.append(finding("sendmail-access-from-relay", f"From:{key} RELAY.", line))
        if tag in {"", "to"} and _is_tld(key.rpartition("@")[2]):
            findings.append(
                finding(
                    "sendmail-access-relay-to-tld",
                    f"'{key}' RELAY covers every domain under .{key.rpartition('@')[2].lstrip('.')}.",
                    line,
                )
            )
    for key, line in config.relay_domains:
        if _is_tld(key):  # class R: relay to the domain and for its hosts; the first is worse
            findings.append(finding("sendmail-access-relay-to-tld", f"relay-domains entry '{key}'.", line))
        else:
            _host_key_findings(key, line, "relay-domains entry", findings)
    files = ", ".join(s.name for s in sources)
    summary = (
        f"Sendmail: read {files}; judged relay FEATUREs (sendmail.mc) and RELAY answers of the access map "
        f"and relay-domains by who can obtain them (client address, forged sender, recipient domain)."
    )
    return FamilyResult(tuple(dedupe(findings)), config.understood, summary)

"""Which mail server wrote this file? File names first, then tell-tale contents.

Each family has a score function; a file belongs to the family with the highest positive score.
Files that no family claims go with the others' family (e.g. an access table next to
sendmail.mc); files of two different families are a usage error (audit them separately).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Sequence

from relaycheck.audit.model import Family, SourceFile
from relaycheck.errors import UsageError

_POSTFIX_PARAM = re.compile(
    r"^(?:smtpd_|smtp_|mynetworks|mydestination|myhostname|mydomain|myorigin|relayhost|relay_domains|"
    r"inet_interfaces|inet_protocols|alias_maps|compatibility_level|virtual_|transport_maps|mailbox_)\S*\s*=",
    re.MULTILINE,
)
_MASTER_LINE = re.compile(
    r"^\S+\s+(?:inet|unix|unix-dgram|fifo|pass)\s+\S+\s+\S+\s+\S+\s+\S+\s+\S+\s+\S+", re.MULTILINE
)
_EXIM = re.compile(
    r"^\s*(?:begin\s+(?:acl|routers|transports|authenticators|retry|rewrite)\b|(?:domainlist|hostlist|addresslist)\s+\w+\s*="
    r"|acl_smtp_rcpt\s*=|dc_eximconfig_configtype\s*=|dc_relay_nets\s*=|acl_check_rcpt\s*:|primary_hostname\s*=)",
    re.MULTILINE,
)
_EXCHANGE = re.compile(
    r"RemoteIPRanges|PermissionGroups|ms-Exch-SMTP-Accept-Any-Recipient|ExtendedRights|ANONYMOUS LOGON|AuthMechanism",
    re.IGNORECASE,
)
_SENDMAIL_MC = re.compile(r"^\s*(?:FEATURE|DOMAIN|OSTYPE|MAILER|define|divert|VERSIONID)\s*\(", re.MULTILINE)
_SENDMAIL_ACCESS = re.compile(
    r"^\s*(?:(?:Connect|From|To|Spam|GreetPause|ClientRate|ClientConn):)?\S+\s+(?:RELAY|OK|REJECT|DISCARD|SKIP|ERROR:\S*)\b",
    re.MULTILINE | re.IGNORECASE,
)
_SENDMAIL_TAGGED = re.compile(r"^\s*(?:Connect|From|To|Spam):\S+\s+\S", re.MULTILINE)
_OPENSMTPD = re.compile(
    r"^\s*(?:listen\s+on\b|match\s+.*\baction\b|action\s+\"?[\w-]+\"?\s+(?:relay|mbox|maildir|lmtp|mda|forward-only|expand-only)\b"
    r"|accept\s+(?:tagged\s+\S+\s+)?from\s+\S+|pki\s+\S+\s+(?:cert|key)\b|table\s+\w+\s+\w+:)",
    re.MULTILINE,
)

NAMES: dict[str, Family] = {
    "main.cf": Family.POSTFIX,
    "master.cf": Family.POSTFIX,
    "exim4.conf": Family.EXIM,
    "exim4.conf.template": Family.EXIM,
    "exim.conf": Family.EXIM,
    "update-exim4.conf.conf": Family.EXIM,
    "sendmail.mc": Family.SENDMAIL,
    "submit.mc": Family.SENDMAIL,
    "sendmail.cf": Family.SENDMAIL,
    "relay-domains": Family.SENDMAIL,
    "smtpd.conf": Family.OPENSMTPD,
}


def _count(pattern: re.Pattern[str], text: str) -> int:
    return len(pattern.findall(text))


# (distinctive lines, hint lines): one distinctive line is enough to be sure; "key OK" lines only
# hint at a Sendmail access map (Postfix access tables look the same).
SCORERS: dict[Family, Callable[[str], tuple[int, int]]] = {
    Family.POSTFIX: lambda t: (_count(_POSTFIX_PARAM, t) + _count(_MASTER_LINE, t), 0),
    Family.EXIM: lambda t: (_count(_EXIM, t), 0),
    Family.EXCHANGE: lambda t: (_count(_EXCHANGE, t), 0),
    Family.SENDMAIL: lambda t: (_count(_SENDMAIL_MC, t) + _count(_SENDMAIL_TAGGED, t), _count(_SENDMAIL_ACCESS, t)),
    Family.OPENSMTPD: lambda t: (_count(_OPENSMTPD, t), 0),
}


def family_of(source: SourceFile) -> tuple[Family | None, bool]:
    """(family, strong): strong when the name or several tell-tale lines say so."""
    base = posixpath.basename(source.name).lower()
    if base in NAMES:
        return NAMES[base], True
    if base.endswith(".mc"):
        return Family.SENDMAIL, True
    if "exim" in source.name.lower():
        return Family.EXIM, True
    scores = {family: score(source.text) for family, score in SCORERS.items()}
    best = max(scores, key=lambda f: scores[f])
    if scores[best] > (0, 0):
        return best, scores[best][0] > 0
    return (Family.SENDMAIL, False) if base.startswith("access") else (None, False)


def detect_family(sources: Sequence[SourceFile]) -> Family:
    found = {s.name: family_of(s) for s in sources}
    strong = {f for f, is_strong in found.values() if f is not None and is_strong}
    weak = {f for f, is_strong in found.values() if f is not None and not is_strong}
    families = strong or weak
    if not families:
        names = ", ".join(found)
        raise UsageError(
            f"cannot tell which mail server {names} belong(s) to; say it with --postfix, --exim, "
            "--exchange, --sendmail or --opensmtpd"
        )
    if len(families) > 1:
        kinds = "; ".join(f"{name}: {family}" for name, (family, _) in found.items() if family in families)
        raise UsageError(f"the files are for different mail servers ({kinds}); audit them separately")
    return families.pop()

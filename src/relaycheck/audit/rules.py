"""Every audit rule as data: stable code -> severity, title, what it allows, whether it is a relay
path for outside clients, and the fix.

Codes are a promise to users' scripts (like the JSON field names): add codes, never rename them.
``opens_relay`` decides the report's conclusion: one such finding makes the configuration
"open-relay-possible" and the exit code 1.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from relaycheck.audit.model import Line
from relaycheck.model import Finding, Severity

CRITICAL, HIGH, MEDIUM, LOW, INFO = Severity.CRITICAL, Severity.HIGH, Severity.MEDIUM, Severity.LOW, Severity.INFO

# Evidence quotes configuration lines, which may be long or hostile: cap and neutralise them.
EVIDENCE_LIMIT = 300
DETAIL_LIMIT = 1500
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class Rule:
    code: str
    severity: Severity
    title: str
    allows: str  # what the configuration allows, in plain words
    opens_relay: bool
    remediation: str


def _rules(*rules: Rule) -> dict[str, Rule]:
    return {r.code: r for r in rules}


RULES: dict[str, Rule] = _rules(
    # ---- any family ------------------------------------------------------------------------
    Rule(
        "unparsed-line",
        INFO,
        "Could not parse a line",
        "Nothing: the auditor did not understand this line and ignored it, so its effect is not judged.",
        False,
        "Check the line for typos, or audit the output of the server's own configuration dump "
        "(postconf -n, exim -bP, Get-ReceiveConnector | Format-List *).",
    ),
    # ---- Postfix ---------------------------------------------------------------------------
    Rule(
        "postfix-mynetworks-everyone",
        CRITICAL,
        "mynetworks trusts every address",
        "Any host on the Internet may relay: permit_mynetworks matches every client.",
        True,
        "Set mynetworks to the networks of your own clients only, e.g. "
        "'mynetworks = 127.0.0.0/8 [::1]/128' plus your LAN, then 'postfix reload'.",
    ),
    Rule(
        "postfix-mynetworks-public",
        HIGH,
        "mynetworks trusts a wide outside network",
        "Every host in a large public network (strangers included) may relay through permit_mynetworks.",
        True,
        "Narrow mynetworks to the exact addresses of your own clients; let roaming users "
        "authenticate (permit_sasl_authenticated) instead of trusting their ISP's network.",
    ),
    Rule(
        "postfix-mynetworks-public-range",
        LOW,
        "mynetworks trusts an outside address range",
        "Every host in this outside range may relay; fine only if every address in it is yours.",
        False,
        "Confirm that every address in the range belongs to you, or list single hosts instead.",
    ),
    Rule(
        "postfix-mynetworks-style-class",
        HIGH,
        "mynetworks_style = class",
        "With mynetworks unset, every host in the server's whole class A/B/C network may relay "
        "(a class A public address trusts 16 million strangers).",
        True,
        "Set 'mynetworks_style = host' (the default since Postfix 3.0) or an explicit mynetworks list.",
    ),
    Rule(
        "postfix-mynetworks-style-subnet",
        LOW,
        "mynetworks_style = subnet",
        "With mynetworks unset, every host on the server's IP subnets may relay: on a hosting "
        "network those are other customers' machines.",
        False,
        "Set 'mynetworks_style = host' or an explicit mynetworks list of your own clients.",
    ),
    Rule(
        "postfix-permit-before-relay-check",
        CRITICAL,
        "'permit' comes before the relay check",
        "Any host on the Internet may relay: the restriction list permits every request before "
        "reject_unauth_destination is reached.",
        True,
        "Remove 'permit' (or move it after reject_unauth_destination) in smtpd_relay_restrictions / "
        "smtpd_recipient_restrictions: 'permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination'.",
    ),
    Rule(
        "postfix-no-reject-unauth-destination",
        CRITICAL,
        "No relay check in the restriction lists",
        "Any host on the Internet may relay: neither smtpd_relay_restrictions nor "
        "smtpd_recipient_restrictions rejects mail to foreign domains (Postfix 2.10 and later "
        "refuse to start smtpd like this; older versions relay).",
        True,
        "Set 'smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination'.",
    ),
    Rule(
        "postfix-relay-check-neutralized",
        CRITICAL,
        "warn_if_reject disarms the relay check",
        "Any host on the Internet may relay: 'warn_if_reject' turns the relay check into a log line.",
        True,
        "Remove 'warn_if_reject' in front of reject_unauth_destination / defer_unauth_destination.",
    ),
    Rule(
        "postfix-relay-domains-wildcard",
        CRITICAL,
        "relay_domains matches (almost) every domain",
        "Any host on the Internet may relay to every domain matched by relay_domains: a top-level "
        "domain or a catch-all pattern makes reject_unauth_destination let them through.",
        True,
        "List only the domains you are a backup MX / gateway for in relay_domains (e.g. 'relay_domains = "
        "$mydestination' or an explicit list), never a TLD or a pattern matching everything.",
    ),
    Rule(
        "postfix-sender-access-permits",
        HIGH,
        "Relay permitted by the sender address",
        "Anyone who forges a listed sender address (trivial: MAIL FROM is not authenticated) may relay.",
        True,
        "Never answer OK for senders before reject_unauth_destination; use permit_sasl_authenticated "
        "for your users, or move check_sender_access after reject_unauth_destination.",
    ),
    Rule(
        "postfix-helo-access-permits",
        HIGH,
        "Relay permitted by the HELO name",
        "Anyone who announces a listed HELO name (the client chooses it freely) may relay.",
        True,
        "Never answer OK for HELO names before reject_unauth_destination; move check_helo_access after it.",
    ),
    Rule(
        "postfix-recipient-access-permits-any",
        CRITICAL,
        "Recipient access table permits every recipient",
        "Any host on the Internet may relay: an access table answers OK for every recipient, "
        "before reject_unauth_destination is reached.",
        True,
        "Make the table's patterns match only your own domains, or move check_recipient_access after "
        "reject_unauth_destination (smtpd_recipient_restrictions).",
    ),
    Rule(
        "postfix-client-access-permits-wide",
        HIGH,
        "Client access table permits a wide network",
        "Every client in a large (or every) network may relay: an access table answers OK for it "
        "before reject_unauth_destination.",
        True,
        "Answer OK only for your own hosts, or move check_client_access after reject_unauth_destination.",
    ),
    Rule(
        "postfix-access-table-unverified",
        MEDIUM,
        "A lookup table decides relaying and was not audited",
        "Outside clients may relay if this table answers OK (or a permit action) for them: its "
        "contents decide, and they were not given to the audit.",
        False,
        "Audit the table too (pass the file; for hash:/lmdb: tables the source text file), or place "
        "the check after reject_unauth_destination.",
    ),
    Rule(
        "postfix-permit-mx-backup",
        MEDIUM,
        "permit_mx_backup without permit_mx_backup_networks",
        "Anyone may relay to any domain whose MX record names this server, and anyone can publish such a record.",
        False,
        "List your backup-MX domains in relay_domains instead, or set permit_mx_backup_networks to the "
        "primary MX hosts' addresses.",
    ),
    Rule(
        "postfix-tls-clientcerts-public-ca",
        HIGH,
        "permit_tls_all_clientcerts with a public CA bundle",
        "Anyone holding a certificate from any public CA (free from Let's Encrypt) may relay.",
        True,
        "Use permit_tls_clientcerts with relay_clientcerts fingerprints, or trust only your private CA.",
    ),
    Rule(
        "postfix-permit-tls-all-clientcerts",
        MEDIUM,
        "permit_tls_all_clientcerts",
        "Any client with a certificate from a CA in smtpd_tls_CAfile/CApath may relay; safe only when "
        "that is a private CA.",
        False,
        "Prefer permit_tls_clientcerts with relay_clientcerts fingerprints.",
    ),
    Rule(
        "postfix-auth-without-tls",
        MEDIUM,
        "SMTP AUTH is offered without TLS",
        "Passwords of relaying users may cross the network in clear text; a sniffed password relays.",
        False,
        "Set 'smtpd_tls_auth_only = yes' (or smtpd_tls_security_level = encrypt on the submission service).",
    ),
    Rule(
        "postfix-percent-hack-relay",
        MEDIUM,
        "Routing operators with a recipient-based permit",
        "If an access table answers OK for one of your domains, addresses like user%outside@yourdomain "
        "or outside!user@yourdomain pass the check and are then routed to the outside.",
        False,
        "Set 'allow_percent_hack = no' and 'swap_bangpath = no', or move recipient permits after "
        "reject_unauth_destination.",
    ),
    Rule(
        "postfix-duplicate-parameter",
        LOW,
        "Parameter set twice",
        "Only the last setting counts; the earlier one, which a reader may trust, is ignored.",
        False,
        "Remove the earlier definition so the file says what Postfix does.",
    ),
    Rule(
        "postfix-unknown-restriction",
        LOW,
        "Unknown restriction name",
        "Postfix answers '451 4.3.5 Server configuration error' when it meets an unknown restriction.",
        False,
        "Check the spelling against postconf(5); a restriction class must be listed in smtpd_restriction_classes.",
    ),
    Rule(
        "postfix-not-internet-facing",
        INFO,
        "smtpd service not reachable from outside",
        "Nothing for outside clients: the service listens on loopback only.",
        False,
        "None needed.",
    ),
    # ---- Exim ------------------------------------------------------------------------------
    Rule(
        "exim-relay-from-any",
        CRITICAL,
        "relay_from_hosts trusts every address",
        "Any host on the Internet may relay: every client matches +relay_from_hosts.",
        True,
        "Set relay_from_hosts (Debian: dc_relay_nets in update-exim4.conf.conf, then "
        "'update-exim4.conf') to your own clients only, e.g. '127.0.0.1 : ::::1 : 192.168.1.0/24'.",
    ),
    Rule(
        "exim-relay-from-wide",
        HIGH,
        "relay_from_hosts trusts a wide outside network",
        "Every host in a large public network (strangers included) may relay.",
        True,
        "Narrow relay_from_hosts / dc_relay_nets to your own clients; let roaming users authenticate.",
    ),
    Rule(
        "exim-relay-from-range",
        LOW,
        "relay_from_hosts trusts an outside address range",
        "Every host in this outside range may relay; fine only if every address in it is yours.",
        False,
        "Confirm that every address in the range belongs to you, or list single hosts instead.",
    ),
    Rule(
        "exim-acl-accept-any-host",
        CRITICAL,
        "acl_check_rcpt accepts every client before the relay check",
        "Any host on the Internet may relay: an 'accept' statement matches every client and "
        "recipient before 'require domains = +local_domains : +relay_to_domains'.",
        True,
        "Remove the statement or restrict it ('hosts = +relay_from_hosts', 'authenticated = *', "
        "'domains = +local_domains').",
    ),
    Rule(
        "exim-acl-accept-forged-sender",
        HIGH,
        "acl_check_rcpt accepts by sender address before the relay check",
        "Anyone who forges a listed sender address (MAIL FROM is not authenticated) may relay.",
        True,
        "Never accept on senders/sender_domains before the relay check; require authentication instead.",
    ),
    Rule(
        "exim-acl-unverified",
        MEDIUM,
        "acl_check_rcpt accepts on a condition the audit cannot evaluate",
        "Outside clients may relay when this condition (a lookup, expansion or nested ACL) is true for them.",
        False,
        "Make sure the condition cannot be true for outside clients, or move the statement after the relay check.",
    ),
    Rule(
        "exim-relay-to-any-domain",
        CRITICAL,
        "relay_to_domains matches every domain",
        "Any host on the Internet may relay to every domain: the relay check passes for all recipients.",
        True,
        "List only the domains you relay for in relay_to_domains (Debian: dc_relay_domains), never '*' or a TLD.",
    ),
    Rule(
        "exim-percent-hack",
        HIGH,
        "percent_hack_domains covers your domains",
        "Anyone may relay with addresses like user%outside.example@yourdomain: they pass the relay "
        "check as local recipients and are then rewritten to the outside domain.",
        True,
        "Remove percent_hack_domains (it is unset by default).",
    ),
    Rule(
        "exim-not-internet-facing",
        INFO,
        "Exim listens on loopback only",
        "Nothing for outside clients: local_interfaces (dc_local_interfaces) lists loopback addresses only, "
        "so relay rules only matter for programs on this machine.",
        False,
        "None needed.",
    ),
    # ---- Exchange --------------------------------------------------------------------------
    Rule(
        "exchange-anonymous-relay-everyone",
        CRITICAL,
        "Anonymous relay for the whole Internet",
        "Any host on the Internet may relay: NT AUTHORITY\\ANONYMOUS LOGON holds "
        "ms-Exch-SMTP-Accept-Any-Recipient on a connector whose RemoteIPRanges cover every address.",
        True,
        "Create a dedicated relay connector whose RemoteIPRanges list only the devices that must relay, "
        "and remove the permission from this one: Remove-ADPermission -Identity '<connector>' "
        "-User 'NT AUTHORITY\\Anonymous Logon' -ExtendedRights ms-Exch-SMTP-Accept-Any-Recipient.",
    ),
    Rule(
        "exchange-anonymous-relay-wide",
        HIGH,
        "Anonymous relay for a wide outside range",
        "Every host in a large outside address range may relay without authenticating.",
        True,
        "Set-ReceiveConnector -RemoteIPRanges to the single addresses of the devices that must relay.",
    ),
    Rule(
        "exchange-anonymous-relay-range",
        MEDIUM,
        "Anonymous relay for an address range",
        "Every host in this range (not just the device that needs it) may relay without authenticating: "
        "one infected machine there can send spam through Exchange.",
        False,
        "Set-ReceiveConnector -RemoteIPRanges to the single addresses of the devices that must relay.",
    ),
    Rule(
        "exchange-anonymous-relay-unverified",
        HIGH,
        "Anonymous relay permission on a connector whose ranges are unknown",
        "Anonymous clients in the connector's RemoteIPRanges may relay; those ranges were not in the input.",
        False,
        "Audit the Get-ReceiveConnector | Format-List output together with the Get-ADPermission output.",
    ),
    Rule(
        "exchange-anonymous-users-relay-connector",
        HIGH,
        "AnonymousUsers on a relay connector",
        "If anonymous relay was granted on this connector (Get-ADPermission shows it), every host "
        "in its RemoteIPRanges may relay without authenticating.",
        False,
        "Check with: Get-ReceiveConnector '<connector>' | Get-ADPermission -User 'NT AUTHORITY\\Anonymous "
        "Logon' | Where-Object {$_.ExtendedRights -like 'ms-Exch-SMTP-Accept-Any-Recipient'}; "
        "limit RemoteIPRanges to the devices that must relay.",
    ),
    Rule(
        "exchange-externally-secured-everyone",
        CRITICAL,
        "Externally secured connector open to the whole Internet",
        "Any host on the Internet may relay: AuthMechanism ExternalAuthoritative treats every "
        "connection as an authenticated Exchange server, and RemoteIPRanges cover every address.",
        True,
        "Use ExternalAuthoritative only with RemoteIPRanges listing the secured partner hosts, or use "
        "an anonymous relay connector scoped to single addresses instead.",
    ),
    Rule(
        "exchange-externally-secured-wide",
        HIGH,
        "Externally secured connector for a wide range",
        "Every host in a large outside range is treated as an authenticated Exchange server and may relay.",
        True,
        "Limit RemoteIPRanges to the exact hosts on the secured network.",
    ),
    Rule(
        "exchange-externally-secured-range",
        MEDIUM,
        "Externally secured connector for an address range",
        "Every host in this range is treated as an authenticated Exchange server and may relay.",
        False,
        "Limit RemoteIPRanges to the exact hosts on the secured network.",
    ),
    # ---- Sendmail --------------------------------------------------------------------------
    Rule(
        "sendmail-promiscuous-relay",
        CRITICAL,
        "FEATURE(`promiscuous_relay')",
        "Any host on the Internet may relay: sendmail's relay checks are switched off.",
        True,
        "Remove FEATURE(`promiscuous_relay') from sendmail.mc, rebuild sendmail.cf (make -C /etc/mail) and restart.",
    ),
    Rule(
        "sendmail-relay-local-from",
        HIGH,
        "FEATURE(`relay_local_from')",
        "Anyone who forges a sender address in your domain may relay.",
        True,
        "Remove FEATURE(`relay_local_from'); let your users authenticate (SMTP AUTH) instead.",
    ),
    Rule(
        "sendmail-relay-mail-from",
        HIGH,
        "FEATURE(`relay_mail_from')",
        "Anyone who forges a sender address listed as 'From:... RELAY' in the access map may relay.",
        True,
        "Remove FEATURE(`relay_mail_from') and the From: RELAY entries; use SMTP AUTH.",
    ),
    Rule(
        "sendmail-loose-relay-check",
        HIGH,
        "FEATURE(`loose_relay_check')",
        "Anyone may relay with percent-hack addresses such as user%outside.example@yourdomain.",
        True,
        "Remove FEATURE(`loose_relay_check').",
    ),
    Rule(
        "sendmail-relay-entire-domain",
        MEDIUM,
        "FEATURE(`relay_entire_domain')",
        "Any host whose reverse DNS name is in your domain may relay; whoever controls a PTR record "
        "(or a compromised host there) gets in.",
        False,
        "List your clients' networks with 'Connect:<net> RELAY' in the access map instead.",
    ),
    Rule(
        "sendmail-relay-based-on-mx",
        MEDIUM,
        "FEATURE(`relay_based_on_MX')",
        "Anyone may relay to any domain whose MX record names this server, and anyone can publish such a record.",
        False,
        "List the domains you are backup MX for in relay-domains or the access map (To:domain RELAY).",
    ),
    Rule(
        "sendmail-access-relay-wide",
        HIGH,
        "access map grants RELAY to a wide network",
        "Every host in a large outside network (or a whole top-level domain) may relay.",
        True,
        "Grant 'Connect:<address> RELAY' only to your own hosts and networks, then rebuild access.db (makemap).",
    ),
    Rule(
        "sendmail-access-relay-range",
        LOW,
        "access map grants RELAY to an outside range",
        "Every host in this outside range may relay; fine only if every address in it is yours.",
        False,
        "Confirm that every address in the range belongs to you, or list single hosts instead.",
    ),
    Rule(
        "sendmail-access-from-relay",
        HIGH,
        "access map grants RELAY by sender address",
        "Anyone who forges this sender address may relay (active with FEATURE(`relay_mail_from')).",
        True,
        "Remove the From: ... RELAY entry; let the senders authenticate (SMTP AUTH).",
    ),
    Rule(
        "sendmail-access-from-relay-inert",
        LOW,
        "From: RELAY entry without FEATURE(`relay_mail_from')",
        "Nothing today (sendmail ignores From: RELAY without the feature), but enabling the feature "
        "would let anyone forging this sender relay.",
        False,
        "Remove the entry so that it cannot be switched on by accident.",
    ),
    Rule(
        "sendmail-access-relay-to-tld",
        CRITICAL,
        "access map grants RELAY to a top-level domain",
        "Any host on the Internet may relay to every domain under this TLD.",
        True,
        "Grant 'To:<domain> RELAY' only for the domains you are a gateway or backup MX for.",
    ),
    # ---- OpenSMTPD -------------------------------------------------------------------------
    Rule(
        "opensmtpd-relay-from-any",
        CRITICAL,
        "'match from any' relays to any domain",
        "Any host on the Internet may relay: a rule matches unauthenticated clients from anywhere and "
        "sends non-local recipients to a relay action.",
        True,
        "Relay only for local or authenticated clients: 'match from local for any action \"outbound\"' and "
        "'match auth from any for any action \"outbound\"'; use 'for domain <yours>' on 'from any' rules.",
    ),
    Rule(
        "opensmtpd-relay-from-wide",
        HIGH,
        "Relay rule for a wide outside network",
        "Every host in a large outside network may relay without authenticating.",
        True,
        "Narrow 'from src' to your own hosts, or require 'auth'.",
    ),
    Rule(
        "opensmtpd-relay-from-range",
        LOW,
        "Relay rule for an outside address range",
        "Every host in this outside range may relay; fine only if every address in it is yours.",
        False,
        "Confirm that every address in the range belongs to you, or list single hosts.",
    ),
    Rule(
        "opensmtpd-relay-mail-from",
        HIGH,
        "Relay rule decided by the sender address",
        "Anyone who forges the listed sender address may relay.",
        True,
        "Require 'auth' on the rule instead of trusting 'mail-from'.",
    ),
    Rule(
        "opensmtpd-relay-from-rdns",
        MEDIUM,
        "Relay rule decided by reverse DNS",
        "Any host whose reverse DNS matches may relay; whoever controls a PTR record gets in.",
        False,
        "Use 'from src' with your addresses, or 'auth'.",
    ),
    Rule(
        "opensmtpd-not-internet-facing",
        INFO,
        "OpenSMTPD listens on loopback only",
        "Nothing for outside clients: every 'listen on' is a loopback interface or address.",
        False,
        "None needed.",
    ),
    Rule(
        "opensmtpd-relay-unverified-table",
        MEDIUM,
        "Relay rule uses a table the audit did not see",
        "Outside clients may relay if the table lists them; its contents were not given to the audit.",
        False,
        "Audit the table's file too, or make sure it lists only your own hosts.",
    ),
)


def rule(code: str) -> Rule:
    return RULES[code]


def opens_relay(code: str) -> bool:
    found = RULES.get(code)
    return found is not None and found.opens_relay


def clean(text: str, limit: int = EVIDENCE_LIMIT) -> str:
    """A file-derived string made safe to show: control characters escaped, length capped."""
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def finding(code: str, detail: str, *lines: Line, extra_evidence: tuple[str, ...] = ()) -> Finding:
    """A finding of rule ``code``: the rule's plain words, then ``detail``; located at the first line."""
    meta = RULES[code]
    evidence = tuple(clean(f"{line.location}: {line.text.strip()}") for line in lines) + tuple(
        clean(e) for e in extra_evidence
    )
    return Finding(
        code=code,
        severity=meta.severity,
        title=meta.title,
        detail=clean(f"{meta.allows} {detail}".strip(), DETAIL_LIMIT) if detail else meta.allows,
        evidence=evidence,
        location=lines[0].location if lines else None,
        remediation=meta.remediation,
    )


def unparsed(line: Line, why: str = "") -> Finding:
    reason = f" ({why})" if why else ""
    return Finding(
        code="unparsed-line",
        severity=INFO,
        title=f"Could not parse line {line.number}",
        detail=clean(f"Could not parse line {line.number} of {line.source}{reason}; it was ignored."),
        evidence=(clean(f"{line.location}: {line.text.strip()}"),),
        location=line.location,
        remediation=RULES["unparsed-line"].remediation,
    )

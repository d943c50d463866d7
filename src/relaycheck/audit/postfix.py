"""Postfix: can an unauthenticated outside client get mail for a foreign domain accepted?

For every smtpd service reachable from outside (master.cf, or the stock ``smtp inet`` service),
the effective restriction lists — main.cf values, master.cf ``-o`` overrides, Postfix's built-in
defaults, ``$name`` expansion — are walked the way smtpd walks them at RCPT time (client, helo,
sender, relay, recipient, data: each list stops at its first permit or reject; any reject
refuses the recipient).

The walk is done once for "a generic outside client" (a stranger choosing its own HELO name,
sender and foreign recipient) and once per *population* that some restriction singles out
(clients in mynetworks, clients listed in an access table, holders of any client certificate…):
relaying is possible for a population when no list refuses it.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

from relaycheck.audit import netclass
from relaycheck.audit.model import FamilyResult, Line, SourceFile
from relaycheck.audit.netclass import Width
from relaycheck.audit.postfix_config import (
    Expander,
    Param,
    PostfixConfig,
    Service,
    TableEntry,
    compat_level,
    load_table,
    parse,
    referenced_table_paths,
    split_braced,
)
from relaycheck.audit.rules import dedupe, finding
from relaycheck.model import Finding

# smtpd evaluates these at RCPT time (smtpd_delay_reject = yes), in this order; the data lists
# come later but a reject there still stops every message.
GATE_LISTS = ("smtpd_client_restrictions", "smtpd_helo_restrictions", "smtpd_sender_restrictions")
RELAY_LISTS = ("smtpd_relay_restrictions", "smtpd_recipient_restrictions")
LATE_LISTS = ("smtpd_data_restrictions", "smtpd_end_of_data_restrictions")
ALL_LISTS = (*GATE_LISTS, *RELAY_LISTS, *LATE_LISTS)
LIST_SUBJECT = {
    "smtpd_client_restrictions": "client",
    "smtpd_helo_restrictions": "helo",
    "smtpd_sender_restrictions": "sender",
    "smtpd_relay_restrictions": "recipient",
    "smtpd_recipient_restrictions": "recipient",
    "smtpd_data_restrictions": "recipient",
    "smtpd_end_of_data_restrictions": "recipient",
}

RELAY_CHECKS = frozenset({"reject_unauth_destination", "defer_unauth_destination", "check_relay_domains"})
ALWAYS_REJECT = frozenset({"reject", "defer"})
# Restrictions an unauthenticated stranger passes or that cannot permit: they do not decide.
NEUTRAL = frozenset(
    {
        "permit_sasl_authenticated",
        "permit_tls_clientcerts",
        "permit_inet_interfaces",
        "permit_auth_destination",
        "reject_unauth_pipelining",
        "reject_unknown_client_hostname",
        "reject_unknown_client",
        "reject_unknown_reverse_client_hostname",
        "reject_unknown_forward_client_hostname",
        "reject_invalid_helo_hostname",
        "reject_invalid_hostname",
        "reject_non_fqdn_helo_hostname",
        "reject_non_fqdn_hostname",
        "reject_unknown_helo_hostname",
        "reject_unknown_hostname",
        "reject_non_fqdn_sender",
        "reject_non_fqdn_recipient",
        "reject_unknown_sender_domain",
        "reject_unknown_recipient_domain",
        "reject_unlisted_sender",
        "reject_unlisted_recipient",
        "reject_unverified_sender",
        "reject_unverified_recipient",
        "reject_sender_login_mismatch",
        "reject_authenticated_sender_login_mismatch",
        "reject_known_sender_login_mismatch",
        "reject_unauthenticated_sender_login_mismatch",
        "reject_plaintext_session",
        "reject_multi_recipient_bounce",
        "reject_non_fqdn_address",
        "reject_unknown_address",
        "reject_maps_rbl",
        "defer_if_reject",
    }
)
TAKES_ARGUMENT = frozenset(
    {
        "check_policy_service",
        "reject_rbl_client",
        "reject_rhsbl_client",
        "reject_rhsbl_reverse_client",
        "reject_rhsbl_sender",
        "reject_rhsbl_helo",
        "reject_rhsbl_recipient",
        "reject_rbl",
        "permit_dnswl_client",
        "permit_rhswl_client",
        "sleep",
    }
)
_ACCESS = re.compile(r"^check_([a-z_]+?)_access$")
# Which subject an access lookup keys on, and whether a stranger chooses it freely.
ATTACKER_CHOSEN = frozenset({"helo", "sender", "reverse_client_hostname", "helo_a", "helo_mx", "helo_ns"})
ATTACKER_CHOSEN |= {"sender_a", "sender_mx", "sender_ns"}
NEEDS_CREDENTIALS = frozenset({"ccert", "sasl"})
PUBLIC_CA_HINTS = ("/etc/ssl/certs", "ca-certificates.crt", "ca-bundle", "cert.pem", "tls-ca-bundle")
SAMPLE_RECIPIENTS = ("relaytest@outside-a.test", "u@example.net", "someone@mail.example.org")
SAMPLE_CLIENTS = ("198.51.100.7", "203.0.113.50", "mail.outside-a.test", "unknown")
MAX_DEPTH = 8


class Effect(Enum):
    DUNNO = "dunno"
    PERMIT = "permit"
    REJECT = "reject"


@dataclass(frozen=True)
class Cause:
    code: str
    detail: str
    lines: tuple[Line, ...] = ()
    evidence: tuple[str, ...] = ()


@dataclass(frozen=True)
class Population:
    """Clients (or recipients) some restriction treats specially; PERMIT for them."""

    key: str
    cause: Cause
    effect: Effect = Effect.PERMIT


@dataclass(frozen=True)
class TokenEffect:
    generic: Effect
    cause: Cause | None = None  # why a generic PERMIT (or why a relay check is void)
    population: Population | None = None
    relay_check: bool = False
    void_check: bool = False  # a relay check that does not reject (warn_if_reject, wildcard relay_domains)


@dataclass
class Walk:
    """One list walked for one population."""

    result: Effect  # PERMIT (explicit or end of list) or REJECT
    explicit: bool  # decided by a restriction, not by reaching the end
    cause: Cause | None = None
    check_after_decision: bool = False  # a relay check would have come later
    has_check: bool = False
    void_causes: list[Cause] = field(default_factory=list)


@dataclass
class ServiceContext:
    config: PostfixConfig
    service: Service
    expander: Expander
    findings: list[Finding]
    populations: dict[str, Population] = field(default_factory=dict)


def _list_param(ctx: ServiceContext, name: str) -> Param:
    param = ctx.expander.raw(name)
    return param if param is not None else Param(name, "", None)


def _param_lines(ctx: ServiceContext, *names: str) -> tuple[Line, ...]:
    lines: list[Line] = []
    for name in names:
        param = ctx.expander.raw(name)
        if param is not None and param.line is not None and param.line not in lines:
            lines.append(param.line)
    return tuple(lines)


def _default_note(param: Param) -> tuple[str, ...]:
    if param.line is not None:
        return ()
    return (f"{param.name} = {param.value} (Postfix built-in default: not set in the files given)",)


# ---- mynetworks and friends ----------------------------------------------------------------

MYNETWORKS_CODES = ("postfix-mynetworks-everyone", "postfix-mynetworks-public", "postfix-mynetworks-public-range")


def _mynetworks_population(ctx: ServiceContext) -> Population | None:
    mynetworks = ctx.expander.raw("mynetworks")
    if mynetworks is None:
        style = ctx.expander.value("mynetworks_style").strip().lower()
        lines = _param_lines(ctx, "mynetworks_style")
        note = () if lines else (f"mynetworks_style = {style} (built-in default for this compatibility_level)",)
        if style == "class":
            return Population("mynetworks", Cause("postfix-mynetworks-style-class", "", lines, note))
        if style == "subnet":
            return Population("mynetworks", Cause("postfix-mynetworks-style-subnet", "", lines, note))
        return None
    members: list[tuple[str, netclass.IPNetwork]] = []
    for entry in split_braced(ctx.expander.value("mynetworks")):
        if entry.startswith("!"):
            continue  # exclusions only narrow the list
        net = netclass.parse_network(entry)
        if net is not None:
            members.append((entry, net))
    judged = netclass.judge(members)
    code = netclass.code_for_width(judged.width, MYNETWORKS_CODES)
    if code is None:
        return None
    return Population(
        "mynetworks", Cause(code, f"mynetworks includes {judged.widest}.", _param_lines(ctx, "mynetworks"))
    )


def _relay_domains_effect(ctx: ServiceContext, where: tuple[Line, ...]) -> TokenEffect:
    """reject_unauth_destination, unless relay_domains matches every (or a whole TLD of) domain."""
    value = ctx.expander.value("relay_domains")
    lines = (*_param_lines(ctx, "relay_domains"), *where)
    for entry in split_braced(value):
        lowered = entry.lower()
        if lowered.startswith("static:"):
            cause = Cause(
                "postfix-relay-domains-wildcard",
                f"relay_domains = {value}: a static table matches every domain.",
                lines,
            )
            return TokenEffect(Effect.DUNNO, cause=cause, relay_check=True, void_check=True)
        if ":" in lowered and lowered.split(":", 1)[0] in {"regexp", "pcre"}:
            table = load_table(entry, None, ctx.config.tables, ctx.findings, ctx.expander.expand)
            if table.entries is not None and any(
                _regex_matches(e, "outside-a.test") and _regex_matches(e, "example.net") and not _is_reject(e.action)
                for e in table.entries
                if e.is_pattern
            ):
                cause = Cause(
                    "postfix-relay-domains-wildcard", f"relay_domains uses {entry}, which matches every domain.", lines
                )
                return TokenEffect(Effect.DUNNO, cause=cause, relay_check=True, void_check=True)
            continue
        bare = lowered.lstrip(".")
        if netclass.is_tld(lowered):
            cause = Cause(
                "postfix-relay-domains-wildcard",
                f"relay_domains contains '{entry}': every domain under .{bare} counts as a relay domain "
                "(parent_domain_matches_subdomains).",
                lines,
            )
            return TokenEffect(
                Effect.REJECT, population=Population(f"relay_domains:{bare}", cause, Effect.DUNNO), relay_check=True
            )
    return TokenEffect(Effect.REJECT, relay_check=True)


def _public_ca(ctx: ServiceContext) -> str | None:
    for name in ("smtpd_tls_CAfile", "smtpd_tls_CApath"):
        value = ctx.expander.value(name)
        if value and any(hint in value for hint in PUBLIC_CA_HINTS):
            return f"{name} = {value}"
    return None


# ---- access tables -------------------------------------------------------------------------


def _regex_is_risky(pattern: str) -> bool:
    """Nested quantifiers can backtrack for ages: such patterns are not evaluated."""
    return bool(re.search(r"[*+}]\s*\)[*+{?]", pattern)) or len(pattern) > 500


def _regex_matches(entry: TableEntry, subject: str) -> bool:
    if _regex_is_risky(entry.key):
        return False
    flags = 0 if "i" in entry.flags else re.IGNORECASE  # Postfix: case-insensitive unless /i
    try:
        found = re.search(entry.key, subject, flags) is not None
    except (re.error, RecursionError, OverflowError):
        return False
    return found != entry.negated


def _is_reject(action: str) -> bool:
    word = action.split()[0].upper() if action.split() else ""
    return word in {"REJECT", "DEFER", "DEFER_IF_PERMIT", "DISCARD", "HOLD"} or word[:1] in {"4", "5"}


def _action_effect(ctx: ServiceContext, action: str, subject: str, depth: int) -> Effect:
    """What an access-table answer does for the outside client: OK / digits permit, a restriction
    list or class is walked, everything else (REJECT, DUNNO, PREPEND, …) does not permit."""
    words = split_braced(action)
    if not words:
        return Effect.DUNNO
    head = words[0]
    if head.upper() == "OK" or head.isdigit():
        return Effect.PERMIT
    if _is_reject(action):
        return Effect.REJECT
    if head.upper() in {"DUNNO", "PREPEND", "WARN", "INFO", "FILTER", "REDIRECT", "BCC", "HOLD", "DISCARD"}:
        return Effect.DUNNO
    walk = _walk(ctx, words, subject, None, (), depth + 1)
    return walk.result if walk.explicit else Effect.DUNNO


def _access_effect(ctx: ServiceContext, kind: str, reference: str, where: tuple[Line, ...], depth: int) -> TokenEffect:
    table = load_table(reference, None, ctx.config.tables, ctx.findings, ctx.expander.expand)
    lines = where
    if kind in NEEDS_CREDENTIALS:
        return TokenEffect(Effect.DUNNO)
    if table.static_value is not None:
        effect = _action_effect(ctx, table.static_value, kind, depth)
        if effect is Effect.PERMIT:
            code = _permit_code(kind)
            return TokenEffect(
                Effect.PERMIT, cause=Cause(code, f"{reference} answers '{table.static_value}' for everything.", lines)
            )
        return TokenEffect(effect if effect is Effect.REJECT else Effect.DUNNO)
    if table.entries is None:
        cause = Cause(
            "postfix-access-table-unverified",
            f"check_{kind}_access {reference}: outside clients relay when it answers OK for their "
            f"{kind.replace('_', ' ')}.",
            lines,
        )
        return TokenEffect(Effect.DUNNO, population=Population(f"table:{kind}:{reference}", cause))
    permitting = [e for e in table.entries if _action_effect(ctx, e.action, kind, depth) is Effect.PERMIT]
    if not permitting:
        return TokenEffect(Effect.DUNNO)
    if kind in ATTACKER_CHOSEN:
        entry = permitting[0]
        shown = f"/{entry.key}/" if entry.is_pattern else entry.key
        cause = Cause(
            _permit_code(kind),
            f"check_{kind}_access {reference} answers '{entry.action}' for {shown}, which the client chooses freely.",
            (*lines, *((entry.line,) if entry.line else ())),
        )
        return TokenEffect(Effect.PERMIT, cause=cause)
    if kind == "recipient":
        return _recipient_table_effect(ctx, reference, permitting, lines)
    if kind == "client":
        return _client_table_effect(reference, permitting, lines)
    return TokenEffect(Effect.DUNNO)


def _permit_code(kind: str) -> str:
    if kind.startswith("sender"):
        return "postfix-sender-access-permits"
    if kind.startswith("helo") or kind == "reverse_client_hostname":
        return "postfix-helo-access-permits"
    if kind == "recipient":
        return "postfix-recipient-access-permits-any"
    return "postfix-client-access-permits-wide"


def _recipient_table_effect(
    ctx: ServiceContext, reference: str, permitting: list[TableEntry], lines: tuple[Line, ...]
) -> TokenEffect:
    for entry in permitting:
        entry_lines = (*lines, *((entry.line,) if entry.line else ()))
        if entry.is_pattern and all(_regex_matches(entry, s) for s in SAMPLE_RECIPIENTS):
            detail = f"{reference}: /{entry.key}/ {entry.action} matches every address."
            return TokenEffect(Effect.PERMIT, cause=Cause("postfix-recipient-access-permits-any", detail, entry_lines))
        bare = entry.key.lower().lstrip(".").rstrip("@")
        if not entry.is_pattern and netclass.is_tld(bare):
            detail = f"{reference}: '{entry.key} {entry.action}' matches every address under .{bare}."
            return TokenEffect(Effect.PERMIT, cause=Cause("postfix-recipient-access-permits-any", detail, entry_lines))
    local = _local_domains(ctx)
    hack = [n for n in ("allow_percent_hack", "swap_bangpath") if ctx.expander.value(n).strip().lower() == "yes"]
    for entry in permitting:
        domain = entry.key.lower().rpartition("@")[2].lstrip(".")
        if hack and not entry.is_pattern and domain in local:
            detail = (
                f"{reference} answers '{entry.action}' for {entry.key} and {' and '.join(hack)} = yes: "
                f"user%outside.example@{domain} passes as a local recipient."
            )
            ctx.findings.append(
                finding("postfix-percent-hack-relay", detail, *lines, *((entry.line,) if entry.line else ()))
            )
            break
    return TokenEffect(Effect.DUNNO)


def _client_table_effect(reference: str, permitting: list[TableEntry], lines: tuple[Line, ...]) -> TokenEffect:
    for entry in permitting:
        entry_lines = (*lines, *((entry.line,) if entry.line else ()))
        if entry.is_pattern:
            if all(_regex_matches(entry, s) for s in SAMPLE_CLIENTS[:2]):
                detail = f"{reference}: /{entry.key}/ {entry.action} matches every client address."
                return TokenEffect(
                    Effect.PERMIT, cause=Cause("postfix-client-access-permits-wide", detail, entry_lines)
                )
            continue
        net = netclass.parse_network(entry.key) or netclass.sendmail_prefix(entry.key)
        width = Width.NONE if net is None else netclass.width_of_network(net)
        if net is None and netclass.is_tld(entry.key):
            width = Width.OUTSIDE_WIDE  # a TLD: every client whose verified name ends in it
        if width >= Width.OUTSIDE_WIDE:
            detail = f"{reference}: '{entry.key} {entry.action}' covers a wide range of outside clients."
            cause = Cause("postfix-client-access-permits-wide", detail, entry_lines)
            if width is Width.EVERYONE:
                return TokenEffect(Effect.PERMIT, cause=cause)
            return TokenEffect(Effect.DUNNO, population=Population(f"table:client:{reference}", cause))
    return TokenEffect(Effect.DUNNO)


def _local_domains(ctx: ServiceContext) -> set[str]:
    domains: set[str] = set()
    for name in ("mydestination", "virtual_mailbox_domains", "virtual_alias_domains", "mydomain", "myhostname"):
        for entry in split_braced(ctx.expander.value(name)):
            if ":" not in entry and "/" not in entry and "$" not in entry:
                domains.add(entry.lower().lstrip("."))
    return domains


# ---- one restriction, one list -------------------------------------------------------------


def _token_effect(
    ctx: ServiceContext, name: str, argument: str | None, subject: str, where: tuple[Line, ...], depth: int
) -> TokenEffect:
    lowered = name.lower()
    lines = where
    if lowered == "permit":
        return TokenEffect(Effect.PERMIT, cause=Cause("postfix-permit-before-relay-check", "", lines))
    if lowered == "permit_naked_ip_address":
        detail = "permit_naked_ip_address permits any client that sends an IP address as HELO name."
        return TokenEffect(Effect.PERMIT, cause=Cause("postfix-permit-before-relay-check", detail, lines))
    if lowered in RELAY_CHECKS:
        return _relay_domains_effect(ctx, where)
    if lowered in ALWAYS_REJECT or lowered == "defer_if_permit":
        return TokenEffect(Effect.REJECT)
    if lowered == "permit_mynetworks":
        population = _mynetworks_population(ctx)
        return TokenEffect(Effect.DUNNO, population=population)
    if lowered == "permit_tls_all_clientcerts":
        public = _public_ca(ctx)
        if public:
            cause = Cause("postfix-tls-clientcerts-public-ca", f"The trusted CAs come from {public}.", lines)
        else:
            cause = Cause("postfix-permit-tls-all-clientcerts", "", lines)
        return TokenEffect(Effect.DUNNO, population=Population("tls_all_clientcerts", cause))
    if lowered == "permit_mx_backup":
        if ctx.expander.value("permit_mx_backup_networks").strip():
            return TokenEffect(Effect.DUNNO)
        return TokenEffect(
            Effect.DUNNO, population=Population("mx_backup", Cause("postfix-permit-mx-backup", "", lines))
        )
    if lowered in {"permit_dnswl_client", "permit_rhswl_client"}:
        detail = f"{name} {argument or ''}: every client on that DNS allow list (third parties) may relay."
        cause = Cause("postfix-access-table-unverified", detail, lines)
        return TokenEffect(Effect.DUNNO, population=Population(f"dnswl:{argument}", cause))
    access = _ACCESS.match(lowered)
    if access and argument is not None:
        return _access_effect(ctx, access.group(1), argument, where, depth)
    if lowered in NEUTRAL or lowered in TAKES_ARGUMENT or lowered.startswith(("reject_", "check_")):
        return TokenEffect(Effect.DUNNO)
    if ":" in name:  # a bare lookup table: check_<subject>_access implied by the list
        return _access_effect(ctx, subject, name, where, depth)
    if lowered in _classes(ctx) and depth < MAX_DEPTH:
        walk = _walk(
            ctx, split_braced(ctx.expander.value(name)), subject, None, (*where, *_param_lines(ctx, name)), depth + 1
        )
        return TokenEffect(walk.result if walk.explicit else Effect.DUNNO, cause=walk.cause)
    ctx.findings.append(
        finding("postfix-unknown-restriction", f"'{name}' is not a Postfix restriction or class.", *lines)
    )
    return TokenEffect(Effect.DUNNO)


def _classes(ctx: ServiceContext) -> set[str]:
    return {c.lower() for c in split_braced(ctx.expander.value("smtpd_restriction_classes"))}


def _walk(
    ctx: ServiceContext, tokens: list[str], subject: str, population: str | None, where: tuple[Line, ...], depth: int
) -> Walk:
    """Walk one restriction list for one population (None: a generic outside client)."""
    walk = Walk(Effect.PERMIT, explicit=False)
    defer_if_permit = warn_next = False
    index = 0
    decided = False
    while index < len(tokens):
        name = tokens[index]
        index += 1
        argument = None
        if (_ACCESS.match(name.lower()) or name.lower() in TAKES_ARGUMENT) and index < len(tokens):
            argument = tokens[index]
            index += 1
        if name.lower() == "warn_if_reject":
            warn_next = True
            continue
        if depth > MAX_DEPTH:
            break
        effect = _token_effect(ctx, name, argument, subject, where, depth)
        if effect.relay_check:
            walk.has_check = True
            if decided:
                walk.check_after_decision = True
        if effect.population is not None:
            ctx.populations.setdefault(effect.population.key, effect.population)
        if decided:
            continue
        result = effect.generic
        if population is not None and effect.population is not None and effect.population.key == population:
            result = effect.population.effect
        if warn_next and result is Effect.REJECT:
            result = Effect.DUNNO
            if effect.relay_check:
                walk.void_causes.append(
                    Cause("postfix-relay-check-neutralized", f"warn_if_reject precedes {name}.", where)
                )
        warn_next = False
        if effect.void_check and effect.cause is not None:
            walk.void_causes.append(effect.cause)
        if name.lower() == "defer_if_permit":
            defer_if_permit = True
            continue
        if result is Effect.DUNNO:
            continue
        if result is Effect.PERMIT and defer_if_permit:
            result = Effect.REJECT
        walk.result, walk.explicit, walk.cause, decided = result, True, effect.cause, True
    if not decided and defer_if_permit:
        walk.result, walk.explicit = Effect.REJECT, True
    return walk


# ---- one service ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceVerdict:
    service: str
    causes: tuple[Cause, ...]  # why relaying is possible (empty: no path found)
    refused_by: str | None  # the gate list that refuses every outside client, if any


def _where(ctx: ServiceContext, param: Param) -> tuple[Line, ...]:
    """The line that sets a list, plus the lines of the parameters its ``$name``s pull in."""
    lines = [param.line] if param.line is not None else []
    for name in re.findall(r"\$\{?\(?([A-Za-z0-9_]+)", param.value):
        referenced = ctx.expander.raw(name)
        if referenced is not None and referenced.line is not None and referenced.line not in lines:
            lines.append(referenced.line)
    return tuple(lines)


def _walk_all(ctx: ServiceContext, population: str | None) -> dict[str, Walk]:
    walks: dict[str, Walk] = {}
    for name in ALL_LISTS:
        param = _list_param(ctx, name)
        tokens = split_braced(ctx.expander.expand(param.value))
        walks[name] = _walk(ctx, tokens, LIST_SUBJECT[name], population, _where(ctx, param), 0)
    return walks


def _open(walks: dict[str, Walk]) -> bool:
    return all(w.result is not Effect.REJECT for w in walks.values())


def _generic_causes(ctx: ServiceContext, walks: dict[str, Walk]) -> list[Cause]:
    causes: list[Cause] = []
    for name in RELAY_LISTS:
        walk = walks[name]
        if walk.explicit and walk.check_after_decision and walk.cause is not None:
            causes.append(walk.cause)
        causes.extend(walk.void_causes)
    if not causes and not any(walks[n].has_check for n in RELAY_LISTS):
        relay, recipient = _list_param(ctx, RELAY_LISTS[0]), _list_param(ctx, RELAY_LISTS[1])
        relay_default = relay.line is None or "{$compatibility_level}" in relay.value  # as `postconf` prints it
        if relay_default and not recipient.value.strip():
            # Nothing set, compatibility_level < 1: Postfix 3 either refuses to start smtpd or
            # falls back to a default relay check, and Postfix < 2.10 defaulted to
            # "permit_mynetworks, reject_unauth_destination". No version relays.
            return []
        lines = tuple(p.line for p in (relay, recipient) if p.line is not None)
        detail = (
            f"smtpd_relay_restrictions = {relay.value or '(empty)'}; "
            f"smtpd_recipient_restrictions = {recipient.value or '(empty)'}."
        )
        causes.append(
            Cause(
                "postfix-no-reject-unauth-destination",
                detail,
                lines,
                (*_default_note(relay), *_default_note(recipient)),
            )
        )
    if not causes:  # an explicit permit in a list whose relay check is elsewhere
        causes.extend(w.cause for n in RELAY_LISTS if (w := walks[n]).explicit and w.cause is not None)
    return causes


def _reachable(ctx: ServiceContext) -> bool:
    host = ctx.service.host
    if host is not None and netclass.is_loopback_address(host):
        return False
    interfaces = split_braced(ctx.expander.value("inet_interfaces").lower())
    return not interfaces or not all(netclass.is_loopback_address(i) for i in interfaces)


def evaluate_service(config: PostfixConfig, service: Service, findings: list[Finding]) -> ServiceVerdict | None:
    expander = Expander(config.params, compat_level(config.params), service.overrides, config.main_dir)
    ctx = ServiceContext(config, service, expander, findings)
    if not _reachable(ctx):
        return None
    walks = _walk_all(ctx, None)
    refused_by = next((n for n in (*GATE_LISTS, *LATE_LISTS) if walks[n].result is Effect.REJECT), None)
    causes: list[Cause] = _generic_causes(ctx, walks) if _open(walks) else []
    for key, population in list(ctx.populations.items()):
        if population.cause not in causes and _open(_walk_all(ctx, key)):
            causes.append(population.cause)
    _auth_without_tls(ctx, findings)
    return ServiceVerdict(service.name, tuple(causes), refused_by)


def _auth_without_tls(ctx: ServiceContext, findings: list[Finding]) -> None:
    value = ctx.expander.value
    if value("smtpd_sasl_auth_enable").strip().lower() != "yes":
        return
    if value("smtpd_tls_auth_only").strip().lower() == "yes" or value("smtpd_tls_wrappermode").strip().lower() == "yes":
        return
    if value("smtpd_tls_security_level").strip().lower() == "encrypt" or value("smtpd_enforce_tls").lower() == "yes":
        return
    lines = _param_lines(ctx, "smtpd_sasl_auth_enable")
    detail = f"Service {ctx.service.name}: smtpd_sasl_auth_enable = yes and smtpd_tls_auth_only is not yes."
    findings.append(finding("postfix-auth-without-tls", detail, *lines))


def _services(config: PostfixConfig) -> list[Service]:
    if config.master_given:
        services = [s for s in config.services if s.command == "smtpd" and s.kind in {"inet", "pass"}]
    else:
        services = [Service("smtp", "inet", "smtpd")]
        for name, kind in config.service_overrides:
            if kind in {"inet", "pass"} and not any(s.name == name and s.kind == kind for s in services):
                services.append(Service(name, kind, "smtpd"))
    result: list[Service] = []
    for service in services:
        extra = config.service_overrides.get((service.name, service.kind), {})
        result.append(
            Service(service.name, service.kind, service.command, {**service.overrides, **extra}, service.line)
        )
    return result


def _merge(verdicts: list[ServiceVerdict]) -> list[Finding]:
    merged: dict[tuple[str, tuple[Line, ...], str], list[str]] = {}
    causes: dict[tuple[str, tuple[Line, ...], str], Cause] = {}
    for verdict in verdicts:
        for cause in verdict.causes:
            key = (cause.code, cause.lines, cause.detail)
            merged.setdefault(key, []).append(verdict.service)
            causes[key] = cause
    result: list[Finding] = []
    for key, services in merged.items():
        cause = causes[key]
        where = f"Service{'s' if len(services) > 1 else ''} {', '.join(services)}."
        result.append(
            finding(cause.code, f"{cause.detail} {where}".strip(), *cause.lines, extra_evidence=cause.evidence)
        )
    return result


def audit(sources: Sequence[SourceFile]) -> FamilyResult:
    config = parse(sources)
    findings: list[Finding] = list(config.findings)
    services = _services(config)
    verdicts: list[ServiceVerdict] = []
    skipped: list[str] = []
    for service in services:
        verdict = evaluate_service(config, service, findings)
        if verdict is None:
            skipped.append(service.name)
            continue
        verdicts.append(verdict)
    for name in skipped:
        service = next(s for s in services if s.name == name)
        lines = (service.line,) if service.host is not None and service.line else ()
        if not lines:  # not the service's own address: inet_interfaces keeps it local
            expander = Expander(config.params, compat_level(config.params), service.overrides, config.main_dir)
            param = expander.raw("inet_interfaces")
            lines = (param.line,) if param is not None and param.line is not None else ()
        findings.append(finding("postfix-not-internet-facing", f"Service {name}.", *lines))
    relay_findings = _merge(verdicts)
    findings = dedupe([*relay_findings, *findings], by_detail=True)
    return FamilyResult(tuple(findings), config.understood, _summary(config, verdicts, skipped))


def _summary(config: PostfixConfig, verdicts: list[ServiceVerdict], skipped: list[str]) -> str:
    level = ".".join(str(n) for n in compat_level(config.params))
    where = "master.cf" if config.master_given else "the stock master.cf (smtp inet … smtpd; master.cf not given)"
    names = ", ".join(v.service for v in verdicts) or "none"
    parts = [
        f"Postfix: evaluated the restriction lists of the smtpd services reachable from outside "
        f"({names}, from {where}) "
        f"for an unauthenticated client relaying to a foreign domain, with Postfix's built-in defaults for unset "
        f"parameters (compatibility_level {level})."
    ]
    if not config.params:
        parts.append("No main.cf settings were given: every parameter is Postfix's built-in default.")
    refused = [f"{v.service} ({v.refused_by})" for v in verdicts if v.refused_by and not v.causes]
    if refused:
        parts.append(f"Every outside client is refused by: {', '.join(refused)}.")
    if skipped:
        parts.append(f"Not reachable from outside: {', '.join(skipped)}.")
    if config.tables:
        parts.append(f"Lookup tables read: {', '.join(sorted({s.name for s in config.tables.values()}))}.")
    return " ".join(parts)


def table_paths(sources: Sequence[SourceFile]) -> list[str]:
    """Lookup tables the configuration names (for the command to load when they exist)."""
    paths = referenced_table_paths(sources)
    given = {s.name for s in sources} | {posixpath.basename(s.name) for s in sources}
    return [p for p in paths if p not in given and posixpath.basename(p) not in given]

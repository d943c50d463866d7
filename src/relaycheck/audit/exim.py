"""Exim: exim4.conf(.template), Debian's update-exim4.conf.conf, split conf.d directories.

The RCPT ACL (``acl_smtp_rcpt``, Debian's ``acl_check_rcpt``) is walked statement by statement
for an unauthenticated outside client sending to a foreign domain, with the named lists it uses
(``relay_from_hosts``, ``local_domains``, ``relay_to_domains``) after macro expansion and
``.ifdef`` processing. Like Exim, a missing RCPT ACL refuses every recipient, and reaching the
end of the ACL is an implicit deny.

The relay decision may also be made later: a RCPT ACL that accepts the foreign recipient still
relays nothing when the predata ACL (``acl_smtp_predata``, run at DATA) or the DATA ACL
(``acl_smtp_data``, run after the message) refuses the message for that client, e.g. with
``condition = ${if forany{<, $recipients}{!match_domain{${domain:$item}}{+local_domains}}}``.
Those ACLs are walked the same way once the RCPT ACL relays; unset, they accept.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

from relaycheck.audit import netclass
from relaycheck.audit.model import FamilyResult, Line, SourceFile
from relaycheck.audit.netclass import Width
from relaycheck.audit.rules import dedupe, finding, unparsed
from relaycheck.model import Finding

_MACRO = re.compile(r"^([A-Z][A-Za-z0-9_]*)\s*=\s*(.*)$")
_OPTION = re.compile(r"^(?:(domainlist|hostlist|addresslist|localpartlist)\s+)?([a-z][a-z0-9_]*)\s*=\s*(.*)$")
_BOOLEAN = re.compile(r"^(?:no_|not_)?[a-z][a-z0-9_]*$")
_DEBCONF = re.compile(r"^(dc_[a-z0-9_]+|CFILEMODE)\s*=\s*(['\"]?)(.*)\2\s*$")
_ACL_NAME = re.compile(r"^([A-Za-z0-9_]+)\s*:\s*$")
_VERBS = frozenset({"accept", "deny", "require", "drop", "defer", "discard", "warn"})
_CONDITION = re.compile(r"^(!?)\s*([a-z_]+)\s*=\s*(.*)$")
_MODIFIERS = frozenset(
    {
        "message",
        "log_message",
        "logwrite",
        "control",
        "set",
        "add_header",
        "remove_header",
        "delay",
        "endpass",
        "udpsend",
        "queue",
        "continue",
        "log_reject_target",
    }
)
LOCAL_INTERFACE_WORDS = frozenset({"127.0.0.1", "::1", "::::1", "localhost"})
SAMPLE_DOMAINS = ("outside-a.test", "example.net")


@dataclass(frozen=True)
class Setting:
    name: str
    value: str  # after macro expansion
    line: Line
    origins: tuple[Line, ...] = ()  # where the macros it uses were defined (e.g. update-exim4.conf.conf)


@dataclass
class Statement:
    verb: str
    line: Line
    conditions: list[tuple[bool, str, str, Line]] = field(default_factory=list)  # (negated, name, value, line)


@dataclass
class EximConfig:
    options: dict[str, Setting] = field(default_factory=dict)
    lists: dict[str, Setting] = field(default_factory=dict)
    acls: dict[str, list[Statement]] = field(default_factory=dict)
    debconf: dict[str, Setting] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    understood: int = 0
    has_config: bool = False  # anything beyond update-exim4.conf.conf


# ---- preprocessing -------------------------------------------------------------------------


def _physical_lines(sources: Sequence[SourceFile]) -> list[tuple[Line, str]]:
    """Join backslash continuations; drop comments and blank lines. Yields (first line, text)."""
    out: list[tuple[Line, str]] = []
    for source in sources:
        pending: tuple[Line, str] | None = None
        for number, raw in enumerate(source.text.splitlines(), start=1):
            stripped = raw.strip()
            if pending is not None:
                first, text = pending
                text += stripped
                if text.endswith("\\"):
                    pending = (first, text[:-1])
                    continue
                out.append((first, text))
                pending = None
                continue
            if not stripped or stripped.startswith("#"):
                continue
            line = Line(source.name, number, raw)
            if stripped.endswith("\\"):
                pending = (line, stripped[:-1])
                continue
            out.append((line, stripped))
        if pending is not None:
            out.append(pending)
    return out


def _expand_macros(text: str, macros: dict[str, str]) -> str:
    if not macros:
        return text
    for _ in range(10):  # macros may use earlier macros; stop on cycles
        names = sorted(macros, key=len, reverse=True)
        pattern = re.compile(r"\b(" + "|".join(re.escape(n) for n in names) + r")\b")
        expanded = pattern.sub(lambda m: macros[m.group(1)], text)
        if expanded == text:
            return expanded
        text = expanded
    return text


def _debian_macro_lines(debconf: dict[str, Setting]) -> dict[str, Line]:
    sources = {
        "MAIN_RELAY_NETS": "dc_relay_nets",
        "MAIN_RELAY_TO_DOMAINS": "dc_relay_domains",
        "MAIN_LOCAL_DOMAINS": "dc_other_hostnames",
        "MAIN_LOCAL_INTERFACES": "dc_local_interfaces",
    }
    return {macro: debconf[name].line for macro, name in sources.items() if name in debconf}


def _debian_macros(debconf: dict[str, Setting]) -> dict[str, str]:
    """What update-exim4.conf derives from update-exim4.conf.conf for the template."""

    def value(name: str) -> str:
        setting = debconf.get(name)
        return setting.value if setting else ""

    macros: dict[str, str] = {}
    if "dc_relay_nets" in debconf:
        macros["MAIN_RELAY_NETS"] = _to_colon_list(value("dc_relay_nets"))
    if "dc_relay_domains" in debconf:
        macros["MAIN_RELAY_TO_DOMAINS"] = _to_colon_list(value("dc_relay_domains"))
    if "dc_other_hostnames" in debconf:
        macros["MAIN_LOCAL_DOMAINS"] = "@:localhost" + (
            ":" + _to_colon_list(value("dc_other_hostnames")) if value("dc_other_hostnames") else ""
        )
    if "dc_local_interfaces" in debconf and value("dc_local_interfaces"):
        macros["MAIN_LOCAL_INTERFACES"] = "<; " + value("dc_local_interfaces")
    return macros


def _to_colon_list(text: str) -> str:
    """debconf lists use ';' (IPv6-friendly) or ':'; Exim lists need ':' with '::' for a colon."""
    if ";" in text:
        return " : ".join(item.strip().replace(":", "::") for item in text.split(";") if item.strip())
    return text


def parse(sources: Sequence[SourceFile]) -> EximConfig:
    config = EximConfig()
    lines = _physical_lines(sources)
    # update-exim4.conf.conf first: its settings become macros for the template.
    for line, text in lines:
        match = _DEBCONF.match(text)
        if match:
            config.debconf[match.group(1)] = Setting(match.group(1), match.group(3), line)
            config.understood += 1
    macros = _debian_macros(config.debconf)
    macro_lines = {k: v for k, v in _debian_macro_lines(config.debconf).items() if k in macros}
    skipping: list[bool] = []  # .ifdef stack: True while the branch is inactive
    section = "main"
    acl: str | None = None
    statement: Statement | None = None
    for line, text in lines:
        if _DEBCONF.match(text):
            continue
        if text.startswith("."):
            directive, _, argument = text[1:].partition(" ")
            name = argument.strip()
            if directive in {"ifdef", "ifndef"}:
                active = (name in macros) == (directive == "ifdef")
                skipping.append(bool(skipping and skipping[-1]) or not active)
            elif directive == "else" and skipping:
                outer = len(skipping) > 1 and skipping[-2]
                skipping[-1] = outer or not skipping[-1]
            elif directive == "endif" and skipping:
                skipping.pop()
            elif directive not in {"include", "include_if_exists"}:
                config.findings.append(unparsed(line, f"unknown directive .{directive}"))
            continue
        if skipping and skipping[-1]:
            continue
        macro = _MACRO.match(text)
        if macro and section == "main":
            macros[macro.group(1)] = _expand_macros(macro.group(2).strip(), macros)
            macro_lines[macro.group(1)] = line
            config.understood += 1
            config.has_config = True
            continue
        expanded = _expand_macros(text, macros)
        if expanded.lower().startswith("begin "):
            section = expanded.split(None, 1)[1].strip().lower()
            acl, statement = None, None
            config.understood += 1
            config.has_config = True
            continue
        if section == "main":
            used = tuple(macro_lines[n] for n in re.findall(r"\b[A-Z][A-Za-z0-9_]*\b", text) if n in macro_lines)
            _main_line(config, line, expanded, used)
        elif section == "acl":
            acl, statement = _acl_line(config, line, expanded, acl, statement)
        # routers, transports, retry, rewrite, authenticators: not evaluated (no relay decision there).
    return config


def _main_line(config: EximConfig, line: Line, text: str, used: tuple[Line, ...] = ()) -> None:
    match = _OPTION.match(text)
    if match:
        kind, name, value = match.groups()
        target = config.lists if kind else config.options
        target[name] = Setting(name, value.strip(), line, used)
        config.understood += 1
        config.has_config = True
    elif _BOOLEAN.match(text):
        config.understood += 1
        config.has_config = True
    else:
        config.findings.append(unparsed(line, "expected 'option = value' or 'hostlist name = …'"))


def _acl_line(
    config: EximConfig, line: Line, text: str, acl: str | None, statement: Statement | None
) -> tuple[str | None, Statement | None]:
    name = _ACL_NAME.match(text)
    if name:
        config.acls[name.group(1)] = []
        config.understood += 1
        return name.group(1), None
    first, _, rest = text.partition(" ")
    if first.lower() in _VERBS and acl is not None:
        statement = Statement(first.lower(), line)
        config.acls[acl].append(statement)
        config.understood += 1
        rest = rest.strip()
        if rest:
            _condition(config, statement, line, rest)
        return acl, statement
    if statement is not None and _CONDITION.match(text):
        _condition(config, statement, line, text)
        return acl, statement
    config.findings.append(unparsed(line, "expected an ACL name, a verb or 'condition = value'"))
    return acl, statement


def _condition(config: EximConfig, statement: Statement, line: Line, text: str) -> None:
    match = _CONDITION.match(text)
    if not match:
        config.findings.append(unparsed(line, "expected 'condition = value'"))
        return
    statement.conditions.append((bool(match.group(1)), match.group(2), match.group(3).strip(), line))


# ---- Exim lists ----------------------------------------------------------------------------


def split_list(value: str) -> list[str]:
    """Exim list syntax: ':' separated, '::' is a literal colon, '<X' changes the separator."""
    text = value.strip()
    separator = ":"
    if text.startswith("<") and len(text) > 1 and not text[1].isalnum():
        separator, text = text[1], text[2:]
    if separator == ":":
        items = re.split(r"(?<!:):(?!:)", text)
        return [i.strip().replace("::", ":") for i in items]
    return [i.strip() for i in text.split(separator)]


class Match(Enum):
    ALWAYS = "always"  # true for every outside client and foreign recipient
    NEVER = "never"
    CHOOSABLE = "choosable"  # the client decides (sender, HELO, TLS…): true when it wants
    NARROW = "narrow"  # the client can satisfy it, but only for a few recipients (local parts)
    POPULATION = "population"  # true for some outside clients only
    UNKNOWN = "unknown"  # a lookup or expansion the audit cannot evaluate


@dataclass(frozen=True)
class Evaluated:
    match: Match
    cause: tuple[str, str, tuple[Line, ...]] | None = None  # (code, detail, lines) when it opens a path
    population: str | None = None


@dataclass
class Context:
    config: EximConfig
    population: str | None = None
    populations: dict[str, tuple[str, str, tuple[Line, ...]]] = field(default_factory=dict)


def _named(config: EximConfig, name: str) -> Setting | None:
    return config.lists.get(name)


def _host_list(ctx: Context, value: str, depth: int = 0) -> Evaluated:
    """Does the outside client match this host list? First matching item decides."""
    for item in split_list(value):
        negated = item.startswith("!")
        item = item.lstrip("!").strip()
        result = _host_item(ctx, item, depth)
        if result.match is Match.NEVER:
            continue
        if negated:
            if result.match is Match.ALWAYS:
                return Evaluated(Match.NEVER)
            continue  # "!wide-net": the rest of the outside world goes on to the next item
        return result
    return Evaluated(Match.NEVER)


def _host_item(ctx: Context, item: str, depth: int) -> Evaluated:
    if item == "":
        return Evaluated(Match.NEVER)  # the empty item matches locally submitted messages only
    if item == "*":
        return Evaluated(Match.ALWAYS, ("exim-acl-accept-any-host", "hosts = * matches every client.", ()))
    if item.startswith("+") and depth < 5:
        setting = _named(ctx.config, item[1:])
        if setting is None:
            return Evaluated(Match.NEVER)
        inner = _host_list(ctx, setting.value, depth + 1)
        if inner.population is not None and inner.population in ctx.populations:
            code, detail, lines = ctx.populations[inner.population]
            if setting.line not in lines:
                where = (setting.line, *setting.origins, *lines)
                ctx.populations[inner.population] = (code, f"hostlist {item[1:]}: {detail}", where)
        if inner.match is Match.ALWAYS and item[1:] == "relay_from_hosts":
            detail = f"hostlist relay_from_hosts = {setting.value}."
            return Evaluated(Match.ALWAYS, ("exim-relay-from-any", detail, (setting.line, *setting.origins)))
        return inner
    if item.startswith("@") or item in {"localhost"}:
        return Evaluated(Match.NEVER)
    if ";" in item:
        return Evaluated(Match.UNKNOWN, ("exim-acl-unverified", f"host lookup '{item}'.", ()))
    net = netclass.parse_network(item)
    if net is None:
        if item.startswith("*") and item.count(".") <= 1:
            key = f"hosts:{item}"
            return _population(
                ctx, key, ("exim-relay-from-wide", f"'{item}' matches every host whose name ends so.", ())
            )
        return Evaluated(Match.NEVER)  # a host name: its verified addresses only
    width = netclass.width_of_network(net)
    if width is Width.EVERYONE:
        return Evaluated(Match.ALWAYS, ("exim-relay-from-any", f"'{item}' covers every address.", ()))
    if width is Width.OUTSIDE_WIDE:
        return _population(ctx, f"hosts:{item}", ("exim-relay-from-wide", f"'{item}' is a wide outside network.", ()))
    if width is Width.OUTSIDE_RANGE:
        return _population(ctx, f"hosts:{item}", ("exim-relay-from-range", f"'{item}' is an outside range.", ()))
    return Evaluated(Match.NEVER)


def _population(ctx: Context, key: str, cause: tuple[str, str, tuple[Line, ...]]) -> Evaluated:
    ctx.populations.setdefault(key, cause)
    if ctx.population == key:
        return Evaluated(Match.ALWAYS, cause)
    return Evaluated(Match.NEVER, population=key)


def _domain_list(ctx: Context, value: str, depth: int = 0) -> Evaluated:
    """Does a foreign recipient domain match this domain list?"""
    for item in split_list(value):
        negated = item.startswith("!")
        item = item.lstrip("!").strip()
        result = _domain_item(ctx, item, depth)
        if negated:
            if result.match is Match.NEVER:
                return Evaluated(Match.ALWAYS)  # "!+local_domains": every foreign domain
            if result.match is Match.ALWAYS:
                return Evaluated(Match.NEVER)
            continue
        if result.match is not Match.NEVER:
            return result
    return Evaluated(Match.NEVER)


def _domain_item(ctx: Context, item: str, depth: int) -> Evaluated:
    if item in {"*", "^", "^.*", "^.*$", "^.+$", "^.+"}:
        return Evaluated(Match.ALWAYS, ("exim-relay-to-any-domain", f"'{item}' matches every domain.", ()))
    if item.startswith("+") and depth < 5:
        setting = _named(ctx.config, item[1:])
        if setting is None:
            return Evaluated(Match.NEVER)
        inner = _domain_list(ctx, setting.value, depth + 1)
        if inner.match is Match.ALWAYS and inner.cause is not None:
            code, detail, _ = inner.cause
            detail = f"domainlist {item[1:]} = {setting.value}: {detail}"
            return Evaluated(Match.ALWAYS, (code, detail, (setting.line, *setting.origins)))
        return inner
    if item.startswith("^"):
        try:
            if all(re.search(item, d) for d in SAMPLE_DOMAINS):
                return Evaluated(Match.ALWAYS, ("exim-relay-to-any-domain", f"'{item}' matches every domain.", ()))
        except re.error:
            return Evaluated(Match.UNKNOWN)
        return Evaluated(Match.NEVER)
    if ";" in item:
        return Evaluated(Match.UNKNOWN, ("exim-acl-unverified", f"domain lookup '{item}'.", ()))
    bare = item.lstrip("*.").lower()
    if item.startswith("*") and bare and "." not in bare:
        return Evaluated(Match.ALWAYS, ("exim-relay-to-any-domain", f"'{item}' matches a whole top-level domain.", ()))
    return Evaluated(Match.NEVER)


# "${if forany{<list of $recipients>}{!match_domain{${domain:$item}}{DOMAINS}}}" and the
# match_address form "{!match_address{$item}{*@DOMAINS}}": true when a recipient lies outside
# DOMAINS, i.e. for the foreign recipient of a relay attempt unless DOMAINS matches it.
_OUTSIDE_RECIPIENT = re.compile(
    r"^\$\{if\s+forany\s*\{[^{}]*\$\{?recipients\}?[^{}]*\}\s*"
    r"\{\s*!\s*(?:match_domain\s*\{\s*\$\{domain:\$\{?item\}?\}\s*\}|match_address\s*\{\s*\$\{?item\}?\s*\}"
    r"\s*\{\s*\*@)\s*\{?\s*([^{}]*?)\s*\}\s*\}\s*\}$"
)


def _recipient_outside(ctx: Context, value: str) -> Evaluated | None:
    """A condition that is true when some recipient's domain is outside a domain list, or None."""
    match = _OUTSIDE_RECIPIENT.match(" ".join(value.split()))
    if match is None:
        return None
    inside = _domain_list(ctx, match.group(1))
    if inside.match is Match.NEVER:
        return Evaluated(Match.ALWAYS)  # the foreign domain is outside the list
    if inside.match is Match.ALWAYS:
        return Evaluated(Match.NEVER)
    return Evaluated(Match.UNKNOWN, ("exim-acl-unverified", f"condition = {value}.", ()))


def _evaluate(ctx: Context, name: str, value: str) -> Evaluated:
    if name == "condition":
        recognised = _recipient_outside(ctx, value)
        if recognised is not None:
            return recognised
    if name == "hosts":
        return _host_list(ctx, value)
    if name == "domains":
        return _domain_list(ctx, value)
    if name == "authenticated":
        return Evaluated(Match.NEVER)
    if name in {"senders", "sender_domains"}:
        return Evaluated(Match.CHOOSABLE, ("exim-acl-accept-forged-sender", f"{name} = {value}.", ()))
    if name == "verify":
        what = value.split("/")[0].strip().lower()
        if what == "recipient":
            return Evaluated(Match.ALWAYS)  # a routable foreign address verifies
        if what in {"sender", "reverse_host_lookup", "helo", "header_syntax", "header_sender", "certificate"}:
            return Evaluated(Match.CHOOSABLE, ("exim-acl-accept-forged-sender", f"verify = {value}.", ()))
        return Evaluated(Match.UNKNOWN, ("exim-acl-unverified", f"verify = {value}.", ()))
    if name in {"local_parts", "recipients"}:
        return Evaluated(Match.NARROW)
    if name == "encrypted":
        return Evaluated(
            Match.CHOOSABLE, ("exim-acl-accept-any-host", f"encrypted = {value}: any client can use TLS.", ())
        )
    if name == "dnslists":
        return Evaluated(Match.UNKNOWN, ("exim-acl-unverified", f"dnslists = {value}.", ()))
    return Evaluated(Match.UNKNOWN, ("exim-acl-unverified", f"{name} = {value}.", ()))


@dataclass(frozen=True)
class AclOutcome:
    relays: bool
    cause: tuple[str, str, tuple[Line, ...]] | None
    unknowns: tuple[tuple[str, str, tuple[Line, ...]], ...]
    decided_at: Line | None


def walk_acl(ctx: Context, statements: list[Statement]) -> AclOutcome:
    unknowns: list[tuple[str, str, tuple[Line, ...]]] = []
    void_checks: list[tuple[str, str, tuple[Line, ...]]] = []
    for statement in statements:
        results: list[tuple[Evaluated, Line]] = []
        for negated, name, value, line in statement.conditions:
            if name in _MODIFIERS:
                continue
            result = _evaluate(ctx, name, value)
            if negated:
                flipped = {Match.ALWAYS: Match.NEVER, Match.NEVER: Match.ALWAYS}.get(result.match, result.match)
                result = Evaluated(flipped, None if flipped is Match.NEVER else result.cause)
            results.append((result, line))
        matches = [r.match for r, _ in results]
        if statement.verb == "accept":
            if all(m in {Match.ALWAYS, Match.CHOOSABLE} for m in matches):
                cause = _accept_cause(results, void_checks, statement)
                return AclOutcome(True, cause, tuple(unknowns), statement.line)
            if Match.UNKNOWN in matches and not {Match.NEVER, Match.NARROW} & set(matches):
                for result, line in results:
                    if result.match is Match.UNKNOWN and result.cause:
                        code, detail, _ = result.cause
                        unknowns.append((code, detail, (statement.line, line)))
        elif statement.verb in {"deny", "drop", "defer", "discard"}:
            if results and all(m is Match.ALWAYS for m in matches):
                return AclOutcome(False, None, tuple(unknowns), statement.line)
            if not results:
                return AclOutcome(False, None, tuple(unknowns), statement.line)
        elif statement.verb == "require":
            if Match.NEVER in matches:
                return AclOutcome(False, None, tuple(unknowns), statement.line)
            for result, line in results:
                if result.cause and result.match is Match.ALWAYS and result.cause[0] == "exim-relay-to-any-domain":
                    code, detail, lines = result.cause
                    void_checks.append((code, detail, (*lines, line)))
    return AclOutcome(False, None, tuple(unknowns), None)  # end of ACL: implicit deny


def _accept_cause(
    results: list[tuple[Evaluated, Line]],
    void_checks: list[tuple[str, str, tuple[Line, ...]]],
    statement: Statement,
) -> tuple[str, str, tuple[Line, ...]]:
    for result, line in results:
        if result.cause and result.cause[0] in {"exim-relay-from-any", "exim-relay-from-wide", "exim-relay-from-range"}:
            code, detail, lines = result.cause
            return code, detail, (*lines, line, statement.line)
    if void_checks:
        code, detail, lines = void_checks[0]
        return code, detail, (*lines, statement.line)
    for result, line in results:
        if result.match is Match.CHOOSABLE and result.cause:
            code, detail, _ = result.cause
            return code, detail, (statement.line, line)
    for result, line in results:
        if result.cause:
            code, detail, lines = result.cause
            return code, detail, (statement.line, *lines, line)
    return "exim-acl-accept-any-host", "An unconditional 'accept' is reached before any relay check.", (statement.line,)


# ---- rules ---------------------------------------------------------------------------------


def _interface_address(item: str) -> str:
    """'127.0.0.1.25' / '[::1]:25' (an address with a port) -> the address."""
    item = item.strip()
    if item.startswith("["):
        return item[1:].partition("]")[0]
    if item.count(".") == 4 and ":" not in item:
        return item.rpartition(".")[0]
    return item


def _loopback_only(config: EximConfig) -> Line | None:
    """The line that makes Exim listen on loopback only, if one does."""
    setting = config.options.get("local_interfaces")
    if setting is not None:
        items = [i for i in split_list(setting.value) if i]
    elif not config.has_config and "dc_local_interfaces" in config.debconf:
        setting = config.debconf["dc_local_interfaces"]
        items = [i.strip() for i in setting.value.split(";") if i.strip()]
    else:
        return None
    if items and all(netclass.is_loopback_address(_interface_address(i)) for i in items):
        return setting.line
    return None


def _debconf_only(config: EximConfig, findings: list[Finding]) -> None:
    """Only update-exim4.conf.conf given: judge it as Debian's stock template would use it."""
    nets = config.debconf.get("dc_relay_nets")
    if nets is not None and nets.value.strip():
        members = [(i, n) for i in re.split(r"[;:]\s*(?=\S)", nets.value) if (n := netclass.parse_network(i.strip()))]
        if ";" not in nets.value and ":" in nets.value:
            members = [(i, n) for i in split_list(nets.value) if (n := netclass.parse_network(i))]
        judged = netclass.judge(members)
        code = netclass.code_for_width(judged.width, ("exim-relay-from-any", "exim-relay-from-wide",
                                                      "exim-relay-from-range"))
        if code:
            findings.append(
                finding(
                    code, f"dc_relay_nets includes {judged.widest} (relay_from_hosts in Debian's template).", nets.line
                )
            )
    domains = config.debconf.get("dc_relay_domains")
    if domains is not None:
        items = [i.strip() for i in re.split(r"[;:]", domains.value) if i.strip()]
        wild = [i for i in items if i in {"*", "^.*"} or (i.startswith("*") and "." not in i.lstrip("*."))]
        if wild:
            findings.append(
                finding("exim-relay-to-any-domain", f"dc_relay_domains includes '{wild[0]}'.", domains.line)
            )


def _percent_hack(config: EximConfig, statements: list[Statement], findings: list[Finding]) -> None:
    setting = config.options.get("percent_hack_domains")
    if setting is None or not setting.value.strip():
        return
    items = split_list(setting.value)
    local = split_list(config.lists["local_domains"].value) if "local_domains" in config.lists else []
    covers = [i for i in items if i in {"*", "+local_domains"} or (i and i in local)]
    if not covers:
        return
    for statement in statements:
        if statement.verb not in {"deny", "drop"}:
            continue
        conditions = {name: value for negated, name, value, _ in statement.conditions if not negated}
        if "%" in conditions.get("local_parts", "") and "+local_domains" in conditions.get("domains", ""):
            return  # the stock "Restricted characters in address" deny stops user%host@local first
    detail = f"percent_hack_domains = {setting.value} covers your local domains."
    findings.append(finding("exim-percent-hack", detail, setting.line))


def _rcpt_acl(config: EximConfig) -> tuple[str | None, list[Statement]]:
    setting = config.options.get("acl_smtp_rcpt")
    if setting is None:
        return None, []
    name = setting.value.strip()
    return name, config.acls.get(name, [])


# The ACLs Exim runs after RCPT for a message over SMTP, in order; unset, they accept.
LATER_ACLS = ("acl_smtp_predata", "acl_smtp_data")


@dataclass(frozen=True)
class LaterRefusal:
    option: str  # acl_smtp_predata / acl_smtp_data
    acl: str
    line: Line  # the statement that refuses, or the option when the end of the ACL does


def later_refusal(config: EximConfig, ctx: Context) -> LaterRefusal | None:
    """The first ACL after RCPT that refuses the relay attempt ``ctx`` describes, if one does."""
    for option in LATER_ACLS:
        setting = config.options.get(option)
        if setting is None:
            continue
        name = setting.value.strip()
        if name not in config.acls:
            continue  # inline ACL text or a file: not evaluated, so it is not counted on
        outcome = walk_acl(Context(config, ctx.population, ctx.populations), config.acls[name])
        # An 'accept' on a condition the audit cannot evaluate may let the message through.
        if not outcome.relays and not outcome.unknowns:
            return LaterRefusal(option, name, outcome.decided_at or setting.line)
    return None


def _findings_from_outcome(outcome: AclOutcome, findings: list[Finding]) -> None:
    if outcome.relays and outcome.cause is not None:
        code, detail, lines = outcome.cause
        findings.append(finding(code, detail, *_unique(lines)))
    for code, detail, lines in outcome.unknowns:
        findings.append(finding(code, detail, *_unique(lines)))


def _unique(lines: tuple[Line, ...]) -> tuple[Line, ...]:
    seen: list[Line] = []
    for line in lines:
        if line not in seen:
            seen.append(line)
    return tuple(seen)


def audit(sources: Sequence[SourceFile]) -> FamilyResult:
    config = parse(sources)
    findings: list[Finding] = list(config.findings)
    loopback = _loopback_only(config)
    if loopback is not None:
        findings.append(finding("exim-not-internet-facing", "", loopback))
        return FamilyResult(
            tuple(findings), config.understood, "Exim: listens on loopback only; relay rules were not evaluated."
        )
    if not config.has_config:
        _debconf_only(config, findings)
        summary = (
            "Exim: judged update-exim4.conf.conf as Debian's stock exim4.conf.template uses it "
            "(relay_from_hosts = 127.0.0.1 : ::1 : dc_relay_nets; relay check on +local_domains : +relay_to_domains)."
        )
        return FamilyResult(tuple(dedupe(findings)), config.understood, summary)
    acl_name, statements = _rcpt_acl(config)
    if acl_name is None:
        summary = "Exim: acl_smtp_rcpt is not set, so Exim refuses every recipient from remote hosts."
        return FamilyResult(tuple(findings), config.understood, summary)
    ctx = Context(config)
    outcome = walk_acl(ctx, statements)
    refused_later = later_refusal(config, ctx) if outcome.relays or outcome.unknowns else None
    if refused_later is None:
        _findings_from_outcome(outcome, findings)
    for key, cause in list(ctx.populations.items()):
        population = Context(config, key, ctx.populations)
        population_outcome = walk_acl(population, statements)
        if population_outcome.relays and later_refusal(config, population) is None:
            code, detail, lines = cause
            extra = population_outcome.cause[2] if population_outcome.cause else ()
            findings.append(finding(code, detail, *_unique((*lines, *extra))))
    _relay_from_hosts_note(config, findings)
    _percent_hack(config, statements, findings)
    summary = (
        f"Exim: walked the RCPT ACL '{acl_name}' ({len(statements)} statements) for an unauthenticated outside "
        "client sending to a foreign domain, with the named lists after macro expansion."
    )
    if refused_later is not None:
        where = refused_later.line.location
        summary += (
            f" It accepts such recipients, but {refused_later.option} '{refused_later.acl}' refuses the message"
            f" ({where}): the relay decision is made after RCPT, so a test that stops at RCPT sees the"
            " recipient accepted (relaycheck check --data-probe sees the refusal)."
        )
    return FamilyResult(tuple(dedupe(findings)), config.understood, summary)


def _relay_from_hosts_note(config: EximConfig, findings: list[Finding]) -> None:
    """A narrow outside range in relay_from_hosts is worth a look even when not a wide-open path."""
    setting = config.lists.get("relay_from_hosts")
    if setting is None:
        return
    members = [(i, n) for i in split_list(setting.value) if not i.startswith("!") and (n := netclass.parse_network(i))]
    judged = netclass.judge(members)
    if judged.width is Width.OUTSIDE_RANGE:
        findings.append(finding("exim-relay-from-range", f"relay_from_hosts includes {judged.widest}.", setting.line))

"""OpenSMTPD: smtpd.conf, both the 6.4+ grammar (``action`` + ``match``) and the older
``accept … relay`` rules.

Rules are tried in order and the first one that matches decides (no match: the recipient is
refused). The auditor asks, for an unauthenticated client on an outside address that picks its
own HELO name and sender: does a rule that matches it hand a non-local recipient to a relay
action?
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

_TOKEN = re.compile(r'"[^"]*"|<[^>]*>|\{[^}]*\}|!|[^\s!"<{]+')
_MACRO = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$")
DELIVERY_METHODS = frozenset({"relay", "mbox", "maildir", "lmtp", "mda", "forward-only", "expand-only"})
TOP_LEVEL = frozenset(
    {
        "listen",
        "action",
        "match",
        "table",
        "pki",
        "ca",
        "accept",
        "reject",
        "queue",
        "smtp",
        "srs",
        "mta",
        "limit",
        "expire",
        "bounce",
        "include",
        "filter",
        "proc",
        "admd",
        "proc-exec",
        "mda",
        "hostname",
    }
)


class Match(Enum):
    ALWAYS = "always"
    NEVER = "never"
    CHOOSABLE = "choosable"  # the client decides (sender, HELO, TLS)
    POPULATION = "population"  # some outside clients: resolved per walk to ALWAYS/NEVER
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Option:
    negated: bool
    keyword: str
    args: tuple[str, ...]


@dataclass(frozen=True)
class Rule:
    options: tuple[Option, ...]
    action: str | None  # action name (new grammar), "relay"/"deliver" (old), None for reject
    relay: bool
    line: Line


@dataclass
class Config:
    macros: dict[str, str] = field(default_factory=dict)
    tables: dict[str, tuple[list[str] | None, Line]] = field(default_factory=dict)
    actions: dict[str, tuple[str, Line]] = field(default_factory=dict)  # name -> (method, line)
    listeners: list[tuple[list[str], Line]] = field(default_factory=list)
    rules: list[tuple[list[str], Line, str]] = field(default_factory=list)  # tokens, line, grammar
    findings: list[Finding] = field(default_factory=list)
    understood: int = 0


def _unquote(token: str) -> str:
    return token[1:-1] if len(token) >= 2 and token[0] == token[-1] == '"' else token


def _logical(source: SourceFile) -> list[tuple[Line, str]]:
    out: list[tuple[Line, str]] = []
    pending: tuple[Line, str] | None = None
    for number, raw in enumerate(source.text.splitlines(), start=1):
        text = raw.split("#", 1)[0].rstrip() if '"' not in raw else raw.rstrip()
        if text.lstrip().startswith("#"):
            text = ""
        if pending is not None:
            first, joined = pending
            joined += " " + text.strip()
            if joined.endswith("\\"):
                pending = (first, joined[:-1])
            else:
                out.append((first, joined))
                pending = None
            continue
        if not text.strip():
            continue
        line = Line(source.name, number, raw)
        if text.endswith("\\"):
            pending = (line, text[:-1].strip())
        else:
            out.append((line, text.strip()))
    if pending is not None:
        out.append(pending)
    return out


def parse(sources: Sequence[SourceFile]) -> Config:
    config = Config()
    for source in sources:
        for line, text in _logical(source):
            macro = _MACRO.match(text)
            if macro and macro.group(1) not in TOP_LEVEL:
                config.macros[macro.group(1)] = _unquote(macro.group(2).strip())
                config.understood += 1
                continue
            for name, value in config.macros.items():
                text = text.replace(f"${name}", value)
            tokens = _TOKEN.findall(text)
            keyword = tokens[0].lower() if tokens else ""
            if keyword not in TOP_LEVEL:
                config.findings.append(unparsed(line, "not an smtpd.conf statement"))
                continue
            config.understood += 1
            if keyword == "table" and len(tokens) >= 3:
                body = tokens[2]
                entries = None
                if body.startswith("{"):
                    entries = [_unquote(e.strip()) for e in re.split(r"[,\s]+", body.strip("{} ")) if e.strip()]
                config.tables[_unquote(tokens[1])] = (entries, line)
            elif keyword == "action" and len(tokens) >= 3:
                config.actions[_unquote(tokens[1])] = (tokens[2].lower(), line)
            elif keyword == "listen":
                config.listeners.append((tokens[2:] if len(tokens) > 2 and tokens[1] == "on" else tokens[1:], line))
            elif keyword == "match":
                config.rules.append((tokens[1:], line, "match"))
            elif keyword in {"accept", "reject"}:
                config.rules.append((tokens, line, "legacy"))
    return config


def _options(tokens: list[str]) -> tuple[list[Option], list[str]]:
    """Split 'match' tokens into options and the trailing 'action NAME' / 'reject'."""
    options: list[Option] = []
    index = 0
    with_values = {"from", "for"}
    while index < len(tokens):
        token = tokens[index].lower()
        if token in {"action", "reject"}:
            return options, tokens[index:]
        negated = token == "!"
        if negated:
            index += 1
            if index >= len(tokens):
                break
            token = tokens[index].lower()
        index += 1
        args: list[str] = []
        if token in with_values and index < len(tokens):
            args.append(tokens[index].lower())
            index += 1
            takes = {"src": 1, "domain": 1, "rcpt-to": 1, "mail-from": 1, "rdns": 1, "auth": 1}
            if args[0] in takes and index < len(tokens) and tokens[index].lower() not in {"action", "reject", "!"}:
                if tokens[index].lower() == "regex" and index + 1 < len(tokens):
                    args.append("regex")
                    index += 1
                if tokens[index].lower() not in {"for", "from", "auth", "tls", "helo", "mail-from", "rcpt-to", "tag"}:
                    args.append(tokens[index])
                    index += 1
        elif token in {"auth", "mail-from", "rcpt-to", "helo", "tag"} and index < len(tokens):
            nxt = tokens[index]
            if nxt.lower() == "regex" and index + 1 < len(tokens):
                args.extend(["regex", tokens[index + 1]])
                index += 2
            elif nxt.startswith(("<", '"')) or (
                token != "auth" and nxt.lower() not in {"action", "reject", "!", "for", "from"}
            ):
                args.append(nxt)
                index += 1
        options.append(Option(negated, token, tuple(args)))
    return options, []


@dataclass
class Context:
    config: Config
    population: str | None = None
    populations: dict[str, tuple[str, str]] = field(default_factory=dict)  # key -> (code, detail)
    outside_tags: set[str] = field(default_factory=set)


def _source_width(ctx: Context, value: str) -> tuple[Match, tuple[str, str] | None, str | None]:
    """'from src X': X is a network, a quoted network or a <table>."""
    name = value.strip("<>")
    if value.startswith("<"):
        table = ctx.config.tables.get(name)
        entries = table[0] if table else None
        if entries is None:
            return Match.UNKNOWN, ("opensmtpd-relay-unverified-table", f"'from src {value}'."), None
        items = entries
    else:
        items = [_unquote(value)]
    members = [(i, n) for i in items if (n := netclass.parse_network(i) or netclass.sendmail_prefix(i))]
    judged = netclass.judge(members)
    if judged.width is Width.EVERYONE:
        return (
            Match.ALWAYS,
            ("opensmtpd-relay-from-any", f"'from src {value}' covers every address ({judged.widest})."),
            None,
        )
    if judged.width is Width.OUTSIDE_WIDE:
        return (
            Match.POPULATION,
            ("opensmtpd-relay-from-wide", f"'from src {value}' includes {judged.widest}."),
            f"src:{value}",
        )
    if judged.width is Width.OUTSIDE_RANGE:
        return (
            Match.POPULATION,
            ("opensmtpd-relay-from-range", f"'from src {value}' includes {judged.widest}."),
            f"src:{value}",
        )
    return Match.NEVER, None, None


def _domain_catch_all(ctx: Context, args: tuple[str, ...]) -> bool:
    values = [a for a in args if a != "regex"]
    if not values:
        return False
    value = values[0]
    table = ctx.config.tables.get(value.strip("<>"))
    items = (table[0] if table else None) if value.startswith("<") else [_unquote(value)]
    if items is None:
        return False
    if "regex" in args:
        return any(i in {".*", "^.*$", ".+", "^.*", "."} for i in items)
    return any(i in {"*", "*.*"} or (i.startswith("*.") and "." not in i[2:]) for i in items)


Judged = tuple[Match, tuple[str, str] | None]  # (does it match the stranger, the cause when it opens a path)


def _population_match(ctx: Context, key: str, cause: tuple[str, str]) -> Judged:
    """True only while walking for the population ``key`` (e.g. the clients of a wide network)."""
    ctx.populations.setdefault(key, cause)
    return (Match.ALWAYS if ctx.population == key else Match.NEVER), cause


def _from(ctx: Context, args: tuple[str, ...]) -> Judged:
    what = args[0] if args else ""
    if what == "any":
        return Match.ALWAYS, ("opensmtpd-relay-from-any", "'from any' matches every client.")
    if what in {"local", "socket", "auth"}:
        return Match.NEVER, None
    if what == "src" and len(args) > 1:
        result, cause, key = _source_width(ctx, args[-1])
        if key is not None and cause is not None:
            return _population_match(ctx, key, cause)
        return result, cause
    if what == "rdns":
        shown = f" {args[-1]}" if len(args) > 1 else ""
        return _population_match(
            ctx, "rdns:" + ",".join(args[1:]), ("opensmtpd-relay-from-rdns", f"'from rdns{shown}'.")
        )
    if what == "mail-from":
        return Match.CHOOSABLE, ("opensmtpd-relay-mail-from", f"'from mail-from {' '.join(args[1:])}'.")
    return Match.UNKNOWN, None


def _for(ctx: Context, args: tuple[str, ...]) -> Judged:
    what = args[0] if args else ""
    if what == "any":
        return Match.ALWAYS, None
    if what == "domain":
        return (Match.ALWAYS if _domain_catch_all(ctx, args[1:]) else Match.NEVER), None
    return Match.NEVER, None  # local, or rcpt-to: a few chosen addresses


def _evaluate(ctx: Context, option: Option) -> Judged:
    keyword, args = option.keyword, option.args
    judged: Judged
    if keyword == "from":
        judged = _from(ctx, args)
    elif keyword == "for":
        judged = _for(ctx, args)
    elif keyword == "mail-from":
        judged = Match.CHOOSABLE, ("opensmtpd-relay-mail-from", f"'mail-from {' '.join(args)}'.")
    elif keyword in {"helo", "tls"}:
        judged = Match.CHOOSABLE, None  # the client says what it likes, and can do TLS
    elif keyword == "tag":
        judged = (Match.ALWAYS if args and args[0].strip('"') in ctx.outside_tags else Match.NEVER), None
    elif keyword in {"auth", "rcpt-to"}:
        judged = Match.NEVER, None
    else:
        judged = Match.UNKNOWN, None
    if not option.negated:
        return judged
    flipped = {Match.ALWAYS: Match.NEVER, Match.NEVER: Match.ALWAYS}.get(judged[0], Match.UNKNOWN)
    return flipped, None


def _rule(ctx: Context, tokens: list[str], line: Line, grammar: str) -> Rule | None:
    return _match_rule(ctx, tokens, line) if grammar == "match" else _legacy_rule(tokens, line)


def _match_rule(ctx: Context, tokens: list[str], line: Line) -> Rule | None:
    options, tail = _options(tokens)
    if not tail:
        ctx.config.findings.append(unparsed(line, "a match rule without 'action NAME' or 'reject'"))
        return None
    if tail[0].lower() == "reject":
        return Rule(tuple(options), None, False, line)
    name = _unquote(tail[1]) if len(tail) > 1 else ""
    method = ctx.config.actions.get(name, ("", line))[0]
    explicit_from = any(o.keyword == "from" for o in options)
    explicit_for = any(o.keyword == "for" for o in options)
    defaults = ([] if explicit_from else [Option(False, "from", ("local",))]) + (
        [] if explicit_for else [Option(False, "for", ("local",))]
    )
    return Rule(tuple(options + defaults), name, method == "relay", line)


def _legacy_rule(tokens: list[str], line: Line) -> Rule:
    # accept|reject [tagged X] [from …] [sender …] for … [recipient …] <action>
    lowered = [t.lower() for t in tokens]
    options: list[Option] = []
    if "from" in lowered:
        index = lowered.index("from")
        args = tuple(x.lower() if i == 0 else x for i, x in enumerate(tokens[index + 1 : index + 3]))
        args = ("src", *args[1:]) if args and args[0] == "source" else args[:1]
        options.append(Option(False, "from", args))
    else:
        options.append(Option(False, "from", ("local",)))
    if "for" in lowered:
        index = lowered.index("for")
        options.append(
            Option(False, "for", tuple(t.lower() if i == 0 else t for i, t in enumerate(tokens[index + 1 : index + 3])))
        )
    if "sender" in lowered:
        index = lowered.index("sender")
        options.append(Option(False, "mail-from", tuple(tokens[index + 1 : index + 2])))
    relay = lowered[0] == "accept" and "relay" in lowered
    return Rule(tuple(options), "relay" if relay else None, relay, line)


@dataclass(frozen=True)
class Outcome:
    relays: bool
    cause: tuple[str, str, tuple[Line, ...]] | None
    unknowns: tuple[tuple[str, str, tuple[Line, ...]], ...]


def walk(ctx: Context, rules: list[Rule]) -> Outcome:
    unknowns: list[tuple[str, str, tuple[Line, ...]]] = []
    for rule in rules:
        results = [_evaluate(ctx, o) for o in rule.options]
        matches = [m for m, _ in results]
        if Match.NEVER in matches:
            continue
        if Match.UNKNOWN in matches:
            if rule.relay:
                cause = next((c for m, c in results if m is Match.UNKNOWN and c), None)
                code, detail = cause or ("opensmtpd-relay-unverified-table", "a condition the audit cannot evaluate.")
                unknowns.append((code, detail, (rule.line,)))
            continue
        if not rule.relay:
            return Outcome(False, None, tuple(unknowns))
        lines = (rule.line, *_action_line(ctx, rule))
        chosen = next((c for m, c in results if m is Match.CHOOSABLE and c), None)
        if ctx.population is not None:
            code, detail = ctx.populations[ctx.population]
            return Outcome(True, (code, detail, lines), tuple(unknowns))
        code, detail = chosen or next(
            (c for _, c in results if c), ("opensmtpd-relay-from-any", "The rule matches every client.")
        )
        return Outcome(True, (code, detail, lines), tuple(unknowns))
    return Outcome(False, None, tuple(unknowns))


def _action_line(ctx: Context, rule: Rule) -> tuple[Line, ...]:
    if rule.action and rule.action in ctx.config.actions:
        return (ctx.config.actions[rule.action][1],)
    return ()


def _outside_listeners(config: Config) -> list[tuple[list[str], Line]]:
    outside = []
    for tokens, line in config.listeners:
        where = tokens[0] if tokens else ""
        if where.lower() == "socket" or netclass.is_loopback_address(_unquote(where)):
            continue
        outside.append((tokens, line))
    return outside


def audit(sources: Sequence[SourceFile]) -> FamilyResult:
    config = parse(sources)
    findings: list[Finding] = list(config.findings)
    outside = _outside_listeners(config)
    if config.understood and not outside:
        lines = tuple(line for _, line in config.listeners[:1])
        findings.append(finding("opensmtpd-not-internet-facing", "", *lines))
        summary = "OpenSMTPD: no 'listen on' for an outside interface; relay rules were not evaluated."
        return FamilyResult(tuple(findings), config.understood, summary)
    ctx = Context(config)
    for tokens, _line in outside:
        lowered = [t.lower() for t in tokens]
        if "tag" in lowered and lowered.index("tag") + 1 < len(tokens):
            ctx.outside_tags.add(_unquote(tokens[lowered.index("tag") + 1]))
    rules = [r for tokens, line, grammar in config.rules if (r := _rule(ctx, tokens, line, grammar)) is not None]
    findings = list(config.findings)  # now including rules that could not be read
    outcome = walk(ctx, rules)
    if outcome.relays and outcome.cause:
        code, detail, lines = outcome.cause
        findings.append(finding(code, detail, *lines))
    for code, detail, lines in outcome.unknowns:
        findings.append(finding(code, detail, *lines))
    for key in list(ctx.populations):
        population_outcome = walk(Context(config, key, ctx.populations, ctx.outside_tags), rules)
        if population_outcome.relays and population_outcome.cause:
            code, detail, lines = population_outcome.cause
            findings.append(finding(code, detail, *lines))
    summary = (
        f"OpenSMTPD: tried {len(rules)} rule(s) in order for an unauthenticated client on an outside address "
        "(first match wins) to see whether one hands a foreign recipient to a relay action."
    )
    return FamilyResult(tuple(dedupe(findings)), config.understood, summary)

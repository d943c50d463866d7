"""Postfix configuration as data: main.cf / ``postconf -n`` / ``postconf -P`` parameters, master.cf
services with their ``-o`` overrides, ``$name`` expansion, built-in defaults and lookup tables.

Only parsing lives here; what the settings mean for relaying is ``postfix.py``.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from relaycheck.audit.model import Line, SourceFile
from relaycheck.audit.rules import finding, unparsed
from relaycheck.model import Finding

_PARAM = re.compile(r"^([A-Za-z0-9_./-]+)\s*=\s*(.*)$")
_SERVICE_TYPES = frozenset({"inet", "unix", "unix-dgram", "fifo", "pass"})
MAX_EXPANSION_DEPTH = 20


@dataclass(frozen=True)
class Param:
    name: str
    value: str  # as written (continuation lines joined with a space), not expanded
    line: Line | None  # None: Postfix's built-in default


@dataclass(frozen=True)
class Service:
    """One master.cf entry (or the stock ``smtp inet ... smtpd`` when master.cf was not given)."""

    name: str  # e.g. "smtp", "submission", "127.0.0.1:10025"
    kind: str  # inet, unix, pass, …
    command: str  # first word of the command, e.g. "smtpd", "postscreen"
    overrides: dict[str, Param] = field(default_factory=dict)
    line: Line | None = None

    @property
    def host(self) -> str | None:
        """The listen address part of an inet service name (``127.0.0.1:10025`` -> ``127.0.0.1``)."""
        if self.kind != "inet" or ":" not in self.name:
            return None
        host, _, _port = self.name.rpartition(":")
        return host.strip("[]")


@dataclass
class PostfixConfig:
    params: dict[str, Param] = field(default_factory=dict)
    services: list[Service] = field(default_factory=list)
    master_given: bool = False
    # postconf -P lines ("service/type/name = value"), keyed by (service, type).
    service_overrides: dict[tuple[str, str], dict[str, Param]] = field(default_factory=dict)
    tables: dict[str, SourceFile] = field(default_factory=dict)  # by path and by basename
    findings: list[Finding] = field(default_factory=list)
    understood: int = 0
    main_dir: str | None = None  # directory of the first main.cf-like file given


def logical_blocks(source: SourceFile) -> Iterator[tuple[list[Line], str]]:
    """Postfix's line rules: '#' lines are ignored, a line starting with whitespace continues the
    previous one. Yields (the physical lines, their text joined with spaces)."""
    block: list[Line] = []
    parts: list[str] = []
    for number, raw in enumerate(source.text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if raw[:1].isspace() and block:
            block.append(Line(source.name, number, raw))
            parts.append(stripped)
            continue
        if block:
            yield block, " ".join(parts)
        block, parts = [Line(source.name, number, raw)], [stripped]
    if block:
        yield block, " ".join(parts)


def logical_lines(source: SourceFile) -> Iterator[tuple[Line, str]]:
    for block, joined in logical_blocks(source):
        yield block[0], joined


def looks_like_master_cf(text: str) -> bool:
    for _first, joined in logical_lines(SourceFile("", text)):
        fields = joined.split()
        if len(fields) >= 8 and fields[1] in _SERVICE_TYPES:
            return True
    return False


def _parse_main(source: SourceFile, config: PostfixConfig) -> None:
    for line, joined in logical_lines(source):
        match = _PARAM.match(joined)
        if not match:
            config.findings.append(unparsed(line, "expected 'name = value'"))
            continue
        name, value = match.group(1), match.group(2).strip()
        config.understood += 1
        if name.count("/") == 2:  # postconf -P: service/type/parameter = value
            service, kind, parameter = name.split("/")
            config.service_overrides.setdefault((service, kind), {})[parameter] = Param(parameter, value, line)
            continue
        if "/" in name:
            config.findings.append(unparsed(line, "not a parameter name"))
            continue
        earlier = config.params.get(name)
        if earlier is not None and earlier.line is not None:
            config.findings.append(
                finding(
                    "postfix-duplicate-parameter",
                    f"{name} is set at {earlier.line.location} and again here; the value here wins.",
                    line,
                    earlier.line,
                )
            )
        config.params[name] = Param(name, value, line)


def split_braced(text: str, *, commas: bool = True) -> list[str]:
    """Split on whitespace (and commas, unless ``commas`` is false: master.cf fields), keeping
    ``{ ... }`` groups (Postfix 3.0 syntax, master.cf ``{ name = value }``) whole."""
    tokens: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        if char == "{":
            depth += 1
        elif char == "}" and depth:
            depth -= 1
        if depth == 0 and (char.isspace() or (commas and char == ",")):
            if current:
                tokens.append("".join(current))
                current = []
            continue
        current.append(char)
    if current:
        tokens.append("".join(current))
    return tokens


def _physical(block: list[Line], name: str) -> Line:
    """The physical line of a ``-o name=…`` inside a multi-line master.cf entry."""
    pattern = re.compile(r"-o\s*\{?\s*" + re.escape(name) + r"\s*=")
    return next((line for line in block if pattern.search(line.text)), block[0])


def _master_args(args: list[str], block: list[Line], config: PostfixConfig) -> dict[str, Param]:
    line = block[0]
    overrides: dict[str, Param] = {}
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        if arg != "-o" and not arg.startswith("-o"):
            continue
        setting = arg[2:] if arg != "-o" else (args[index] if index < len(args) else "")
        if arg == "-o":
            index += 1
        if setting.startswith("{") and setting.endswith("}"):
            setting = setting[1:-1].strip()
        name, equals, value = setting.partition("=")
        if not equals or not name.strip():
            config.findings.append(unparsed(line, f"-o option without name=value: {setting!r}"))
            continue
        overrides[name.strip()] = Param(name.strip(), value.strip(), _physical(block, name.strip()))
    return overrides


def _parse_master(source: SourceFile, config: PostfixConfig) -> None:
    config.master_given = True
    for block, joined in logical_blocks(source):
        line = block[0]
        fields = split_braced(joined, commas=False)
        if len(fields) < 8 or fields[1] not in _SERVICE_TYPES:
            config.findings.append(
                unparsed(line, "expected 'service type private unpriv chroot wakeup maxproc command'")
            )
            continue
        config.understood += 1
        command = posixpath.basename(fields[7])
        overrides = _master_args(fields[8:], block, config)
        config.services.append(Service(fields[0], fields[1], command, overrides, line))


def _table_paths(value: str) -> Iterator[str]:
    for match in re.finditer(r"\b(?:hash|lmdb|btree|cdb|dbm|texthash|regexp|pcre|cidr):([^\s,{}]+)", value):
        yield match.group(1)


def parse(sources: Sequence[SourceFile]) -> PostfixConfig:
    """Parse main.cf-like and master.cf-like files; files named by a table reference are tables."""
    config = PostfixConfig()
    referenced = {path for s in sources if not looks_like_master_cf(s.text) for path in _table_paths(s.text)}
    referenced_names = {posixpath.basename(p) for p in referenced}
    for source in sources:
        base = posixpath.basename(source.name)
        if source.name in referenced or (base in referenced_names and base not in {"main.cf", "master.cf"}):
            config.tables[source.name] = source
            config.tables.setdefault(base, source)
        elif base == "master.cf" or (base != "main.cf" and looks_like_master_cf(source.text)):
            _parse_master(source, config)
        else:
            if config.main_dir is None and source.name not in {"<stdin>", "-"}:
                config.main_dir = posixpath.dirname(source.name) or "."
            _parse_main(source, config)
    return config


# Parameters whose lookup tables can decide relaying (others, like alias_maps, are not read).
RELAY_PARAMETERS = (
    "smtpd_client_restrictions",
    "smtpd_helo_restrictions",
    "smtpd_sender_restrictions",
    "smtpd_relay_restrictions",
    "smtpd_recipient_restrictions",
    "smtpd_data_restrictions",
    "smtpd_end_of_data_restrictions",
    "relay_domains",
    "mynetworks",
)


def referenced_table_paths(sources: Sequence[SourceFile]) -> list[str]:
    """Lookup-table source files that relay decisions use (``$config_directory`` resolved to the
    main.cf's directory), for the command to read when they exist on disk."""
    config = parse(sources)
    level = compat_level(config.params)
    scopes: list[Mapping[str, Param]] = [{}, *(s.overrides for s in config.services)]
    scopes += config.service_overrides.values()
    paths: list[str] = []
    for overrides in scopes:
        expander = Expander(config.params, level, overrides, config.main_dir)
        classes = split_braced(expander.value("smtpd_restriction_classes"))
        for name in (*RELAY_PARAMETERS, *classes):
            for path in _table_paths(expander.value(name)):
                if path not in paths and "$" not in path:
                    paths.append(path)
    return paths


# ---- defaults and expansion ----------------------------------------------------------------


def compat_level(params: Mapping[str, Param]) -> tuple[int, ...]:
    raw = params.get("compatibility_level")
    text = raw.value if raw else "0"
    numbers = re.findall(r"\d+", text)
    return tuple(int(n) for n in numbers[:3]) or (0,)


def defaults(level: tuple[int, ...]) -> dict[str, str]:
    """Postfix 3.x built-in defaults that matter for relaying (``postconf -d``), by compatibility_level."""
    return {
        "smtpd_relay_restrictions": (
            "permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination" if level >= (1,) else ""
        ),
        "smtpd_recipient_restrictions": "",
        "smtpd_client_restrictions": "",
        "smtpd_helo_restrictions": "",
        "smtpd_sender_restrictions": "",
        "smtpd_data_restrictions": "",
        "smtpd_end_of_data_restrictions": "",
        "smtpd_restriction_classes": "",
        "mynetworks_style": "host" if level >= (2,) else "subnet",
        "relay_domains": "" if level >= (2,) else "$mydestination",
        "mydestination": "$myhostname, localhost.$mydomain, localhost",
        "allow_percent_hack": "yes",
        "swap_bangpath": "yes",
        "smtpd_sasl_auth_enable": "no",
        "smtpd_tls_auth_only": "no",
        "smtpd_tls_security_level": "",
        "smtpd_enforce_tls": "no",
        "smtpd_tls_wrappermode": "no",
        "permit_mx_backup_networks": "",
        "inet_interfaces": "all",
        "smtpd_tls_CAfile": "",
        "smtpd_tls_CApath": "",
        "config_directory": "/etc/postfix",
    }


_REFERENCE = re.compile(
    r"\$(?:\{([A-Za-z0-9_]+)(?:([?:])(\{[^{}]*\}|[^{}]*)(?::(\{[^{}]*\}))?)?\}|\(([A-Za-z0-9_]+)\)|([A-Za-z0-9_]+)|\$)"
)


# Postfix 3.6+ relational expressions, as `postconf` and `postconf -d` print defaults:
# ${{$compatibility_level} <level {2} ? {subnet} : {host}}
_RELATIONAL = re.compile(
    r"\$\{\{([^{}]*)\}\s*(==|!=|<=level|>=level|<level|>level)\s*\{([^{}]*)\}\s*\?\s*\{([^{}]*)\}"
    r"(?:\s*:\s*\{([^{}]*)\})?\s*\}"
)


def _level(text: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", text)[:3]) or (0,)


def _relation(left: str, operator: str, right: str) -> bool:
    if operator in {"==", "!="}:
        return (left.strip() == right.strip()) == (operator == "==")
    a, b = _level(left), _level(right)
    return {"<level": a < b, "<=level": a <= b, ">level": a > b, ">=level": a >= b}[operator]


class Expander:
    """``$name``, ``${name}``, ``$(name)``, ``${name?text}``, ``${name:text}``, ``${name?{a}:{b}}``.

    Unknown names stay as written (``$myhostname`` reads better than an empty string in a
    finding); cycles stop after MAX_EXPANSION_DEPTH rounds.
    """

    def __init__(
        self,
        params: Mapping[str, Param],
        level: tuple[int, ...],
        overrides: Mapping[str, Param] | None = None,
        main_dir: str | None = None,
    ) -> None:
        self.params = params
        self.overrides = overrides or {}
        self.defaults = defaults(level)
        if main_dir and "config_directory" not in params:
            # postfix -c DIR / MAIL_CONFIG: the directory the main.cf was read from.
            self.defaults["config_directory"] = main_dir

    def raw(self, name: str) -> Param | None:
        """The effective setting: master.cf override, then main.cf, then the built-in default."""
        if name in self.overrides:
            return self.overrides[name]
        if name in self.params:
            return self.params[name]
        if name in self.defaults:
            return Param(name, self.defaults[name], None)
        return None

    def value(self, name: str) -> str:
        param = self.raw(name)
        return "" if param is None else self.expand(param.value)

    def expand(self, text: str, depth: int = 0) -> str:
        if depth >= MAX_EXPANSION_DEPTH or "$" not in text:
            return text

        def substitute(match: re.Match[str]) -> str:
            whole = match.group(0)
            if whole == "$$":
                return "$"
            name = match.group(1) or match.group(5) or match.group(6)
            param = self.raw(name)
            value = None if param is None else self.expand(param.value, depth + 1)
            operator = match.group(2)
            if operator is None:
                return whole if value is None else value
            present = bool(value)
            first = (match.group(3) or "").strip()
            second = (match.group(4) or "").strip()
            first = first[1:-1] if first.startswith("{") and first.endswith("}") else first
            second = second[1:-1] if second.startswith("{") and second.endswith("}") else second
            chosen = (first if present else second) if operator == "?" else ("" if present else first)
            return self.expand(chosen, depth + 1)

        def relational(match: re.Match[str]) -> str:
            left = self.expand(match.group(1), depth + 1)
            right = self.expand(match.group(3), depth + 1)
            chosen = match.group(4) if _relation(left, match.group(2), right) else (match.group(5) or "")
            return self.expand(chosen, depth + 1)

        return _REFERENCE.sub(substitute, _RELATIONAL.sub(relational, text))


# ---- lookup tables -------------------------------------------------------------------------


@dataclass(frozen=True)
class TableEntry:
    key: str  # the literal key, or the regular expression for regexp:/pcre: tables
    action: str
    line: Line | None
    is_pattern: bool = False
    negated: bool = False
    flags: str = ""


@dataclass(frozen=True)
class Table:
    reference: str  # as written, e.g. "hash:/etc/postfix/sender_access"
    kind: str  # hash, regexp, inline, static, cidr, …
    entries: tuple[TableEntry, ...] | None  # None: contents unknown to the audit
    static_value: str | None = None


def _inline_entries(body: str, line: Line | None) -> tuple[TableEntry, ...]:
    entries: list[TableEntry] = []
    for token in split_braced(body):
        item = token[1:-1].strip() if token.startswith("{") and token.endswith("}") else token
        key, equals, value = item.partition("=")
        if equals:
            entries.append(TableEntry(key.strip(), value.strip(), line))
    return tuple(entries)


_REGEXP_LINE = re.compile(r"^(!?)/(.*)/([a-zA-Z]*)\s*(.*)$")


def _file_entries(kind: str, source: SourceFile, findings: list[Finding]) -> tuple[TableEntry, ...]:
    entries: list[TableEntry] = []
    for line, joined in logical_lines(source):
        if kind in {"regexp", "pcre"}:
            if joined.lower().startswith(("if ", "if!", "endif")):
                continue  # if/endif blocks only narrow the inner patterns: evaluate them alone
            match = _REGEXP_LINE.match(joined)
            if not match:
                findings.append(unparsed(line, f"not a {kind} table line"))
                continue
            entries.append(
                TableEntry(match.group(2), match.group(4).strip(), line, True, bool(match.group(1)), match.group(3))
            )
            continue
        key, _, value = joined.partition(" ") if " " in joined else joined.partition("\t")
        if not value.strip():
            findings.append(unparsed(line, "table line without a value"))
            continue
        entries.append(TableEntry(key.strip(), value.strip(), line))
    return tuple(entries)


def load_table(
    reference: str,
    line: Line | None,
    tables: Mapping[str, SourceFile],
    findings: list[Finding],
    expand: Callable[[str], str],
) -> Table:
    kind, _, rest = reference.partition(":")
    kind = kind.lower()
    if kind == "proxy":  # proxy:hash:/path -> the proxied table
        return load_table(rest, line, tables, findings, expand)
    if kind == "inline":
        body = rest.strip()
        body = body[1:-1] if body.startswith("{") and body.endswith("}") else body
        return Table(reference, kind, _inline_entries(body, line))
    if kind == "static":
        value = rest.strip()
        return Table(reference, kind, None, value[1:-1].strip() if value.startswith("{") else value)
    path = expand(rest)
    source = tables.get(path) or tables.get(posixpath.basename(path))
    if source is None:
        return Table(reference, kind, None)
    return Table(reference, kind, _file_entries(kind, source, findings))

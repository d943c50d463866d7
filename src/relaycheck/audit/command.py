"""``relaycheck audit FILE…``: read configuration files (or stdin), audit them, print, exit.

The only part of the auditor that touches the file system. Every problem with the input (a
missing file, a binary file, an unknown kind of configuration) is one line on stderr and exit
code 2, through ``relaycheck.errors.UsageError``.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

import click

from relaycheck.audit.detect import detect_family
from relaycheck.audit.engine import audit_sources
from relaycheck.audit.model import Family, SourceFile
from relaycheck.audit.postfix import table_paths
from relaycheck.audit.render import exit_code
from relaycheck.boundedio import STDIN, display_name, read_capped
from relaycheck.errors import UsageError
from relaycheck.options.table import command_options
from relaycheck.render import ReportKind, chosen_format, render
from relaycheck.terminal import style_for

MAX_FILE_BYTES = 10 * 1024 * 1024
MAX_DIRECTORY_FILES = 500
STDIN_NAME = "<stdin>"  # how standard input is named in reports
# Debian's update-exim4.conf concatenates conf.d in this order (main first, then the sections).
EXIM_SPLIT_ORDER = ("main", "acl", "router", "transport", "retry", "rewrite", "auth")
SKIPPED_SUFFIXES = (".db", ".lmdb", ".cdb", ".dpkg-old", ".dpkg-dist", ".dpkg-new", ".bak", ".orig", ".rpmsave", "~")


def decode(data: bytes, name: str) -> str:
    """Text of a configuration file; PowerShell's UTF-16 redirections included."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", errors="replace")
    if b"\0" in data:
        raise UsageError(f"{name} looks binary (a compiled .db map?); audit the text file it is built from")
    return data.decode("utf-8-sig", errors="replace")


def read_file(path: Path) -> SourceFile:
    """A configuration file (or ``-``, standard input): the bytes read are capped, whatever
    ``st_size`` says (character devices and pipes have none)."""
    name = str(path)
    raw = read_capped(name, MAX_FILE_BYTES, what="a configuration file")
    return SourceFile(STDIN_NAME if name == STDIN else name, decode(raw, display_name(name)))


def _directory_order(root: Path, path: Path) -> tuple[int, str]:
    first = path.relative_to(root).parts[0]
    rank = EXIM_SPLIT_ORDER.index(first) if first in EXIM_SPLIT_ORDER else len(EXIM_SPLIT_ORDER)
    return rank, str(path.relative_to(root))


def known_layout(root: Path) -> list[Path] | None:
    """The files that matter in a mail server's own configuration directory (/etc/postfix,
    /etc/exim4, /etc/mail), or None for a plain split directory such as exim4's conf.d."""

    def present(*names: str) -> list[Path]:
        return [root / n for n in names if (root / n).is_file()]

    if present("main.cf", "master.cf"):
        return present("main.cf", "master.cf")  # tables are found from main.cf
    if present("sendmail.mc"):
        return present("sendmail.mc", "access", "relay-domains")
    if present("smtpd.conf"):
        return present("smtpd.conf")
    if present("exim4.conf"):  # Debian uses a hand-written exim4.conf as it is
        return present("exim4.conf")
    debconf = root / "update-exim4.conf.conf"
    if debconf.is_file():
        split = "dc_use_split_config='true'" in read_file(debconf).text
        if split and (root / "conf.d").is_dir():
            return [debconf, *sorted_directory(root / "conf.d")]
        return [debconf, *present("exim4.conf.template")]
    return None


def sorted_directory(root: Path) -> list[Path]:
    files = [
        p
        for p in root.rglob("*")
        if p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
        and not p.name.endswith(SKIPPED_SUFFIXES)
    ]
    if len(files) > MAX_DIRECTORY_FILES:
        raise UsageError(f"{root} holds more than {MAX_DIRECTORY_FILES} files; give the configuration files themselves")
    return sorted(files, key=lambda p: _directory_order(root, p))


def read_directory(root: Path) -> list[SourceFile]:
    """A configuration directory: the known files of /etc/postfix, /etc/exim4 or /etc/mail, or
    every text file of a split directory (e.g. /etc/exim4/conf.d) in build order."""
    files = known_layout(root)
    if files is None:
        files = sorted_directory(root)
    if not files:
        raise UsageError(f"{root} contains no configuration files")
    return [read_file(p) for p in files]


def read_inputs(names: tuple[str, ...]) -> list[SourceFile]:
    if names.count("-") > 1:
        raise UsageError("'-' (standard input) can be given only once")
    sources: list[SourceFile] = []
    for name in names:
        if name == STDIN:
            sources.append(read_file(Path(STDIN)))
            continue
        path = Path(name)
        if path.is_dir():
            sources.extend(read_directory(path))
        elif path.exists() or path.is_symlink():
            sources.append(read_file(path))
        else:
            raise UsageError(f"cannot read {name}: no such file or directory")
    return sources


def postfix_tables(sources: list[SourceFile]) -> list[SourceFile]:
    """Lookup tables that main.cf/master.cf name and that exist here (hash: -> the source file)."""
    loaded: list[SourceFile] = []
    for name in table_paths(sources):
        path = Path(name)
        if path.is_file() and os.access(path, os.R_OK):
            try:
                loaded.append(read_file(path))
            except UsageError:
                continue  # a table that cannot be read stays "not audited"; the finding says so
    return loaded


FAMILY_FLAGS = tuple(f.value for f in Family)




@click.command("audit")
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
@command_options("audit", {}, report=ReportKind.AUDIT)
def audit_command(files: tuple[str, ...], **values: Any) -> None:
    """Audit mail server configuration FILEs for open relay paths, offline ('-' reads stdin).

    Exit codes: 0 no open relay path, 1 open relay possible, 2 usage error, 3 (mostly) not understood.
    """
    forced = [f for f in Family if values[f"is_{f.value}"]]
    if len(forced) > 1:
        raise UsageError(f"choose one of {', '.join('--' + f.value for f in forced)}")
    output = chosen_format(values["output_format"], values["as_json"])
    sources = read_inputs(files)
    family = forced[0] if forced else detect_family(sources)
    if family is Family.POSTFIX and not values["no_tables"]:
        sources += postfix_tables(sources)
    report = dataclasses.replace(audit_sources(sources, family), family_detected=not forced)
    style = style_for(sys.stdout, verbose=values["verbose"])
    click.echo(render(ReportKind.AUDIT, report, output, style), nl=False)
    raise SystemExit(exit_code(report))

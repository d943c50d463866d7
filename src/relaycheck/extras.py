"""Optional features and the extra (``pip install 'relaycheck[NAME]'``) each one needs.

A plain install has the core only (check, scan, report, audit, sink, demo). The web UI and Dask
come with extras; using one without it installed is one line naming the extra, never click's
"No such command" or a traceback.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
from types import ModuleType

from relaycheck.errors import UsageError


class MissingExtra(UsageError):
    """A feature was asked for whose optional dependencies are not installed."""

    def __init__(self, feature: str, extra: str, module: str | None = None) -> None:
        self.feature = feature
        self.extra = extra
        self.module = module
        super().__init__(f"{feature} needs the {extra} extra: pip install 'relaycheck[{extra}]'")


def split_spec(spec: str) -> tuple[str, str, str | None]:
    """``"package.module:attribute [extra]"`` (the entry-point syntax) -> its three parts."""
    target, _, rest = spec.partition("[")
    module, _, attribute = target.strip().partition(":")
    extra = rest.rstrip("] ").strip() or None
    return module, attribute, extra


def is_own_module(name: str | None) -> bool:
    return name is not None and (name == "relaycheck" or name.startswith("relaycheck."))


_REQUIREMENT = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)[^;]*;(.*)")
_EXTRA_MARKER = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")


def missing_distributions(extra: str) -> list[str]:
    """The distributions that ``extra`` requires and that are not installed (from our own metadata,
    so the answer cannot drift from pyproject.toml). Unknown when relaycheck is not installed: []."""
    try:
        requirements = importlib.metadata.requires("relaycheck") or []
    except importlib.metadata.PackageNotFoundError:
        return []
    missing = []
    for line in requirements:
        match = _REQUIREMENT.match(line)
        if match is None or match.group(1).lower() == "relaycheck":
            continue
        if extra not in _EXTRA_MARKER.findall(match.group(2)):
            continue
        try:
            importlib.metadata.distribution(match.group(1))
        except importlib.metadata.PackageNotFoundError:
            missing.append(match.group(1))
    return missing


def import_feature(module: str, feature: str, extra: str | None) -> ModuleType:
    """Import ``module`` when ``extra``'s distributions are installed; otherwise ``MissingExtra``,
    as for a third-party module missing underneath it (a command module may import its heavy
    dependencies only when it runs).

    A missing module of relaycheck itself is a broken install, not a missing extra: it is raised as is.
    """
    if extra is not None:
        missing = missing_distributions(extra)
        if missing:
            raise MissingExtra(feature, extra, missing[0])
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if extra is None or is_own_module(exc.name):
            raise
        raise MissingExtra(feature, extra, exc.name) from None

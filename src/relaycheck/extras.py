"""Optional features and the extra (``pip install 'relaycheck[NAME]'``) each one needs.

A plain install has the core only (check, scan, report, audit, sink, demo). The web UI and Dask
come with extras; using one without it installed is one line naming the extra, never click's
"No such command" or a traceback.
"""

from __future__ import annotations

import importlib
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


def import_feature(module: str, feature: str, extra: str | None) -> ModuleType:
    """Import ``module``; a third-party module missing underneath it becomes ``MissingExtra``.

    A missing module of relaycheck itself is a broken install, not a missing extra: it is raised as is.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if extra is None or is_own_module(exc.name):
            raise
        raise MissingExtra(feature, extra, exc.name) from None

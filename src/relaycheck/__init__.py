"""relaycheck: tell, with evidence, whether an SMTP server is an open relay, and how to close it.

Python API::

    report = await relaycheck.check("mx.example.com", relaycheck.CheckOptions())
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from relaycheck.api import CheckOptions, check

__all__ = ["CheckOptions", "__version__", "check"]


def __getattr__(name: str) -> Any:
    """``check``, ``CheckOptions`` and ``__version__`` on first use (PEP 562): importing a
    submodule (a scan worker, the CLI) should not pay for the whole API and package metadata."""
    if name in ("check", "CheckOptions"):
        from relaycheck import api

        return getattr(api, name)
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("relaycheck")
        except PackageNotFoundError:  # running from a source tree
            return "0.0.0"
    raise AttributeError(f"module 'relaycheck' has no attribute {name!r}")

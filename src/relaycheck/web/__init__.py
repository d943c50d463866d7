"""``relaycheck serve``: the open relay test as a web page and a JSON API over the same engine.

``create_app(settings)`` builds the FastAPI application; ``command.serve_command`` runs it with
uvicorn. See docs/web.md for the pages, the API and the security controls.

``create_app`` is imported on first use (PEP 562): the address guard (``web.guard``) is shared
with the exporter, which must not need FastAPI to import it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from relaycheck.web.settings import Settings

if TYPE_CHECKING:
    from relaycheck.web.app import create_app

__all__ = ["Settings", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from relaycheck.web.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

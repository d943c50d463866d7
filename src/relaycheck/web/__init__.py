"""``relaycheck serve``: the open relay test as a web page and a JSON API over the same engine.

``create_app(settings)`` builds the FastAPI application; ``command.serve_command`` runs it with
uvicorn. See docs/web.md for the pages, the API and the security controls.
"""

from __future__ import annotations

from relaycheck.web.app import create_app
from relaycheck.web.settings import Settings

__all__ = ["Settings", "create_app"]

"""relaycheck: tell, with evidence, whether an SMTP server is an open relay, and how to close it.

Python API::

    report = await relaycheck.check("mx.example.com", relaycheck.CheckOptions())
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from relaycheck.api import CheckOptions, check

try:
    __version__ = version("relaycheck")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"

__all__ = ["CheckOptions", "__version__", "check"]

"""The web UI's check store: it lives in ``relaycheck.history.store``, shared with ``watch``/``history``.

Re-exported here so ``from relaycheck.web import store`` keeps working.
"""

from __future__ import annotations

from relaycheck.history.store import (
    DONE,
    ERROR,
    QUEUED,
    RUNNING,
    STATUSES,
    CheckRow,
    Store,
    checks,
    make_engine,
    metadata,
    new_id,
    now,
)

__all__ = [
    "DONE",
    "ERROR",
    "QUEUED",
    "RUNNING",
    "STATUSES",
    "CheckRow",
    "Store",
    "checks",
    "make_engine",
    "metadata",
    "new_id",
    "now",
]

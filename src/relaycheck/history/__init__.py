"""Runs and changes over time, shared by the web UI (its history pages) and ``watch``/``history``.

``store``: every check with its full report (SQLite or any SQLAlchemy URL), and the alerts sent.
``changes``: pure: what changed between two reports of the same target.
"""

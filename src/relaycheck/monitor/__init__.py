"""Monitoring: the Prometheus exporter, ``watch`` (re-test on a schedule, alert on change) and ``history``.

Entry points only; the run store and change detection live in ``relaycheck.history``.
"""

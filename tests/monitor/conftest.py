"""Monitoring tests share the behaviour servers' fixtures (aiosmtpd on loopback port 0)."""

from __future__ import annotations

from ..behaviour.conftest import server_tls, smtp_server

__all__ = ["server_tls", "smtp_server"]

"""One check's report as Prometheus metrics (the answer to ``/probe``), in the blackbox_exporter style.

Pure: a ``Report`` in, metric families out; the exporter serialises them with prometheus_client.
Every family is present in every answer (zeros included) so that alert rules never see a series
vanish because a value happened to be zero.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from relaycheck.model import Outcome, ProbeKind, Report, Severity, VerdictKind
from relaycheck.report import EXIT_OK, EXIT_OPEN, summarize

PREFIX = "relaycheck"


def overall(report: Report) -> VerdictKind:
    """The verdict of the whole check, consistent with ``relaycheck check``'s exit code."""
    code = summarize(report).exit_code
    return (
        VerdictKind.OPEN if code == EXIT_OPEN else VerdictKind.CLOSED if code == EXIT_OK else VerdictKind.INCONCLUSIVE
    )


def earliest_not_after(report: Report) -> float | None:
    """The earliest certificate expiry over the targets, as a Unix timestamp."""
    moments = [
        datetime.fromisoformat(t.hygiene.tls.not_after).timestamp()
        for t in report.targets
        if t.hygiene and t.hygiene.tls and t.hygiene.tls.not_after
    ]
    return min(moments, default=None)


def report_metrics(report: Report, *, age: float = 0.0, pending: bool = False) -> list[Metric]:
    """The families of one probe. ``age``: seconds since the check ran (cached answers);
    ``pending``: the check did not finish within the scrape's time and runs on."""
    tested = bool(report.targets) and all(t.error is None for t in report.targets) and not report.problems
    verdict = overall(report)

    def gauge(name: str, doc: str, value: float, unit: str = "") -> GaugeMetricFamily:
        return GaugeMetricFamily(f"{PREFIX}_{name}", doc, value=value, unit=unit)

    families: list[Metric] = [
        gauge("probe_success", "1 when every target was reached and tested", 0 if pending else int(tested)),
        gauge("open_relay", "1 when at least one target is an open relay", int(verdict is VerdictKind.OPEN)),
        gauge(
            "probes_accepted",
            "Relay probes the targets accepted",
            sum(
                1
                for t in report.targets
                for o in t.observations
                if o.kind is ProbeKind.RELAY and o.outcome is Outcome.ACCEPTED
            ),
        ),
        gauge("duration_seconds", "How long the check took", round(report.duration, 4)),
        gauge("targets", "SMTP endpoints tested (every MX address)", len(report.targets)),
        gauge("input_problems", "Inputs that produced no target (null MX, NXDOMAIN, refused)", len(report.problems)),
        gauge("result_age_seconds", "Seconds since this result was measured (cached answers)", round(age, 3)),
        gauge("check_pending", "1 when the check ran past the scrape's timeout and goes on", int(pending)),
    ]
    states = GaugeMetricFamily(f"{PREFIX}_verdict", "The check's verdict (worst target wins)", labels=["verdict"])
    by_kind = GaugeMetricFamily(f"{PREFIX}_targets_by_verdict", "Targets per verdict", labels=["verdict"])
    for kind in VerdictKind:
        states.add_metric([kind.value], int(not pending and kind is verdict))
        by_kind.add_metric([kind.value], sum(1 for t in report.targets if t.verdict.kind is kind))
    findings = GaugeMetricFamily(f"{PREFIX}_findings", "Findings per severity over every target", labels=["severity"])
    for severity in Severity:
        findings.add_metric(
            [severity.value], sum(1 for t in report.targets for f in t.findings if f.severity is severity)
        )
    families += [states, by_kind, findings]
    expiry = earliest_not_after(report)
    if expiry is not None:
        families.append(
            gauge(
                "tls_cert_not_after_timestamp",
                "The earliest expiry of the targets' TLS certificates",
                expiry,
                "seconds",
            )
        )
    info = GaugeMetricFamily(
        f"{PREFIX}_info",
        "The MTA behind each target, as far as its replies tell",
        labels=["endpoint", "mta", "version"],
    )
    for t in report.targets:
        fingerprint = t.hygiene.fingerprint if t.hygiene else None
        if fingerprint is not None:
            address = t.target.address or t.target.host
            endpoint = f"[{address}]:{t.target.port}" if ":" in address else f"{address}:{t.target.port}"
            info.add_metric([endpoint, fingerprint.family, fingerprint.version or ""], 1)
    families.append(info)
    return families


class Families(Collector):
    """A fixed list of families as a collector (one registry per answer)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families

"""What changed between two runs of the same target (pure: stored JSON reports in, changes out).

Works on the report JSON (``render.json.report_dict``, the form the store keeps), so runs stored
by the web UI and by ``watch`` compare alike. Per endpoint (host, address, port) a run has a
*state*: reachable, verdict, the set of accepted relay probes, finding codes, MTA and version,
TLS certificate (fingerprint; whether it expires within 21 days of the run). A change is any
difference in a state, or an endpoint that appeared or went away. The state digest identifies a
state, so that the same state is never announced twice.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

EXPIRY_WARNING = timedelta(days=21)


class ChangeKind(StrEnum):
    VERDICT = "verdict"
    ACCEPTED_PROBES = "accepted-probes"
    FINDINGS = "findings"
    MTA = "mta"
    TLS_CERTIFICATE = "tls-certificate"
    TLS_EXPIRY = "tls-expiry"
    REACHABILITY = "reachability"
    ENDPOINT = "endpoint"


@dataclass(frozen=True)
class EndpointState:
    endpoint: str  # "host[address]:port/transport"
    reachable: bool
    verdict: str
    accepted: tuple[str, ...]  # relay probe ids accepted, sorted
    findings: tuple[str, ...]  # finding codes, sorted, distinct
    mta: str | None
    version: str | None
    certificate: str | None  # SHA-256 of the certificate (or subject|issuer|expiry for old reports)
    expires_soon: bool | None  # the certificate expires within 21 days of the run


@dataclass(frozen=True)
class Change:
    endpoint: str
    kind: ChangeKind
    before: Any
    after: Any
    summary: str  # one line for a human

    def as_dict(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "kind": str(self.kind), "before": self.before, "after": self.after,
                "summary": self.summary}  # fmt: skip


def endpoint_name(target: dict[str, Any]) -> str:
    host, address, port = target.get("host"), target.get("address"), target.get("port")
    shown = f"{host}[{address}]" if address and address != host else str(host)
    transport = target.get("transport") or "plain"
    return f"{shown}:{port}" + ("" if transport == "plain" else f"/{transport}")


def _moment(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def endpoint_state(t: dict[str, Any], run_started: str | None) -> EndpointState:
    hygiene = t.get("hygiene") or {}
    fingerprint = hygiene.get("fingerprint") or {}
    tls = hygiene.get("tls") or {}
    certificate = tls.get("cert_sha256")
    if certificate is None and tls.get("not_after"):
        certificate = f"{tls.get('cert_subject')}|{tls.get('cert_issuer')}|{tls.get('not_after')}"
    not_after, started = _moment(tls.get("not_after")), _moment(run_started)
    expires_soon = None if not_after is None or started is None else not_after - started < EXPIRY_WARNING
    accepted = sorted(
        {
            o["probe_id"]
            for o in t.get("observations", [])
            if o.get("kind") == "relay" and o.get("outcome") == "accepted"
        }
    )
    family = fingerprint.get("family")
    return EndpointState(
        endpoint=endpoint_name(t.get("target", {})),
        reachable=t.get("error") is None,
        verdict=t.get("verdict", {}).get("verdict", "inconclusive"),
        accepted=tuple(accepted),
        findings=tuple(sorted({f["code"] for f in t.get("findings", [])})),
        mta=None if family in (None, "unknown") else family,
        version=fingerprint.get("version") if family not in (None, "unknown") else None,
        certificate=certificate,
        expires_soon=expires_soon,
    )


def states(report: dict[str, Any]) -> dict[str, EndpointState]:
    started = report.get("started")
    result = {}
    for t in report.get("targets", []):
        state = endpoint_state(t, started)
        result[state.endpoint] = state
    return result


def state_digest(report: dict[str, Any]) -> str:
    """Identifies what a run found (not when, nor how long it took): equal states, equal digests."""
    canonical = json.dumps([asdict(s) for _, s in sorted(states(report).items())], sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def _set_change(endpoint: str, kind: ChangeKind, what: str, before: tuple[str, ...], after: tuple[str, ...]) -> Change:
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    parts = ([f"added {', '.join(added)}"] if added else []) + ([f"removed {', '.join(removed)}"] if removed else [])
    return Change(endpoint, kind, list(before), list(after), f"{endpoint}: {what} {'; '.join(parts)}")


def endpoint_changes(b: EndpointState, a: EndpointState) -> list[Change]:
    e = a.endpoint
    out: list[Change] = []
    if b.verdict != a.verdict:
        out.append(Change(e, ChangeKind.VERDICT, b.verdict, a.verdict, f"{e}: verdict {b.verdict} -> {a.verdict}"))
    if b.reachable != a.reachable:
        now = "reachable again" if a.reachable else "unreachable"
        out.append(Change(e, ChangeKind.REACHABILITY, b.reachable, a.reachable, f"{e}: {now}"))
    if not (a.reachable and b.reachable):
        return out  # an unreachable run has no probes, findings or certificate: nothing else to compare
    if b.accepted != a.accepted:
        out.append(_set_change(e, ChangeKind.ACCEPTED_PROBES, "accepted relay probes", b.accepted, a.accepted))
    if b.findings != a.findings:
        out.append(_set_change(e, ChangeKind.FINDINGS, "findings", b.findings, a.findings))
    if (b.mta, b.version) != (a.mta, a.version):
        before, after = _software(b), _software(a)
        out.append(Change(e, ChangeKind.MTA, before, after, f"{e}: server software {before} -> {after}"))
    if b.certificate != a.certificate:
        what = (
            "TLS certificate replaced"
            if b.certificate and a.certificate
            else ("TLS certificate gone" if b.certificate else "TLS certificate appeared")
        )
        out.append(Change(e, ChangeKind.TLS_CERTIFICATE, b.certificate, a.certificate, f"{e}: {what}"))
    if b.expires_soon is not True and a.expires_soon is True:
        days = EXPIRY_WARNING.days
        out.append(Change(e, ChangeKind.TLS_EXPIRY, False, True, f"{e}: TLS certificate expires within {days} days"))
    elif b.expires_soon is True and a.expires_soon is False:
        out.append(Change(e, ChangeKind.TLS_EXPIRY, True, False, f"{e}: TLS certificate no longer expires soon"))
    return out


def _software(s: EndpointState) -> str:
    return " ".join(p for p in (s.mta, s.version) if p) or "unknown"


def diff(before: dict[str, Any] | None, after: dict[str, Any]) -> list[Change]:
    """Every change from the report ``before`` (None: no earlier run) to ``after``."""
    if before is None:
        return []
    old, new = states(before), states(after)
    out: list[Change] = []
    for name in sorted(old.keys() | new.keys()):
        if name not in old:
            out.append(
                Change(
                    name, ChangeKind.ENDPOINT, None, new[name].verdict, f"{name}: new endpoint ({new[name].verdict})"
                )
            )
        elif name not in new:
            out.append(Change(name, ChangeKind.ENDPOINT, old[name].verdict, None, f"{name}: no longer tested"))
        else:
            out += endpoint_changes(old[name], new[name])
    return out

"""The versioned JSON form of a report (documented in docs/report-schema.md).

Field names are a promise to users' scripts: add fields, never rename or remove them without
bumping ``schema_version``.
"""

from __future__ import annotations

import json
from typing import Any

from relaycheck.model import (
    ConnectionLog,
    Delivery,
    Finding,
    HygieneFacts,
    Observation,
    Reply,
    Report,
    SessionFacts,
    Target,
    TargetReport,
    Verdict,
)
from relaycheck.report import summarize


def reply_dict(reply: Reply | None) -> dict[str, Any] | None:
    if reply is None:
        return None
    return {"code": reply.code, "enhanced": reply.enhanced, "text": reply.text, "lines": list(reply.lines)}


def target_dict(target: Target) -> dict[str, Any]:
    return {
        "host": target.host,
        "port": target.port,
        "transport": str(target.transport),
        "address": target.address,
        "domain": target.domain,
        "mx_preference": target.mx_preference,
    }


def verdict_dict(verdict: Verdict) -> dict[str, Any]:
    return {
        "verdict": str(verdict.kind),
        "confidence": str(verdict.confidence),
        "explanation": verdict.explanation,
        "evidence": list(verdict.evidence),
        "advice": verdict.advice,
    }


def facts_dict(facts: SessionFacts) -> dict[str, Any]:
    return {
        "banner": reply_dict(facts.banner),
        "banner_host": facts.banner_host,
        "ehlo_host": facts.ehlo_host,
        "extensions": list(facts.extensions),
        "esmtp": facts.esmtp,
        "pipelining": facts.pipelining,
        "starttls_offered": facts.starttls_offered,
        "local_domain": facts.local_domain,
        "ip_literal": facts.ip_literal,
    }


def observation_dict(obs: Observation) -> dict[str, Any]:
    return {
        "probe_id": obs.probe_id,
        "kind": str(obs.kind),
        "title": obs.title,
        "mail_from": obs.mail_from,
        "rcpt_to": obs.rcpt_to,
        "outcome": str(obs.outcome),
        "stage": str(obs.stage),
        "reply": reply_dict(obs.reply),
        "reason": obs.reason,
        "outside_domain": obs.outside_domain,
        "local_part_trick": obs.local_part_trick,
        "tls": obs.tls,
        "connection": obs.connection,
        "attempts": obs.attempts,
        "data_reply": reply_dict(obs.data_reply),
        "delivery": delivery_dict(obs.delivery),
    }


def delivery_dict(delivery: Delivery | None) -> dict[str, Any] | None:
    if delivery is None:
        return None
    return {
        "state": str(delivery.state),
        "token": delivery.token,
        "final_reply": reply_dict(delivery.final_reply),
        "received": list(delivery.received),
        "arrived_via": delivery.arrived_via,
    }


def finding_dict(finding: Finding) -> dict[str, Any]:
    return {
        "code": finding.code,
        "severity": str(finding.severity),
        "title": finding.title,
        "detail": finding.detail,
        "evidence": list(finding.evidence),
        "location": finding.location,
        "remediation": finding.remediation,
    }


def connection_dict(log: ConnectionLog) -> dict[str, Any]:
    return {
        "connection": log.index,
        "transport": str(log.transport),
        "tls": log.tls,
        "error": log.error,
        "exchanges": [
            {"at": round(e.at, 4), "sent": e.sent, "reply": reply_dict(e.reply), "note": e.note}
            for e in log.exchanges
        ],
    }


def hygiene_dict(h: HygieneFacts | None) -> dict[str, Any] | None:
    if h is None:
        return None
    tls = h.tls
    return {
        "fingerprint": None
        if h.fingerprint is None
        else {
            "family": h.fingerprint.family,
            "version": h.fingerprint.version,
            "evidence": list(h.fingerprint.evidence),
        },
        "ptr_names": None if h.ptr_names is None else list(h.ptr_names),
        "fcrdns": h.fcrdns,
        "tls": None
        if tls is None
        else {
            "offered": tls.offered,
            "established": tls.established,
            "version": tls.version,
            "cipher": tls.cipher,
            "cert_subject": tls.cert_subject,
            "cert_sans": list(tls.cert_sans),
            "cert_issuer": tls.cert_issuer,
            "not_before": tls.not_before,
            "not_after": tls.not_after,
            "self_signed": tls.self_signed,
            "chain_verified": tls.chain_verified,
            "verify_error": tls.verify_error,
            "hostname_matches": tls.hostname_matches,
            "error": tls.error,
            "cert_sha256": tls.cert_sha256,
        },
        "auth_before_tls": list(h.auth_before_tls),
        "auth_after_tls": list(h.auth_after_tls),
        "vrfy_postmaster": reply_dict(h.vrfy_postmaster),
        "vrfy_random": reply_dict(h.vrfy_random),
        "expn_postmaster": reply_dict(h.expn_postmaster),
        "auth_bypass_reply": reply_dict(h.auth_bypass_reply),
        "auth_bypass_relay": reply_dict(h.auth_bypass_relay),
        "dnsbl": None
        if h.dnsbl is None
        else [
            {"zone": d.zone, "listed": d.listed, "codes": list(d.codes), "meaning": d.meaning, "txt": d.txt}
            for d in h.dnsbl
        ],
    }


def target_report_dict(t: TargetReport) -> dict[str, Any]:
    return {
        "target": target_dict(t.target),
        "verdict": verdict_dict(t.verdict),
        "error": t.error,
        "error_kind": str(t.error_kind) if t.error_kind is not None else None,
        "tls_required": t.facts.tls_required,
        "server": facts_dict(t.facts),
        "connections": len(t.connections),
        "round_trips": t.round_trips,
        "duration_s": round(t.duration, 4),
        "observations": [observation_dict(o) for o in t.observations],
        "findings": [finding_dict(f) for f in t.findings],
        "hygiene": hygiene_dict(t.hygiene),
        "transcripts": [connection_dict(c) for c in t.connections],
    }


def report_dict(report: Report) -> dict[str, Any]:
    summary = summarize(report)
    return {
        "schema_version": report.schema_version,
        "tool": {"name": "relaycheck", "version": report.tool_version},
        "started": report.started,
        "duration_s": round(report.duration, 4),
        "mode": report.mode,
        "summary": {
            "open": summary.open,
            "closed": summary.closed,
            "inconclusive": summary.inconclusive,
            "problems": summary.problems,
            "exit_code": summary.exit_code,
        },
        "problems": [{"input": p.given, "problem": p.problem} for p in report.problems],
        "targets": [target_report_dict(t) for t in report.targets],
    }


def render_json(report: Report) -> str:
    return json.dumps(report_dict(report), indent=2, ensure_ascii=False) + "\n"

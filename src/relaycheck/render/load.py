"""The JSON report back into the model: ``report_from_dict(report_dict(r))`` renders like ``r``.

The inverse of ``render.json``, so that a stored report (the web's database, a saved
``--json`` file) can be rendered again in any format. Fields the JSON does not carry get the
model's defaults; unknown fields are ignored, so reports of a newer minor version still load.
"""

from __future__ import annotations

from typing import Any

from relaycheck.model import (
    SCHEMA_VERSION,
    Confidence,
    ConnectionLog,
    Delivery,
    DeliveryState,
    DnsblResult,
    Exchange,
    Finding,
    Fingerprint,
    HygieneFacts,
    InputProblem,
    Observation,
    Outcome,
    ProbeKind,
    Reply,
    Report,
    SessionFacts,
    Severity,
    Stage,
    Target,
    TargetReport,
    TlsFacts,
    Transport,
    Verdict,
    VerdictKind,
)


def _tuple(value: Any) -> tuple[Any, ...]:
    return tuple(value or ())


def reply_from(data: dict[str, Any] | None) -> Reply | None:
    if data is None:
        return None
    return Reply(code=int(data["code"]), lines=_tuple(data.get("lines")), enhanced=data.get("enhanced"))


def target_from(data: dict[str, Any]) -> Target:
    return Target(
        host=data["host"],
        port=int(data.get("port", 25)),
        transport=Transport(data.get("transport", "plain")),
        address=data.get("address"),
        domain=data.get("domain"),
        mx_preference=data.get("mx_preference"),
    )


def verdict_from(data: dict[str, Any]) -> Verdict:
    return Verdict(
        kind=VerdictKind(data["verdict"]),
        confidence=Confidence(data["confidence"]),
        explanation=data.get("explanation", ""),
        evidence=_tuple(data.get("evidence")),
        advice=data.get("advice"),
    )


def facts_from(data: dict[str, Any] | None, tls_required: bool) -> SessionFacts:
    data = data or {}
    return SessionFacts(
        banner=reply_from(data.get("banner")),
        banner_host=data.get("banner_host"),
        ehlo_host=data.get("ehlo_host"),
        extensions=_tuple(data.get("extensions")),
        esmtp=bool(data.get("esmtp", True)),
        pipelining=bool(data.get("pipelining", False)),
        starttls_offered=bool(data.get("starttls_offered", False)),
        tls_required=tls_required,
        local_domain=data.get("local_domain"),
        ip_literal=data.get("ip_literal"),
    )


def delivery_from(data: dict[str, Any] | None) -> Delivery | None:
    if data is None:
        return None
    return Delivery(
        state=DeliveryState(data["state"]),
        token=data.get("token", ""),
        final_reply=reply_from(data.get("final_reply")),
        received=_tuple(data.get("received")),
        arrived_via=data.get("arrived_via"),
    )


def observation_from(data: dict[str, Any]) -> Observation:
    return Observation(
        probe_id=data["probe_id"],
        kind=ProbeKind(data["kind"]),
        title=data.get("title", ""),
        mail_from=data.get("mail_from", ""),
        rcpt_to=data.get("rcpt_to", ""),
        outcome=Outcome(data["outcome"]),
        stage=Stage(data["stage"]),
        reply=reply_from(data.get("reply")),
        reason=data.get("reason", ""),
        outside_domain=data.get("outside_domain"),
        local_part_trick=bool(data.get("local_part_trick", False)),
        tls=bool(data.get("tls", False)),
        connection=int(data.get("connection", 0)),
        attempts=int(data.get("attempts", 1)),
        data_reply=reply_from(data.get("data_reply")),
        delivery=delivery_from(data.get("delivery")),
    )


def finding_from(data: dict[str, Any]) -> Finding:
    return Finding(
        code=data["code"],
        severity=Severity(data["severity"]),
        title=data.get("title", ""),
        detail=data.get("detail", ""),
        evidence=_tuple(data.get("evidence")),
        location=data.get("location"),
        remediation=data.get("remediation"),
    )


def connection_from(data: dict[str, Any]) -> ConnectionLog:
    return ConnectionLog(
        index=int(data.get("connection", 0)),
        transport=Transport(data.get("transport", "plain")),
        tls=bool(data.get("tls", False)),
        exchanges=tuple(
            Exchange(
                sent=e.get("sent"), reply=reply_from(e.get("reply")), at=float(e.get("at", 0.0)), note=e.get("note")
            )
            for e in data.get("exchanges", ())
        ),
        error=data.get("error"),
    )


def _tls_from(data: dict[str, Any] | None) -> TlsFacts | None:
    if data is None:
        return None
    return TlsFacts(
        offered=bool(data.get("offered", False)),
        established=bool(data.get("established", False)),
        version=data.get("version"),
        cipher=data.get("cipher"),
        cert_subject=data.get("cert_subject"),
        cert_sans=_tuple(data.get("cert_sans")),
        cert_issuer=data.get("cert_issuer"),
        not_before=data.get("not_before"),
        not_after=data.get("not_after"),
        self_signed=data.get("self_signed"),
        chain_verified=data.get("chain_verified"),
        verify_error=data.get("verify_error"),
        hostname_matches=data.get("hostname_matches"),
        error=data.get("error"),
    )


def hygiene_from(data: dict[str, Any] | None) -> HygieneFacts | None:
    if data is None:
        return None
    fingerprint = data.get("fingerprint")
    ptr = data.get("ptr_names")
    dnsbl = data.get("dnsbl")
    return HygieneFacts(
        ptr_names=None if ptr is None else tuple(ptr),
        fcrdns=data.get("fcrdns"),
        tls=_tls_from(data.get("tls")),
        auth_before_tls=_tuple(data.get("auth_before_tls")),
        auth_after_tls=_tuple(data.get("auth_after_tls")),
        vrfy_postmaster=reply_from(data.get("vrfy_postmaster")),
        vrfy_random=reply_from(data.get("vrfy_random")),
        expn_postmaster=reply_from(data.get("expn_postmaster")),
        auth_bypass_reply=reply_from(data.get("auth_bypass_reply")),
        auth_bypass_relay=reply_from(data.get("auth_bypass_relay")),
        dnsbl=None
        if dnsbl is None
        else tuple(
            DnsblResult(
                zone=d["zone"],
                listed=d.get("listed"),
                codes=_tuple(d.get("codes")),
                meaning=d.get("meaning", ""),
                txt=d.get("txt"),
            )
            for d in dnsbl
        ),
        fingerprint=None
        if fingerprint is None
        else Fingerprint(
            family=fingerprint["family"],
            version=fingerprint.get("version"),
            evidence=_tuple(fingerprint.get("evidence")),
        ),
    )


def target_report_from(data: dict[str, Any]) -> TargetReport:
    # The JSON keeps the number of connections and their transcripts; the model keeps the logs.
    return TargetReport(
        target=target_from(data["target"]),
        verdict=verdict_from(data["verdict"]),
        facts=facts_from(data.get("server"), bool(data.get("tls_required", False))),
        observations=tuple(observation_from(o) for o in data.get("observations", ())),
        findings=tuple(finding_from(f) for f in data.get("findings", ())),
        connections=tuple(connection_from(c) for c in data.get("transcripts", ())),
        round_trips=int(data.get("round_trips", 0)),
        duration=float(data.get("duration_s", 0.0)),
        error=data.get("error"),
        hygiene=hygiene_from(data.get("hygiene")),
    )


def report_from_dict(data: dict[str, Any]) -> Report:
    """A ``Report`` from the versioned JSON report (docs/report-schema.md)."""
    return Report(
        targets=tuple(target_report_from(t) for t in data.get("targets", ())),
        problems=tuple(InputProblem(p["input"], p["problem"]) for p in data.get("problems", ())),
        started=data.get("started", ""),
        duration=float(data.get("duration_s", 0.0)),
        tool_version=(data.get("tool") or {}).get("version", ""),
        mode=data.get("mode", "probe"),
        schema_version=int(data.get("schema_version") or SCHEMA_VERSION),
    )

"""A shareable Markdown report: per target the verdict first, then the fix, the server, the
accepted relay attempts, the findings with their fixes, every probe and the full transcripts.

Server-provided text (banners, replies, names, TXT records) is untrusted. In running text and
table cells it goes through ``md_text``: HTML-significant characters become entities and
Markdown punctuation is backslash-escaped, so a banner can neither inject HTML nor break a
table (``|``) or open a code span (`````). Transcripts go into fenced code blocks whose fence is
longer than any backtick run inside, so nothing in them can close the block.

The small helpers that describe a target in plain words (``server_rows``, ``mta_label``…) are
shared with the HTML renderer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from relaycheck.findings.fixes import Block, blocks
from relaycheck.findings.registry import fix_for
from relaycheck.fingerprint import FAMILY_NAMES, UNKNOWN
from relaycheck.model import (
    ConnectionLog,
    Finding,
    Observation,
    Outcome,
    ProbeKind,
    Report,
    TargetReport,
    VerdictKind,
)
from relaycheck.render.escape import md_fence, md_table, md_text
from relaycheck.report import summarize

HEADLINES = {
    VerdictKind.OPEN: "OPEN RELAY",
    VerdictKind.CLOSED: "CLOSED",
    VerdictKind.INCONCLUSIVE: "INCONCLUSIVE",
}


# --- plain-words description of a target (shared with render/html.py) --------------------------


def headline(t: TargetReport) -> str:
    return HEADLINES[t.verdict.kind]


def confidence(t: TargetReport) -> str | None:
    return None if t.verdict.kind is VerdictKind.INCONCLUSIVE else str(t.verdict.confidence)


def family_of(t: TargetReport) -> str:
    fp = t.hygiene.fingerprint if t.hygiene is not None else None
    return fp.family if fp is not None else "unknown"


def mta_label(t: TargetReport) -> str | None:
    """'Postfix', 'Exim 4.96'… or None when the MTA was not identified."""
    fp = t.hygiene.fingerprint if t.hygiene is not None else None
    if fp is None or fp.family == UNKNOWN or fp.family not in FAMILY_NAMES:
        return None
    return FAMILY_NAMES[fp.family] + (f" {fp.version}" if fp.version else "")


def open_relay_fix(t: TargetReport) -> str | None:
    """The MTA-specific way to close an open relay, unless the verdict's advice already is it."""
    if t.verdict.kind is not VerdictKind.OPEN:
        return None
    fix = fix_for("open-relay", family_of(t))
    if fix is None or (t.verdict.advice and fix.strip() == t.verdict.advice.strip()):
        return None
    return fix


def fix_heading(f: Finding, t: TargetReport) -> str:
    """'How to fix (Postfix)' when the text is the MTA's own, plain 'How to fix' when it is generic."""
    mta = mta_label(t)
    generic = fix_for(f.code, UNKNOWN)
    own = mta is not None and f.remediation is not None and f.remediation != generic
    return f"How to fix ({mta})" if own else "How to fix"


def sorted_findings(findings: Iterable[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: f.severity.rank)


def accepted_relays(t: TargetReport) -> list[Observation]:
    return [o for o in t.observations if o.kind is ProbeKind.RELAY and o.outcome is Outcome.ACCEPTED]


def reply_column(o: Observation) -> str:
    shown = str(o.reply) if o.reply else o.reason
    if o.data_reply is not None:
        shown += f" | DATA: {o.data_reply}"
    if o.delivery is not None:
        shown += f" | test message: {o.delivery.state}"
    return shown


def outcome_column(o: Observation) -> str:
    return str(o.outcome) + (" (trick)" if o.local_part_trick else "") + (" (TLS)" if o.tls else "")


def server_rows(t: TargetReport) -> list[tuple[str, str]]:
    """(label, value) lines about the server; values are plain text, not yet escaped."""
    rows: list[tuple[str, str]] = []
    if t.target.address:
        rows.append(("Address", t.target.address))
    if t.facts.banner is not None:
        rows.append(("Banner", str(t.facts.banner)))
    mta = mta_label(t)
    fp = t.hygiene.fingerprint if t.hygiene is not None else None
    if mta is not None and fp is not None:
        rows.append(("MTA", f"{mta} (from: {'; '.join(fp.evidence)})" if fp.evidence else mta))
    elif fp is not None and fp.evidence:
        rows.append(("MTA", f"not identified ({'; '.join(fp.evidence)})"))
    if t.facts.ehlo_host or t.facts.extensions:
        how = "EHLO" if t.facts.esmtp else "HELO only"
        rows.append((how, " ".join(filter(None, [t.facts.ehlo_host, *t.facts.extensions]))))
    h = t.hygiene
    if h is None:
        if t.facts.starttls_offered:
            rows.append(("TLS", "STARTTLS offered"))
        return rows
    rows.append(("TLS", _tls_summary(t)))
    if h.ptr_names is not None:
        if not h.ptr_names:
            rows.append(("Reverse DNS", "no PTR record"))
        else:
            confirmed = {True: " (forward-confirmed)", False: " (not forward-confirmed)", None: ""}[h.fcrdns]
            rows.append(("Reverse DNS", ", ".join(h.ptr_names) + confirmed))
    if h.auth_before_tls or h.auth_after_tls:
        parts = []
        if h.auth_before_tls:
            parts.append("before TLS: " + " ".join(h.auth_before_tls))
        if h.auth_after_tls:
            parts.append("after TLS: " + " ".join(h.auth_after_tls))
        rows.append(("AUTH", "; ".join(parts)))
    vrfy = [
        f"{label} -> {r}"
        for label, r in (
            ("VRFY postmaster", h.vrfy_postmaster),
            ("VRFY random user", h.vrfy_random),
            ("EXPN postmaster", h.expn_postmaster),
        )
        if r is not None
    ]
    if vrfy:
        rows.append(("VRFY/EXPN", "; ".join(vrfy)))
    if h.dnsbl is not None:
        rows.append(("Blocklists", _dnsbl_summary(t)))
    return rows


def _tls_summary(t: TargetReport) -> str:
    assert t.hygiene is not None
    tls = t.hygiene.tls
    if tls is None:
        return "STARTTLS offered (not inspected)" if t.facts.starttls_offered else "not offered"
    if not tls.offered:
        return "not offered"
    if not tls.established:
        return "offered, handshake failed" + (f": {tls.error}" if tls.error else "")
    parts = [p for p in (tls.version, tls.cipher) if p]
    cert = []
    if tls.cert_subject:
        cert.append(f"CN {tls.cert_subject}")
    if tls.cert_sans:
        cert.append("names " + ", ".join(tls.cert_sans))
    if tls.cert_issuer:
        cert.append(f"issuer {tls.cert_issuer}")
    if tls.not_after:
        cert.append(f"valid until {tls.not_after}")
    flags = []
    if tls.self_signed:
        flags.append("self-signed")
    elif tls.chain_verified is False:
        flags.append("untrusted chain" + (f" ({tls.verify_error})" if tls.verify_error else ""))
    elif tls.chain_verified:
        flags.append("trusted chain")
    if tls.hostname_matches is False:
        flags.append("name mismatch")
    text = ", ".join(parts) or "established"
    if cert:
        text += "; certificate: " + ", ".join(cert)
    if flags:
        text += " (" + ", ".join(flags) + ")"
    return text


def _dnsbl_summary(t: TargetReport) -> str:
    assert t.hygiene is not None and t.hygiene.dnsbl is not None
    results = t.hygiene.dnsbl
    if not results:
        return "not checked"
    listed = [f"{r.zone} ({r.meaning})" if r.meaning else r.zone for r in results if r.listed is True]
    clean = [r.zone for r in results if r.listed is False]
    unknown = [r.zone for r in results if r.listed is None]
    parts = []
    if listed:
        parts.append("LISTED on " + "; ".join(listed))
    if clean:
        parts.append("not listed on " + ", ".join(clean))
    if unknown:
        parts.append("no answer from " + ", ".join(unknown))
    return "; ".join(parts)


def transcript_lines(log: ConnectionLog) -> list[str]:
    lines: list[str] = []
    for exchange in log.exchanges:
        stamp = f"{exchange.at * 1000:7.1f} ms"
        if exchange.sent is not None:
            lines.append(f"{stamp} C: {exchange.sent}")
        if exchange.reply is not None:
            last = len(exchange.reply.lines) - 1
            for number, line in enumerate(exchange.reply.lines):
                sep = " " if number == last else "-"
                lines.append(f"{stamp} S: {exchange.reply.code}{sep}{line}")
        if exchange.note:
            lines.append(f"{stamp} -- {exchange.note}")
    if log.error:
        lines.append(f"-- {log.error}")
    return lines


def connection_title(log: ConnectionLog) -> str:
    return f"connection {log.index} ({log.transport}{', TLS' if log.tls else ''})"


def stats_line(t: TargetReport) -> str:
    return (
        f"{len(t.observations)} probes, {len(t.connections)} connection(s), "
        f"{t.round_trips} round trips, {t.duration:.2f} s"
    )


def report_lines(report: Report) -> list[str]:
    summary = summarize(report)
    lines = [
        f"{len(report.targets)} target(s): {summary.open} open, {summary.closed} closed, "
        f"{summary.inconclusive} inconclusive" + (f", {summary.problems} input problem(s)" if summary.problems else "")
    ]
    about = [f"mode: {report.mode}", f"{report.duration:.2f} s"]
    if report.started:
        about.insert(0, f"started {report.started}")
    if report.tool_version:
        about.append(f"relaycheck {report.tool_version}")
    lines.append(", ".join(about))
    return lines


# --- Markdown ---------------------------------------------------------------------------------

def md_blocks(parts: list[Block]) -> str:
    return "\n\n".join(md_fence(b.text.splitlines()) if b.verbatim else md_text(b.text) for b in parts)


def render_markdown(report: Report) -> str:
    out: list[str] = ["# relaycheck report", ""]
    out += [md_text(line) + "  " for line in report_lines(report)]
    out.append("")
    if report.problems:
        out += ["## Inputs that could not be tested", ""]
        out += [f"- {md_text(p.given)}: {md_text(p.problem)}" for p in report.problems]
        out.append("")
    for t in report.targets:
        out += _md_target(t)
    return "\n".join(out).rstrip() + "\n"


def _md_target(t: TargetReport) -> list[str]:
    conf = confidence(t)
    out = [f"## {headline(t)}: {md_text(t.target.label)}" + (f" ({md_text(conf)})" if conf else ""), ""]
    if t.target.domain:
        out += [f"MX for {md_text(t.target.domain)} (preference {t.target.mx_preference})", ""]
    if t.error:
        out += [f"**Could not be tested:** {md_text(t.error)}", ""]
    out += [md_text(t.verdict.explanation), ""]
    if t.verdict.advice:
        advice = blocks(t.verdict.advice)  # may be a multi-paragraph fix with commands
        if len(advice) == 1 and not advice[0].verbatim:
            out += [f"**What to do:** {md_text(advice[0].text)}", ""]
        else:
            out += ["**What to do:**", "", md_blocks(advice), ""]
    fix = open_relay_fix(t)
    if fix:
        mta = mta_label(t)
        out += [f"### How to close the relay{' on ' + md_text(mta) if mta else ''}", "", md_blocks(blocks(fix)), ""]
    rows = server_rows(t)
    if rows:
        out += ["### Server", "", md_table(["", ""], [[label, value] for label, value in rows]), ""]
    accepted = accepted_relays(t)
    if accepted:
        out += ["### Relay attempts the server accepted", "", _md_probe_table(accepted), ""]
        for o in accepted:
            if o.delivery is not None and o.delivery.received:
                out += [f"{md_text(o.probe_id)} arrived via:", "", md_fence(o.delivery.received), ""]
    if t.findings:
        out += ["### Findings", ""]
        for f in sorted_findings(t.findings):
            out += _md_finding(f, t)
    if t.observations:
        out += ["### Every probe", "", _md_probe_table(list(t.observations)), ""]
    if t.connections:
        out += ["### Transcripts", ""]
        for log in t.connections:
            out += [f"**{md_text(connection_title(log))}**", "", md_fence(transcript_lines(log)), ""]
    out += [f"_{md_text(stats_line(t))}_", ""]
    return out


def _md_probe_table(observations: list[Observation]) -> str:
    return md_table(
        ["probe", "MAIL FROM", "RCPT TO", "reply", "outcome"],
        ([o.probe_id, o.mail_from, o.rcpt_to, reply_column(o), outcome_column(o)] for o in observations),
    )


def _md_finding(f: Finding, t: TargetReport) -> list[str]:
    heading = f"#### {md_text(str(f.severity).upper())}: {md_text(f.title)} (`{_code(f.code)}`)"
    out = [heading, "", md_text(f.detail), ""]
    if f.location:
        out += [f"Location: {md_text(f.location)}", ""]
    if f.evidence:
        out += [f"- {md_text(e)}" for e in f.evidence]
        out.append("")
    if f.remediation:
        out += [f"**{md_text(fix_heading(f, t))}:**", "", md_blocks(blocks(f.remediation)), ""]
    return out


def _code(code: str) -> str:
    """Finding codes are ours ([a-z0-9-]), but findings can come from other layers: keep the span whole."""
    return re.sub(r"[^A-Za-z0-9._-]", "", code) or "finding"

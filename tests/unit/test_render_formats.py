"""Markdown and HTML reports: key structure in order, and hostile server text escaped.

Reports are built directly from model objects (no sockets). The hostile strings stand for what a
malicious or broken server can put in its banner, replies and certificate names.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import UTC, datetime
from html.parser import HTMLParser

import pytest

from relaycheck.findings import hygiene_findings
from relaycheck.findings.registry import fix_for
from relaycheck.fingerprint import fingerprint
from relaycheck.model import (
    Confidence,
    ConnectionLog,
    DnsblResult,
    Exchange,
    Finding,
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
from relaycheck.render.escape import md_fence, md_text
from relaycheck.render.html import render_html
from relaycheck.render.json import render_json, report_dict
from relaycheck.render.load import report_from_dict
from relaycheck.render.markdown import render_markdown
from relaycheck.render.text import render_text

SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"
NOW = datetime(2026, 6, 1, tzinfo=UTC)


def reply(code: int, text: str) -> Reply:
    return Reply(code, (text,))


BANNER = reply(220, f"mx.example.com ESMTP Postfix (3.7.11) {SCRIPT} | `tick` ```fence```")
RELAY_REPLY = reply(250, f"2.1.5 Ok {IMG} | col")


def observation(probe_id: str, kind: ProbeKind, outcome: Outcome, r: Reply, rcpt: str) -> Observation:
    return Observation(
        probe_id=probe_id,
        kind=kind,
        title=probe_id,
        mail_from="<relaytest@outside-b.test>",
        rcpt_to=rcpt,
        outcome=outcome,
        stage=Stage.RCPT,
        reply=r,
        reason="accepted at RCPT (250)",
        outside_domain="outside-a.test" if kind is ProbeKind.RELAY else None,
    )


def open_target() -> TargetReport:
    facts = SessionFacts(
        banner=BANNER,
        banner_host="mx.example.com",
        ehlo_host="mx.example.com",
        extensions=("PIPELINING", "SIZE 10240000", "ETRN", "AUTH PLAIN LOGIN", "ENHANCEDSTATUSCODES", "8BITMIME"),
        starttls_offered=False,
    )
    relay_denied = reply(554, "5.7.1 <u@outside-a.test>: Relay access denied")
    hygiene = HygieneFacts(
        ptr_names=(f"ptr-{SCRIPT}.example.net",),
        fcrdns=False,
        tls=TlsFacts(offered=False),
        auth_before_tls=("PLAIN", "LOGIN"),
        dnsbl=(
            DnsblResult("zen.spamhaus.org", True, ("127.0.0.2",), "127.0.0.2: SBL", f"listed {IMG} `x`"),
            DnsblResult("bl.spamcop.net", None, ("127.255.255.254",), "query refused"),
        ),
        fingerprint=fingerprint(BANNER, facts.extensions, [relay_denied]),
    )
    assert hygiene.fingerprint is not None
    findings = hygiene_findings("mx.example.com", 25, facts, hygiene, hygiene.fingerprint.family, now=NOW)
    observations = (
        observation("V01", ProbeKind.RELAY, Outcome.ACCEPTED, RELAY_REPLY, "<relaytest@outside-a.test>"),
        observation("V02", ProbeKind.RELAY, Outcome.REJECTED_POLICY, relay_denied, f"<{SCRIPT}@outside-a.test>"),
        observation("C-POSTMASTER", ProbeKind.CONTROL, Outcome.ACCEPTED, reply(250, "2.1.5 Ok"),
                    "<postmaster@example.com>"),
    )
    log = ConnectionLog(
        index=1,
        transport=Transport.PLAIN,
        tls=False,
        exchanges=(
            Exchange(None, BANNER, 0.001),
            Exchange("EHLO relaycheck.example.org", Reply(250, ("mx.example.com", "PIPELINING", "``` `` `")), 0.002),
            Exchange("RCPT TO:<relaytest@outside-a.test>", RELAY_REPLY, 0.003, note=f"note {SCRIPT}"),
        ),
    )
    return TargetReport(
        target=Target("mx.example.com", 25, address="192.0.2.25", domain="example.com", mx_preference=10),
        verdict=Verdict(
            VerdictKind.OPEN,
            Confidence.ACCEPTED_AT_RCPT,
            f"The server accepted 1 relay attempt(s), e.g. V01 -> {RELAY_REPLY}.",
            ("V01",),
            "Restrict relaying to authenticated users and your own networks.",
        ),
        facts=facts,
        observations=observations,
        findings=(
            *findings,
            Finding("catch-all", Severity.INFO, "The server accepts any local recipient", f"detail {SCRIPT}"),
        ),
        connections=(log,),
        round_trips=5,
        duration=0.25,
        hygiene=hygiene,
    )


def closed_target() -> TargetReport:
    return TargetReport(
        target=Target("mx2.example.com", 587, Transport.STARTTLS),
        verdict=Verdict(VerdictKind.CLOSED, Confidence.POLICY_REFUSAL, "Every relay attempt was refused."),
        facts=SessionFacts(banner=reply(220, "mx2.example.com ESMTP"), starttls_offered=True),
    )


def inconclusive_target() -> TargetReport:
    return TargetReport(
        target=Target("mx3.example.com"),
        verdict=Verdict(VerdictKind.INCONCLUSIVE, Confidence.UNDETERMINED, "No relay probe could be run.", (),
                        "Check that the server is reachable."),
        error=f"connection refused {SCRIPT}",
    )


REPORT = Report(
    targets=(open_target(), closed_target(), inconclusive_target()),
    problems=(InputProblem(f"bad|input{SCRIPT}", "no MX and no address"),),
    started="2026-06-01T00:00:00+00:00",
    duration=1.5,
    tool_version="0.1.0",
)


# --- Markdown ---------------------------------------------------------------------------------


def outside_fences(markdown: str) -> str:
    """The Markdown with fenced code blocks removed (their content is shown literally)."""
    kept: list[str] = []
    fence: str | None = None
    for line in markdown.splitlines():
        run = re.match(r"^(`{3,})", line)
        if fence is None and run:
            fence = run.group(1)
        elif fence is not None and line.strip() == fence:
            fence = None
        elif fence is None:
            kept.append(line)
    assert fence is None, "a fenced block was left open"
    return "\n".join(kept)


def test_markdown_structure_in_order() -> None:
    md = render_markdown(REPORT)
    assert md.startswith("# relaycheck report\n")
    first = md.index("## OPEN RELAY: mx.example.com (192.0.2.25):25 (accepted-at-rcpt)")
    order = [
        first,
        md.index("**What to do:**", first),
        md.index("### How to close the relay on Postfix 3.7.11", first),
        md.index("### Server", first),
        md.index("### Relay attempts the server accepted", first),
        md.index("### Findings", first),
        md.index("### Every probe", first),
        md.index("### Transcripts", first),
        md.index("## CLOSED: mx2.example.com:587/starttls", first),
        md.index("## INCONCLUSIVE: mx3.example.com:25", first),
    ]
    assert order == sorted(order)
    assert "1 target(s)" not in md and "3 target(s): 1 open, 1 closed, 1 inconclusive" in md
    assert "## Inputs that could not be tested" in md


def test_markdown_findings_carry_severity_and_the_fix_for_the_mta() -> None:
    md = render_markdown(REPORT)
    assert "#### HIGH: Passwords can be sent in clear text (`auth-without-tls`)" in md
    assert "smtpd_tls_auth_only = yes" in md  # the Postfix fix, from finding.remediation
    assert "**How to fix (Postfix 3.7.11):**" in md
    assert "**How to fix:**" in md  # a generic text (dnsbl-listed) is not labelled as the MTA's own
    assert "smtpd_relay_restrictions = permit_mynetworks" in md  # open-relay fix for Postfix
    # critical/high findings come before low/info ones
    assert md.index("(`auth-without-tls`)") < md.index("(`banner-version`)") < md.index("(`catch-all`)")


def test_markdown_server_summary() -> None:
    md = render_markdown(REPORT)
    assert "LISTED on zen.spamhaus.org" in md
    assert "no answer from bl.spamcop.net" in md
    assert "not forward-confirmed" in md
    assert "before TLS: PLAIN LOGIN" in md


def test_markdown_escapes_server_text_outside_code_blocks() -> None:
    md = render_markdown(REPORT)
    prose = outside_fences(md)
    for hostile in ("<script", "<img", "<postmaster", "`tick`"):
        assert hostile not in prose
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in prose
    assert "\\`tick\\`" in prose


def test_markdown_table_rows_keep_their_columns() -> None:
    md = render_markdown(REPORT)
    for line in outside_fences(md).splitlines():
        if line.startswith("| V01 ") or line.startswith("| V02 "):
            cells = re.split(r"(?<!\\)\|", line)
            assert len(cells) == 7, line  # 5 columns between 6 unescaped pipes
    assert "250 2.1.5 Ok &lt;img src=x onerror=alert(1)&gt; \\| col" in md


def test_markdown_transcripts_are_fenced_and_cannot_be_closed_by_the_server() -> None:
    md = render_markdown(REPORT)
    assert "S: 250 ``` `` `" in md  # shown literally, inside a longer fence
    assert "````" in md
    outside_fences(md)  # every fence closes


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("a|b", "a\\|b"),
        ("`x`", "\\`x\\`"),
        ("<b>&", "&lt;b&gt;&amp;"),
        ("[link](http://x)", "\\[link\\](http://x)"),
        ("*bold* _em_", "\\*bold\\* \\_em\\_"),
        ("two\nlines", "two lines"),
    ],
)
def test_md_text(text: str, escaped: str) -> None:
    assert md_text(text) == escaped


def test_md_fence_is_longer_than_any_backtick_run() -> None:
    assert md_fence(["plain"]).startswith("```\n")
    assert md_fence(["a ```` b"]).startswith("`````\n")


def test_open_relay_fix_not_repeated_when_advice_already_is_it() -> None:
    t = REPORT.targets[0]
    fix = fix_for("open-relay", "postfix")
    assert fix is not None
    same = replace(t, verdict=replace(t.verdict, advice=fix))
    md = render_markdown(Report(targets=(same,)))
    assert "### How to close the relay" not in md
    assert md.count("smtpd_relay_restrictions = permit_mynetworks") == 1


def test_empty_report() -> None:
    assert "0 target(s)" in render_markdown(Report(targets=()))
    assert "0 target(s)" in render_html(Report(targets=()))


# --- HTML -------------------------------------------------------------------------------------


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str | None]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes.extend(attrs)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


ALLOWED_TAGS = {
    "html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "h4", "p", "span", "strong", "section",
    "div", "table", "tr", "th", "td", "ul", "li", "pre", "code", "details", "summary", "article",
}  # fmt: skip


def parsed(document: str) -> _Tags:
    parser = _Tags()
    parser.feed(document)
    parser.close()
    return parser


def test_html_is_self_contained_and_has_no_script() -> None:
    page = render_html(REPORT)
    assert "<script" not in page.lower()
    tags = parsed(page)
    assert set(tags.tags) <= ALLOWED_TAGS
    names = {name for name, _ in tags.attributes}
    assert not {n for n in names if n.startswith("on")}
    assert not names & {"src", "href", "action", "srcset", "formaction"}
    csp = [content for name, content in tags.attributes if name == "content" and content and "default-src" in content]
    assert csp == ["default-src 'none'; style-src 'unsafe-inline'; img-src 'none'; form-action 'none'; base-uri 'none'"]
    assert tags.tags.count("style") == 1


def test_html_escapes_every_hostile_string() -> None:
    page = render_html(REPORT)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    text = "".join(parsed(page).text)
    assert SCRIPT in text and IMG in text  # shown to the reader as text, not as markup


def test_html_structure_in_order() -> None:
    page = render_html(REPORT)
    first = page.index('<span class="badge open">OPEN RELAY</span>')
    order = [
        first,
        page.index("What to do:", first),
        page.index("How to close the relay on Postfix 3.7.11", first),
        page.index("<h3>Server</h3>", first),
        page.index("<h3>Relay attempts the server accepted</h3>", first),
        page.index("<h3>Findings</h3>", first),
        page.index("<summary>Every probe (3)</summary>", first),
        page.index("<summary>Transcripts (1 connection(s))</summary>", first),
        page.index('<span class="badge closed">CLOSED</span>', first),
        page.index('<span class="badge inconclusive">INCONCLUSIVE</span>', first),
    ]
    assert order == sorted(order)
    assert '<article class="finding sev-high">' in page
    assert "smtpd_tls_auth_only = yes" in page
    assert "Could not be tested:" in page


def test_html_transcript_lines() -> None:
    page = render_html(REPORT)
    assert "C: EHLO relaycheck.example.org" in page
    assert "S: 250-mx.example.com" in page
    assert "S: 250 ``` `` `" in page


# -- the JSON report loads back: a stored report renders like the original (web downloads) --


@pytest.mark.parametrize("render", [render_json, render_markdown, render_html, render_text])
def test_a_loaded_report_renders_like_the_original(render: object) -> None:
    stored = json.loads(json.dumps(report_dict(REPORT)))  # as the database gives it back
    loaded = report_from_dict(stored)
    assert callable(render)
    assert render(loaded) == render(REPORT)


def test_json_round_trip_is_exact() -> None:
    once = report_dict(REPORT)
    assert report_dict(report_from_dict(json.loads(json.dumps(once)))) == once


def test_an_empty_report_loads() -> None:
    empty = Report(targets=(), started="2026-06-01T00:00:00+00:00", tool_version="1")
    assert report_dict(report_from_dict(report_dict(empty))) == report_dict(empty)
    assert report_from_dict(report_dict(replace(empty, mode="data-probe"))).mode == "data-probe"

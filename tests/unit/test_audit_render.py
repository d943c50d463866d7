"""Audit renderers: golden-ish text/Markdown/JSON for a fixed report, and hostile strings from
configuration files (HTML, Markdown, rich markup, terminal escapes) rendered inert."""

from __future__ import annotations

import json

from relaycheck.audit import AuditReport, Conclusion, Family, SourceFile, audit_sources
from relaycheck.audit.model import Line
from relaycheck.audit.render import exit_code, render_html, render_json, render_markdown, render_text
from relaycheck.audit.rules import finding

EXPLANATION = "Open relay possible: mynetworks trusts every address (main.cf:3)."


def fixed_report() -> AuditReport:
    found = finding(
        "postfix-mynetworks-everyone",
        "mynetworks includes 0.0.0.0/0.",
        Line("main.cf", 3, "mynetworks = 0.0.0.0/0"),
    )
    return AuditReport(("main.cf",), Family.POSTFIX, True, (found,), Conclusion.OPEN_RELAY_POSSIBLE, EXPLANATION)


def hostile_report() -> AuditReport:
    # Postfix has no end-of-line comments: the "comment" is part of the value, and of the evidence.
    main = "compatibility_level = 3.6\nmynetworks = 0.0.0.0/0 # <script>alert(1)</script> [bold red]x[/] | \x1b[2J\n"
    return audit_sources([SourceFile("main.cf", main)], Family.POSTFIX)


def test_text_golden() -> None:
    assert render_text(fixed_report(), width=80).splitlines() == [
        " OPEN RELAY POSSIBLE  postfix (detected): main.cf",
        "  Open relay possible: mynetworks trusts every address (main.cf:3).",
        "",
        "  CRITICAL postfix-mynetworks-everyone  main.cf:3 relay path",
        "    mynetworks trusts every address. Any host on the Internet may relay:",
        "    permit_mynetworks matches every client. mynetworks includes 0.0.0.0/0.",
        "    > main.cf:3: mynetworks = 0.0.0.0/0",
        "    Fix: Set mynetworks to the networks of your own clients only, e.g.",
        "    'mynetworks = 127.0.0.0/8 [::1]/128' plus your LAN, then 'postfix reload'.",
        "",
        "1 finding(s), 1 relay path(s): 1 critical",
    ]


def test_text_with_color_uses_ansi_styles() -> None:
    colored = render_text(fixed_report(), color=True)
    assert "\x1b[" in colored
    assert "OPEN RELAY POSSIBLE" in colored


def test_markdown_golden() -> None:
    lines = render_markdown(fixed_report()).splitlines()
    assert lines[:10] == [
        "# relaycheck audit: open relay possible",
        "",
        "**Mail server:** postfix (detected)  ",
        "**Files:** main.cf",
        "",
        EXPLANATION,
        "",
        "| Severity | Code | Location | Relay path | Finding |",
        "|---|---|---|---|---|",
        "| critical | postfix-mynetworks-everyone | main.cf:3 | yes | mynetworks trusts every address |",
    ]
    assert "- **Evidence:** main.cf:3: mynetworks = 0.0.0.0/0" in lines
    assert "### CRITICAL postfix-mynetworks-everyone: mynetworks trusts every address" in lines


def test_json_golden() -> None:
    data = json.loads(render_json(fixed_report(), "9.9"))
    found = fixed_report().findings[0]
    assert data == {
        "schema_version": 1,
        "kind": "audit",
        "tool": {"name": "relaycheck", "version": "9.9"},
        "family": "postfix",
        "family_detected": True,
        "files": ["main.cf"],
        "conclusion": "open-relay-possible",
        "explanation": EXPLANATION,
        "exit_code": 1,
        "summary": {
            "findings": 1,
            "relay_paths": 1,
            "by_severity": {"critical": 1, "high": 0, "medium": 0, "low": 0, "info": 0},
        },
        "findings": [
            {
                "code": "postfix-mynetworks-everyone",
                "severity": "critical",
                "title": "mynetworks trusts every address",
                "detail": found.detail,
                "evidence": ["main.cf:3: mynetworks = 0.0.0.0/0"],
                "location": "main.cf:3",
                "remediation": found.remediation,
                "opens_relay": True,
            }
        ],
    }


def test_html_escapes_script_from_a_config_comment() -> None:
    report = hostile_report()
    assert report.conclusion is Conclusion.OPEN_RELAY_POSSIBLE
    assert any("<script>" in e for e in report.findings[0].evidence)  # the raw data keeps it…
    html = render_html(report)
    assert "<script>" not in html  # …the page does not run it
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert html.startswith("<!DOCTYPE html>")
    assert "<style>" in html
    # self-contained: nothing fetched from elsewhere
    assert "http://" not in html and "https://" not in html and "<link" not in html and "src=" not in html


def test_markdown_escapes_html_and_table_pipes() -> None:
    markdown = render_markdown(hostile_report())
    assert "<script>" not in markdown
    assert "&lt;script&gt;" in markdown
    evidence = next(line for line in markdown.splitlines() if line.startswith("- **Evidence:**"))
    assert "\\|" in evidence and " | " not in evidence.replace("\\|", "")


def test_text_shows_rich_markup_and_escapes_literally() -> None:
    text = render_text(hostile_report(), width=200)
    assert "[bold red]x[/]" in text  # escaped, so printed as written, not interpreted
    assert "\x1b" not in text  # the terminal escape in the file was neutralised
    assert "\\x1b[2J" in text


def test_exit_codes_follow_the_conclusion() -> None:
    report = fixed_report()
    assert exit_code(report) == 1
    assert exit_code(AuditReport((), Family.EXIM, True, (), Conclusion.NO_OPEN_RELAY_PATH, "")) == 0
    assert exit_code(AuditReport((), Family.EXIM, True, (), Conclusion.COULD_NOT_PARSE, "")) == 3


def test_empty_report_renders_everywhere() -> None:
    report = AuditReport(("x",), Family.SENDMAIL, False, (), Conclusion.NO_OPEN_RELAY_PATH, "Nothing.")
    assert "No findings." in render_markdown(report)
    assert "<p>No findings.</p>" in render_html(report)
    assert "(as requested)" in render_text(report)
    assert json.loads(render_json(report))["findings"] == []

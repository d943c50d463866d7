"""The one registry of finding codes: every emitted code is registered with the severity it is
emitted with, every fix text belongs to a registered code, and docs/findings.md is generated."""

from __future__ import annotations

from pathlib import Path

from relaycheck.findings import codes, docs, fix_for, registry
from relaycheck.findings.fixes import codes_with_texts
from relaycheck.findings.registry import Source
from relaycheck.model import Observation, Outcome, ProbeKind, Reply, Severity, Stage
from relaycheck.verdict import decide

ROOT = Path(__file__).resolve().parents[2]


def test_docs_findings_md_is_generated_from_the_registry() -> None:
    text = (ROOT / "docs" / "findings.md").read_text(encoding="utf-8")
    assert text == docs.render(), "stale: python -m relaycheck.findings.docs --write docs/findings.md"
    assert docs.main(["--check", str(ROOT / "docs" / "findings.md")]) == 0


def test_stale_docs_are_detected(tmp_path: Path) -> None:
    stale = tmp_path / "findings.md"
    stale.write_text(docs.render().replace("| `no-ptr` | medium |", "| `no-ptr` | low |"), encoding="utf-8")
    assert docs.main(["--check", str(stale)]) == 1


def test_every_fix_text_belongs_to_a_registered_code() -> None:
    assert codes_with_texts() <= set(codes())


def test_hygiene_and_audit_codes_that_matter_have_a_fix() -> None:
    for entry in codes().values():
        if entry.source is not Source.VERDICT and entry.severity is not Severity.INFO:
            assert fix_for(entry.code, "unknown"), entry.code


def test_audit_codes_name_their_family_and_relay_paths_are_severe() -> None:
    for entry in registry.of_source(Source.AUDIT):
        assert entry.family is not None and entry.meaning.endswith("."), entry.code
        assert not entry.opens_relay or entry.severity in {Severity.CRITICAL, Severity.HIGH}, entry.code


ROLES = {"C-POSTMASTER": "postmaster", "C-CATCHALL": "catch-all"}


def _observation(probe_id: str, code: int, text: str, *, stage: Stage = Stage.RCPT, domain: str = "a.test",
                 outcome: Outcome | None = None) -> Observation:
    kind = ProbeKind.CONTROL if probe_id.startswith("C-") else ProbeKind.RELAY
    accepted = code < 400 if outcome is None else outcome is Outcome.ACCEPTED
    return Observation(
        probe_id=probe_id, kind=kind, title=probe_id, mail_from="<s@b.test>", rcpt_to=f"<u@{domain}>",
        outcome=outcome or (Outcome.ACCEPTED if accepted else Outcome.REJECTED_POLICY), stage=stage,
        reply=Reply(code, (text,)), reason="", outside_domain=domain if kind is ProbeKind.RELAY else None,
        domain_check=probe_id.startswith("V01"),
        role=ROLES.get(probe_id),  # controls carry a role
    )  # fmt: skip


def test_the_verdicts_findings_are_registered_with_their_severity() -> None:
    controls = [_observation("C-POSTMASTER", 250, "Ok"), _observation("C-CATCHALL", 250, "Ok")]
    relay_domain = [_observation("V01", 250, "Ok"), _observation("V01b", 554, "Relay access denied", domain="b.test")]
    data = [_observation("V03", 554, "relaying denied at DATA", stage=Stage.DATA, outcome=Outcome.REJECTED_POLICY)]
    found = [f for observations in (relay_domain, data) for f in decide([*observations, *controls]).findings]
    assert {"catch-all", "relay-domain", "refused-at-data"} <= {f.code for f in found}
    for f in found:
        assert f.code in codes() and codes()[f.code].source is Source.VERDICT
        assert f.severity is codes()[f.code].severity

"""The Nagios renderer over generated reports: whatever servers say, the first line stays one
status line in the guidelines' grammar, and the state is the worst target's."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from relaycheck.model import (
    Confidence,
    Finding,
    InputProblem,
    Observation,
    Outcome,
    ProbeKind,
    Reply,
    Report,
    Severity,
    Stage,
    Target,
    TargetReport,
    Verdict,
    VerdictKind,
)
from relaycheck.render.nagios import State, render_nagios

from .perfdata import parse_status

hostile = st.text(alphabet=st.sampled_from("ab|'=;\n\r\t \x00é%:"), max_size=30)


@st.composite
def target_reports(draw: st.DrawFn) -> TargetReport:
    kind = draw(st.sampled_from(list(VerdictKind)))
    outcomes = draw(st.lists(st.sampled_from(list(Outcome)), max_size=6))
    observations = tuple(
        Observation(
            probe_id=f"V{i:02}",
            kind=ProbeKind.RELAY,
            title="t",
            mail_from=draw(hostile),
            rcpt_to=draw(hostile),
            outcome=outcome,
            stage=Stage.RCPT,
            reply=Reply(250, (draw(hostile),)),
            reason=draw(hostile),
        )
        for i, outcome in enumerate(outcomes)
    )
    findings = tuple(
        Finding(code="x", severity=s, title=draw(hostile), detail="d")
        for s in draw(st.lists(st.sampled_from(list(Severity)), max_size=3))
    )
    host = draw(st.sampled_from(["mx.example.org", "127.0.0.1", "::1", "a'b=c"]))
    return TargetReport(
        target=Target(host=host, port=draw(st.integers(1, 65535)), address=draw(st.sampled_from([None, "192.0.2.1"]))),
        verdict=Verdict(kind, Confidence.UNDETERMINED, explanation=draw(hostile), advice=draw(hostile)),
        observations=observations,
        findings=findings,
        error=draw(st.one_of(st.none(), hostile)),
    )


@given(
    st.lists(target_reports(), max_size=4),
    st.lists(st.builds(InputProblem, hostile, hostile), max_size=2),
    st.one_of(st.none(), st.sampled_from(list(Severity))),
    st.floats(0, 1e5),
)
def test_status_line_is_always_in_the_grammar(
    targets: list[TargetReport], problems: list[InputProblem], warn: Severity | None, duration: float
) -> None:
    report = Report(targets=tuple(targets), problems=tuple(problems), duration=duration)
    text, state = render_nagios(report, warn)
    first, *rest = text.rstrip("\n").split("\n")
    parsed_state, _, perf = parse_status(first)
    assert parsed_state == state.name
    assert all("|" not in line for line in rest)  # a pipe in long output would start perfdata
    kinds = {t.verdict.kind for t in targets}
    if VerdictKind.OPEN in kinds:
        assert state is State.CRITICAL
    elif VerdictKind.INCONCLUSIVE in kinds or problems:
        assert state is State.WARNING
    elif not targets:
        assert state is State.UNKNOWN
    accepted = sum(1 for t in targets for o in t.observations if o.outcome is Outcome.ACCEPTED)
    assert perf["accepted"][0] == str(accepted)

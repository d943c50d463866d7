"""Report-level facts derived from the model: summary counts and the process exit code."""

from __future__ import annotations

from dataclasses import dataclass

from relaycheck.model import Report, VerdictKind

EXIT_OK = 0  # no open relay found
EXIT_OPEN = 1  # at least one open relay
EXIT_USAGE = 2  # malformed invocation
EXIT_INCONCLUSIVE = 3  # nothing open, but something could not be decided


@dataclass(frozen=True)
class Summary:
    open: int
    closed: int
    inconclusive: int
    problems: int

    @property
    def exit_code(self) -> int:
        if self.open:
            return EXIT_OPEN
        if self.inconclusive or self.problems:
            return EXIT_INCONCLUSIVE
        return EXIT_OK


def summarize(report: Report) -> Summary:
    kinds = [t.verdict.kind for t in report.targets]
    return Summary(
        open=kinds.count(VerdictKind.OPEN),
        closed=kinds.count(VerdictKind.CLOSED),
        inconclusive=kinds.count(VerdictKind.INCONCLUSIVE),
        problems=len(report.problems),
    )

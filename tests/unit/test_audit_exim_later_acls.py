"""The Exim auditor follows the relay decision past RCPT (hypothesis): a configuration is drawn
from an RCPT ACL that relays for strangers or not, a relay_from_hosts that trusts everyone or
not, and any sequence of predata/DATA ACL statements from a small vocabulary; a small oracle in
the test derives, statement by statement as Exim would run them for an outside client sending to
a foreign domain, whether the message gets through, and the audit's conclusion must agree."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from relaycheck.audit import Conclusion, Family, SourceFile, audit_sources

OUTSIDE_RECIPIENT = "${if forany{<, $recipients}{!match_domain{${domain:$item}}{+local_domains : +relay_to_domains}}}"
OUTSIDE_ADDRESS = "${if forany{<, $recipients}{!match_address{$item}{*@+local_domains}}}"
ANY_DOMAIN = "${if forany{<, $recipients}{!match_domain{${domain:$item}}{*}}}"
LOOKUP = "${lookup{$sender_host_address}lsearch{/etc/exim/ok}{yes}{no}}"


@dataclass(frozen=True)
class Statement:
    text: str
    # For an outside client (in relay_from_hosts only when it trusts everyone) sending to a
    # foreign domain: does the statement apply? None: the audit cannot know (not counted on).
    verb: str  # accept / deny
    applies: bool | None
    trusted_only: bool = False  # applies only when relay_from_hosts trusts everyone


STATEMENTS = [
    Statement("  accept  hosts = :\n", "accept", False),
    Statement("  accept  hosts = +relay_from_hosts\n", "accept", True, trusted_only=True),
    Statement("  accept  authenticated = *\n", "accept", False),
    Statement(f"  accept  condition = {LOOKUP}\n", "accept", None),
    Statement(f"  deny    message = relay not permitted\n          condition = {OUTSIDE_RECIPIENT}\n", "deny", True),
    Statement(f"  deny    condition = {OUTSIDE_ADDRESS}\n", "deny", True),
    Statement(f"  deny    condition = {ANY_DOMAIN}\n", "deny", False),
    Statement("  deny    condition = ${if eq{$acl_m0}{1}}\n", "deny", None),
    Statement("  deny    !verify = header_syntax\n", "deny", None),  # the client sends valid headers
    Statement("  accept\n", "accept", True),
]

RCPT_RELAYS = "acl_check_rcpt:\n  accept  hosts = :\n  require verify = recipient\n  accept\n"
RCPT_STOCK = (
    "acl_check_rcpt:\n  accept  hosts = :\n  accept  hosts = +relay_from_hosts\n"
    "  require message = relay not permitted\n          domains = +local_domains : +relay_to_domains\n  accept\n"
)


def later_acl_passes(statements: list[Statement], trusted: bool) -> bool:
    """The oracle: True when the message may get through the ACL (an unknown accept may let it)."""
    for statement in statements:
        applies = statement.applies and (trusted or not statement.trusted_only)
        if statement.verb == "accept" and (applies or statement.applies is None):
            return True
        if statement.verb == "deny" and applies:
            return False
    return False  # the end of an ACL is an implicit deny


@settings(max_examples=200, deadline=None)
@given(
    rcpt_relays=st.booleans(),
    trusted=st.booleans(),
    predata=st.none() | st.lists(st.sampled_from(STATEMENTS), max_size=5),
    data=st.none() | st.lists(st.sampled_from(STATEMENTS), max_size=5),
)
def test_conclusion_follows_the_later_acls(
    rcpt_relays: bool, trusted: bool, predata: list[Statement] | None, data: list[Statement] | None
) -> None:
    text = (
        "domainlist local_domains = @ : example.net\ndomainlist relay_to_domains =\n"
        f"hostlist relay_from_hosts = {'0.0.0.0/0' if trusted else '127.0.0.1'}\n"
        "acl_smtp_rcpt = acl_check_rcpt\n"
        + ("acl_smtp_predata = acl_check_predata\n" if predata is not None else "")
        + ("acl_smtp_data = acl_check_data\n" if data is not None else "")
        + "begin acl\n"
        + (RCPT_RELAYS if rcpt_relays else RCPT_STOCK)
    )
    for name, statements in (("acl_check_predata", predata), ("acl_check_data", data)):
        if statements is not None:
            text += f"\n{name}:\n" + "".join(s.text for s in statements)
    report = audit_sources([SourceFile("exim4.conf", text)], Family.EXIM)
    through_rcpt = rcpt_relays or trusted
    through_later = all(later_acl_passes(s, trusted) for s in (predata, data) if s is not None)
    expected = Conclusion.OPEN_RELAY_POSSIBLE if through_rcpt and through_later else Conclusion.NO_OPEN_RELAY_PATH
    assert report.conclusion is expected, (text, report.explanation)

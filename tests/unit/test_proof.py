"""Stop when proven, as pure functions: once ``is_proven`` holds, no further probe changes the verdict."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from relaycheck.battery import ProbeReplies, observation
from relaycheck.catalogue import PlannedProbe, Slots, plan_probes
from relaycheck.model import Observation, Reply, VerdictKind
from relaycheck.proof import demands, first_round, is_proven, proving_order
from relaycheck.smtp.wire import parse_enhanced
from relaycheck.verdict import decide

SLOTS = Slots(("relaytest@outside-a.test", "relaytest@outside-b.test"), "relaycheck@outside-b.test",
              "relay.test", "mx.relay.test", "[192.0.2.1]", "rc-nouser-test")  # fmt: skip
PROBES = plan_probes(SLOTS, optional=False)
CHECKS = sum(p.domain_check for p in PROBES)


def reply(text: str) -> Reply:
    code, _, rest = text.partition(" ")
    return Reply(int(code), (rest,), parse_enhanced(int(code), rest))


MAIL_OK = reply("250 2.1.0 Ok")
# What a server may answer to one probe: (reply to MAIL, reply to RCPT or None when MAIL was refused)
ANSWERS = {
    "accepted": (MAIL_OK, reply("250 2.1.5 Ok")),
    "relay-denied": (MAIL_OK, reply("554 5.7.1 <u@x>: Relay access denied")),
    "relay-denied-4xx": (MAIL_OK, reply("454 4.7.1 <u@x>: Relay access denied")),
    "unknown-user": (MAIL_OK, reply("550 5.1.1 <u@x>: Recipient address rejected: User unknown")),
    "no-domain": (MAIL_OK, reply("550 5.1.2 <u@x>: Domain not found")),
    "greylisted": (MAIL_OK, reply("451 4.7.1 Greylisted, try again later")),
    "sender-refused": (reply("553 5.1.8 <s@x>: Sender address rejected: Domain not found"), None),
    "dropped": (MAIL_OK, reply("421 4.7.0 too many errors")),
}


def seen(probe: PlannedProbe, answer: str) -> Observation:
    mail, rcpt = ANSWERS[answer]
    return observation(ProbeReplies(probe, mail, rcpt), tls=False, connection=0, attempts=1)


answers = st.sampled_from(sorted(ANSWERS))


def test_plain_outside_recipients_at_both_domains_prove_it() -> None:
    head = {p.id: seen(p, "accepted") for p in PROBES if p.domain_check or p.role == "postmaster"}
    assert is_proven(head.values(), domain_checks=CHECKS)  # plain recipients relay whatever local users do
    catch_all = next(p for p in PROBES if p.role == "catch-all")
    head[catch_all.id] = seen(catch_all, "accepted")
    assert is_proven(head.values(), domain_checks=CHECKS)
    del head["C-POSTMASTER"]
    assert not is_proven(head.values(), domain_checks=CHECKS)  # the server must take mail from us at all


def test_a_trick_proves_it_only_once_the_catch_all_control_is_refused() -> None:
    trick = next(p for p in PROBES if p.local_part_trick)
    catch_all = next(p for p in PROBES if p.role == "catch-all")
    found = {p.id: seen(p, "relay-denied") for p in PROBES if p.domain_check}
    found["C-POSTMASTER"] = seen(next(p for p in PROBES if p.role == "postmaster"), "accepted")
    found[trick.id] = seen(trick, "accepted")
    assert demands(found[trick.id]) == "catch-all"  # the accepted trick calls for the control
    assert not is_proven(found.values(), domain_checks=CHECKS)
    found[catch_all.id] = seen(catch_all, "accepted")  # a catch-all: the trick may be a local mailbox
    assert not is_proven(found.values(), domain_checks=CHECKS)
    found[catch_all.id] = seen(catch_all, "unknown-user")
    assert is_proven(found.values(), domain_checks=CHECKS)


def test_only_an_accepted_trick_calls_for_the_catch_all_control() -> None:
    for probe in PROBES:
        for answer in ANSWERS:
            called = demands(seen(probe, answer))
            wanted = probe.local_part_trick and answer == "accepted"
            assert called == ("catch-all" if wanted else None), (probe.id, answer)


def test_one_domain_accepted_and_the_other_refused_is_a_relay_domain_not_proof() -> None:
    found = [seen(p, "accepted" if p.id == "V01" else "relay-denied" if p.domain_check else "accepted")
             for p in PROBES if p.domain_check or p.role in ("postmaster", "catch-all")]  # fmt: skip
    assert not is_proven(found, domain_checks=CHECKS)


def test_the_first_round_comes_first_and_senders_stay_together() -> None:
    ordered = proving_order(PROBES)
    head = first_round(PROBES)
    assert ordered[: len(head)] == head and {p.id for p in head} >= {"V01", "V01b", "C-POSTMASTER"}
    assert "C-CATCHALL" not in {p.id for p in head}  # on demand: only an accepted trick calls for it
    senders = [p.mail_from for p in ordered[len(head) :]]
    assert all(senders.index(s) == i or senders[i - 1] == s for i, s in enumerate(senders))  # no sender twice
    assert sorted(p.id for p in ordered) == sorted(p.id for p in PROBES)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_once_proven_no_later_probe_changes_the_verdict(data: st.DataObject) -> None:
    head = {p.id for p in first_round(PROBES)} | {"C-POSTMASTER"}
    ran = head | data.draw(st.sets(st.sampled_from([p.id for p in PROBES])))
    likely = st.one_of(st.just("accepted"), answers)  # proof needs accepted ones: draw them often
    first = {p.id: seen(p, data.draw(likely)) for p in PROBES if p.id in ran}
    if not is_proven(first.values(), domain_checks=CHECKS):
        return
    PROVEN_SEEN.append(True)
    later = {p.id: seen(p, data.draw(answers)) for p in PROBES if p.id not in ran}
    assert decide(list({**first, **later}.values())).verdict.kind is VerdictKind.OPEN


PROVEN_SEEN: list[bool] = []


def test_the_generated_cases_did_reach_a_proof() -> None:
    """Runs after the property (file order): it must have met proven cases, not only skipped ones."""
    test_once_proven_no_later_probe_changes_the_verdict()
    assert len(PROVEN_SEEN) >= 10

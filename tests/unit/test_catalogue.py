"""Catalogue lint and probe planning: the shipped probes cover the research table V01–V26 exactly."""

from __future__ import annotations

import string

import pytest

from relaycheck.catalogue import (
    SLOTS,
    CatalogueError,
    PlannedProbe,
    ProbeSpec,
    Slots,
    load_catalogue,
    parse_catalogue,
    plan_probes,
)
from relaycheck.engine import ip_literal
from relaycheck.model import ProbeKind

U, EXT = "relaytest-ab12", "outside.example"
U2, EXT2 = "relaytest-cd34", "elsewhere.test"
SENDER = "sender@ext2.example"
LOCAL = "example.com"
HOST = "mx.example.com"
LIT = "[192.0.2.1]"
RANDOM = "rc-nouser-0123456789"
S = "relaycheck"

SLOTS_V4 = Slots(
    outside=(f"{U}@{EXT}", f"{U2}@{EXT2}"),
    sender_ext=SENDER,
    local_domain=LOCAL,
    host=HOST,
    ip_literal=LIT,
    random_user=RANDOM,
)

# The probe table with u, ext, ext2, s, D, H, [IP] filled as above.
# MAIL is None where the table says "(varies)"; then the catalogue's choice is not pinned here.
RESEARCH_TABLE: dict[str, tuple[str | None, str]] = {
    "V01": (f"<{SENDER}>", f"<{U}@{EXT}>"),
    "V02": (f"<{S}@{EXT}>", f"<{U}@{EXT}>"),
    "V03": ("<>", f"<{U}@{EXT}>"),
    "V04": (f"<{S}>", f"<{U}@{EXT}>"),
    "V05": (f"<{S}@{LOCAL}>", f"<{U}@{EXT}>"),
    "V06": (f"<{S}@{HOST}>", f"<{U}@{EXT}>"),
    "V07": (f"<{S}@{LIT}>", f"<{U}@{EXT}>"),
    "V08": (f"<{S}@localhost>", f"<{U}@{EXT}>"),
    "V09": (f"<ext2.example!{S}>", f"<{U}@{EXT}>"),
    "V10": (None, f'<"{U}@{EXT}">'),
    "V11": (None, f"{U}@{EXT}"),
    "V12": (None, f"<{U}%{EXT}@{LIT}>"),
    "V13": (None, f"<{U}%{EXT}@{HOST}>"),
    "V14": (None, f"<{U}%{EXT}>"),
    "V15": (None, f'<"{U}%{EXT}">'),
    "V16": (None, f"<{U}@{EXT}@{LIT}>"),
    "V17": (None, f"<{U}@{EXT}@{HOST}>"),
    "V18": (None, f'<"{U}@{EXT}"@{LIT}>'),
    "V19": (None, f'<"{U}@{EXT}"@{HOST}>'),
    "V20": (None, f"<@{LIT}:{U}@{EXT}>"),
    "V21": (None, f"<@{HOST}:{U}@{EXT}>"),
    "V22": (None, f"<{EXT}!{U}>"),
    "V23": (None, f"<{EXT}!{U}@{LIT}>"),
    "V24": (None, f"<{EXT}!{U}@{HOST}>"),
    "V25": (f"<{S}@{LIT}>", f"<{U}@{EXT}@>"),
}
V26 = (f"<{S}@{LIT}>", f"<{U}@{LIT}>")

# Recipient encodings that hide the outside address in a local-looking one.
TRICKS = {"V10", "V12", "V13", "V14", "V15", "V16", "V17", "V18", "V19", "V22", "V23", "V24", "V25"}


def _by_id(planned: list[PlannedProbe]) -> dict[str, PlannedProbe]:
    return {p.id: p for p in planned}


def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


# --------------------------------------------------------------------------------------------
# Lint of the shipped catalogue
# --------------------------------------------------------------------------------------------


def test_shipped_catalogue_loads() -> None:
    specs = load_catalogue()
    assert specs
    assert all(isinstance(s, ProbeSpec) for s in specs)
    assert load_catalogue() is specs  # parsed once


def test_ids_are_unique() -> None:
    ids = [s.id for s in load_catalogue()]
    assert len(ids) == len(set(ids))


def test_every_research_relay_variant_is_a_relay_probe() -> None:
    relay = {s.id for s in load_catalogue() if s.kind is ProbeKind.RELAY}
    assert relay == set(RESEARCH_TABLE)


def test_v26_is_only_a_control() -> None:
    specs = load_catalogue()
    assert "V26" not in {s.id for s in specs}
    planned = plan_probes(SLOTS_V4)
    literal = _by_id(planned)["C-LITERAL"]
    assert literal.kind is ProbeKind.CONTROL
    assert literal.role == "literal-local"
    assert (literal.mail_from, literal.rcpt_to) == V26
    assert literal.outside_domain is None
    # no relay probe sends to the server's own literal as a plain local recipient
    assert all(p.rcpt_to != V26[1] for p in planned if p.kind is ProbeKind.RELAY)


def test_controls_present_with_their_roles() -> None:
    controls = {s.id: s for s in load_catalogue() if s.kind is ProbeKind.CONTROL}
    assert set(controls) == {"C-POSTMASTER", "C-CATCHALL", "C-LITERAL"}
    assert controls["C-POSTMASTER"].role == "postmaster"
    assert controls["C-CATCHALL"].role == "catch-all"
    by_id = _by_id(plan_probes(SLOTS_V4))
    assert by_id["C-POSTMASTER"].rcpt_to == f"<postmaster@{LOCAL}>"
    assert by_id["C-CATCHALL"].rcpt_to == f"<{RANDOM}@{LOCAL}>"


def test_controls_come_after_every_relay_probe() -> None:
    kinds = [p.kind for p in plan_probes(SLOTS_V4)]
    first_control = kinds.index(ProbeKind.CONTROL)
    assert all(k is ProbeKind.CONTROL for k in kinds[first_control:])
    assert ProbeKind.RELAY not in kinds[first_control:]


def test_every_relay_recipient_involves_the_outside_domain() -> None:
    for spec in load_catalogue():
        if spec.kind is ProbeKind.RELAY:
            assert "ext" in _fields(spec.rcpt), spec.id
    for probe in plan_probes(SLOTS_V4):
        if probe.kind is ProbeKind.RELAY:
            assert probe.outside_domain in probe.rcpt_to, probe.id
        else:
            assert EXT not in probe.rcpt_to and EXT2 not in probe.rcpt_to, probe.id


def test_templates_use_only_known_slots() -> None:
    for spec in load_catalogue():
        assert _fields(spec.mail) | _fields(spec.rcpt) <= SLOTS, spec.id


def test_every_entry_says_what_it_catches() -> None:
    for spec in load_catalogue():
        assert spec.title.strip(), spec.id
        if spec.kind is ProbeKind.RELAY:
            assert spec.catches.strip(), spec.id
            assert spec.form in {"outside", "trick"}, spec.id
            assert spec.role is None, spec.id


# --------------------------------------------------------------------------------------------
# parse_catalogue rejects malformed data
# --------------------------------------------------------------------------------------------

GOOD_PROBE = """
[[probe]]
id = "X1"
title = "t"
mail = "<{sender_ext}>"
rcpt = "<{u}@{ext}>"
"""
GOOD_CONTROL = """
[[control]]
id = "C-X"
role = "postmaster"
title = "t"
mail = "<{sender_ext}>"
rcpt = "<postmaster@{local_domain}>"
"""


def test_parse_catalogue_accepts_a_minimal_catalogue() -> None:
    probe, control = parse_catalogue(GOOD_PROBE + GOOD_CONTROL)
    assert probe == ProbeSpec(id="X1", kind=ProbeKind.RELAY, title="t", mail="<{sender_ext}>", rcpt="<{u}@{ext}>")
    assert probe.form == "outside"
    assert not probe.per_outside
    assert control.kind is ProbeKind.CONTROL
    assert control.role == "postmaster"
    assert parse_catalogue("") == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GOOD_PROBE.replace("{sender_ext}", "{sender}"), "unknown slots"),
        (GOOD_PROBE.replace("<{u}@{ext}>", "<{u}@{ext}@{target}>"), "unknown slots"),
        (GOOD_PROBE.replace("{u}", "{0}"), "unknown slots"),
        (GOOD_PROBE.replace("{u}", "{}"), "unknown slots"),
        (GOOD_CONTROL.replace("{local_domain}", "{domain}"), "unknown slots"),
        (GOOD_PROBE.replace('id = "X1"\n', ""), "lacks"),
        (GOOD_PROBE.replace('title = "t"\n', ""), "lacks"),
        (GOOD_PROBE.replace('mail = "<{sender_ext}>"\n', ""), "lacks"),
        (GOOD_PROBE.replace('rcpt = "<{u}@{ext}>"\n', ""), "lacks"),
        (GOOD_CONTROL.replace('title = "t"\n', ""), "lacks"),
        (GOOD_PROBE + GOOD_PROBE, "duplicate"),
        (GOOD_PROBE + GOOD_CONTROL.replace("C-X", "X1"), "duplicate"),
        (GOOD_PROBE + 'form = "sneaky"\n', "form"),
        (GOOD_PROBE + 'form = "Trick"\n', "form"),
        (GOOD_PROBE.replace("<{u}@{ext}>", "<{u}@{local_domain}>"), "ext"),
        (GOOD_CONTROL.replace('role = "postmaster"\n', ""), "role"),
        (GOOD_CONTROL.replace('role = "postmaster"', 'role = "admin"'), "role"),
    ],
)
def test_parse_catalogue_rejects_bad_entries(text: str, message: str) -> None:
    with pytest.raises(CatalogueError, match=message):
        parse_catalogue(text)


@pytest.mark.parametrize(
    "text",
    [
        GOOD_PROBE.replace("<{u}@{ext}>", "<{u}@{ext>"),
        GOOD_PROBE.replace("<{u}@{ext}>", "<{u}@{ext}>}"),
        "probe = [1, 2]",
        'mail = "',
    ],
)
def test_parse_catalogue_reports_every_malformed_text_as_catalogue_error(text: str) -> None:
    with pytest.raises(CatalogueError):
        parse_catalogue(text)


# --------------------------------------------------------------------------------------------
# plan_probes fills the slots exactly
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", sorted(RESEARCH_TABLE))
def test_planned_envelopes_match_the_research_table(variant: str) -> None:
    mail, rcpt = RESEARCH_TABLE[variant]
    probe = _by_id(plan_probes(SLOTS_V4))[variant]
    assert probe.kind is ProbeKind.RELAY
    assert probe.rcpt_to == rcpt
    if mail is not None:
        assert probe.mail_from == mail
    else:
        assert probe.mail_from == f"<{SENDER}>"
    assert probe.outside_domain == EXT


@pytest.mark.parametrize(
    ("variant", "rcpt"),
    [
        ("V12", "<u%ext@[192.0.2.1]>"),
        ("V20", "<@[192.0.2.1]:u@ext>"),
        ("V22", "<ext!u>"),
        ("V25", "<u@ext@>"),
        ("V11", "u@ext"),
        ("V18", '<"u@ext"@[192.0.2.1]>'),
    ],
)
def test_literal_examples_from_the_table(variant: str, rcpt: str) -> None:
    slots = Slots(
        outside=("u@ext",),
        sender_ext="s@ext2",
        local_domain="d.example",
        host="h.example",
        ip_literal="[192.0.2.1]",
        random_user="r",
    )
    assert _by_id(plan_probes(slots))[variant].rcpt_to == rcpt


def test_per_outside_probes_expand_once_per_outside_recipient() -> None:
    planned = plan_probes(SLOTS_V4)
    by_id = _by_id(planned)
    v01, v01b = by_id["V01"], by_id["V01b"]
    assert (v01.rcpt_to, v01.outside_domain) == (f"<{U}@{EXT}>", EXT)
    assert (v01b.rcpt_to, v01b.outside_domain) == (f"<{U2}@{EXT2}>", EXT2)
    assert v01.domain_check and v01b.domain_check
    assert v01.title in v01b.title and v01b.title != v01.title
    assert [p.id for p in planned].index("V01b") == [p.id for p in planned].index("V01") + 1

    per_outside = {s.id for s in load_catalogue() if s.per_outside}
    assert "V01" in per_outside
    for probe in planned:
        base = probe.id[:-1] if probe.id[:-1] in per_outside and probe.id.endswith("b") else probe.id
        assert probe.domain_check == (base in per_outside), probe.id
        if base not in per_outside:
            assert probe.outside_domain in (EXT, None), probe.id  # others use the first recipient only
    assert len(planned) == len(load_catalogue()) + len(per_outside)


def test_one_outside_recipient_gives_no_b_probes() -> None:
    slots = Slots(
        outside=(f"{U}@{EXT}",),
        sender_ext=SENDER,
        local_domain=LOCAL,
        host=HOST,
        ip_literal=LIT,
        random_user=RANDOM,
    )
    planned = plan_probes(slots)
    assert not any(p.id.endswith("b") for p in planned)
    assert len(planned) == len(load_catalogue())


def test_three_outside_recipients_give_b_and_c() -> None:
    slots = Slots(
        outside=("a@one.example", "b@two.example", "c@three.example"),
        sender_ext=SENDER,
        local_domain=LOCAL,
        host=HOST,
        ip_literal=LIT,
        random_user=RANDOM,
    )
    by_id = _by_id(plan_probes(slots))
    assert [by_id[i].outside_domain for i in ("V01", "V01b", "V01c")] == [
        "one.example",
        "two.example",
        "three.example",
    ]
    assert by_id["V02"].rcpt_to == "<a@one.example>"


def test_third_outside_probe_is_not_called_second() -> None:
    slots = Slots(
        outside=("a@one.example", "b@two.example", "c@three.example"),
        sender_ext=SENDER,
        local_domain=LOCAL,
        host=HOST,
        ip_literal=LIT,
        random_user=RANDOM,
    )
    by_id = _by_id(plan_probes(slots))
    assert by_id["V01c"].title != by_id["V01b"].title


def test_tricks_are_flagged_local_part_trick() -> None:
    planned = _by_id(plan_probes(SLOTS_V4))
    for variant in RESEARCH_TABLE:
        assert planned[variant].local_part_trick == (variant in TRICKS), variant
    for control in ("C-POSTMASTER", "C-CATCHALL", "C-LITERAL"):
        assert not planned[control].local_part_trick


def test_spoof_local_part_and_catches_are_carried() -> None:
    slots = Slots(
        outside=("u@ext",),
        sender_ext="s@ext2",
        local_domain="d.example",
        host="h.example",
        ip_literal="[192.0.2.1]",
        random_user="r",
        spoof_local_part="nobody",
    )
    by_id = _by_id(plan_probes(slots))
    assert by_id["V05"].mail_from == "<nobody@d.example>"
    assert by_id["V09"].mail_from == "<ext2!nobody>"
    specs = {s.id: s for s in load_catalogue()}
    assert by_id["V12"].catches == specs["V12"].catches
    assert by_id["V12"].title == specs["V12"].title


def test_plan_probes_with_given_specs() -> None:
    specs = parse_catalogue(GOOD_PROBE.replace('rcpt = "<{u}@{ext}>"', 'rcpt = "<{u}@{ext}>"\nper_outside = true'))
    planned = plan_probes(SLOTS_V4, specs)
    assert [p.id for p in planned] == ["X1", "X1b"]
    assert [p.rcpt_to for p in planned] == [f"<{U}@{EXT}>", f"<{U2}@{EXT2}>"]
    assert all(p.mail_from == f"<{SENDER}>" for p in planned)


# --------------------------------------------------------------------------------------------
# Address literals
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "literal"),
    [
        ("192.0.2.1", "[192.0.2.1]"),
        ("2001:db8::1", "[IPv6:2001:db8::1]"),
        ("2001:DB8:0::1", "[IPv6:2001:db8::1]"),
        ("2001:0db8:0000:0000:0000:0000:0000:0001", "[IPv6:2001:db8::1]"),
        ("::1", "[IPv6:::1]"),
    ],
)
def test_ip_literal(address: str, literal: str) -> None:
    assert ip_literal(address) == literal


def test_ip_literal_refuses_non_addresses() -> None:
    with pytest.raises(ValueError):
        ip_literal("mx.example.com")


def test_ipv6_literal_fills_the_envelopes() -> None:
    literal = ip_literal("2001:db8::1")
    slots = Slots(
        outside=("u@ext",),
        sender_ext="s@ext2",
        local_domain="d.example",
        host="h.example",
        ip_literal=literal,
        random_user="r",
    )
    by_id = _by_id(plan_probes(slots))
    assert by_id["V12"].rcpt_to == "<u%ext@[IPv6:2001:db8::1]>"
    assert by_id["V20"].rcpt_to == "<@[IPv6:2001:db8::1]:u@ext>"
    assert by_id["V07"].mail_from == "<relaycheck@[IPv6:2001:db8::1]>"
    assert by_id["C-LITERAL"].rcpt_to == "<u@[IPv6:2001:db8::1]>"

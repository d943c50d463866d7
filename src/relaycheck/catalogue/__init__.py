"""The probe catalogue, loaded from ``probes.toml`` (data, not control flow).

``load_catalogue`` validates the file once; ``plan_probes`` turns the entries into concrete
envelopes for one target by filling the named slots.
"""

from __future__ import annotations

import string
import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from relaycheck.errors import CatalogueError
from relaycheck.model import ProbeKind

SLOTS = frozenset(
    {
        "u",
        "ext",
        "sender_ext",
        "sender_domain",
        "s",
        "local_domain",
        "host",
        "ip_literal",
        "random_user",
    }
)
CONTROL_ROLES = frozenset({"postmaster", "catch-all", "literal-local"})
FORMS = frozenset({"outside", "trick"})


@dataclass(frozen=True)
class ProbeSpec:
    """One catalogue entry, before its slots are filled."""

    id: str
    kind: ProbeKind
    title: str
    mail: str
    rcpt: str
    form: str = "outside"  # "outside" or "trick" (relay probes)
    per_outside: bool = False
    catches: str = ""
    role: str | None = None  # controls: "postmaster", "catch-all", "literal-local"
    default: bool = True  # in the default battery (else only with --all-probes)


# Not frozen, on purpose: built ~100 times per target on a scan's hot path, and a frozen
# dataclass costs 5x as much to construct. Treat it as immutable all the same.
@dataclass(slots=True)
class PlannedProbe:
    """A probe with its envelope filled in for one target."""

    id: str
    kind: ProbeKind
    title: str
    mail_from: str
    rcpt_to: str
    outside_domain: str | None
    local_part_trick: bool
    domain_check: bool
    role: str | None
    catches: str


def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


def _spec(entry: dict[str, Any], kind: ProbeKind) -> ProbeSpec:
    try:
        spec = ProbeSpec(
            id=str(entry["id"]),
            kind=kind,
            title=str(entry["title"]),
            mail=str(entry["mail"]),
            rcpt=str(entry["rcpt"]),
            form=str(entry.get("form", "outside")),
            per_outside=bool(entry.get("per_outside", False)),
            catches=str(entry.get("catches", "")),
            role=str(entry["role"]) if "role" in entry else None,
            default=bool(entry.get("default", True)),
        )
    except KeyError as missing:
        raise CatalogueError(f"catalogue entry {entry!r} lacks {missing}") from None
    if not isinstance(entry, dict):
        raise CatalogueError(f"catalogue entry is not a table: {entry!r}")
    unknown = (_fields(spec.mail) | _fields(spec.rcpt)) - SLOTS
    if unknown:
        raise CatalogueError(f"{spec.id}: unknown slots {sorted(unknown)}")
    if kind is ProbeKind.RELAY and spec.form not in FORMS:
        raise CatalogueError(f"{spec.id}: form must be one of {sorted(FORMS)}")
    if kind is ProbeKind.RELAY and "ext" not in _fields(spec.rcpt):
        raise CatalogueError(f"{spec.id}: a relay probe's recipient must involve {{ext}}")
    if kind is ProbeKind.CONTROL and spec.role not in CONTROL_ROLES:
        raise CatalogueError(f"{spec.id}: control role must be one of {sorted(CONTROL_ROLES)}")
    return spec


def parse_catalogue(text: str) -> tuple[ProbeSpec, ...]:
    try:
        data = tomllib.loads(text)
        specs = [_spec(e, ProbeKind.RELAY) for e in data.get("probe", [])]
        specs += [_spec(e, ProbeKind.CONTROL) for e in data.get("control", [])]
    except CatalogueError:
        raise
    except (tomllib.TOMLDecodeError, ValueError, TypeError, AttributeError) as exc:
        raise CatalogueError(f"malformed catalogue: {exc}") from None
    ids = [s.id for s in specs]
    if len(ids) != len(set(ids)):
        raise CatalogueError("duplicate probe ids in the catalogue")
    return tuple(specs)


@cache
def load_catalogue() -> tuple[ProbeSpec, ...]:
    text = resources.files("relaycheck.catalogue").joinpath("probes.toml").read_text("utf-8")
    return parse_catalogue(text)


@dataclass(frozen=True)
class Slots:
    """Values for the catalogue's named slots, for one target."""

    outside: tuple[str, ...]  # outside recipient addresses, at least one
    sender_ext: str
    local_domain: str
    host: str
    ip_literal: str
    random_user: str
    spoof_local_part: str = "relaycheck"


def _split(address: str) -> tuple[str, str]:
    local, _, domain = address.rpartition("@")
    return local, domain


def plan_probes(
    slots: Slots, specs: tuple[ProbeSpec, ...] | None = None, *, optional: bool = True
) -> list[PlannedProbe]:
    """Concrete envelopes for every catalogue entry, in catalogue order, controls last.

    ``optional=False`` leaves out the entries marked ``default = false``.

    Entries marked ``per_outside`` run once per outside recipient; the first keeps the plain id,
    the others get ``b``, ``c``… (``V01``, ``V01b``).
    """
    specs = load_catalogue() if specs is None else specs
    sender_domain = _split(slots.sender_ext)[1]
    values_for = [  # the slot values with each outside recipient (built once, not per entry)
        {
            "u": u,
            "ext": ext,
            "sender_ext": slots.sender_ext,
            "sender_domain": sender_domain,
            "s": slots.spoof_local_part,
            "local_domain": slots.local_domain,
            "host": slots.host,
            "ip_literal": slots.ip_literal,
            "random_user": slots.random_user,
        }
        for u, ext in map(_split, slots.outside)
    ]
    planned: list[PlannedProbe] = []
    for spec in specs:
        if not (optional or spec.default):
            continue
        for number in range(len(slots.outside) if spec.per_outside else 1):
            values = values_for[number]
            ext = values["ext"]
            suffix = "" if number == 0 else chr(ord("a") + number)
            planned.append(
                PlannedProbe(
                    id=spec.id + suffix,
                    kind=spec.kind,
                    title=spec.title if not suffix else f"{spec.title} (outside domain {number + 1})",
                    mail_from=spec.mail.format_map(values),
                    rcpt_to=spec.rcpt.format_map(values),
                    outside_domain=ext if spec.kind is ProbeKind.RELAY else None,
                    local_part_trick=spec.form == "trick",
                    domain_check=spec.per_outside,
                    role=spec.role,
                    catches=spec.catches,
                )
            )
    return planned

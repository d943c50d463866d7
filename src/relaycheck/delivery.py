"""The DATA stage, for recipients the server accepted at RCPT.

- ``data_probe`` (``--data-probe``): MAIL, RCPT, DATA; on 354 hang up before a single content
  line, so no message can exist. Tells servers that refuse at DATA from real relays.
- ``deliver`` (``--confirm ADDRESS``): the same, but on 354 send ONE small labelled test message
  with a token; whether it arrives is checked afterwards (sink or IMAP). Never retried: at most
  one message per accepted probe, and only for probes whose recipient is the confirm address.

Each probe gets its own connection (the 354 hang-up ends it), opened through ``open_session``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Protocol

from relaycheck.confirm import dot_stuff, new_token, test_message
from relaycheck.errors import ProtocolError, TransportError
from relaycheck.model import Delivery, DeliveryState, Observation, Reply, Stage
from relaycheck.sink import Arrival
from relaycheck.smtp.session import PartialReplies, SmtpSession
from relaycheck.smtp.wire import Ehlo, mail_from, rcpt_to
from relaycheck.verdict import classify_reply

# Opens a session ready for MAIL; the flag says whether to STARTTLS first (the probe's phase).
OpenSession = Callable[[bool], Awaitable[tuple[SmtpSession, Reply, Ehlo | None]]]


class ArrivalWatcher(Protocol):
    """Where test messages are looked for: relaycheck's sink, or an IMAP mailbox."""

    via: str

    async def check_ready(self) -> None:
        """Raise a ``RelaycheckError`` now if arrivals could not be seen (before anything is sent)."""

    async def wait_for(self, tokens: set[str], timeout: float) -> dict[str, Arrival]: ...
_FAILURES = (TransportError, ProtocolError, PartialReplies)


async def _up_to_data(open_session: OpenSession, obs: Observation) -> tuple[SmtpSession, Reply] | None:
    """A fresh session taken through MAIL and RCPT to the DATA reply; None if it got no further."""
    session, greeting, _ = await open_session(obs.tls)
    if greeting.code != 220:
        session.close()
        return None
    mail = await session.command(mail_from(obs.mail_from))
    rcpt = await session.command(rcpt_to(obs.rcpt_to)) if mail.positive else mail
    if mail.code // 100 != 2 or rcpt.code // 100 != 2:
        await session.quit()
        return None
    return session, await session.command("DATA")


def _refused_at_data(obs: Observation, reply: Reply, **changes: object) -> Observation:
    """This path does not relay after all: the DATA-stage reply decides the probe."""
    refused = classify_reply(Stage.DATA, reply)
    return replace(
        obs,
        outcome=refused.outcome,
        stage=Stage.DATA,
        reply=reply,
        reason=f"accepted at RCPT, then {refused.reason} at DATA",
        **changes,  # type: ignore[arg-type]
    )


async def data_probe(open_session: OpenSession, accepted: Sequence[Observation], limit: int) -> dict[str, Observation]:
    gate = asyncio.Semaphore(limit)

    async def one(obs: Observation) -> Observation:
        async with gate:
            try:
                reached = await _up_to_data(open_session, obs)
                if reached is None:
                    return obs
                session, data = reached
                if data.code == 354:
                    session.abort(note="connection dropped after 354, before any content: no message exists")
                    return replace(obs, data_reply=data)
                await session.quit()
            except _FAILURES:
                return obs
            return _refused_at_data(obs, data, data_reply=data)

    return {o.probe_id: o for o in await asyncio.gather(*(one(o) for o in accepted))}


async def deliver(
    open_session: OpenSession,
    accepted: Sequence[Observation],
    *,
    limit: int,
    confirm_address: str,
    target_label: str,
    operator: str,
) -> dict[str, Observation]:
    """Send one test message per accepted probe whose recipient stands for ``confirm_address``."""
    gate = asyncio.Semaphore(limit)
    local, _, domain = confirm_address.rpartition("@")

    async def one(obs: Observation) -> Observation:
        token = new_token()
        nothing_sent = Delivery(DeliveryState.NOT_ACCEPTED, token)
        # Belt and braces: the envelope must be a form of the operator's own address.
        if local.lower() not in obs.rcpt_to.lower() or domain.lower() not in obs.rcpt_to.lower():
            return replace(obs, delivery=nothing_sent)
        async with gate:
            try:
                reached = await _up_to_data(open_session, obs)
                if reached is None:
                    return replace(obs, delivery=nothing_sent)
                session, data = reached
                if data.code != 354:
                    await session.quit()
                    return _refused_at_data(obs, data, data_reply=data, delivery=nothing_sent)
                content = dot_stuff(
                    test_message(
                        token=token,
                        probe_id=obs.probe_id,
                        mail_from=obs.mail_from,
                        rcpt_to=obs.rcpt_to,
                        confirm_address=confirm_address,
                        target_label=target_label,
                        operator=operator,
                    )
                )
                final = await session.send_content(content)
                await session.quit()
            except _FAILURES:
                return replace(obs, delivery=nothing_sent)
        if final.code // 100 != 2:
            return _refused_at_data(
                obs, final, data_reply=data, delivery=Delivery(DeliveryState.NOT_ACCEPTED, token, final)
            )
        return replace(obs, data_reply=data, delivery=Delivery(DeliveryState.NOT_DELIVERED, token, final))

    return {o.probe_id: o for o in await asyncio.gather(*(one(o) for o in accepted))}


def sent_tokens(observations: Mapping[str, Observation]) -> set[str]:
    return {
        o.delivery.token
        for o in observations.values()
        if o.delivery is not None and o.delivery.state is DeliveryState.NOT_DELIVERED
    }


def mark_unknown(observations: Mapping[str, Observation]) -> dict[str, Observation]:
    """PURE: arrivals could not be checked (the mailbox failed while waiting): say so, not 'lost'."""
    return {
        probe_id: replace(obs, delivery=replace(obs.delivery, state=DeliveryState.UNKNOWN))
        if obs.delivery is not None and obs.delivery.state is DeliveryState.NOT_DELIVERED
        else obs
        for probe_id, obs in observations.items()
    }


def mark_arrivals(
    observations: Mapping[str, Observation], arrivals: Mapping[str, Arrival], via: str
) -> dict[str, Observation]:
    """PURE: probes whose token arrived become ``confirmed``, with the path the message took."""
    marked: dict[str, Observation] = {}
    for probe_id, obs in observations.items():
        delivery = obs.delivery
        if delivery is not None and delivery.token in arrivals:
            arrival = arrivals[delivery.token]
            delivery = replace(delivery, state=DeliveryState.CONFIRMED, received=arrival.received, arrived_via=via)
            obs = replace(obs, delivery=delivery)
        marked[probe_id] = obs
    return marked

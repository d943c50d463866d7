"""How the engine talks: safety (no DATA), connection use, error limits, drops, hostile servers."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from relaycheck.hygiene import HygieneOptions
from relaycheck.model import Confidence, Outcome, ProbeKind, VerdictKind

from .conftest import ServerFactory, check_one


def test_probe_mode_never_sends_data(smtp_server: ServerFactory) -> None:
    server = smtp_server("open")
    report = check_one(server.address)
    assert report.verdict.kind is VerdictKind.OPEN
    assert "DATA" not in server.handler.commands
    assert server.handler.data_started == 0 and not server.handler.messages
    sent = [e.sent for c in report.connections for e in c.exchanges if e.sent]
    assert not any(line.upper().startswith("DATA") for line in sent)


def test_data_probe_hangs_up_after_354_without_creating_a_message(smtp_server: ServerFactory) -> None:
    server = smtp_server("open")
    report = check_one(server.address, data_probe=True)
    assert report.verdict.kind is VerdictKind.OPEN
    assert report.verdict.confidence is Confidence.ACCEPTED_AT_DATA
    assert server.handler.data_started > 0  # the server did say 354…
    assert server.handler.messages == []  # …and no message exists


def test_data_probe_tells_apart_servers_that_refuse_at_data(smtp_server: ServerFactory) -> None:
    server = smtp_server("refuse-at-data")
    assert check_one(server.address).verdict.kind is VerdictKind.OPEN  # RCPT alone is fooled
    report = check_one(server.address, data_probe=True)
    assert report.verdict.kind is VerdictKind.CLOSED
    assert any(f.code == "refused-at-data" for f in report.findings)
    assert server.handler.messages == []


def test_battery_fits_in_few_connections_and_round_trips_with_pipelining(smtp_server: ServerFactory) -> None:
    battery_only = HygieneOptions(ptr=False, dnsbl=False, tls=False, vrfy=False)
    report = check_one(smtp_server("closed").address, hygiene=battery_only)
    assert report.facts.pipelining
    assert len(report.connections) <= 4
    # connect+greeting, EHLO, one pipelined batch, QUIT (alone: see run_chunk): four round trips
    # per connection, plus the preflight's transaction (postmaster and the first round)
    assert report.round_trips <= 4 * len(report.connections) + 1


def test_without_pipelining_commands_go_one_at_a_time(smtp_server: ServerFactory) -> None:
    battery_only = HygieneOptions(ptr=False, dnsbl=False, tls=False, vrfy=False)
    report = check_one(smtp_server("no-pipelining").address, hygiene=battery_only)
    assert not report.facts.pipelining
    assert report.verdict.kind is VerdictKind.CLOSED
    assert report.round_trips > 3 * len(report.connections)


def test_no_session_goes_past_a_postfix_like_error_limit(smtp_server: ServerFactory) -> None:
    # Postfix slows down once a client has made more than 10 errors (smtpd_soft_error_limit);
    # this server says 421 at the 11th.
    server = smtp_server("closed", errors_before_421=10)
    report = check_one(server.address)
    assert report.verdict.kind is VerdictKind.CLOSED
    replies = [e.reply for c in report.connections for e in c.exchanges if e.reply]
    assert all(r.code != 421 for r in replies)


def test_421_after_few_errors_reconnects_and_finishes(smtp_server: ServerFactory) -> None:
    server = smtp_server("closed", errors_before_421=3)
    report = check_one(server.address)
    assert report.verdict.kind is VerdictKind.CLOSED
    assert all(o.outcome is not Outcome.ERROR for o in report.observations)
    assert len(report.connections) > 4  # it had to reconnect, in smaller chunks


def test_dropped_connections_are_resumed(smtp_server: ServerFactory) -> None:
    server = smtp_server("closed", drop_after_commands=12)
    report = check_one(server.address)
    assert report.verdict.kind is VerdictKind.CLOSED
    assert len(report.observations) == 28
    assert all(o.outcome is not Outcome.ERROR for o in report.observations)


def test_ipv6_literals_are_written_the_rfc_5321_way(smtp_server: ServerFactory) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        server = smtp_server("closed", host="::1")
    except OSError:
        pytest.skip("cannot bind ::1 here")
    report = check_one(server.address)
    literal = next(o for o in report.observations if o.probe_id == "V07")
    assert literal.mail_from.endswith("@[IPv6:::1]>")
    assert report.facts.ip_literal == "[IPv6:::1]"
    assert report.verdict.kind is VerdictKind.CLOSED


def test_connection_refused_is_reported_not_raised() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        report = check_one(f"127.0.0.1:{port}")
    assert report.verdict.kind is VerdictKind.INCONCLUSIVE
    assert report.error is not None and "cannot connect" in report.error


@pytest.fixture
def raw_server() -> Iterator[tuple[socket.socket, list[bytes]]]:
    """A TCP listener whose behaviour the test scripts (hostile servers aiosmtpd cannot play)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    script: list[bytes] = []
    yield listener, script
    listener.close()


def _serve_once(listener: socket.socket, payload: bytes, then_wait: threading.Event) -> threading.Thread:
    def run() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            try:
                conn.sendall(payload)
            except OSError:
                return
            then_wait.wait(10)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_silent_server_times_out_within_the_step_timeout(raw_server: tuple[socket.socket, list[bytes]]) -> None:
    listener, _ = raw_server
    done = threading.Event()
    _serve_once(listener, b"", done)
    port = listener.getsockname()[1]
    report = check_one(f"127.0.0.1:{port}", greeting_timeout=0.5)
    done.set()
    assert report.verdict.kind is VerdictKind.INCONCLUSIVE
    assert report.error is not None and "greeting" in report.error
    assert report.duration < 5


def test_endless_continuation_lines_cannot_exhaust_the_tester(raw_server: tuple[socket.socket, list[bytes]]) -> None:
    listener, _ = raw_server
    done = threading.Event()
    _serve_once(listener, b"220-hello\r\n" * 20000, done)
    report = check_one(f"127.0.0.1:{listener.getsockname()[1]}")
    done.set()
    assert report.verdict.kind is VerdictKind.INCONCLUSIVE
    assert report.error is not None and "longer than" in report.error


def test_garbage_instead_of_smtp_is_a_clear_error(raw_server: tuple[socket.socket, list[bytes]]) -> None:
    listener, _ = raw_server
    done = threading.Event()
    _serve_once(listener, b"HTTP/1.1 400 Bad Request\r\n\r\n", done)
    report = check_one(f"127.0.0.1:{listener.getsockname()[1]}")
    done.set()
    assert report.verdict.kind is VerdictKind.INCONCLUSIVE
    assert report.error is not None and "not an SMTP reply" in report.error


def test_transcripts_record_every_command_and_reply(smtp_server: ServerFactory) -> None:
    report = check_one(smtp_server("closed").address)
    sent = [e.sent for c in report.connections for e in c.exchanges if e.sent]
    v12 = next(o for o in report.observations if o.probe_id == "V12")
    assert f"RCPT TO:{v12.rcpt_to}" in sent
    assert any(s.startswith("EHLO client.relaycheck.test") for s in sent)
    assert sum(1 for o in report.observations if o.kind is ProbeKind.CONTROL) == 2  # C-LITERAL is optional


def test_all_probes_adds_the_optional_literal_control(smtp_server: ServerFactory) -> None:
    report = check_one(smtp_server("closed").address, all_probes=True)
    literal = next(o for o in report.observations if o.probe_id == "C-LITERAL")
    assert literal.rcpt_to.endswith("@[127.0.0.1]>")


def test_no_connection_carries_more_than_nine_refusals(smtp_server: ServerFactory) -> None:
    report = check_one(smtp_server("reject-everything").address)  # every probe refused, postmaster too
    per_connection: dict[int, int] = {}
    for obs in report.observations:
        if obs.outcome is not Outcome.ACCEPTED:
            per_connection[obs.connection] = per_connection.get(obs.connection, 0) + 1
    assert max(per_connection.values()) <= 9


def test_starttls_required_is_found_before_any_pipelined_batch(smtp_server: ServerFactory) -> None:
    report = check_one(smtp_server("starttls-required").address)
    assert report.facts.tls_required
    clear = [c for c in report.connections if not c.tls]
    replies_530 = [
        e
        for c in clear
        for e in c.exchanges
        if e.reply is not None and e.reply.code == 530 and (e.sent or "").startswith(("MAIL", "RCPT"))
    ]
    # the preflight's one transaction (postmaster and the first round), no batch of 530s against the error limit
    assert len(replies_530) <= 4


def test_no_spare_session_when_the_first_chunk_ends_before_the_others_are_up(smtp_server: ServerFactory) -> None:
    """Under load the sessions opened ahead can come up after the preflight's chunk is done; the
    worker that finished must not open one more session for probes the others will carry."""
    import asyncio
    import time

    from relaycheck.battery import Ready, Run, battery, ready
    from relaycheck.catalogue import Slots, plan_probes
    from relaycheck.model import Target

    from .conftest import BASE

    server = smtp_server("closed")
    host, port = server.address.rsplit(":", 1)

    async def scenario() -> tuple[Run, int]:
        first_quit = asyncio.get_running_loop().create_future()

        def watch(index: int, exchange: object) -> None:
            if index == 0 and getattr(exchange, "sent", None) == "QUIT" and not first_quit.done():
                first_quit.set_result(None)

        run = Run(Target(host=host, port=int(port)), BASE, time.monotonic() + 30, on_exchange=watch)
        opened = [await run.open() for _ in range(3)]  # sessions 0, 1, 2, all connected

        async def late(session_index: int) -> Ready:
            await first_quit  # up only once session 0 has finished its chunk (and sent QUIT)
            return Ready(opened[session_index][0], True)

        slots = Slots(("relaytest@outside-a.test", "relaytest@outside-b.test"), "relaycheck@outside-b.test",
                      "relay.test", "mx.relay.test", f"[{host}]", "rc-nouser-test")
        probes = plan_probes(slots, optional=False)[:27]  # three chunks of nine refusals
        results = await battery(run, probes, [ready(Ready(opened[0][0], True)), late(1), late(2)], {})
        return run, len(results)

    run, observed = asyncio.run(scenario())
    assert observed == 27
    assert len(run.sessions) == 3  # no fourth session that would only say EHLO and QUIT


def test_quit_ends_our_side_so_a_server_holding_its_221_lets_it_go(
    raw_server: tuple[socket.socket, list[bytes]],
) -> None:
    """Exim corks its 221 and waits (200 ms) for the client to close first; relaycheck says it is
    done writing right after QUIT. This server sends its 221 only once the client's end is closed:
    without that, the QUIT's reply would never come (and every session would wait out the timeout)."""
    import asyncio
    import time

    from relaycheck.model import Transport
    from relaycheck.smtp.session import SessionConfig, SmtpSession

    listener, _ = raw_server

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.sendall(b"220 corked.example ESMTP\r\n")
            received = b""
            while b"QUIT\r\n" not in received:
                chunk = conn.recv(1024)
                if not chunk:
                    return
                received += chunk
            while conn.recv(1024):  # hold the 221 until the client's end of the stream
                pass
            conn.sendall(b"221 2.0.0 Bye\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    async def session_quit() -> SmtpSession:
        config = SessionConfig(helo_name="client.example", connect_timeout=5, greeting_timeout=5, command_timeout=5,
                               deadline=time.monotonic() + 30)  # fmt: skip
        session = SmtpSession("127.0.0.1", listener.getsockname()[1], config, transport=Transport.PLAIN)
        assert (await session.connect()).code == 220
        await session.quit()
        return session

    session = asyncio.run(session_quit())
    thread.join(10)
    quit_exchange = session.log().exchanges[-1]
    assert quit_exchange.sent == "QUIT"
    assert quit_exchange.reply is not None and quit_exchange.reply.code == 221

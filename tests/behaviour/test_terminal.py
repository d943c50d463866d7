"""What a person at a terminal sees: the real CLI under a pseudo-terminal (``pty``), with
``NO_COLOR`` and ``COLUMNS=60``; a status line while a check waits on a silent server; advice that
fits the failure; long banners shortened; IDN names converted; IPv6 targets bracketed."""

from __future__ import annotations

import errno
import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from relaycheck.testing.dnsserver import DnsServerThread
from tests.child import run, start, wait_measured
from tests.support.population import Population

from .conftest import ServerFactory

COMMON = ["--no-ptr", "--no-dnsbl", "--local-domain", "relay.test", "--helo", "client.relaycheck.test",
          "--ext-recipient", "relaytest@outside-a.test", "--ext-recipient", "relaytest@outside-b.test"]  # fmt: skip
SGR = re.compile(rb"\x1b\[[0-9;]*m")  # colour and bold: what NO_COLOR forbids
STATUS_ERASE = b"\r\x1b[K"  # the status line's own cursor control: not colour


@dataclass(frozen=True)
class Screen:
    code: int
    raw: bytes

    @property
    def lines(self) -> list[str]:
        """What is left on screen: the status line's erasures applied, line ends normalised."""
        text = self.raw.replace(b"\r\n", b"\n")
        shown = [part.split(STATUS_ERASE)[-1] for part in text.split(b"\n")]
        return [line.decode(errors="replace") for line in shown]


def on_terminal(
    argv: list[str],
    env: dict[str, str],
    timeout: float = 60,
    columns: int = 60,
    on_output: Callable[[bytes, subprocess.Popen[bytes]], None] | None = None,
) -> Screen:
    """Run the CLI with stdin, stdout and stderr on a new pseudo-terminal of ``columns`` columns;
    ``on_output`` sees the output so far after each read (to act on what the CLI has shown)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    process = start(argv, stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    output = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no end of output within {timeout} s: {bytes(output)!r}"
            ready, _, _ = select.select([master], [], [], left)
            if not ready:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError as exc:  # EIO: the last holder of the terminal's other side closed it
                if exc.errno != errno.EIO:
                    raise
                break
            if not chunk:
                break
            output += chunk
            if on_output is not None:
                on_output(bytes(output), process)
        code, _ = wait_measured(process, timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(master)
        if process.returncode is None:
            process.kill()
            process.wait()
    return Screen(code, bytes(output))


PLAIN_TERMINAL = {"NO_COLOR": "1", "COLUMNS": "60", "TERM": "xterm-256color"}


def test_no_color_and_60_columns(smtp_server: ServerFactory) -> None:
    server = smtp_server("open")
    screen = on_terminal(["check", server.address, *COMMON], PLAIN_TERMINAL)
    assert screen.code == 1, screen.raw
    assert not SGR.search(screen.raw), "colour despite NO_COLOR"
    assert any("OPEN RELAY" in line for line in screen.lines)
    too_long = [line for line in screen.lines if len(line) > 60]
    assert not too_long, too_long
    # addresses are not cut mid-word at 60 columns (a table column would fold them)
    assert any(line.strip() == "RCPT TO <relaytest@outside-a.test>" for line in screen.lines), screen.lines

    colour = on_terminal(["check", server.address, *COMMON], {"COLUMNS": "60", "TERM": "xterm-256color"})
    assert SGR.search(colour.raw), "no colour on a terminal without NO_COLOR: the check above proves nothing"


@pytest.fixture(scope="module")
def silent_and_ssh() -> Iterator[Population]:
    with Population({"127.9.0.1": "silent", "127.9.0.2": "not-smtp"}) as running:
        yield running


def test_a_status_line_while_waiting_for_a_silent_server(silent_and_ssh: Population) -> None:
    target = f"127.9.0.1:{silent_and_ssh.port}"
    screen = on_terminal(["check", target, *COMMON, "--timeout", "3"], PLAIN_TERMINAL)
    assert screen.code == 3, screen.raw
    status = screen.raw.index(f"relaycheck: waiting for {target} to answer, 1 s".encode())
    assert status < screen.raw.index(b"INCONCLUSIVE")  # shown while waiting, before the report
    assert not any("relaycheck: waiting" in line for line in screen.lines)  # and erased before it
    text = " ".join(" ".join(screen.lines).split())
    assert "did not answer in time" in text and "longer --timeout" in text
    assert "many networks block port 25" not in text


def test_sigterm_while_waiting_ends_cleanly(silent_and_ssh: Population) -> None:
    target = f"127.9.0.1:{silent_and_ssh.port}"
    sent: list[bool] = []

    def stop_once_waiting(output: bytes, process: subprocess.Popen[bytes]) -> None:
        if not sent and b"relaycheck: waiting for" in output:  # the CLI says it is waiting: stop it there
            process.send_signal(signal.SIGTERM)
            sent.append(True)

    screen = on_terminal(["check", target, *COMMON, "--timeout", "30"], PLAIN_TERMINAL, on_output=stop_once_waiting)
    assert sent and screen.code == 130, screen.raw
    assert [line for line in screen.lines if line.strip()] == ["relaycheck: interrupted"]
    assert b"Traceback" not in screen.raw


def test_advice_fits_a_protocol_error(silent_and_ssh: Population) -> None:
    result = run(["check", f"127.9.0.2:{silent_and_ssh.port}", *COMMON, "--timeout", "5"])
    assert result.code == 3, result.err
    flat = " ".join(result.out.split())
    assert "does not speak SMTP" in flat and "many networks block port 25" not in flat


def test_no_status_line_when_stderr_is_not_a_terminal(silent_and_ssh: Population) -> None:
    result = run(["check", f"127.9.0.1:{silent_and_ssh.port}", *COMMON, "--timeout", "2"])
    assert result.code == 3
    assert result.err == ""


def test_a_long_banner_is_shortened_unless_verbose(smtp_server: ServerFactory) -> None:
    server = smtp_server("closed", banner="mx.relay.test ESMTP " + "A" * 3000)
    result = run(["check", server.address, *COMMON])
    assert result.code == 0, result.err
    assert "…" in result.out and result.out.count("A") < 250
    verbose = run(["check", server.address, *COMMON, "-v"])
    assert "A" * 3000 in "".join(verbose.out.split())  # whole, though wrapped


def test_ipv6_targets_are_bracketed(smtp_server: ServerFactory) -> None:
    server = smtp_server("closed", host="::1")
    result = run(["check", f"[::1]:{server.port}", *COMMON])
    assert result.code == 0, result.err
    assert f"[::1]:{server.port}" in result.out


def test_idn_names_are_converted(smtp_server: ServerFactory) -> None:
    server = smtp_server("closed")
    with DnsServerThread({("xn--maana-pta.example", "A"): ["127.0.0.1"]}) as dns:
        result = run(["check", "mañana.example", "--port", str(server.port), "--resolver", dns.address, *COMMON])
    assert result.code == 0, result.err
    assert f"xn--maana-pta.example (127.0.0.1):{server.port}" in result.out

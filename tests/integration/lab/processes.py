"""The lab's daemons: started in a namespace, awaited on their own readiness events, stopped."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ...waiting import wait_for
from .logs import file_size, read_from
from .netns import in_netns
from .paths import OPENSSL


def no_failure() -> str | None:
    return None


@dataclass(frozen=True)
class Readiness:
    """The line a daemon writes to ``log`` once it accepts connections: what the lab waits for.

    Only text past ``since`` counts, the log's length when the daemon was started, so that a
    restarted daemon (postgrey, appending to the same file) is not taken for ready on the line of
    its previous run.
    """

    log: Path
    line: re.Pattern[str]
    since: int

    @classmethod
    def starting_now(cls, log: Path, line: str) -> Readiness:
        return cls(log, re.compile(line, re.MULTILINE), file_size(log))

    def seen(self) -> bool:
        return self.line.search(read_from(self.log, self.since)) is not None


@dataclass(frozen=True)
class Endpoint:
    """Where a daemon is reached from, for the one connection that proves it ready."""

    namespace: str  # connect from here
    ip: str
    port: int
    banner: bytes | None = None  # the greeting must start with it (SMTP, LMTP: b"220")


@dataclass
class ManagedProcess:
    name: str
    popen: subprocess.Popen[bytes]
    output: Path
    ready: Readiness

    def alive(self) -> bool:
        return self.popen.poll() is None

    def check_running(self, failure: Callable[[], str | None] = no_failure) -> None:
        """Raise RuntimeError, with the daemon's own words, when it has exited or ``failure()``
        names a fatal error it logged (Postfix's master outlives an smtpd that dies)."""
        problem = failure()
        if problem:
            raise RuntimeError(problem)
        if not self.alive():
            last = read_from(self.output).strip().splitlines()[-5:]
            raise RuntimeError(
                f"{self.name} exited with status {self.popen.returncode} while starting: "
                + (" | ".join(last) or f"nothing in {self.output}")
            )

    @contextlib.contextmanager
    def exit_event(self) -> Iterator[list[int]]:
        """A pidfd of the daemon: readable once it has exited, which ends any wait on it."""
        try:
            pidfd = os.pidfd_open(self.popen.pid)
        except ProcessLookupError:  # already exited and reaped: check_running() says so
            yield []
            return
        try:
            yield [pidfd]
        finally:
            os.close(pidfd)

    def wait_ready(self, deadline: float, failure: Callable[[], str | None] = no_failure) -> None:
        """Block until the daemon logs its readiness line: woken by each change to its log and by
        its exit, never by a clock. TimeoutError at ``deadline`` (time.monotonic())."""

        def ready() -> bool:
            self.check_running(failure)
            return self.ready.seen()

        with self.exit_event() as exited:
            if not wait_for(ready, deadline, self.ready.log, fds=exited):
                raise TimeoutError(f"{self.name}: {self.ready.line.pattern!r} never appeared in {self.ready.log}")

    def connect_once(self, endpoint: Endpoint, deadline: float, failure: Callable[[], str | None] = no_failure) -> None:
        """One connection to the daemon, once it has said it listens: no retry, a refusal is an
        error. With a banner, the greeting is awaited on the socket, the daemon's log and its exit
        (an MTA starts its SMTP server per connection, and that one may die on its
        configuration); then QUIT, so that the server logs a clean, error-free session."""
        where = f"{self.name} at {endpoint.ip}:{endpoint.port} from {endpoint.namespace}"
        timeout = max(0.1, deadline - time.monotonic())
        address = (endpoint.ip, endpoint.port)
        sock = in_netns(endpoint.namespace, lambda: socket.create_connection(address, timeout=timeout))
        with sock:
            if endpoint.banner is None:
                return
            greeting = self._greeting(sock, where, deadline, failure)
            if not greeting.startswith(endpoint.banner):
                raise ConnectionError(f"{where}: unexpected greeting {greeting!r}")
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            sock.sendall(b"QUIT\r\n")
            reply = b""
            while b"\n" not in reply:  # each recv blocks until the reply's bytes arrive
                chunk = sock.recv(4096)
                if not chunk:
                    break
                reply += chunk

    def _greeting(self, sock: socket.socket, where: str, deadline: float, failure: Callable[[], str | None]) -> bytes:
        received = bytearray()
        sock.setblocking(False)

        def complete() -> bool:
            self.check_running(failure)
            try:
                chunk = sock.recv(4096)
            except BlockingIOError:
                return False
            if not chunk:
                raise ConnectionError(f"{where}: connection closed before the greeting ({bytes(received)!r})")
            received.extend(chunk)
            # Whole greeting: the last line is complete and not a continuation ("220-...").
            last = bytes(received).rstrip(b"\r\n").rpartition(b"\n")[2]
            return received.endswith(b"\n") and last[3:4] != b"-"

        with self.exit_event() as exited:
            if not wait_for(complete, deadline, self.ready.log, fds=[sock.fileno(), *exited]):
                raise TimeoutError(f"{where}: no greeting ({bytes(received)!r})")
        return bytes(received)

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM the whole process group (MTAs fork workers), SIGKILL what is left."""
        pgid = self.popen.pid  # started with start_new_session: the leader's pid is the pgid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=grace)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=grace)


def wait_until_ready(
    process: ManagedProcess,
    deadline: float,
    *endpoints: Endpoint,
    failure: Callable[[], str | None] = no_failure,
) -> None:
    """The daemon's readiness line, then one connection to each endpoint to confirm it."""
    process.wait_ready(deadline, failure)
    for endpoint in endpoints:
        process.connect_once(endpoint, deadline, failure)


def spawn(name: str, namespace: str, argv: Sequence[str], output: Path, ready: Readiness) -> ManagedProcess:
    """Start a daemon in ``namespace``, in the foreground (its pid is the daemon's: ``ip netns
    exec`` and the shells before it exec), stdout and stderr appended to ``output``."""
    with output.open("ab") as out:
        popen = subprocess.Popen(
            ["ip", "netns", "exec", namespace, *argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return ManagedProcess(name, popen, output, ready)


def run_in(namespace: str, argv: Sequence[str], timeout: float = 60) -> str:
    """Run a setup command inside ``namespace``; raise with its output if it fails."""
    done = subprocess.run(
        ["ip", "netns", "exec", namespace, *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} in {namespace} failed: {done.stdout}{done.stderr}")
    return done.stdout


def make_self_signed_cert(hostname: str, directory: Path, ip: str | None = None) -> None:
    names = f"DNS:{hostname}" + (f",IP:{ip}" if ip else "")
    subprocess.run(
        [
            OPENSSL,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "7",
            "-subj",
            f"/CN={hostname}",
            "-addext",
            f"subjectAltName={names}",
            "-keyout",
            str(directory / "key.pem"),
            "-out",
            str(directory / "cert.pem"),
        ],
        check=True,
        capture_output=True,
    )
    (directory / "key.pem").chmod(0o600)

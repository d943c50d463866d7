"""Hostile inputs on the user's side: the real CLI in a child process, fed /dev/zero, endless
pipes, a 200 MB line, binary files, and CR/LF/NUL in every option that reaches the wire. Each
case asserts the exit code, ONE line on stderr, and the child's peak memory (its own
``ru_maxrss``, from ``wait4``)."""

from __future__ import annotations

import json
import select
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.child import Finished, run

MEMORY_BOUND_MB = 100
LINE_MB = 200
ROOT = Path(__file__).resolve().parents[2]
RECORD = {"key": "192.0.2.1|25|", "ip": "192.0.2.1", "port": 25, "status": "ok", "verdict": "closed"}


def one_line(result: Finished, code: int, *words: str) -> None:
    assert result.code == code, (result.code, result.err)
    assert len(result.err_lines) == 1, result.err
    line = result.err_lines[0]
    assert line.startswith("relaycheck: ") and "Traceback" not in line, line
    for word in words:
        assert word in line, line
    assert result.peak_rss_mb < MEMORY_BOUND_MB, f"{result.peak_rss_mb:.0f} MB"


@pytest.fixture
def endless() -> Iterator[subprocess.Popen[bytes]]:
    """A pipe that never ends: ``yes`` writing a valid-looking configuration line forever."""
    producer = subprocess.Popen(["yes", "mynetworks = 0.0.0.0/0"], stdout=subprocess.PIPE)
    yield producer
    producer.kill()
    producer.wait()


@pytest.fixture(scope="module")
def long_line_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Scan results with one 200 MB line between two good records, written in 1 MB blocks (the
    test must not hold 200 MB either)."""
    path = tmp_path_factory.mktemp("long") / "results.jsonl"
    block = b"x" * (1024 * 1024)
    with path.open("wb") as handle:
        handle.write(json.dumps(RECORD).encode() + b"\n")
        handle.write(b'{"key": "')
        for _ in range(LINE_MB):
            handle.write(block)
        handle.write(b'"}\n')
        handle.write(json.dumps({**RECORD, "key": "192.0.2.2|25|", "ip": "192.0.2.2"}).encode() + b"\n")
    return path


# -- files and streams -------------------------------------------------------------------------


def test_audit_of_dev_zero_is_refused_at_once() -> None:
    one_line(run(["audit", "/dev/zero"], timeout=30), 2, "/dev/zero looks binary")


def test_audit_of_an_endless_pipe_stops_at_the_cap(endless: subprocess.Popen[bytes]) -> None:
    result = run(["audit", "--postfix", "-"], stdin=endless.stdout, timeout=30)
    one_line(result, 2, "standard input is larger than 10 MB")


def test_audit_of_a_binary_file() -> None:
    one_line(run(["audit", "/bin/ls"]), 2, "/bin/ls looks binary")


def test_audit_of_dev_zero_through_a_pipe() -> None:
    with open("/dev/zero", "rb") as zeros:
        one_line(run(["audit", "--postfix", "-"], stdin=zeros, timeout=30), 2, "standard input looks binary")


def test_report_of_dev_zero() -> None:
    one_line(run(["report", "/dev/zero"], timeout=30), 2, "/dev/zero looks binary")
    with open("/dev/zero", "rb") as zeros:
        one_line(run(["report", "-"], stdin=zeros, timeout=30), 2, "standard input looks binary")


def test_report_of_an_endless_pipe_of_garbage_is_exit_3(endless: subprocess.Popen[bytes]) -> None:
    one_line(run(["report", "-"], stdin=endless.stdout, timeout=60), 3, "holds no scan records")


def test_report_counts_a_200_mb_line_as_unreadable_and_reads_the_rest(long_line_results: Path) -> None:
    result = run(["report", str(long_line_results), "--format", "json"], timeout=120)
    assert result.code == 0, result.err
    summary = json.loads(result.out)
    assert (summary["records"], summary["unreadable_lines"]) == (2, 1)
    assert result.peak_rss_mb < MEMORY_BOUND_MB, f"{result.peak_rss_mb:.0f} MB"


def test_report_of_a_file_with_only_a_200_mb_line_is_exit_3(tmp_path: Path) -> None:
    path = tmp_path / "one-line.jsonl"
    block = b"y" * (1024 * 1024)
    with path.open("wb") as handle:  # no newline at all
        for _ in range(LINE_MB):
            handle.write(block)
    one_line(run(["report", str(path)], timeout=120), 3, "holds no scan records (1 unreadable line)")


def test_scan_of_a_list_with_a_200_mb_line_records_it_as_invalid(tmp_path: Path) -> None:
    targets = tmp_path / "targets.txt"
    block = b"x" * (1024 * 1024)
    with targets.open("wb") as handle:
        for _ in range(LINE_MB):
            handle.write(block)
        handle.write(b"\n")
    out = tmp_path / "scan.jsonl"
    result = run(["scan", "-iL", str(targets), "-o", str(out), "--progress", "none", "--helo", "scan.example"],
                 timeout=120)  # fmt: skip
    assert result.code == 0, result.err
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert record["status"] == "error" and "longer than 64 KB" in record["error"], record  # input errors are "error"
    assert result.peak_rss_mb < MEMORY_BOUND_MB, f"{result.peak_rss_mb:.0f} MB"


def test_scan_of_a_binary_list_is_refused_before_the_output_exists(tmp_path: Path) -> None:
    out = tmp_path / "scan.jsonl"
    one_line(run(["scan", "-iL", "/bin/ls", "-o", str(out)]), 2, "/bin/ls looks binary, not a target list")
    one_line(run(["scan", "-iL", "/dev/zero", "-o", str(out)], timeout=30), 2, "/dev/zero looks binary")
    assert not out.exists()


def test_scan_of_dev_zero_through_a_pipe(tmp_path: Path) -> None:
    with open("/dev/zero", "rb") as zeros:
        result = run(["scan", "-iL", "-", "-o", str(tmp_path / "scan.jsonl"), "--progress", "none",
                      "--helo", "scan.relaycheck.test"], stdin=zeros, timeout=30)  # fmt: skip
    one_line(result, 2, "standard input looks binary, not a target list")
    assert not (tmp_path / "scan.jsonl").exists()  # peeked at before the output was created


def test_an_unreadable_file() -> None:
    one_line(run(["audit", "/proc/self/mem"]), 2, "cannot read /proc/self/mem")
    one_line(run(["report", str(ROOT)]), 2, "is a directory")


# -- options that reach the wire ---------------------------------------------------------------

BAD = {"CR": "\rRSET", "LF": "\nQUIT", "NUL": "\0x"}
CHECK_OPTIONS = [
    ("--helo", "client.example{bad}"),
    ("--local-domain", "relay{bad}.example"),
    ("--sender", "me{bad}@example.com"),
    ("--ext-recipient", "you@exa{bad}mple.com"),
    ("--dnsbl-zone", "zen{bad}.example"),
    ("--confirm", "me{bad}@example.com"),
]
SCAN_OPTIONS = [o for o in CHECK_OPTIONS if o[0] != "--confirm"]


@pytest.fixture
def untouched() -> Iterator[socket.socket]:
    """A listening socket that must never see a connection: options are checked first."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener
        pending, _, _ = select.select([listener], [], [], 0)
        assert not pending, "a target was contacted before the options were checked"


def _port(listener: socket.socket) -> str:
    return f"127.0.0.1:{listener.getsockname()[1]}"


@pytest.mark.parametrize("bad", BAD.values(), ids=BAD.keys())
@pytest.mark.parametrize(("option", "template"), CHECK_OPTIONS, ids=[o for o, _ in CHECK_OPTIONS])
def test_check_refuses_control_characters_in_wire_options(
    untouched: socket.socket, option: str, template: str, bad: str
) -> None:
    argv = ["check", _port(untouched), "--no-ptr", "--no-dnsbl", "--helo", "client.example", option,
            template.format(bad=bad)]  # fmt: skip
    one_line(run(argv), 2, option)


@pytest.mark.parametrize("bad", BAD.values(), ids=BAD.keys())
@pytest.mark.parametrize(("option", "template"), SCAN_OPTIONS, ids=[o for o, _ in SCAN_OPTIONS])
def test_scan_refuses_control_characters_before_anything_is_written(
    untouched: socket.socket, tmp_path: Path, option: str, template: str, bad: str
) -> None:
    out = tmp_path / "scan.jsonl"
    argv = ["scan", _port(untouched), "--include-reserved", "--no-ptr", "-o", str(out), "--helo", "scan.example",
            option, template.format(bad=bad)]  # fmt: skip
    one_line(run(argv), 2, option)
    assert not out.exists()


@pytest.mark.parametrize("domain", ["", "sink\r\n.example", "sink\0.example", "-bad-.example"])
def test_sink_refuses_a_domain_that_is_not_one(domain: str) -> None:
    one_line(run(["sink", "--domain", domain, "--listen", "127.0.0.1:2599"]), 2, "--domain: not a domain name")


@pytest.mark.parametrize("command", ["check", "scan"])
def test_a_nonsense_resolver_is_refused_even_for_an_ip_target(
    untouched: socket.socket, tmp_path: Path, command: str
) -> None:
    extra = ["-o", str(tmp_path / "scan.jsonl"), "--include-reserved"] if command == "scan" else []
    one_line(run([command, _port(untouched), "--resolver", "nonsense", "--helo", "x.example", *extra]), 2,
             "--resolver needs an IP address")  # fmt: skip


@pytest.mark.parametrize("bad", BAD.values(), ids=BAD.keys())
def test_serve_refuses_control_characters_before_it_listens(bad: str) -> None:
    one_line(run(["serve", "--listen", "127.0.0.1:2598", "--helo", f"web{bad}.example"]), 2, "--helo")


def test_a_huge_argument_is_quoted_shortened() -> None:
    result = run(["check", "127.0.0.1", "--helo", "a" * 10_000 + "\r\n"])
    one_line(result, 2, "--helo", "…")
    assert len(result.err) < 300
    result = run(["check", "x" * 10_000 + "!"])
    one_line(result, 2, "not a host name", "…")
    assert len(result.err) < 400


@pytest.mark.parametrize("bad", BAD.values(), ids=BAD.keys())
def test_imap_url_with_control_characters(untouched: socket.socket, bad: str) -> None:
    argv = ["check", _port(untouched), "--confirm", "me@example.com", "--imap", f"imaps://me{bad}@imap.example/INBOX"]
    one_line(run(argv, env={"RELAYCHECK_IMAP_PASSWORD": "x"}), 2, "--imap")


def test_json_and_another_format_contradict() -> None:
    one_line(run(["check", "127.0.0.1", "--json", "--format", "html"]), 2, "--json and --format html")


def test_click_usage_errors_are_one_line_too() -> None:
    one_line(run(["check", "127.0.0.1", "--port", "9" * 500]), 2, "--port", "see 'relaycheck check --help'")
    one_line(run(["frobnicate"]), 2, "No such command")

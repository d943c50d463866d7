"""The package as users install it: a wheel built from this tree, installed into fresh virtual
environments (no extras; then each extra alone), run as the ``relaycheck`` command they get.

The development venv has every extra and every test tool (``trustme`` brings ``cryptography``), so
a dependency that is imported but not declared never shows there; it shows here. The servers the
command talks to are the behaviour servers of ``relaycheck.testing``, run by the test process on
loopback; the command under test is the fresh venv's ``relaycheck`` in a child process.

pip installs from its cache and the machine's wheel directories like any ``pip install``; the
venvs live under pytest's temporary directory.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import trustme

from relaycheck.testing.servers import ServerThread
from tests.waiting import wait_for

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
OUTSIDE = ["--ext-recipient", "relaytest@outside-a.test", "--ext-recipient", "relaytest@outside-b.test"]
# No name is ever looked up: IP targets, no PTR/DNSBL, explicit EHLO name and local domain.
CHECK = ["--no-ptr", "--no-dnsbl", "--helo", "client.relaycheck.test", "--local-domain", "relay.test",
         "--timeout", "5", *OUTSIDE]  # fmt: skip
SCAN = ["--include-reserved", "--no-ptr", "--helo", "scan.relaycheck.test", "--local-domain", "relay.test",
        "--timeout", "5", "--progress", "none", *OUTSIDE]  # fmt: skip

pytestmark = pytest.mark.timeout(600)


@dataclass(frozen=True)
class Venv:
    root: pathlib.Path

    @property
    def relaycheck(self) -> str:
        return str(self.root / "bin" / "relaycheck")

    def run(self, *args: str, timeout: float = 120, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.relaycheck, *args],
            input=stdin.decode() if stdin is not None else None,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=clean_env(),
            cwd=self.root,
        )

    def has(self, distribution: str) -> bool:
        found = subprocess.run(
            [str(self.root / "bin" / "python"), "-c", f"import importlib.metadata as m; m.version({distribution!r})"],
            capture_output=True,
            env=clean_env(),
        )
        return found.returncode == 0


def clean_env() -> dict[str, str]:
    """No PYTHONPATH or venv of ours leaks into the child: it sees only what was installed."""
    keep = {k: v for k, v in os.environ.items() if k in ("HOME", "LANG", "LC_ALL", "TMPDIR", "PIP_CACHE_DIR")}
    return {**keep, "PATH": "/usr/bin:/bin", "NO_COLOR": "1"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """The wheel, built from a copy of the sources: a build in the tree would reuse its build/
    directory, where a module deleted from src/ lives on and would ship."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    (found,) = out.glob("relaycheck-*.whl")
    return found


def make_venv(tmp_path_factory: pytest.TempPathFactory, wheel: pathlib.Path, extra: str | None) -> Venv:
    """A new venv with the wheel (and its declared dependencies, nothing else) installed by pip."""
    root = tmp_path_factory.mktemp(f"venv-{extra or 'plain'}")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    requirement = f"{wheel}[{extra}]" if extra else str(wheel)
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(root / "bin" / "python"), "install", "-q", requirement],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert installed.returncode == 0, installed.stderr
    return Venv(root)


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory, wheel: pathlib.Path) -> Venv:
    venv = make_venv(tmp_path_factory, wheel, None)
    for test_only in ("trustme", "pytest", "fastapi", "dask", "sqlalchemy"):
        assert not venv.has(test_only), f"{test_only} is in a plain install: the check proves nothing"
    return venv


@pytest.fixture(scope="module")
def server_tls() -> ssl.SSLContext:
    cert = trustme.CA().issue_cert("mx.relay.test", "127.0.0.1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    return context


@pytest.fixture
def server(request: pytest.FixtureRequest, server_tls: ssl.SSLContext) -> Iterator[ServerThread]:
    """A closed server (``closed``) or an open relay (``open``): plain, STARTTLS or implicit TLS."""
    behaviour, transport = request.param
    context = server_tls if transport != "plain" else None
    thread = ServerThread(behaviour, tls_context=context, implicit_tls=transport == "tls").start()
    yield thread
    thread.stop()


def report_of(result: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result.stderr
    loaded = json.loads(result.stdout)
    assert isinstance(loaded, dict)
    return loaded


@pytest.mark.parametrize(
    ("server", "transport", "verdict", "exit_code"),
    [
        (("closed", "plain"), "plain", "closed", 0),
        (("open", "starttls"), "starttls", "open", 1),
        (("closed", "starttls"), None, "closed", 0),  # STARTTLS offered: TLS checks and the TLS battery
        (("closed", "tls"), "tls", "closed", 0),
    ],
    indirect=["server"],
)
def test_check_on_a_plain_install(
    plain: Venv, server: ServerThread, transport: str | None, verdict: str, exit_code: int
) -> None:
    result = plain.run("check", server.address, "--json", *CHECK, *(["--transport", transport] if transport else []))
    report = report_of(result)
    assert result.returncode == exit_code, result.stderr
    (target,) = report["targets"]  # type: ignore[misc]
    assert target["verdict"]["verdict"] == verdict
    if verdict == "closed" and server.tls_context is not None:
        # the certificate was read: the code that needs cryptography ran
        tls = target["hygiene"]["tls"]
        assert tls["established"] and "mx.relay.test" in tls["cert_sans"] and tls["cert_issuer"], tls


def test_audit_on_a_plain_install(plain: Venv) -> None:
    config = FIXTURES / "audit" / "postfix" / "mynetworks-public.cf"
    result = plain.run("audit", "--json", str(config))
    assert result.returncode == 1, result.stderr  # an open relay path
    assert report_of(result)["family"] == "postfix"
    piped = plain.run("audit", "--postfix", "-", stdin=config.read_bytes())
    assert piped.returncode == 1, piped.stderr


@pytest.mark.parametrize("server", [("closed", "plain")], indirect=True)
def test_scan_and_report_on_a_plain_install(plain: Venv, server: ServerThread, tmp_path: pathlib.Path) -> None:
    out = tmp_path / "scan.jsonl"
    result = plain.run("scan", server.address, "-o", str(out), *SCAN)
    assert result.returncode == 0, result.stderr
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert (record["ip"], record["port"], record["verdict"]) == ("127.0.0.1", server.port, "closed")
    summary = plain.run("report", str(out), "--format", "json")
    assert summary.returncode == 0, summary.stderr
    assert json.loads(summary.stdout)["by_verdict"] == {"closed": 1}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_sink_on_a_plain_install(plain: Venv, tmp_path: pathlib.Path) -> None:
    port = free_port()
    log = tmp_path / "sink.err"
    out = tmp_path / "sink.out"
    with log.open("w") as err, out.open("w") as stdout:
        sink = subprocess.Popen(
            [plain.relaycheck, "sink", "--domain", "sink.test", "--listen", f"127.0.0.1:{port}"],
            stdout=stdout, stderr=err, env={**clean_env(), "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    try:
        assert wait_for(lambda: "listening on" in log.read_text() or sink.poll() is not None,
                        time.monotonic() + 60, log), "the sink did not start"
        assert sink.poll() is None, log.read_text()
        token = "rc-0123456789abcdef01234567"
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.sendmail("probe@relay.test", ["me@sink.test"],
                            f"X-Relaycheck-Token: {token}\r\nSubject: relaycheck test {token}\r\n\r\nhello\r\n")
            refused = client.docmd("RCPT", "TO:<someone@elsewhere.test>")  # it is never a relay
        assert refused[0] >= 500
        assert wait_for(lambda: token in out.read_text(), time.monotonic() + 30, out), out.read_text()
    finally:
        sink.send_signal(signal.SIGTERM)
        sink.wait(timeout=30)
    assert "Traceback" not in log.read_text()


def test_missing_extras_are_one_line_naming_the_extra(plain: Venv) -> None:
    serve = plain.run("serve", "--listen", "127.0.0.1:8099")
    assert (serve.returncode, serve.stderr) == (
        2,
        "relaycheck: 'serve' needs the web extra: pip install 'relaycheck[web]'\n",
    )
    dask = plain.run("scan", "--dask", "local:1", "127.0.0.1", "-o", "never.jsonl")
    assert (dask.returncode, dask.stderr) == (
        2,
        "relaycheck: --dask needs the dask extra: pip install 'relaycheck[dask]'\n",
    )
    assert not (plain.root / "never.jsonl").exists()  # refused before anything was opened
    listed = plain.run("--help")
    assert listed.returncode == 0
    assert any(line.split()[:1] == ["serve"] and "relaycheck[web]" in line for line in listed.stdout.splitlines())


@pytest.mark.parametrize("server", [("open", "plain")], indirect=True)
def test_web_extra_alone_answers_the_api(
    tmp_path_factory: pytest.TempPathFactory, wheel: pathlib.Path, server: ServerThread, tmp_path: pathlib.Path
) -> None:
    venv = make_venv(tmp_path_factory, wheel, "web")
    assert not venv.has("dask")
    port = free_port()
    log = tmp_path / "serve.err"
    with log.open("w") as err:
        serve = subprocess.Popen(
            [venv.relaycheck, "serve", "--listen", f"127.0.0.1:{port}", "--allow-private", "--allow-port",
             str(server.port), "--db", str(tmp_path / "web.db"), "--helo", "web.relaycheck.test", *OUTSIDE],
            stdout=subprocess.DEVNULL, stderr=err, env=clean_env(),
        )  # fmt: skip
    try:
        assert wait_for(lambda: "Uvicorn running" in log.read_text() or serve.poll() is not None,
                        time.monotonic() + 60, log), log.read_text()
        assert serve.poll() is None, log.read_text()
        base = f"http://127.0.0.1:{port}/api/v1/checks"
        request = urllib.request.Request(
            base, data=json.dumps({"target": server.address}).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as created:
            assert created.status == 202
            check_id = json.load(created)["id"]
        # the event stream ends when the check is done: no polling
        with urllib.request.urlopen(f"{base}/{check_id}/events", timeout=60) as events:
            assert b"event: done" in events.read()
        with urllib.request.urlopen(f"{base}/{check_id}", timeout=30) as done:
            body = json.load(done)
        assert (body["status"], body["verdict"]) == ("done", "open")
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=30)


@pytest.mark.parametrize("server", [("closed", "plain")], indirect=True)
def test_dask_extra_alone_scans(
    tmp_path_factory: pytest.TempPathFactory, wheel: pathlib.Path, server: ServerThread, tmp_path: pathlib.Path
) -> None:
    venv = make_venv(tmp_path_factory, wheel, "dask")
    assert not venv.has("fastapi")
    out = tmp_path / "scan.jsonl"
    result = venv.run("scan", "--dask", "local:1", server.address, "-o", str(out), *SCAN, timeout=300)
    assert result.returncode == 0, result.stderr
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert (record["port"], record["verdict"]) == (server.port, "closed")
    assert json.loads((tmp_path / "scan.jsonl.meta.json").read_text())["runs"][-1]["mode"] == "dask"

"""Run the relaycheck CLI from the lab's client namespace and read its JSON report.

Shared by the integration tests and bench/vs_nmap.py. The CLI contract relied on here:
exit code 0 = no open relay, 1 = open relay found, 2 = usage error, 3 = inconclusive; with
``--json`` a report ``{"schema_version": 1, "targets": [...]}`` on stdout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .core import Lab
from .specs import Server, Verdict

REPO = Path(__file__).resolve().parents[3]
EXIT_CODES: dict[Verdict, int] = {"closed": 0, "open": 1, "inconclusive": 3}
EXIT_USAGE = 2


def _env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test's environment, with the work tree's src/ first: the tree under test is what
    runs, whether or not the package is installed into the venv."""
    env = {**os.environ, **(extra or {})}
    src = str(REPO / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    return env


@dataclass(frozen=True)
class RelaycheckRun:
    argv: list[str]
    exit_code: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def report(self) -> dict[str, Any]:
        try:
            report = json.loads(self.stdout)
        except json.JSONDecodeError as exc:
            raise AssertionError(f"no JSON report ({exc}):\n{self.describe()}") from exc
        if not isinstance(report, dict):
            raise AssertionError(f"report is not an object:\n{self.describe()}")
        return report

    @property
    def target(self) -> dict[str, Any]:
        """The one target of a single-address run."""
        targets = self.report.get("targets")
        if not isinstance(targets, list) or len(targets) != 1:
            raise AssertionError(f"expected exactly one target:\n{self.describe()}")
        target: dict[str, Any] = targets[0]
        return target

    @property
    def verdict(self) -> str:
        return str(self.target["verdict"]["verdict"])

    def describe(self) -> str:
        """Everything needed to understand a failing assertion, in a few lines."""
        lines = [f"$ {' '.join(self.argv)}", f"exit {self.exit_code} after {self.seconds:.1f}s"]
        try:
            for target in json.loads(self.stdout).get("targets", []):
                verdict = target.get("verdict", {})
                lines.append(
                    f"target {target.get('target')}: {verdict.get('verdict')} "
                    f"({verdict.get('confidence')}): {verdict.get('explanation')}"
                )
                for obs in target.get("observations", []):
                    lines.append(f"  {obs.get('probe_id')}: {obs.get('outcome')}")
        except (json.JSONDecodeError, AttributeError):
            lines.append(f"stdout: {self.stdout[-2000:]}")
        if self.stderr.strip():
            lines.append(f"stderr: {self.stderr[-2000:]}")
        return "\n".join(lines)


def relaycheck_argv(
    lab: Lab,
    target: str,
    *,
    local_domain: str | None = None,
    retry_budget: int | None = None,
    resolver: str | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    argv = [sys.executable, "-m", "relaycheck", "check", target, "--json"]
    for domain in lab.outside_domains:
        argv += ["--ext-recipient", f"relaytest@{domain}"]
    if local_domain:
        argv += ["--local-domain", local_domain]
    argv += ["--helo", lab.client_hostname]
    if retry_budget is not None:
        argv += ["--retry-budget", str(retry_budget)]
    if resolver:
        argv += ["--resolver", resolver]
    return [*argv, *extra]


def run_relaycheck(
    lab: Lab,
    target: str,
    *,
    local_domain: str | None = None,
    retry_budget: int | None = None,
    resolver: str | None = None,
    extra: Sequence[str] = (),
    timeout: float = 300,
    env: Mapping[str, str] | None = None,
) -> RelaycheckRun:
    argv = relaycheck_argv(
        lab,
        target,
        local_domain=local_domain,
        retry_budget=retry_budget,
        resolver=resolver,
        extra=extra,
    )
    started = time.monotonic()
    done = subprocess.run(
        lab.client_argv(argv),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(env),
        check=False,
    )
    return RelaycheckRun(argv, done.returncode, done.stdout, done.stderr, time.monotonic() - started)


def check_server(lab: Lab, server: Server, *, retry_budget: int | None = None, timeout: float = 300) -> RelaycheckRun:
    """relaycheck's full battery against one lab server, by address, with the options its ground
    truth needs (``ServerSpec.check_args``)."""
    return run_relaycheck(
        lab,
        server.ip,
        local_domain=server.domain,
        retry_budget=retry_budget,
        extra=server.spec.check_args,
        timeout=timeout,
    )


def cli_missing(lab: Lab) -> str | None:
    """Why ``python -m relaycheck check`` cannot run yet (module absent), or None.

    Only a missing module counts: a CLI that exists but is broken is a test failure.
    """
    argv = [sys.executable, "-m", "relaycheck", "check", "--help"]
    done = subprocess.run(lab.client_argv(argv), capture_output=True, text=True, timeout=60, env=_env(), check=False)
    if done.returncode == 0:
        return None
    if "No module named" in done.stderr and "relaycheck" in done.stderr:
        return f"relaycheck CLI not available yet: {done.stderr.strip().splitlines()[-1]}"
    return None

"""Session fixtures for the integration lab (real MTAs in network namespaces, see the lab package).

A missing prerequisite (not root, no `ip netns`, packages not installed by scripts/lab-deps)
skips the integration tests with one line, except under CI=true, where it fails them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import NoReturn

import pytest

from .lab import Lab, missing_prerequisite, start_lab
from .lab.runner import cli_missing
from .verdict_runs import Batch, run_batch


def unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"integration prerequisite missing (CI=true): {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    reason = missing_prerequisite()
    if reason:
        unavailable(reason)
    with start_lab() as running:
        yield running


@pytest.fixture(scope="session")
def relaycheck_cli(lab: Lab) -> None:
    """Gate for tests that run the relaycheck CLI (the lab itself does not need it)."""
    reason = cli_missing(lab)
    if reason:
        unavailable(reason)


@pytest.fixture(scope="session")
def batch(lab: Lab, relaycheck_cli: None) -> Batch:
    """relaycheck against every server of the verdict catalogue, once for the whole session."""
    return run_batch(lab)

"""The benchmarks stand apart from the test suite: from the test tree they may import the
integration lab package (servers, namespaces, the relaycheck runner) and the test tooling of
tests/support (the loopback population), and nothing else, so a change to a test module can
never change what a benchmark measures."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
LAB_PACKAGE = "tests.integration.lab"
TOOLING = (LAB_PACKAGE, "tests.support")


def imports_from_test_tree(path: Path) -> list[str]:
    """Every module under ``tests`` that ``path`` imports (absolute imports only)."""
    imported: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        imported += [name for name in names if name == "tests" or name.startswith("tests.")]
    return imported


@pytest.mark.parametrize("path", sorted(BENCH.glob("*.py")), ids=lambda p: p.name)
def test_benchmark_imports_only_the_lab_package_from_the_test_tree(path: Path) -> None:
    outside = [m for m in imports_from_test_tree(path) if not any(m == t or m.startswith(f"{t}.") for t in TOOLING)]
    assert outside == [], f"{path.name} imports test modules: {outside}"


def test_the_check_sees_an_import_of_a_test_module(tmp_path: Path) -> None:
    bench = tmp_path / "bench.py"
    bench.write_text("from tests.integration.lab import start_lab\nfrom tests.integration import test_lab_verdicts\n")
    assert imports_from_test_tree(bench) == ["tests.integration.lab", "tests.integration"]

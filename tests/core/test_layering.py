"""The layers of docs/architecture.md hold: `core` knows no product area, the ledger sits below
banner and DSR, and only `service/state.py` touches the app's collaborators."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SERVICE = Path(__file__).resolve().parents[2] / "service"
AREAS = (
    "auth", "banner", "consent_schema", "console", "dsr", "health", "ledger", "retention", "stats",
)  # fmt: skip


def imports(folder: str) -> dict[str, set[str]]:
    """Every `service.*` module imported by each module under service/<folder>."""
    found: dict[str, set[str]] = {}
    for path in sorted((SERVICE / folder).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
        found[str(path.relative_to(SERVICE))] = {n for n in names if n.startswith("service")}
    return found


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [
        ("core", (*AREAS, "app", "state", "cli")),
        ("ledger", ("banner", "dsr", "app", "cli")),
    ],
)
def test_a_lower_layer_imports_nothing_above_it(folder: str, forbidden: tuple[str, ...]) -> None:
    upward = {
        module: sorted(n for n in names if n.split(".")[1] in forbidden)
        for module, names in imports(folder).items()
    }
    assert {module: names for module, names in upward.items() if names} == {}


def test_only_the_state_module_reads_the_apps_collaborators() -> None:
    readers = [
        str(path.relative_to(SERVICE))
        for path in SERVICE.rglob("*.py")
        if "app.state" in path.read_text() or ".services" in path.read_text()
    ]
    assert readers == ["state.py"]


def test_no_module_is_over_400_lines() -> None:
    long = {
        str(path.relative_to(SERVICE)): n
        for path in SERVICE.rglob("*.py")
        if (n := len(path.read_text().splitlines())) > 400
    }
    assert long == {}

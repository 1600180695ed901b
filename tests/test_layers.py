"""The layers stay apart: storage knows nothing of cards, the Hub or the pages; the library nothing of the pages."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "age_model"


def module_level_imports(path: Path) -> set[str]:
    """age_model modules a file imports when it is imported (imports inside functions run later, on purpose)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module:
            base = node.module if node.level == 0 else f"age_model.{path.parent.name}.{node.module}"
            names.add(base)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name for name in names if name.startswith("age_model")}


@pytest.mark.parametrize("path", sorted((PACKAGE / "feedback").glob("*.py")), ids=lambda p: p.name)
def test_the_store_does_not_know_about_publishing(path: Path) -> None:
    if path.name == "cli.py":  # an entry point may publish (lazily, inside its command)
        return
    forbidden = {"age_model.cards", "age_model.hub", "age_model.publish", "age_model.ui"}
    assert not {
        name for name in module_level_imports(path) if any(name == f or name.startswith(f + ".") for f in forbidden)
    }


@pytest.mark.parametrize(
    "path",
    sorted(p for p in PACKAGE.rglob("*.py") if "ui" not in p.relative_to(PACKAGE).parts[:1] and p.name != "app.py"),
    ids=lambda p: str(p.relative_to(PACKAGE)),
)
def test_the_library_does_not_import_the_pages(path: Path) -> None:
    assert not {name for name in module_level_imports(path) if name.startswith("age_model.ui")}

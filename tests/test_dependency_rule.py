"""The layers of the package: storage imports nothing of ours, pipeline only storage, only api imports
api, and neither the library nor the benchmarks import the tests."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: folder -> the corral subpackages its modules may import (besides their own)
ALLOWED = {
    "storage": set(),
    "pipeline": {"storage"},
    "api": {"storage", "pipeline", "viewer"},
}


def imports(path: Path) -> set[str]:
    """Every module name a file imports (absolute names; relative imports are resolved as ours)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def ours(name: str) -> str | None:
    """The corral subpackage an import names (``corral.pipeline.learn`` -> ``pipeline``), else None."""
    parts = name.split(".")
    if parts[0] != "corral":
        return None
    return parts[1] if len(parts) > 1 else ""


@pytest.mark.parametrize("folder", sorted(ALLOWED))
def test_each_layer_imports_only_what_is_below_it(folder):
    bad = []
    for path in sorted((REPO / folder).rglob("*.py")):
        for name in imports(path):
            sub = ours(name)
            if sub is not None and sub not in ALLOWED[folder] | {folder, ""}:
                bad.append(f"{path.relative_to(REPO)} imports {name}")
            if name.split(".")[0] == "tests":
                bad.append(f"{path.relative_to(REPO)} imports {name}")
            if name.split(".")[0] in ("api", "pipeline", "storage", "viewer"):
                bad.append(f"{path.relative_to(REPO)} imports {name} (import through corral.)")
    assert not bad, "\n".join(bad)


def test_benchmarks_do_not_import_the_tests():
    bad = [f"{p.relative_to(REPO)} imports {n}" for p in sorted((REPO / "bench").rglob("*.py")) for n in imports(p) if n.split(".")[0] == "tests"]
    assert not bad, "\n".join(bad)

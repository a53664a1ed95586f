"""The edge reaches its database only through `nightlink.sql` (in edge/store/): no module of the
edge opens SQLite itself. Which tier may import which is checked in tests/test_structure.py."""

import ast
from pathlib import Path

import pytest

EDGE = Path(__file__).resolve().parents[2] / "edge"


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", sorted(EDGE.rglob("*.py")), ids=lambda p: str(p.relative_to(EDGE)))
def test_edge__no_sqlite_but_through_nightlink_sql(path):
    bad = {n for n in _imports(path) if n.split(".")[0] in ("sqlite3", "sqlite_utils")}
    assert not bad, f"{path.relative_to(EDGE)} imports {sorted(bad)}"

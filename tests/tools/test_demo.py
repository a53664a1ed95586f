"""The main job end to end: simulate, edge replay, sync over the embedded broker, cloud."""

from nightlink.tools.demo.run import run_demo


def test_demo__a_short_night_reaches_the_cloud(tmp_path):
    said = []
    out = run_demo(tmp_path / "demo", seed=2, hours=0.5, echo=said.append)
    epochs = out["edge"].epochs
    assert out["cloud_rows"] == {"room": epochs, "wearable": epochs, "audio": epochs,
                                 "cgm": epochs, "inference": epochs}
    assert out["sync"].rows_sent >= 5 * epochs
    text = "\n".join(said)
    assert "outbox left: 0" in text and "dead letters 0" in text
    assert "Nightscout API (tenant demo): latest sgv" in text
    assert "classifiers (LiteRT, int8): sleep" in text

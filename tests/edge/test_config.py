"""Edge configuration: every mistake named by file and key, secrets checked."""

import pytest

from nightlink.edge.node.config import ConfigError, load

GOOD = 'a-real-secret-123'


def _load(tmp_path, text, env=None):
    path = tmp_path / "edge.toml"
    path.write_text(text)
    return load(path, env=env if env is not None else {})


def test_config__defaults_with_secret_from_environment():
    cfg = load(None, env={"NIGHTLINK_EDGE_API_SECRET": GOOD})
    assert cfg.nightscout.api_secret == GOOD and cfg.audio.enabled and not cfg.wearable.enabled


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[audio]\nsample_rate = 4000\n", "[audio] sample_rate must be between 8000 and 192000 Hz "
         "(the features are computed at 16000 after resampling), not 4000."),
        ("[audio]\nenabeld = true\n", "[audio] unknown key 'enabeld'"),
        ("[nightscout]\nport = 'x'\n", "[nightscout] port must be a whole number, not 'x'."),
        ("[nightscout]\nport = 70000\n", "[nightscout] port must be 0..65535, not 70000."),
        ("retention_days = 0\n", "retention_days must be between 1 and 3650 days, not 0."),
        ("retention_days = 99999999999\n", "retention_days must be between 1 and 3650"),
        ("[sync]\nport = 0\n", "[sync] port must be 1..65535, not 0."),
        ("[sync]\nhost = \"a\\nlistener 1\"\n", "[sync] host holds a line break"),
        ("[clocks]\nkeepalive_s = -3\n", "[clocks] keepalive_s must be between 1 and 3600"),
        ("[sync]\nmax_inflight = 0\n", "[sync] max_inflight must be at least 1, not 0."),
        ("[sync]\nrows_per_record = 5000\n", "[sync] rows_per_record must be at most 2880"),
        ("tenant = 'Home Sweet'\n", "tenant: The tenant name 'Home Sweet' may only hold"),
        ("[wearable]\nenabled = true\n", "[wearable] address is needed"),
        ("[follower]\nenabled = true\nurl = 'ftp://x'\n", "[follower] url must start with http"),
        ("[follower]\nenabled = true\nurl = 'https://ns.example:80a'\n",
         "[follower] url: 'https://ns.example:80a' is not a URL"),
        ("[follower]\nenabled = true\nurl = 'ftp://sec-ret-1234@x'\n", "not 'ftp://x'"),  # no secret
        ("[audio]\nenabled = 'yes'\n", "[audio] enabled must be true or false, not 'yes'."),
        ("audio = 3\n", "[audio] must be a table."),
        ("[nightscout\n", "not valid TOML"),
        ("timezone = 'Mars/Olympus'\n", "timezone: 'Mars/Olympus' is not a time zone name"),
        ("timezone = 'localtime'\n", "timezone: 'localtime' is a file of the time zone database, "
         "not a zone"),
        ("timezone = 'right/Europe/Berlin'\n", "timezone: 'right/Europe/Berlin' is a file of the "
         "time zone database"),
        ("timezone = 3\n", "timezone must be text, not 3."),
        ("[alarm]\nfalse_alarms_per_week = -1\n",
         "[alarm] false_alarms_per_week must be between 0 and 14 (two a night), not -1.0."),
        ("[alarm]\nfalse_alarms_per_week = nan\n",
         "[alarm] false_alarms_per_week must be a finite number, not nan."),
        # nan passed `interval_s < 10` and the node polled the followed site nonstop
        ("[follower]\nenabled = true\nurl = 'https://ns.example'\ninterval_s = nan\n",
         "[follower] interval_s must be a finite number, not nan."),
        ("[sync]\nresend_after_s = inf\n", "[sync] resend_after_s must be a finite number"),
        ("[room]\nmic_spl_at_0_dbfs = -inf\n", "[room] mic_spl_at_0_dbfs must be a finite"),
        ("[alarm]\nfalse_alarms_per_week = '2'\n",
         "[alarm] false_alarms_per_week must be a number, not '2'."),
        ("[alarm]\nbudget = 2\n", "[alarm] unknown key 'budget' (known: false_alarms_per_week)"),
        ("[nightscout]\ntitle = \"Alex\\nBea\"\n", "[nightscout] title must be one line of at most 60"),
        ("[nightscout]\ntitle = 3\n", "[nightscout] title must be text"),
    ],
)
def test_config__errors_name_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError) as exc:
        _load(tmp_path, text, env={"NIGHTLINK_EDGE_API_SECRET": GOOD})
    assert message in str(exc.value)
    assert str(exc.value).startswith(str(tmp_path / "edge.toml"))


@pytest.mark.parametrize("secret", ["", "changeme", "short", "aaaaaaaaaaaaaaaaaaaa",
                                    "password1234", "changemechangeme", " " * 16,
                                    "Nightscout!2024", "abcabcabcabc", "a-real\\u0000secret-1"])
def test_config__weak_secret_refused(tmp_path, secret):
    """Outside development, a secret among the first guesses is refused as the cloud refuses
    its own (an audit found these accepted)."""
    with pytest.raises(ConfigError, match="api_secret"):
        _load(tmp_path, f'[nightscout]\napi_secret = "{secret}"\n')


@pytest.mark.parametrize("secret", ["MyNightscout2024", "correct horse battery", GOOD])
def test_config__a_chosen_secret_is_taken(tmp_path, secret):
    cfg = _load(tmp_path, f'[nightscout]\napi_secret = "{secret}"\n')
    assert cfg.nightscout.api_secret == secret


def test_config__short_secret_allowed_in_development_only(tmp_path):
    cfg = _load(tmp_path, 'development = true\n[nightscout]\napi_secret = "dev"\n')
    assert cfg.nightscout.api_secret == "dev"


def test_config__missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no such configuration file"):
        load(tmp_path / "nope.toml", env={})


def test_config__false_alarm_budget(tmp_path):
    assert load(None, env={"NIGHTLINK_EDGE_API_SECRET": GOOD}).alarm.false_alarms_per_week == 1.4
    cfg = _load(tmp_path, "[alarm]\nfalse_alarms_per_week = 3\n",
                env={"NIGHTLINK_EDGE_API_SECRET": GOOD})
    assert cfg.alarm.false_alarms_per_week == 3.0

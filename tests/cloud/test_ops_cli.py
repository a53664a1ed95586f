"""`nightlink cloud accounts …` and `nightlink cloud grants …`: the operator's door to people
and their access, checked through the running API (sign-in, a tenant's data)."""

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from nightlink.cli import main
from nightlink.cloud.app import create_app
from nightlink.cloud.config import Settings
from nightlink.cloud.store import ROLES, Store
from tests.cloud.conftest import JWT_SECRET

PASSWORD = "a long enough password"


@pytest.fixture
def cloud_cli(tmp_path, monkeypatch):
    """Run `nightlink cloud …` against a fresh SQLite file with no server secrets set."""
    url = f"sqlite:///{tmp_path / 'cloud.db'}"
    for name in ("NIGHTLINK_JWT_SECRET", "NIGHTLINK_ENV", "NIGHTLINK_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NIGHTLINK_DATABASE_URL", url)
    monkeypatch.chdir(tmp_path)
    store = Store.open(url)
    store.create_tenant("fam-1", "One")
    store.create_tenant("fam-2", "Two")
    store.close()

    def run(*args, password=None, stdin=None):
        env = {"NIGHTLINK_PASSWORD": password} if password is not None else {}
        return CliRunner().invoke(main, ["cloud", *args], env=env, input=stdin)

    run.url = url
    return run


def _api(url):
    return TestClient(create_app(Settings(env="test", database_url=url, jwt_secret=JWT_SECRET,
                                          login_attempts_per_minute=1000)))


def _login(client, email, password):
    return client.post("/api/nl/v1/auth/login", json={"email": email, "password": password})


def test_accounts__add_sign_in_grant_read_revoke_remove(cloud_cli):
    assert cloud_cli("accounts", "add", "admin@example.org", "--admin",
                     password=PASSWORD).exit_code == 0
    added = cloud_cli("accounts", "add", "Carer@Example.org", "--name", "Carer",
                      stdin=PASSWORD + "\n")
    assert added.exit_code == 0, added.output
    assert "Account carer@example.org created." in added.output
    granted = cloud_cli("grants", "add", "carer@example.org", "fam-1", "--role", "caregiver")
    assert granted.exit_code == 0 and "carer@example.org is now caregiver of fam-1." in \
        granted.output
    with _api(cloud_cli.url) as client:
        r = _login(client, "carer@example.org", PASSWORD)
        assert r.status_code == 200, r.text
        auth = {"Authorization": f"Bearer {r.json()['access_token']}"}
        assert client.get("/api/nl/v1/tenants/fam-1/nights", headers=auth).status_code == 200
        assert client.get("/api/nl/v1/tenants/fam-2/nights", headers=auth).status_code == 404
        listing = cloud_cli("grants", "list").output.splitlines()
        assert listing == ["fam-1\tcarer@example.org\tcaregiver"]
        accounts = cloud_cli("accounts", "list").output.splitlines()
        assert accounts == ["admin@example.org\tadmin\t-\t-",
                            "carer@example.org\t-\tCarer\tfam-1 (caregiver)"]
        assert cloud_cli("grants", "remove", "carer@example.org", "fam-1").exit_code == 0
        assert client.get("/api/nl/v1/tenants/fam-1/nights", headers=auth).status_code == 404
        changed = cloud_cli("accounts", "password", "carer@example.org",
                            password="another long password")
        assert changed.exit_code == 0, changed.output
        assert _login(client, "carer@example.org", PASSWORD).status_code == 401
        assert _login(client, "carer@example.org", "another long password").status_code == 200
        assert cloud_cli("accounts", "remove", "carer@example.org").exit_code == 0
        assert _login(client, "carer@example.org", "another long password").status_code == 401
        client.app.state.store.close()
    audit = Store.open(cloud_cli.url)
    actions = [row["action"] for row in audit.audit_log() if row["detail"].get("via") == "cli"]
    audit.close()
    assert actions[::-1] == ["account.create", "account.create", "grant", "revoke",
                             "password.reset", "account.delete"]


@pytest.mark.parametrize("args, message", [
    (["accounts", "add", "not-an-email"], "'not-an-email' is not an email address."),
    (["accounts", "password", "nobody@example.org"], "No account for nobody@example.org."),
    (["accounts", "remove", "nobody@example.org"], "No account for nobody@example.org."),
    (["grants", "add", "admin@example.org", "fam-9", "--role", "doctor"], "No tenant 'fam-9'."),
    (["grants", "remove", "admin@example.org", "fam-1"], "admin@example.org has no grant in "
                                                          "fam-1."),
    (["grants", "list", "fam-9"], "No tenant 'fam-9'."),
    (["accounts", "add", "admin@example.org"], "An account for admin@example.org already "
                                               "exists."),
    (["accounts", "remove", "admin@example.org"], "admin@example.org is the last "
                                                  "administrator; add another before "
                                                  "removing this one."),
])
def test_accounts_and_grants__errors_are_one_sentence(cloud_cli, args, message):
    assert cloud_cli("accounts", "add", "admin@example.org", "--admin",
                     password=PASSWORD).exit_code == 0
    r = cloud_cli(*args, password=PASSWORD)
    assert r.exit_code == 2
    assert r.output == f"error: {message}\n"


def test_accounts__short_or_missing_password_refused(cloud_cli):
    r = cloud_cli("accounts", "add", "a@example.org", stdin="\n")
    assert r.exit_code == 2 and "at least 12 characters" in r.output
    r = cloud_cli("accounts", "add", "a@example.org", password="short")
    assert r.exit_code == 2 and "at least 12 characters" in r.output
    assert "No account" in cloud_cli("accounts", "password", "a@example.org",
                                     password=PASSWORD).output


def test_accounts__no_password_option_and_roles_are_the_stores(cloud_cli):
    for command in (["accounts", "add"], ["accounts", "password"]):
        assert "--password" not in cloud_cli(*command, "--help").output
    help_text = cloud_cli("grants", "add", "--help").output
    assert all(role in help_text for role in ROLES)
    bad = cloud_cli("grants", "add", "x@example.org", "fam-1", "--role", "clinician")
    assert bad.exit_code == 2


def test_cloud_env_file__read_instead_of_dot_env(cloud_cli, tmp_path, monkeypatch):
    monkeypatch.delenv("NIGHTLINK_DATABASE_URL")
    other = tmp_path / "other.db"
    conf = tmp_path / "cloud.env"
    conf.write_text(f"NIGHTLINK_DATABASE_URL=sqlite:///{other}\n")
    r = CliRunner().invoke(main, ["cloud", "--env-file", str(conf), "create-tenant", "fam-3"])
    assert r.exit_code == 0, r.output
    assert other.exists()
    missing = CliRunner().invoke(main, ["cloud", "--env-file", str(tmp_path / "no.env"),
                                        "accounts", "list"])
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_cloud_cli__no_database_named_in_production_stops_before_making_one(cloud_cli,
                                                                            tmp_path,
                                                                            monkeypatch):
    """`nightlink cloud accounts add …` pasted without --env-file printed "created" and made
    ./nightlink-cloud.db, which the service never reads (a deploy walk-through found it)."""
    monkeypatch.delenv("NIGHTLINK_DATABASE_URL")
    r = CliRunner().invoke(main, ["cloud", "accounts", "add", "a@example.org", "--admin"],
                           env={"NIGHTLINK_PASSWORD": PASSWORD})
    assert r.exit_code == 2, r.output
    assert "NIGHTLINK_DATABASE_URL is not set" in r.output and "--env-file" in r.output
    assert not (tmp_path / "nightlink-cloud.db").exists()
    dev = CliRunner().invoke(main, ["cloud", "create-tenant", "fam-9"],
                             env={"NIGHTLINK_ENV": "development"})
    assert dev.exit_code == 0, dev.output  # development keeps its default
    assert (tmp_path / "nightlink-cloud.db").exists()


def test_cloud_cli__a_refused_postgresql_login_is_named_as_such(postgres_server, monkeypatch):
    """Debian's pg_hba.conf lets the role `nightlink` in over the socket only as the system
    user nightlink (peer): run as root, the commands said PostgreSQL "cannot be reached"."""
    import psycopg

    role = "peer_only"
    hba = postgres_server.data / "pg_hba.conf"
    with psycopg.connect(postgres_server.url(), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute("CREATE ROLE pw_only LOGIN PASSWORD 'not-given'")
        hba.write_text(f"local all {role} peer\nhost all pw_only 127.0.0.1/32 "  # these alone
                       "scram-sha-256\n" + hba.read_text())
        conn.execute("SELECT pg_reload_conf()")
    monkeypatch.setenv("NIGHTLINK_DATABASE_URL",
                       f"postgresql://pw_only@127.0.0.1:{postgres_server.port}/postgres")
    r = CliRunner().invoke(main, ["cloud", "accounts", "list"])  # no password in the URL
    assert r.exit_code == 2 and "refused the login" in r.output, r.output
    url = f"postgresql://{role}@/postgres?host={postgres_server.dir}&port={postgres_server.port}"
    monkeypatch.setenv("NIGHTLINK_DATABASE_URL", url)
    r = CliRunner().invoke(main, ["cloud", "accounts", "list"])
    assert r.exit_code == 2
    assert "refused the login" in r.output and f"runuser -u {role} --" in r.output, r.output
    assert "cannot be reached" not in r.output
    monkeypatch.setenv("NIGHTLINK_DATABASE_URL", postgres_server.url("no_such_database"))
    r = CliRunner().invoke(main, ["cloud", "accounts", "list"])
    assert r.exit_code == 2
    assert 'answered, but database "no_such_database" does not exist: create it' in r.output, \
        r.output


@pytest.mark.parametrize("args", [
    ["create-tenant", "fam-3", "--name", "Ann\r;}body{color:red}"],
    ["create-tenant", "fam-3", "--name", "x" * 101],
    ["token", "fam-1", "clock\nin the hall"],
    ["accounts", "add", "a@example.org", "--name", "Ann\r;}"],
])
def test_cloud_cli__a_name_is_one_line(cloud_cli, args):
    """A name reaches pages, PDF footers, mails and exports: a carriage return in it wrote
    style rules into the PDFs."""
    r = CliRunner().invoke(main, ["cloud", *args])
    assert r.exit_code == 2, r.output
    assert "without control characters" in r.output and len(r.output.strip().splitlines()) == 1

"""Settings: environment first, then secrets.toml; secrets never shown; values out of range
refused at start with one line naming the setting."""
import pytest

from core.config import load_settings
from core.errors import ConfigError


def test_no_key_means_dry_run_and_default_local_storage(settings, isolated_env):
    assert settings.dry_run
    assert settings.storage_backend == "local"
    assert settings.data_dir == isolated_env.resolve()
    assert settings.db_path.parent == settings.data_dir


def test_secrets_file_is_read_and_environment_wins(tmp_path):
    secrets = tmp_path / "secrets.toml"
    secrets.write_text('FAL_KEY = "from-file-key-123"\nSUPABASE_BUCKET = "photos"\n')
    s = load_settings(env={"SUPABASE_BUCKET": "env-bucket"}, secrets_path=secrets)
    assert s.fal_key == "from-file-key-123"
    assert not s.dry_run
    assert s.supabase_bucket == "env-bucket"


def test_secrets_are_not_in_repr_or_public_summary(tmp_path):
    s = load_settings(env={"FAL_KEY": "sekret-fal-key-999", "SUPABASE_URL": "http://127.0.0.1:1",
                           "SUPABASE_KEY": "sekret-supa-key-888"}, secrets_path=tmp_path / "none")
    text = repr(s) + repr(s.public_summary())
    assert "sekret" not in text
    assert s.public_summary()["fal"] == "live"
    assert s.storage_backend == "supabase"


def test_bad_number_setting_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="DASHBOARD_CONCURRENCY must be a whole number"):
        load_settings(env={"DASHBOARD_CONCURRENCY": "many"}, secrets_path=tmp_path / "none")


# -- settings out of range are refused at start, naming the setting -------------------------------

@pytest.mark.parametrize("name, value, message", [
    ("DASHBOARD_MAX_UPLOAD_BYTES", "-1", "DASHBOARD_MAX_UPLOAD_BYTES must be from 1024 to 524288000, got -1."),
    ("DASHBOARD_MAX_UPLOAD_BYTES", "0", "DASHBOARD_MAX_UPLOAD_BYTES must be from 1024 to 524288000, got 0."),
    ("DASHBOARD_MAX_UPLOAD_BYTES", "6442450944", "DASHBOARD_MAX_UPLOAD_BYTES must be from 1024 to 524288000, got 6442450944."),
    ("DASHBOARD_MAX_LONG_EDGE", "0", "DASHBOARD_MAX_LONG_EDGE must be from 256 to 8192, got 0."),
    ("DASHBOARD_MAX_LONG_EDGE", "255", "DASHBOARD_MAX_LONG_EDGE must be from 256 to 8192, got 255."),
    ("DASHBOARD_MAX_LONG_EDGE", "100000", "DASHBOARD_MAX_LONG_EDGE must be from 256 to 8192, got 100000."),
    ("DASHBOARD_CONCURRENCY", "0", "DASHBOARD_CONCURRENCY must be from 1 to 64, got 0."),
    ("DASHBOARD_CONCURRENCY", "1000", "DASHBOARD_CONCURRENCY must be from 1 to 64, got 1000."),
    ("DASHBOARD_MAX_LONG_EDGE", "2k", "DASHBOARD_MAX_LONG_EDGE must be a whole number from 256 to 8192, got '2k'."),
])
def test_number_out_of_range_is_one_config_error_naming_the_setting(tmp_path, name, value, message):
    with pytest.raises(ConfigError) as info:
        load_settings(env={name: value}, secrets_path=tmp_path / "none")
    assert str(info.value) == message


def test_number_out_of_range_in_secrets_file_is_refused_too(tmp_path):
    secrets = tmp_path / "secrets.toml"
    secrets.write_text("DASHBOARD_MAX_LONG_EDGE = 0\n")
    with pytest.raises(ConfigError, match="DASHBOARD_MAX_LONG_EDGE must be from 256"):
        load_settings(env={}, secrets_path=secrets)


def test_range_bounds_are_accepted(tmp_path):
    s = load_settings(env={"DASHBOARD_MAX_UPLOAD_BYTES": "1024", "DASHBOARD_MAX_LONG_EDGE": "256",
                           "DASHBOARD_CONCURRENCY": "64"}, secrets_path=tmp_path / "none")
    assert (s.max_upload_bytes, s.max_long_edge, s.concurrency) == (1024, 256, 64)


def test_long_edge_floor_is_the_photo_minimum_short_side():
    """Below the minimum short side every photo would be refused as too small."""
    from core.config import RANGES
    from core.photos.images import DEFAULT_MIN_SHORT_SIDE

    assert RANGES["DASHBOARD_MAX_LONG_EDGE"][0] == DEFAULT_MIN_SHORT_SIDE


def test_results_get_their_own_bucket_named_results_by_default(tmp_path):
    """Result images go to a second (private) bucket, apart from the public references one."""
    s = load_settings(env={}, secrets_path=tmp_path / "none")
    assert (s.supabase_bucket, s.supabase_results_bucket) == ("references", "results")
    s = load_settings(env={"SUPABASE_RESULTS_BUCKET": "outputs"}, secrets_path=tmp_path / "none")
    assert s.supabase_results_bucket == "outputs"


@pytest.mark.parametrize("env, message", [
    ({"SUPABASE_URL": "https://x.supabase.co"},
     "SUPABASE_URL is set but SUPABASE_KEY is not: set both"),
    ({"SUPABASE_KEY": "sekret-key-777"}, "SUPABASE_KEY is set but SUPABASE_URL is not: set both"),
    ({"SUPABASE_URL": "x.supabase.co", "SUPABASE_KEY": "sekret-key-777"},
     "SUPABASE_URL must be the project URL like https://<project>.supabase.co, got 'x.supabase.co'."),
    ({"SUPABASE_URL": "https://x.supabase.co/storage/v1/", "SUPABASE_KEY": "sekret-key-777"},
     "SUPABASE_URL must be the project URL without an API path: use 'https://x.supabase.co'"),
    ({"SUPABASE_BUCKET": "team/photos"}, "SUPABASE_BUCKET 'team/photos' is not a valid Supabase bucket name"),
    ({"SUPABASE_BUCKET": "photos\u00e9"}, "is not a valid Supabase bucket name"),
    ({"SUPABASE_RESULTS_BUCKET": "team/results"},
     "SUPABASE_RESULTS_BUCKET 'team/results' is not a valid Supabase bucket name"),
    ({"SUPABASE_BUCKET": "shared", "SUPABASE_RESULTS_BUCKET": "shared"},
     "SUPABASE_RESULTS_BUCKET and SUPABASE_BUCKET are both 'shared': results need their own private bucket"),
    ({"SUPABASE_BUCKET": "results"}, "SUPABASE_RESULTS_BUCKET and SUPABASE_BUCKET are both 'results'"),
    ({"FAL_QUEUE_URL": "queue.fal.run"}, "FAL_QUEUE_URL must be an http(s) URL"),
])
def test_unusable_connection_settings_are_refused(tmp_path, env, message):
    with pytest.raises(ConfigError) as info:
        load_settings(env=env, secrets_path=tmp_path / "none")
    assert message in str(info.value) and "\n" not in str(info.value)
    assert "sekret" not in str(info.value)


def test_cli_refuses_a_bad_setting_at_start_naming_it(monkeypatch, capsys, tmp_path):
    """Before: DASHBOARD_MAX_LONG_EDGE=0 blamed the photo ("too small"). Now the setting is named."""
    from core import cli
    from tests.corpus import build

    photo = tmp_path / "p.webp"
    photo.write_bytes(build("webp"))
    monkeypatch.setattr(cli, "COMMANDS", ("reference",))
    monkeypatch.setenv("DASHBOARD_MAX_LONG_EDGE", "0")
    assert cli.main(["reference", "add", str(photo)]) == 2
    assert capsys.readouterr().err == "error: DASHBOARD_MAX_LONG_EDGE must be from 256 to 8192, got 0.\n"


def test_the_outage_limit_is_read_and_checked(tmp_path):
    """Setting DASHBOARD_OUTAGE_LIMIT_S once crashed every command with a KeyError."""
    assert load_settings(env={"DASHBOARD_OUTAGE_LIMIT_S": "45"}, secrets_path=tmp_path / "none").outage_limit_s == 45
    with pytest.raises(ConfigError, match="DASHBOARD_OUTAGE_LIMIT_S must be from 0 to 86400, got -1"):
        load_settings(env={"DASHBOARD_OUTAGE_LIMIT_S": "-1"}, secrets_path=tmp_path / "none")


def test_every_setting_has_a_row_in_the_readme_settings_table():
    """A new setting that a teammate cannot find in the README is a setting nobody sets (datasette's
    test_docs does the same for its settings): each name in `config.SETTINGS` is in the first
    column of a row of the README's settings table."""
    import re
    from pathlib import Path

    from core.config import REPO_ROOT, SETTINGS

    readme = Path(REPO_ROOT / "README.md").read_text(encoding="utf-8")
    table = readme.split("| name | what it does | default |", 1)[1].split("\n\n", 1)[0]
    documented = {name for row in table.splitlines()[2:]
                  for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", row.split("|")[1])}
    missing = [name for name in SETTINGS if name not in documented]
    assert not missing, f"settings without a row in the README's settings table: {missing}"


@pytest.mark.parametrize("url,says", [
    ("mysql://team:hunter22@db.example.com/history", "must be a Postgres URL"),
    ("postgresql://team:hunter22@db.example.com:99999/history", "must be a Postgres URL"),
    ("postgresql://team:hunter22@db.example.com", "must be a Postgres URL"),
    ("postgresql://postgres.abc:hunter22@aws-0-eu-west-1.pooler.supabase.com:6543/postgres", "transaction mode"),
])
def test_a_database_url_that_cannot_serve_the_store_is_one_line_without_its_password(tmp_path, url, says):
    with pytest.raises(ConfigError, match=says) as caught:
        load_settings(env={"DATABASE_URL": url}, secrets_path=tmp_path / "none")
    assert "hunter22" not in str(caught.value) and "\n" not in str(caught.value)


def test_a_database_url_is_shown_as_host_and_database_only(tmp_path):
    s = load_settings(env={"DATABASE_URL": "postgresql://team:hunter22@db.abc.supabase.co:5432/postgres"},
                      secrets_path=tmp_path / "none")
    assert s.database_label == "postgresql://db.abc.supabase.co:5432/postgres"
    assert "hunter22" not in repr(s) and "hunter22" not in str(s.public_summary())
    assert load_settings(env={}, secrets_path=tmp_path / "none").database_label.endswith("dashboard.db")

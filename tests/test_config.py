"""Settings: environment first, then secrets.toml; secrets never shown."""
from core.config import load_settings


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
    import pytest

    from core.errors import ConfigError
    with pytest.raises(ConfigError, match="DASHBOARD_CONCURRENCY must be a whole number"):
        load_settings(env={"DASHBOARD_CONCURRENCY": "many"}, secrets_path=tmp_path / "none")

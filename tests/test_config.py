"""Settings: TOML, environment overrides and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatchd.config import ConfigError, describe, load_settings, mask_url

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_file_matches_defaults() -> None:
    """The shipped config file loads and documents exactly the built-in defaults."""
    from_file = load_settings(ROOT / "config" / "dispatchd.toml", env={})
    assert from_file.http.port == 8080
    assert from_file.http.host == "127.0.0.1"
    assert from_file.data.dir == (ROOT / "var").resolve()
    defaults = load_settings(None, env={})
    assert describe(from_file)["incidents"] == describe(defaults)["incidents"]
    assert describe(from_file)["auth"] == describe(defaults)["auth"]


def test_every_key_is_documented_in_the_shipped_file() -> None:
    """Every settings key appears, with a comment above it, in config/dispatchd.toml."""
    text = (ROOT / "config" / "dispatchd.toml").read_text(encoding="utf-8")
    lines = text.splitlines()
    for section, values in describe(load_settings(None, env={})).items():
        assert f"[{section}]" in text
        for key in values:
            idx = next((i for i, ln in enumerate(lines) if ln.startswith(f"{key} =")), None)
            assert idx is not None, f"{section}.{key} missing"
            above = lines[max(0, idx - 3) : idx]
            assert any(ln.startswith("#") for ln in above), f"{section}.{key} has no comment"


def test_environment_overrides_file() -> None:
    """DISPATCHD_* variables win over the file, and are converted to the key's type."""
    s = load_settings(
        ROOT / "config" / "dispatchd.toml",
        env={
            "DISPATCHD_HTTP_PORT": "9091",
            "DISPATCHD_HTTP_HOST": "0.0.0.0",
            "DISPATCHD_DATABASE_URL": "postgresql://u:p@h/db",
            "DISPATCHD_REDIS_URL": "redis://h:6379/0",
            "DISPATCHD_DATA_DIR": "/srv/dispatchd",
            "DISPATCHD_DEMO_ENABLED": "yes",
        },
    )
    assert s.http.port == 9091 and s.http.host == "0.0.0.0"
    assert s.database.url == "postgresql://u:p@h/db" and not s.embedded_database
    assert s.data.dir == Path("/srv/dispatchd")
    assert s.demo.enabled is True


@pytest.mark.parametrize(
    ("var", "value", "fragment"),
    [
        (
            "DISPATCHD_HTTP_PORT",
            "eighty",
            "DISPATCHD_HTTP_PORT='eighty': must be an integer between 0 and 65535",
        ),
        ("DISPATCHD_HTTP_PORT", "70000", "must be between 0 and 65535"),
        ("DISPATCHD_LOG_LEVEL", "loud", "must be one of debug, info, warning, error"),
        ("DISPATCHD_DEMO_ENABLED", "maybe", "must be true or false"),
        ("DISPATCHD_INCIDENTS_WARN_SHARE", "2", "between 0.05 and 0.99"),
    ],
)
def test_bad_value_names_key_and_allowed(var: str, value: str, fragment: str) -> None:
    """A bad value raises one error naming the variable and what is allowed."""
    with pytest.raises(ConfigError) as err:
        load_settings(None, env={var: value})
    assert fragment in str(err.value)
    assert err.value.key == var


def test_bad_file_key(tmp_path: Path) -> None:
    """An unknown key or a wrong type in the file is named with its section."""
    (tmp_path / "c").mkdir()
    f = tmp_path / "c" / "d.toml"
    f.write_text("[http]\nprot = 1\n")
    with pytest.raises(ConfigError, match=r"\[http\] prot.*unknown key"):
        load_settings(f, env={})
    f.write_text('[http]\nport = "x"\n')
    with pytest.raises(ConfigError, match=r"\[http\] port"):
        load_settings(f, env={})


def test_url_password_masked() -> None:
    """Passwords in store URLs are masked when settings are printed."""
    assert mask_url("postgresql://u:secret@h:5432/db") == "postgresql://u:***@h:5432/db"
    s = load_settings(None, env={"DISPATCHD_DATABASE_URL": "postgresql://u:secret@h/db"})
    assert ":secret@" not in str(describe(s))


def test_sms_secrets_are_masked() -> None:
    """The SMS gateway's bearer key and the cloud's access key secret are never printed; the key id is."""
    env = {
        "DISPATCHD_PLANS_SMS_API_KEY": "bearer-value",
        "DISPATCHD_PLANS_SMS_ACCESS_KEY_SECRET": "cloud-secret-value",
        "DISPATCHD_PLANS_SMS_ACCESS_KEY_ID": "LTAI-visible",
    }
    plans = describe(load_settings(None, env=env))["plans"]
    assert plans["sms_api_key"] == "***" and plans["sms_access_key_secret"] == "***"
    assert plans["sms_access_key_id"] == "LTAI-visible"

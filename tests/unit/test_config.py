from __future__ import annotations

import pickle

import pytest

from papayya import ConfigError, InputError, StoreUnavailable
from papayya.config import Settings, load_settings
from papayya.store.queries import parse, queries


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (
            {"database_url": "postgresql://host:notaport/db"},
            "Setting database_url (PAPAYYA_DATABASE_URL) is invalid",
        ),
        ({"database_url": "mysql://root@localhost/x"}, "PAPAYYA_DATABASE_URL"),
        ({"backend": "drop table"}, "is not a backend name"),
        ({"max_input_bytes": 0}, "PAPAYYA_MAX_INPUT_BYTES"),
        ({"colour": "blue"}, "Unknown setting 'colour'"),
    ],
)
def test_bad_settings_are_one_sentence(overrides: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(**overrides)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAPAYYA_DATABASE_URL", "postgresql://u@db.internal:5433/papayya")
    monkeypatch.setenv("PAPAYYA_UNKNOWN_TENANTS", "refuse")
    settings = load_settings()
    assert settings.database_url == "postgresql://u@db.internal:5433/papayya"
    assert settings.unknown_tenants == "refuse"
    assert load_settings(unknown_tenants="create").unknown_tenants == "create"  # explicit beats env


def test_tenant_scopes_the_process_and_is_a_checked_tenant_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PAPAYYA_TENANT", raising=False)
    assert load_settings().tenant is None
    monkeypatch.setenv("PAPAYYA_TENANT", "acme")
    assert load_settings().tenant == "acme"
    assert load_settings(tenant="t47").tenant == "t47"  # explicit beats env
    monkeypatch.setenv("PAPAYYA_TENANT", " acme ")
    with pytest.raises(ConfigError, match=r"^Setting tenant \(PAPAYYA_TENANT\) is invalid: Tenant id ' acme"):
        load_settings()
    assert "one tenant" in Settings.DESCRIPTIONS["tenant"]


def test_values_are_read_as_people_write_them(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, text, value in [
        ("PAPAYYA_MAX_STALLS", " 4 ", 4),
        ("PAPAYYA_MAX_STALLS", "4.0", 4),
        ("PAPAYYA_LEASE_SECONDS", "1e3", 1000.0),
        ("PAPAYYA_OTEL", "yes", True),
        ("PAPAYYA_AUTO_MIGRATE", "off", False),
        ("PAPAYYA_PROGRESS", "0", False),
    ]:
        monkeypatch.setenv(name, text)
        assert getattr(load_settings(), name.removeprefix("PAPAYYA_").lower()) == value, (name, text)
        monkeypatch.delenv(name)
    with pytest.raises(ConfigError, match="got a number with a fractional part"):
        load_settings(max_stalls=2.5)
    with pytest.raises(ConfigError, match="Input should be a valid string"):
        load_settings(backend=5)


def test_settings_built_directly_are_checked_too() -> None:
    assert Settings(lease_seconds="30").lease_seconds == 30.0  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"Setting pool_size \(PAPAYYA_POOL_SIZE\) is invalid"):
        Settings(pool_size=1)
    key = Settings(secret_key="A" * 43 + "=")  # type: ignore[arg-type]
    assert key.secret_key is not None
    assert "AAAA" not in f"{key.secret_key} {key.secret_key!r} {key!r}"


def test_malformed_env_url_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAPAYYA_DATABASE_URL", "postgresql://u@host:99999999/db")
    with pytest.raises(ConfigError, match="PAPAYYA_DATABASE_URL"):
        load_settings()


def test_errors_survive_pickling_across_processes() -> None:
    err = pickle.loads(pickle.dumps(InputError("bad item", item_key="k", index=3)))
    assert (str(err), err.item_key, err.index) == ("bad item", "k", 3)
    assert str(pickle.loads(pickle.dumps(StoreUnavailable("down")))) == "down"


def test_named_queries_parse_once_and_refuse_duplicates() -> None:
    assert "attempt_begin" in queries()
    assert parse("-- name: a\nSELECT 1;\n-- name: b\n-- a comment\nSELECT 2;") == {
        "a": "SELECT 1",
        "b": "SELECT 2",
    }
    with pytest.raises(ValueError, match="defined twice"):
        parse("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;")

from __future__ import annotations

import pickle

import pytest

from papayya import ConfigError, InputError, StoreUnavailable
from papayya.config import load_settings
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

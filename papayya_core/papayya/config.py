"""Configuration: ``PAPAYYA_*`` environment variables and ``papayya.configure(...)``.

Precedence is explicit (``configure``) > environment > default. Every value is validated when it is
read, so a malformed setting is one clear sentence at start-up, not a traceback mid-run.
"""

from __future__ import annotations

import threading
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from papayya.errors import ConfigError


class UnknownTenants(StrEnum):
    """What ``map()`` does for a tenant that does not exist yet."""

    CREATE = "create"  # create it and log that it did (the default: a laptop run just works)
    REFUSE = "refuse"  # raise TenantError (recommended in production: a typo never gets a fresh budget)


class Settings(BaseSettings):
    """papayya's settings. Field ``x`` is read from ``PAPAYYA_X``."""

    model_config = SettingsConfigDict(env_prefix="PAPAYYA_", extra="forbid", validate_default=True)

    database_url: str | None = Field(
        default=None, description="PostgreSQL URL. Unset: an embedded server under `home`."
    )
    home: Path = Field(
        default=Path(".papayya"), description="Where the embedded server and local state live."
    )
    backend: str = Field(default="native", description="Which backend runs items.")
    unknown_tenants: UnknownTenants = Field(default=UnknownTenants.CREATE)
    max_input_bytes: int = Field(default=1_048_576, gt=0, description="Largest accepted item input (JSON).")
    lease_seconds: float = Field(
        default=60.0, gt=0, description="How long a claim holds without a heartbeat."
    )
    max_stalls: int = Field(
        default=3,
        ge=1,
        description="Times an item may lose its worker (lease expired mid-attempt) before it is failed.",
    )
    pool_size: int = Field(default=16, ge=2, description="Most connections one process opens.")
    progress: bool | None = Field(default=None, description="Progress bar: None = only on a terminal.")
    auto_migrate: bool = Field(default=True, description="Apply pending migrations on first use.")
    default_max_output_tokens: int = Field(
        default=4096, gt=0, description="Output tokens a budget reserves for a call that sets no max_tokens."
    )

    @field_validator("database_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        from urllib.parse import urlsplit

        from psycopg.conninfo import conninfo_to_dict

        try:
            parts = conninfo_to_dict(value)
        except Exception as exc:
            raise ValueError(f"it is not a PostgreSQL URL ({_first_line(exc)})") from None
        if value.startswith(("postgresql://", "postgres://")):
            try:
                urlsplit(value).port  # noqa: B018 - raises ValueError on a bad port
            except ValueError:
                raise ValueError("its port is not a number between 1 and 65535") from None
        elif "://" in value or "=" not in value:
            raise ValueError("it must look like postgresql://user@host:5432/dbname")
        port = str(parts.get("port") or "5432")
        if not all(p.isdigit() and 0 < int(p) < 65536 for p in port.split(",")):
            raise ValueError("its port is not a number between 1 and 65535")
        return value

    @field_validator("backend")
    @classmethod
    def _check_backend(cls, value: str) -> str:
        if not value.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"backend {value!r} is not a backend name (e.g. native)")
        return value


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment with ``overrides`` on top; ConfigError on a bad value."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "setting"
        env = f"PAPAYYA_{field.upper()}"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            raise ConfigError(
                f"Unknown setting {field!r}: check the spelling (see `papayya --help` for settings)."
            ) from None
        raise ConfigError(f"Setting {field} ({env}) is invalid: {msg}. Fix it and try again.") from None


_lock = threading.Lock()
_explicit: dict[str, Any] = {}


def explicit_overrides() -> dict[str, Any]:
    with _lock:
        return dict(_explicit)


def set_explicit(values: dict[str, Any]) -> None:
    with _lock:
        _explicit.update(values)


def clear_explicit() -> None:
    with _lock:
        _explicit.clear()
